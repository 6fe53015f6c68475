//! Turns a `PoolConfig` into a live `Pool`. Backends are lazy: a model's file is fetched
//! (or verified) and loaded the first time a request reaches it, so a run that only
//! uses the smallest model never downloads the largest. `openai` models are HTTP clients
//! (`r2-openai`); they are not call-cached, since a remote model may change.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use r2_callcache::{CachedBackend, CallCache};
use r2_llama::{LlamaCppBackend, LlamaOptions};
use r2_models::ModelCache;
use r2_openai::OpenAiBackend;
use r2_pool::{
    Backend, BackendError, BackendKind, GenRequest, GenResponse, ModelSpec, Pool, PoolConfig,
};
use tokio::sync::OnceCell;

/// Options that apply to every local model.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// llama.cpp threads per call; 0 = all cores.
    pub threads: u32,
    /// Show download progress bars.
    pub progress: bool,
}

/// A backend that fetches and loads its model on first use.
pub struct LazyLlama {
    spec: ModelSpec,
    cache: Arc<ModelCache>,
    options: RuntimeOptions,
    loaded: OnceCell<LlamaCppBackend>,
}

impl LazyLlama {
    pub fn new(spec: ModelSpec, cache: Arc<ModelCache>, options: RuntimeOptions) -> Self {
        Self {
            spec,
            cache,
            options,
            loaded: OnceCell::new(),
        }
    }

    /// Fetch (if needed), verify and load the model now.
    pub async fn load(&self) -> Result<&LlamaCppBackend, BackendError> {
        self.loaded
            .get_or_try_init(|| async {
                let (spec, cache, options) =
                    (self.spec.clone(), self.cache.clone(), self.options.clone());
                let id = spec.id.clone();
                tokio::task::spawn_blocking(move || -> Result<LlamaCppBackend, BackendError> {
                    let path: PathBuf =
                        cache
                            .ensure(&spec, options.progress)
                            .map_err(|e| BackendError::Load {
                                model: spec.id.clone(),
                                reason: e.to_string(),
                            })?;
                    let opts = LlamaOptions {
                        n_ctx: spec.context_length,
                        threads: options.threads,
                        reuse_prefix: spec.reuse_prefix,
                        // Calls the pool lets through at once are decoded in one batch.
                        parallel: spec.max_concurrency,
                    };
                    LlamaCppBackend::load(&spec.id, &path, opts)
                })
                .await
                .map_err(|e| BackendError::Load {
                    model: id,
                    reason: format!("loader thread failed: {e}"),
                })?
            })
            .await
    }
}

#[async_trait]
impl Backend for LazyLlama {
    async fn generate(&self, request: &GenRequest) -> Result<GenResponse, BackendError> {
        self.load().await?.generate(request).await
    }
}

/// A model whose backend could not be built: every call returns the reason.
struct Unavailable(BackendError);

#[async_trait]
impl Backend for Unavailable {
    async fn generate(&self, _request: &GenRequest) -> Result<GenResponse, BackendError> {
        Err(self.0.clone())
    }
}

/// A pool whose every model is a lazily loaded backend; also returns the backends by id
/// so callers can preload or inspect them. With `calls`, identical calls are answered
/// from the call cache.
pub fn build_pool(
    config: PoolConfig,
    cache: Arc<ModelCache>,
    options: RuntimeOptions,
    calls: Option<Arc<CallCache>>,
) -> (Pool, HashMap<String, Arc<LazyLlama>>) {
    let threads = if options.threads == 0 {
        config.threads
    } else {
        options.threads
    };
    let options = RuntimeOptions { threads, ..options };
    let mut lazies = HashMap::new();
    let mut backends: HashMap<String, Arc<dyn Backend>> = HashMap::new();
    for spec in &config.models {
        match spec.backend {
            BackendKind::LlamaCpp => {
                let lazy = Arc::new(LazyLlama::new(spec.clone(), cache.clone(), options.clone()));
                lazies.insert(spec.id.clone(), lazy.clone());
                let backend: Arc<dyn Backend> = match &calls {
                    Some(c) => Arc::new(CachedBackend::new(
                        lazy,
                        c.clone(),
                        &spec.id,
                        spec.sha256.as_deref(),
                    )),
                    None => lazy,
                };
                backends.insert(spec.id.clone(), backend);
            }
            BackendKind::OpenAi => {
                let backend: Arc<dyn Backend> = match spec.remote.as_ref() {
                    Some(remote) => match OpenAiBackend::new(&spec.id, remote) {
                        Ok(b) => Arc::new(b),
                        // Reported on first use, like a local model that cannot load.
                        Err(e) => Arc::new(Unavailable(e)),
                    },
                    None => Arc::new(Unavailable(BackendError::Load {
                        model: spec.id.clone(),
                        reason: "no remote settings".into(),
                    })),
                };
                backends.insert(spec.id.clone(), backend);
            }
        }
    }
    let pool = Pool::new(config, backends).expect("a backend was built for every model");
    (pool, lazies)
}
