//! The `llama_cpp` backend: a GGUF file run in-process through llama.cpp.
//!
//! Each file is loaded once per process and shared by every backend that names it. With
//! `parallel = 1`, a model keeps a small pool of inference contexts so calls reuse their
//! KV-cache allocation (and the longest common prompt prefix); one context serves one call at
//! a time. With `parallel > 1`, calls go to a batching engine (`batch`) that decodes up to
//! `parallel` of them together in one context. The pool's `max_concurrency` bounds how many
//! calls reach a model at once and is what the runtime passes as `parallel`.
//!
//! Invariant: **greedy generation is bit-reproducible only for a call decoded alone from an
//! empty KV cache** (`max_concurrency = 1`, `reuse_prefix = false`, the defaults of a pool
//! entry). Calls decoded in one batch with others, or on top of a reused prefix, evaluate
//! some tokens in another batch shape (another matrix kernel), so logits differ in the last
//! bits and a long greedy answer may take the other branch at a near tie. The embedded pool
//! turns both on for throughput; the call cache keeps whichever answer was computed first,
//! so benchmark reruns replay it exactly.

mod batch;
mod generate;
mod logits;
mod text;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use r2_pool::{Backend, BackendError, ChatMessage, GenRequest, GenResponse};

pub use generate::GenStats;

fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every tensor at load time; route it to `tracing` (off by default).
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Creating contexts from one model in parallel is unsound in llama.cpp (it mutates the
/// model), so context creation is serialised process-wide. It happens rarely: contexts are reused.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

/// A context of `seqs` sequences of `n_ctx` tokens each, evaluating with `threads` threads.
fn new_context(
    model: &'static LlamaModel,
    n_ctx: u32,
    seqs: u32,
    threads: i32,
) -> Result<LlamaContext<'static>, String> {
    let total = n_ctx.saturating_mul(seqs);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(total))
        .with_n_batch(total.min(2048))
        .with_n_seq_max(seqs)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let backend = backend()?;
    let _guard = CONTEXT_CREATION
        .lock()
        .map_err(|_| "context lock poisoned".to_string())?;
    model.new_context(backend, params).map_err(|e| match seqs {
        1 => format!("cannot create context: {e}"),
        n => format!("cannot create a {n}-sequence context: {e}"),
    })
}

/// A loaded GGUF file. Leaked on purpose: models live for the whole process, which lets
/// contexts borrow them for `'static`.
struct LoadedModel {
    model: LlamaModel,
    template: Option<LlamaChatTemplate>,
}

fn load(path: &Path) -> Result<&'static LoadedModel, String> {
    static MODELS: OnceLock<Mutex<HashMap<PathBuf, &'static LoadedModel>>> = OnceLock::new();
    let key = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut models = MODELS
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| "model registry poisoned".to_string())?;
    if let Some(m) = models.get(&key) {
        return Ok(m);
    }
    let backend = backend()?;
    let model = LlamaModel::load_from_file(backend, &key, &LlamaModelParams::default())
        .map_err(|e| format!("llama.cpp could not load {}: {e}", key.display()))?;
    let template = model.chat_template(None).ok();
    let loaded: &'static LoadedModel = Box::leak(Box::new(LoadedModel { model, template }));
    models.insert(key, loaded);
    Ok(loaded)
}

/// A context that may move between threads. llama.cpp contexts have no thread affinity;
/// they must only not be used by two threads at once, which the owning `Mutex<Vec<_>>`
/// (take one out, put it back) guarantees.
struct Ctx {
    ctx: LlamaContext<'static>,
    /// Tokens currently in the KV cache, for prefix reuse.
    cached: Vec<LlamaToken>,
}
// SAFETY: see the comment on `Ctx`; a context is only ever used by the thread holding it.
unsafe impl Send for Ctx {}

