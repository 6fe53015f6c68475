//! The Reinforced Model Router of R2-Reasoner.
//!
//! - [`search`]: label search (direct answers on every model, then the cheapest correct
//!   allocation of the decomposed plan) → a labels file ([`labels`]).
//! - [`features`]: sentence embeddings (all-MiniLM-L6-v2 via candle) plus structural features.
//! - [`net`]: the allocator network (step head, route head) with its manifest.
//! - [`sft`]: supervised training on labels; [`grpo`]: reinforcement refinement
//!   ([`grpo_math`] holds the formulas); [`calibrate`]: threshold choice.
//! - [`policy`]: `learned:`, `query-level:` and `oracle:` policies behind the allocator's
//!   `Policy` trait; [`parse_policy`] accepts every policy name.

pub mod calibrate;
pub mod choice;
pub mod features;
pub mod grpo;
pub mod grpo_math;
pub mod labels;
pub mod net;
pub mod policy;
pub mod rng;
pub mod search;
pub mod sft;
pub mod train;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use r2_allocator::{with_escalation, Escalation, Named, Policy, PolicyError};
use r2_models::ModelCache;
use r2_pool::Pool;

use features::{Encoder, Featurizer, HashEncoder, MiniLm, MiniLmDistilled, MINILM_DISTILLED};
use net::RouterNet;
use policy::{LearnedPolicy, OraclePolicy};

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error(transparent)]
    File(#[from] r2_files::FileError),
    #[error("labels {}: line {line}: {reason}", path.display())]
    Labels {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("router {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
    #[error("this router was trained for the pool [{}] but the pool is [{}]; retrain it for this pool (r2reasoner train label / sft)", trained.join(", "), pool.join(", "))]
    PoolMismatch {
        trained: Vec<String>,
        pool: Vec<String>,
    },
    #[error("this router expects features {trained} but this build produces {now}")]
    LayoutMismatch { trained: String, now: String },
    #[error("embedding: {0}")]
    Encoder(String),
    #[error(
        "training diverged (NaN or infinity) at step {epoch}; the last good weights were kept"
    )]
    NotFinite {
        epoch: usize,
        last_good: Box<RouterNet>,
    },
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("a lock was poisoned")]
    Poisoned,
}

impl std::fmt::Debug for RouterNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterNet")
            .field("manifest", &self.manifest)
            .finish()
    }
}

/// The router shipped for the embedded default pool (trained with `scripts/train-router`).
pub const SHIPPED_WEIGHTS: &[u8] = include_bytes!("../shipped/allocator.safetensors");
pub const SHIPPED_MANIFEST: &str = include_str!("../shipped/allocator.manifest.json");
/// How the shipped router is named in policy names and messages.
pub const SHIPPED_NAME: &str = "shipped";

/// Loads what learned policies need (the embedding model) once, on first use.
pub struct RouterEnv {
    cache: Option<Arc<ModelCache>>,
    progress: bool,
    embedder: OnceLock<Arc<r2_embed::Embedder>>,
    minilm: OnceLock<Arc<dyn Encoder>>,
    distilled: OnceLock<Arc<dyn Encoder>>,
}

impl RouterEnv {
    pub fn new(cache: Option<Arc<ModelCache>>, progress: bool) -> Self {
        Self {
            cache,
            progress,
            embedder: OnceLock::new(),
            minilm: OnceLock::new(),
            distilled: OnceLock::new(),
        }
    }

    /// The encoder named in a manifest: `all-minilm-l6-v2`, `all-minilm-l6-v2-distilled`
    /// or `hash-<dim>`.
    pub fn encoder(&self, name: &str) -> Result<Arc<dyn Encoder>, RouterError> {
        if let Some(dim) = name.strip_prefix("hash-").and_then(|d| d.parse().ok()) {
            return Ok(Arc::new(HashEncoder::new(dim)));
        }
        match name {
            "all-minilm-l6-v2" => {
                if let Some(e) = self.minilm.get() {
                    return Ok(e.clone());
                }
                let enc: Arc<dyn Encoder> = Arc::new(MiniLm(self.embedder()?));
                Ok(self.minilm.get_or_init(|| enc).clone())
            }
            MINILM_DISTILLED => {
                if let Some(e) = self.distilled.get() {
                    return Ok(e.clone());
                }
                let cache = self.cache()?;
                let pin = r2_embed::FilePins::all_minilm_l6_v2().weights;
                let path = r2_embed::DistilledEmbedder::table_path(&cache.models_dir(), &pin);
                let progress = self.progress;
                let mut shown = 0;
                let table = r2_embed::DistilledEmbedder::load_or_distil(
                    self.embedder()?,
                    &path,
                    |done, all| {
                        // Only on the first use: a line per tenth of the vocabulary.
                        if progress && done * 10 / all.max(1) > shown {
                            shown = done * 10 / all.max(1);
                            eprintln!(
                                "distilling the static embedding table: {done}/{all} word pieces"
                            );
                        }
                    },
                )
                .map_err(|e| RouterError::Encoder(e.to_string()))?;
                let enc: Arc<dyn Encoder> = Arc::new(MiniLmDistilled(Arc::new(table)));
                Ok(self.distilled.get_or_init(|| enc).clone())
            }
            _ => Err(RouterError::Invalid(format!(
                "unknown encoder '{name}' (known: all-minilm-l6-v2, {MINILM_DISTILLED}, hash-<dim>)"
            ))),
        }
    }

