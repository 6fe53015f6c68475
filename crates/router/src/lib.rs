//! The Reinforced Model Router of R2-Reasoner: what routing needs at inference time.
//!
//! - [`features`]: sentence embeddings (all-MiniLM-L6-v2 via candle) plus structural features.
//! - [`net`]: the allocator network (step head, route head) with its manifest.
//! - [`choice`]: the threshold rule and its stop-process relaxation.
//! - [`policy`]: the `learned:` and `query-level:` policies behind the allocator's
//!   `Policy` trait, and the sampling policy GRPO's rollouts run; [`parse_policy`] accepts
//!   them and the allocator's baselines, [`parse_learned`] reads a learned router's name.
//! - [`rng`]: the seeded generator and hash every draw and initialisation comes from.
//!
//! Training (label search, labels, SFT, GRPO, calibration) is `r2-training`, which depends
//! on this crate and never the other way round: routing links neither the benchmark
//! harness nor the graders. Invariants: a router loads only for the pool and feature layout
//! it was trained for ([`RouterEnv::load_router`]); deciding runs the network on CPU and
//! calls no model.

pub mod choice;
pub mod features;
pub mod net;
pub mod policy;
pub mod rng;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use r2_allocator::{with_escalation, Escalation, KeepSet, Named, Policy, PolicyError};
use r2_models::ModelCache;
use r2_pool::Pool;

use features::{Encoder, Featurizer, HashEncoder, MiniLm, MiniLmDistilled, MINILM_DISTILLED};
use net::RouterNet;
use policy::LearnedPolicy;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
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
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("a lock was poisoned")]
    Poisoned,
}

impl RouterError {
    /// Whether the user's files or arguments caused this error (the CLI exits with code 2);
    /// tensor failures and poisoned locks are not.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, RouterError::Tensor(_) | RouterError::Poisoned)
    }
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

/// How every policy name splits into a kind and its argument: `kind[:arg]`, where
/// `learned@t` (a kind with a threshold and no argument) is the shipped router at `t`.
pub fn split_kind(name: &str) -> (&str, String) {
    let (kind, arg) = match name.split_once(':') {
        Some((k, a)) => (k, a),
        None => (name, ""),
    };
    match kind.split_once('@') {
        // `learned@0.7`: the shipped router at a threshold.
        Some((k, t)) if arg.is_empty() => (k, format!("{SHIPPED_NAME}@{t}")),
        _ => (kind, arg.to_string()),
    }
}

/// A learned router as a policy names it.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedName {
    /// `query-level`: never decompose.
    pub query_level: bool,
    /// A weights file, or [`SHIPPED_NAME`].
    pub path: String,
    /// The threshold the name sets (None: the manifest's).
    pub threshold: Option<f64>,
}

/// `learned[:<path>][@t]` (no path: the shipped router) or `query-level[:<path>][@t]`,
/// without a check suffix; None when `name` names no learned router. A threshold must lie
/// strictly between 0 and 1. `calibrate` and [`parse_policy`] both read names through here.
pub fn parse_learned(name: &str) -> Option<Result<LearnedName, PolicyError>> {
    let (kind, arg) = split_kind(name);
    if kind != "learned" && kind != "query-level" {
        return None;
    }
    let arg = if arg.is_empty() {
        SHIPPED_NAME.to_string()
    } else {
        arg
    };
    let Some((path, t)) = arg.rsplit_once('@') else {
        return Some(Ok(LearnedName {
            query_level: kind == "query-level",
            path: arg,
            threshold: None,
        }));
    };
    let threshold = t
        .parse()
        .ok()
        .filter(|t: &f64| *t > 0.0 && *t < 1.0)
        .ok_or_else(|| PolicyError::Invalid {
            policy: name.to_string(),
            reason: format!("threshold '{t}' must be a number strictly between 0 and 1"),
        });
    Some(threshold.map(|t| LearnedName {
        query_level: kind == "query-level",
        path: path.to_string(),
        threshold: Some(t),
    }))
}

/// The allocator's baselines plus `learned[:<path>][@t]` (no path: the shipped router) and
/// `query-level[:<path>][@t]`, each with an optional `+agree[:K[@T]]`, `+program[:all]`
/// and/or `+retry[:K[@T]]` suffix (see [`Escalation`]). `r2-training` adds `oracle:`.
pub fn parse_policy(
    name: &str,
    pool: &Pool,
    env: &RouterEnv,
) -> Result<Box<dyn Policy>, PolicyError> {
    let (name, mut escalation) = Escalation::split(name.trim())?;
    let mut keep = None;
    if let Some(k) = escalation.as_mut().and_then(|e| e.keep.as_mut()) {
        k.set = keep_set(name.trim(), pool, env)?;
        keep = Some(k.set.clone());
    }
    Ok(with_escalation(
        parse_base(name.trim(), pool, env, keep)?,
        escalation,
    ))
}

/// The keep decisions `+keep` uses with the policy `name`: those of the router it names
/// (`learned:<path>`, `query-level:<path>`), else the shipped router's, calibrated under the
/// pool's active price profile.
fn keep_set(name: &str, pool: &Pool, env: &RouterEnv) -> Result<Arc<KeepSet>, PolicyError> {
    let path = match parse_learned(name) {
        Some(learned) => learned?.path,
        None => SHIPPED_NAME.to_string(),
    };
    let (net, _) = env
        .load_router(&path, pool)
        .map_err(|e| PolicyError::Invalid {
            policy: format!("{name}+keep"),
            reason: e.to_string(),
        })?;
    net.manifest
        .keep_for(&pool.config.price_profile)
        .map(|k| Arc::new(k.clone()))
        .map_err(|why| PolicyError::Invalid {
            policy: format!("{name}+keep"),
            reason: format!("router '{path}': {why}"),
        })
}

/// `keep`: the keep decisions of a `+keep` suffix, which make a learned route two-way (try
/// a model with a keep decision, or the largest), its threshold the decisions' calibrated
/// `try_at` unless the name gives `@t`.
fn parse_base(
    name: &str,
    pool: &Pool,
    env: &RouterEnv,
    keep: Option<Arc<KeepSet>>,
) -> Result<Box<dyn Policy>, PolicyError> {
    let Some(learned) = parse_learned(name) else {
        return r2_allocator::parse_policy(name, pool);
    };
    let learned = learned?;
    let (net, features) =
        env.load_router(&learned.path, pool)
            .map_err(|e| PolicyError::Invalid {
                policy: name.to_string(),
                reason: e.to_string(),
            })?;
    let keep = keep.filter(|_| !learned.query_level);
    let threshold = learned.threshold.unwrap_or(match &keep {
        Some(k) => k.try_at,
        None => net.manifest.threshold,
    });
    let kind = if learned.query_level {
        "query-level"
    } else {
        "learned"
    };
    Ok(Box::new(Named {
        name: format!("{kind}:{}@{threshold}", learned.path),
        inner: Box::new(LearnedPolicy {
            net,
            features,
            threshold,
            query_level: learned.query_level,
            keep,
        }),
        escalation: None,
    }))
}