#[derive(Debug, Clone)]
pub struct LlamaOptions {
    /// Context length in tokens (prompt + generation).
    pub n_ctx: u32,
    /// CPU threads per call; 0 = all cores.
    pub threads: u32,
    /// Reuse the KV cache of the longest common prompt prefix between calls (on the batch
    /// engine: the free sequence sharing the longest prefix). Faster for repeated system
    /// prompts and for the steps of one question, but the last prompt tokens are then
    /// evaluated in a different batch shape, which changes floating-point results slightly:
    /// greedy outputs stop being bit-reproducible.
    pub reuse_prefix: bool,
    /// Calls decoded together in one batch (each with its own `n_ctx`); 1 = one context per
    /// call, no batching. Batching raises throughput when several calls are in flight.
    pub parallel: u32,
}

/// Cheap to clone: clones share the model and its contexts.
#[derive(Clone)]
pub struct LlamaCppBackend {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    model: &'static LoadedModel,
    options: LlamaOptions,
    idle: Mutex<Vec<Ctx>>,
    /// Set when `options.parallel > 1`.
    engine: Option<batch::Engine>,
}

impl LlamaCppBackend {
    /// Load (or reuse) the GGUF file at `path` for the pool model `id`.
    pub fn load(id: &str, path: &Path, options: LlamaOptions) -> Result<Self, BackendError> {
        let model = load(path).map_err(|reason| BackendError::Load {
            model: id.to_string(),
            reason,
        })?;
        let engine = match options.parallel {
            0 | 1 => None,
            slots => Some(
                batch::Engine::start(
                    id,
                    &model.model,
                    slots,
                    options.n_ctx,
                    resolve_threads(options.threads),
                    options.reuse_prefix,
                )
                .map_err(|reason| BackendError::Load {
                    model: id.to_string(),
                    reason,
                })?,
            ),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                id: id.to_string(),
                model,
                options,
                idle: Mutex::new(Vec::new()),
                engine,
            }),
        })
    }

    pub fn threads(&self) -> i32 {
        resolve_threads(self.inner.options.threads)
    }

    /// Calls decoded together (1 = no batching).
    pub fn parallel(&self) -> u32 {
        self.inner.options.parallel.max(1)
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Apply the GGUF's chat template (ChatML when the file has none or llama.cpp cannot apply it).
    pub fn render_prompt(&self, messages: &[ChatMessage]) -> Result<String, BackendError> {
        if let Some(tmpl) = &self.inner.model.template {
            let chat: Result<Vec<_>, _> = messages
                .iter()
                .map(|m| {
                    LlamaChatMessage::new(m.role.as_str().to_string(), m.content.replace('\0', " "))
                })
                .collect();
            let chat = chat.map_err(|e| self.err(format!("bad chat message: {e}")))?;
            if let Ok(prompt) = self
                .inner
                .model
                .model
                .apply_chat_template(tmpl, &chat, true)
            {
                return Ok(prompt);
            }
        }
        Ok(text::chatml(messages))
    }

    /// Exact prompt token count for these messages.
    pub fn count_prompt_tokens(&self, messages: &[ChatMessage]) -> Result<u32, BackendError> {
        Ok(self.tokenize(&self.render_prompt(messages)?).len() as u32)
    }

    fn tokenize(&self, prompt: &str) -> Vec<LlamaToken> {
        self.inner
            .model
            .model
            .vocab()
            .tokenize(prompt.as_bytes(), true, true)
    }

    fn err(&self, reason: String) -> BackendError {
        BackendError::Inference {
            model: self.inner.id.clone(),
            reason,
        }
    }

    fn take_context(&self) -> Result<Ctx, BackendError> {
        if let Some(c) = self
            .inner
            .idle
            .lock()
            .map_err(|_| self.err("context pool poisoned".into()))?
            .pop()
        {
            return Ok(c);
        }
        let ctx = new_context(
            &self.inner.model.model,
            self.inner.options.n_ctx,
            1,
            self.threads(),
        )
        .map_err(|e| self.err(e))?;
        Ok(Ctx {
            ctx,
            cached: Vec::new(),
        })
    }

    fn put_back(&self, ctx: Ctx) {
        if let Ok(mut idle) = self.inner.idle.lock() {
            idle.push(ctx);
        }
    }

    /// Blocking generation with timing statistics (used by the benchmark).
    pub fn generate_blocking(
        &self,
        request: &GenRequest,
    ) -> Result<(GenResponse, GenStats), BackendError> {
        self.generate_cancellable(request, &Arc::new(AtomicBool::new(false)))
    }

    /// The prompt's tokens, or a context-overflow error.
    fn prompt_tokens(&self, request: &GenRequest) -> Result<Vec<LlamaToken>, BackendError> {
        let prompt = self.render_prompt(&request.messages)?;
        let tokens = self.tokenize(&prompt);
        let n_ctx = self.inner.options.n_ctx;
        if tokens.len() as u32 >= n_ctx {
            return Err(BackendError::ContextOverflow {
                model: self.inner.id.clone(),
                needed: tokens.len() as u32,
                limit: n_ctx,
            });
        }
        Ok(tokens)
    }

    /// Queue a call on the batching engine; the receiver yields its answer.
    fn submit(
        &self,
        engine: &batch::Engine,
        request: &GenRequest,
        cancel: Arc<AtomicBool>,
    ) -> Result<tokio::sync::oneshot::Receiver<batch::Reply>, BackendError> {
        let tokens = self.prompt_tokens(request)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        engine
            .submit(batch::Job {
                tokens,
                request: request.clone(),
                cancel,
                reply,
            })
            .map_err(|e| self.err(e))?;
        Ok(answer)
    }

    fn engine_answer(
        &self,
        answer: Result<batch::Reply, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<(GenResponse, GenStats), BackendError> {
        match answer {
            Ok(reply) => reply.map_err(|e| self.err(e)),
            Err(_) => Err(self.err("the batch thread stopped before answering".into())),
        }
    }

    /// Blocking generation that stops (with an error) soon after `cancel` is set. Must not
    /// be called from an async task (it blocks).
    pub fn generate_cancellable(
        &self,
        request: &GenRequest,
        cancel: &Arc<AtomicBool>,
    ) -> Result<(GenResponse, GenStats), BackendError> {
        if let Some(engine) = &self.inner.engine {
            let answer = self.submit(engine, request, cancel.clone())?;
            return self.engine_answer(answer.blocking_recv());
        }
        let tokens = self.prompt_tokens(request)?;
        let n_ctx = self.inner.options.n_ctx;
        let mut ctx = self.take_context()?;
        let result = generate::run(
            &self.inner.model.model,
            &mut ctx.ctx,
            &mut ctx.cached,
            &tokens,
            request,
            n_ctx,
            self.inner.options.reuse_prefix,
            cancel,
        );
        match result {
            Ok(r) => {
                self.put_back(ctx);
                Ok(r)
            }
            // A context whose decode failed may hold a half-written KV cache: drop it.
            Err(reason) => Err(self.err(reason)),
        }
    }
}

#[async_trait]
impl Backend for LlamaCppBackend {
    async fn generate(&self, request: &GenRequest) -> Result<GenResponse, BackendError> {
        let cancel = Arc::new(AtomicBool::new(false));
        // If this future is dropped (client gone, timeout), tell the worker to stop early
        // so the model is freed for the next caller.
        let _guard = CancelOnDrop(cancel.clone());
        if let Some(engine) = &self.inner.engine {
            let answer = self.submit(engine, request, cancel.clone())?;
            return self.engine_answer(answer.await).map(|(r, _)| r);
        }
        // llama.cpp blocks a thread for the whole call; keep it off the async workers.
        let this = self.clone();
        let request = request.clone();
        let handle = tokio::task::spawn_blocking(move || {
            this.generate_cancellable(&request, &cancel).map(|(r, _)| r)
        });
        handle
            .await
            .map_err(|e| self.err(format!("worker thread failed: {e}")))?
    }
}

fn resolve_threads(threads: u32) -> i32 {
    match threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get() as i32)
            .unwrap_or(1),
        n => n as i32,
    }
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