    fn cache(&self) -> Result<Arc<ModelCache>, RouterError> {
        match &self.cache {
            Some(c) => Ok(c.clone()),
            None => Ok(Arc::new(
                ModelCache::from_env().map_err(|e| RouterError::Encoder(e.to_string()))?,
            )),
        }
    }

    /// all-MiniLM-L6-v2, loaded once (both MiniLM encoders use it).
    fn embedder(&self) -> Result<Arc<r2_embed::Embedder>, RouterError> {
        if let Some(e) = self.embedder.get() {
            return Ok(e.clone());
        }
        let emb = r2_embed::Embedder::default_model(&*self.cache()?, self.progress)
            .map_err(|e| RouterError::Encoder(e.to_string()))?;
        Ok(self.embedder.get_or_init(|| Arc::new(emb)).clone())
    }

    /// A network and its featurizer, checked against `pool`. `path` = `shipped` loads the
    /// router compiled into the binary.
    pub fn load_router(
        &self,
        path: &str,
        pool: &Pool,
    ) -> Result<(Arc<RouterNet>, Arc<Featurizer>), RouterError> {
        let net = if path == SHIPPED_NAME {
            if SHIPPED_WEIGHTS.is_empty() {
                return Err(RouterError::Invalid(
                    "this build carries no shipped router; train one with `bash scripts/train-router` \
                     or name a trained one with learned:<path>"
                        .to_string(),
                ));
            }
            RouterNet::from_bytes(SHIPPED_WEIGHTS, SHIPPED_MANIFEST, Path::new(SHIPPED_NAME))?
        } else {
            RouterNet::load(Path::new(path))?
        };
        let ids: Vec<String> = (0..pool.len()).map(|m| pool.id(m).to_string()).collect();
        if net.manifest.pool != ids {
            return Err(RouterError::PoolMismatch {
                trained: net.manifest.pool.clone(),
                pool: ids,
            });
        }
        let features = Featurizer::new(self.encoder(&net.manifest.layout.encoder)?);
        net.manifest.check(&ids, &features.layout())?;
        Ok((Arc::new(net), Arc::new(features)))
    }
}

/// `path[@threshold]`.
fn split_threshold(policy: &str, arg: &str) -> Result<(String, Option<f64>), PolicyError> {
    if let Some((p, t)) = arg.rsplit_once('@') {
        let t: f64 = t
            .parse()
            .ok()
            .filter(|t: &f64| *t > 0.0 && *t < 1.0)
            .ok_or_else(|| PolicyError::Invalid {
                policy: policy.to_string(),
                reason: format!("threshold '{t}' must be a number strictly between 0 and 1"),
            })?;
        return Ok((p.to_string(), Some(t)));
    }
    Ok((arg.to_string(), None))
}

/// Every policy name: the allocator's baselines plus `learned[:<path>][@t]` (no path: the
/// shipped router), `query-level[:<path>][@t]` and `oracle:<labels.jsonl>`, each with an
/// optional `+agree[:K[@T]]`, `+program[:all]` and/or `+retry[:K[@T]]` suffix (see [`Escalation`]).
pub fn parse_policy(
    name: &str,
    pool: &Pool,
    env: &RouterEnv,
) -> Result<Box<dyn Policy>, PolicyError> {
    let (name, escalation) = Escalation::split(name.trim())?;
    Ok(with_escalation(
        parse_base(name.trim(), pool, env)?,
        escalation,
    ))
}

fn parse_base(name: &str, pool: &Pool, env: &RouterEnv) -> Result<Box<dyn Policy>, PolicyError> {
    let (kind, arg) = match name.split_once(':') {
        Some((k, a)) => (k, a),
        None => (name, ""),
    };
    let (kind, arg) = match kind.split_once('@') {
        // `learned@0.7`: the shipped router at a threshold.
        Some((k, t)) if arg.is_empty() => (k, format!("{SHIPPED_NAME}@{t}")),
        _ => (kind, arg.to_string()),
    };
    let invalid = |e: RouterError| PolicyError::Invalid {
        policy: name.to_string(),
        reason: e.to_string(),
    };
    match kind {
        "learned" | "query-level" => {
            let arg = if arg.is_empty() {
                SHIPPED_NAME.to_string()
            } else {
                arg
            };
            let (path, t) = split_threshold(name, &arg)?;
            let (net, features) = env.load_router(&path, pool).map_err(invalid)?;
            let threshold = t.unwrap_or(net.manifest.threshold);
            Ok(Box::new(Named {
                name: format!("{kind}:{path}@{threshold}"),
                inner: Box::new(LearnedPolicy {
                    net,
                    features,
                    threshold,
                    query_level: kind == "query-level",
                }),
                escalation: None,
            }))
        }
        "oracle" => {
            if arg.is_empty() {
                return Err(PolicyError::Invalid {
                    policy: name.to_string(),
                    reason: "needs a labels file, e.g. oracle:labels.jsonl".into(),
                });
            }
            let ids: Vec<String> = (0..pool.len()).map(|m| pool.id(m).to_string()).collect();
            let set = labels::read_labels(Path::new(&arg), &ids).map_err(invalid)?;
            Ok(Box::new(Named {
                name: format!("oracle:{arg}"),
                inner: Box::new(OraclePolicy::new(
                    set.questions,
                    pool.config.clone(),
                    arg.clone(),
                )),
                escalation: None,
            }))
        }
        _ => r2_allocator::parse_policy(name, pool),
    }
}
