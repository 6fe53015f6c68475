//! Training the Reinforced Model Router (`r2-router` is what routes with it).
//!
//! - [`search`]: label search (direct answers on every model, then the cheapest correct
//!   allocation of the decomposed plan) over a [`search::RouteRunner`], executing
//!   [`pinned`] routes → a labels file ([`labels`]).
//! - [`sft`]: supervised training on labels; [`grpo`]: reinforcement refinement
//!   ([`grpo_math`] holds the formulas, [`grpo_run`] what a run needs around the loop);
//!   [`tensor`]: the loss pieces both share.
//! - [`calibrate`]: threshold choice on a calibration split.
//! - [`signals`]: what predicts a model's answer is right, before and after it answers
//!   (held-out AUC and Brier), and the two-threshold decision chosen on them.
//! - [`oracle`]: the `oracle:<labels>` policy; [`parse_policy`] accepts every policy name.
//!
//! Invariants: every route is executed and graded through `r2_bench::run::run_item`, so
//! labels, rollouts, calibration and benchmarks grade identically; the dependency points
//! one way (this crate → `r2-router`, never back); training is seeded and never keeps a
//! non-finite weight ([`TrainingError::NotFinite`] carries the last good network).

pub mod calibrate;
pub mod grpo;
pub mod grpo_math;
pub mod grpo_run;
pub mod labels;
pub mod oracle;
pub mod pinned;
pub mod search;
pub mod sft;
pub mod signals;
pub mod tensor;

use std::path::{Path, PathBuf};

use r2_allocator::{with_escalation, Escalation, Named, Policy, PolicyError};
use r2_pool::Pool;
use r2_router::net::RouterNet;
use r2_router::{split_kind, RouterEnv, RouterError};

use oracle::OraclePolicy;

#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error(transparent)]
    Router(#[from] RouterError),
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
    #[error(
        "training diverged (NaN or infinity) at step {epoch}; the last good weights were kept"
    )]
    NotFinite {
        epoch: usize,
        last_good: Box<RouterNet>,
    },
    /// Collecting or scoring the router's signals (`train signals`) failed.
    #[error("signals: {0}")]
    Signals(String),
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl TrainingError {
    /// Whether the user's files or arguments caused this error (the CLI exits with code 2);
    /// tensor failures and divergence are not.
    pub fn is_input_error(&self) -> bool {
        match self {
            TrainingError::Router(e) => e.is_input_error(),
            TrainingError::Tensor(_)
            | TrainingError::NotFinite { .. }
            | TrainingError::Signals(_) => false,
            _ => true,
        }
    }
}

/// Every policy name: [`r2_router::parse_policy`]'s (the allocator's baselines, `learned`,
/// `query-level`) plus `oracle:<labels.jsonl>`, each with an optional `+agree[:K[@T]]`,
/// `+program[:all]` and/or `+retry[:K[@T]]` suffix (see [`Escalation`]).
pub fn parse_policy(
    name: &str,
    pool: &Pool,
    env: &RouterEnv,
) -> Result<Box<dyn Policy>, PolicyError> {
    let (base, escalation) = Escalation::split(name.trim())?;
    let base = base.trim();
    let (kind, arg) = split_kind(base);
    if kind != "oracle" {
        return r2_router::parse_policy(name, pool, env);
    }
    if arg.is_empty() {
        return Err(PolicyError::Invalid {
            policy: base.to_string(),
            reason: "needs a labels file, e.g. oracle:labels.jsonl".into(),
        });
    }
    let ids: Vec<String> = (0..pool.len()).map(|m| pool.id(m).to_string()).collect();
    let set = labels::read_labels(Path::new(&arg), &ids).map_err(|e| PolicyError::Invalid {
        policy: base.to_string(),
        reason: e.to_string(),
    })?;
    let oracle = Named {
        name: format!("oracle:{arg}"),
        inner: Box::new(OraclePolicy::new(
            set.questions,
            pool.config.clone(),
            arg.clone(),
        )),
        escalation: None,
    };
    Ok(with_escalation(Box::new(oracle), escalation))
}
