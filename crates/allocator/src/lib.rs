//! Allocation policies behind one trait. A policy first decides whether a question is worth
//! decomposing at all (or answered directly by one model), then picks a pool model for each
//! subtask, including the final synthesis step.
//!
//! Baselines: `direct:<model>`, `fixed:<model>`, `random[:seed]`, `llm-rated:<model>`.
//! Any policy may carry `+agree[:K[@T]]`: its final answers from a model below the largest are
//! checked by self-consistency and escalated to the next model up when they disagree
//! ([`Escalation`], [`with_escalation`]).
//! The learned router implements the same trait: its inputs (question, plan, subtask, the
//! answers it depends on) and output (model index plus a score) are all here.

mod baselines;
mod rated;

use std::sync::Arc;

use async_trait::async_trait;
use r2_decomposer::{Plan, Subtask, TaskFamily};
use r2_pool::{GenRequest, Pool, PoolCall};
use r2_signals::KeepModel;
use serde::{Deserialize, Serialize};

pub use baselines::{DirectPolicy, FixedPolicy, RandomPolicy};
pub use rated::LlmRatedPolicy;

/// What a policy decides before any decomposition happens.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Answer with one model, chain of thought, no decomposition.
    Direct { model: usize, score: f64 },
    /// Ask the decomposer for a plan, then allocate each step.
    Decompose,
}

/// Which kind of step is being allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Subtask,
    /// The final step that combines the subtask results into the answer.
    Synthesis,
}

/// Everything a policy may look at to allocate one step.
pub struct StepContext<'a> {
    pub question: &'a str,
    pub family: TaskFamily,
    pub plan: &'a Plan,
    pub subtask: &'a Subtask,
    pub kind: StepKind,
    /// (subtask id, result) of the steps this one depends on, finished before it runs.
    pub answers: &'a [(usize, String)],
    pub pool: &'a Pool,
}

/// A model call a policy made to reach its decision (e.g. a difficulty rating): it costs
/// money like any other call and is shown in the trace.
#[derive(Debug, Clone)]
pub struct AuxCall {
    pub purpose: String,
    pub request: GenRequest,
    pub call: PoolCall,
}

#[derive(Debug, Clone)]
pub struct Allocation {
    pub model: usize,
    /// The policy's own score for its choice (a rating, a probability of success...).
    pub score: f64,
    pub aux_calls: Vec<AuxCall>,
    pub warnings: Vec<String>,
}

impl Allocation {
    pub fn plain(model: usize, score: f64) -> Self {
        Self {
            model,
            score,
            aux_calls: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Escalation of a doubtful final answer to the next model up, asked for with a suffix on a
/// policy name: `+agree[:K[@T]]` (self-consistency), `+program[:all]` (a program check),
/// `+retry[:K[@T]]` (more programs for a failed program check), or several of them.
///
/// A final answer (a direct answer or a plan's synthesis) that came from a model below the
/// largest is checked on the same model:
/// - `+program` (maths answers only): the model writes a short straight-line program that
///   computes the answer; a safe interpreter runs it, and its value must equal the answer's.
///   Other task families are not program-checked (a warning says so). `+program:all` also
///   asks that the value depend on every number written in the question.
/// - `+agree:K@T`: the model is sampled `samples` = K more times at `temperature` T (default
///   K = 2, T = 0.7; seeds s+1..=s+K after the answer's own seed s, 0 when it was greedy), and
///   every sample's answer must equal the first one.
/// - `+retry:K@T` (implies `+program`): when the answer's greedy program fails the check,
///   the model writes up to `retries` = K more programs, sampled at `retry_temperature` T
///   (default K = 1, T = 0.7; seeds s+1..=s+K), and the answer stands as soon as one of
///   them passes the same check. Programs only confirm: the answer is never replaced.
///
/// - `+keep[@b]` (alone): a fitted decision ([`Keep`]) reads the answer's token
///   probabilities and, where it was fitted with them, its greedy program check, and keeps
///   the answer when P(right) ≥ b (default: the threshold it was calibrated with).
///
/// If a check fails, or the first answer is empty, the executor asks the next model up and
/// checks again, up to the largest model, whose answer stands. Every extra call is priced
/// and traced like any other.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// Extra samples that must agree (0 with `+program` alone).
    pub samples: usize,
    pub temperature: f32,
    /// Whether the answer's own program must compute it.
    pub program: bool,
    /// With `program`: whether that program must also use every number the question
    /// gives (`+program:all`).
    pub uses_all: bool,
    /// With `program`: extra programs sampled when the greedy one fails the check, any of
    /// which may confirm the answer (`+retry:K`; 0 without `+retry`).
    pub retries: usize,
    pub retry_temperature: f32,
    /// `+keep[@b]`: a fitted decision instead of the rule checks above (never combined).
    pub keep: Option<Keep>,
}

/// `+keep[@b]`: keep an answer when a fitted decision's P(right) clears the threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Keep {
    /// `@b` in the policy name: one threshold for every model (else each model's own).
    pub at: Option<f64>,
    /// The decisions, from the policy's router (empty until the router's parser supplies
    /// them: then every answer escalates).
    pub set: Arc<KeepSet>,
}

impl Keep {
    /// The most program calls `+keep` makes for one answer: the greedy program and, when it
    /// does not confirm the answer, the sampled ones.
    pub const MAX_PROGRAMS: usize = 1 + r2_signals::keep::RETRIES;
}

/// The keep decisions a router carries (its manifest's `keep`), fitted by `train signals`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeepSet {
    /// The price profile its thresholds were calibrated under: `+keep` uses the set of the
    /// pool's active profile.
    #[serde(default)]
    pub profile: String,
    /// The task families whose answers it decides; an answer of any other family escalates.
    pub families: Vec<TaskFamily>,
    /// One per pool model it was fitted for; an answer from any other model escalates.
    pub models: Vec<KeepModel>,
    /// `learned+keep` tries a model with a keep decision when the route head predicts it
    /// answers right with at least this probability (0: always), else the largest model.
    #[serde(default)]
    pub try_at: f64,
    /// What the thresholds were chosen for, e.g. "accuracy ≥ direct on
    /// qwen2.5-coder-1.5b − 1 point, cheapest under api", and on which labels.
    #[serde(default)]
    pub calibrated_for: String,
}

impl KeepSet {
    /// The decision for answers of `family` from `model`, if there is one.
    pub fn for_answer(&self, model: &str, family: TaskFamily) -> Option<&KeepModel> {
        if !self.families.contains(&family) {
            return None;
        }
        self.models.iter().find(|m| m.model == model)
    }

    /// Refuse a set whose models do not fit together.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.try_at) {
            return Err(format!(
                "the keep decisions' try_at {} is not in [0, 1]",
                self.try_at
            ));
        }
        self.models.iter().try_for_each(KeepModel::validate)
    }
}

impl Escalation {
    pub const DEFAULT_SAMPLES: usize = 2;
    pub const DEFAULT_RETRIES: usize = 1;
    pub const MAX_SAMPLES: usize = 16;
    pub const TEMPERATURE: f32 = 0.7;
    const SUFFIX: &'static str = "+agree";
    const PROGRAM: &'static str = "+program";
    const RETRY: &'static str = "+retry";
    const USES_ALL: &'static str = ":all";
    const KEEP: &'static str = "+keep";

    /// Split `name+agree[:K[@T]]`, `name+program[:all]`, `name+retry[:K[@T]]` or several of
    /// them (in any order) into the policy's own name and the escalation it asks for.
    pub fn split(name: &str) -> Result<(&str, Option<Escalation>), PolicyError> {
        let invalid = |reason: String| PolicyError::Invalid {
            policy: name.to_string(),
            reason,
        };
        let mut base = name;
        let mut keep = None;
        if let Some((head, rest)) = name.rsplit_once(Self::KEEP).filter(|(_, rest)| {
            (rest.is_empty() || rest.starts_with(['@', ':'])) && !rest.contains('+')
        }) {
            keep = Some(Self::parse_keep(rest).map_err(invalid)?);
            base = head;
        }
        let mut agree: Option<(usize, f32)> = None;
        let mut retry: Option<(usize, f32)> = None;
        let mut program = false;
        let mut uses_all = false;
        loop {
            if let Some((rest, all)) = Self::strip_program(base).filter(|_| !program) {
                (program, uses_all) = (true, all);
                base = rest;
                continue;
            }
            // `+agree` and `+retry` end the name or are followed by `:`; anywhere else (a path
            // such as `runs/a+agree/r.safetensors`) they are part of the policy's own name.
            let sampled = [(Self::SUFFIX, &mut agree), (Self::RETRY, &mut retry)]
                .into_iter()
                .filter(|(_, seen)| seen.is_none())
                .find_map(|(suffix, seen)| {
                    base.rsplit_once(suffix)
                        .filter(|(_, rest)| {
                            (rest.is_empty() || rest.starts_with(':')) && !rest.contains('+')
                        })
                        .map(|(head, rest)| (suffix, seen, head, rest))
                });
            match sampled {
                Some((suffix, seen, head, rest)) => {
                    *seen = Some(Self::parse_sampled(suffix, rest).map_err(invalid)?);
                    base = head;
                }
                None => break,
            }
        }
        // `+keep` before another suffix (a path such as `runs/a+keep/r` is a name).
        let keep_inside = base.match_indices(Self::KEEP).any(|(i, _)| {
            let rest = &base[i + Self::KEEP.len()..];
            rest.is_empty() || rest.starts_with(['@', ':', '+'])
        });
        if keep_inside || (keep.is_some() && (program || agree.is_some() || retry.is_some())) {
            return Err(invalid(format!(
                "'{}' decides alone, from its own signals: it does not combine with '{}', '{}', '{}' or itself",
                Self::KEEP,
                Self::PROGRAM,
                Self::RETRY,
                Self::SUFFIX
            )));
        }
        if let Some(keep) = keep {
            if base.trim().is_empty() {
                return Err(invalid(format!(
                    "'{}' follows a policy name, e.g. learned+keep",
                    Self::KEEP
                )));
            }
            return Ok((
                base,
                Some(Escalation {
                    samples: 0,
                    temperature: Self::TEMPERATURE,
                    program: false,
                    uses_all: false,
                    retries: 0,
                    retry_temperature: Self::TEMPERATURE,
                    keep: Some(keep),
                }),
            ));
        }
        if !program && agree.is_none() && retry.is_none() {
            return Ok((name, None));
        }
        if Self::strip_program(base).is_some()
            || base.ends_with(Self::SUFFIX)
            || base.ends_with(Self::RETRY)
        {
            return Err(invalid(format!(
                "'{}', '{}' and '{}' may each follow a policy name once",
                Self::SUFFIX,
                Self::PROGRAM,
                Self::RETRY
            )));
        }
        if base.trim().is_empty() {
            return Err(invalid(format!(
                "'{}', '{}' and '{}' follow a policy name, e.g. learned+agree:2",
                Self::SUFFIX,
                Self::PROGRAM,
                Self::RETRY
            )));
        }
        let (samples, temperature) = agree.unwrap_or((0, Self::TEMPERATURE));
        let (retries, retry_temperature) = retry.unwrap_or((0, Self::TEMPERATURE));
        Ok((
            base,
            Some(Escalation {
                samples,
                temperature,
                program: program || retry.is_some(),
                uses_all,
                retries,
                retry_temperature,
                keep: None,
            }),
        ))
    }

    /// `rest` after `+keep`: empty or `@b` with b in [0, 1].
    fn parse_keep(rest: &str) -> Result<Keep, String> {
        let at = match rest.strip_prefix('@') {
            None if rest.is_empty() => None,
            None => {
                return Err(format!(
                    "'{0}{rest}' must be {0} or {0}@b, b a probability from 0 to 1",
                    Self::KEEP
                ))
            }
            Some(b) => Some(
                b.parse::<f64>()
                    .ok()
                    .filter(|b| (0.0..=1.0).contains(b))
                    .ok_or_else(|| {
                        format!(
                            "'{}{rest}' must be {0} or {0}@b, b a probability from 0 to 1",
                            Self::KEEP
                        )
                    })?,
            ),
        };
        Ok(Keep {
            at,
            set: Arc::new(KeepSet::default()),
        })
    }

    /// `name+program` or `name+program:all` as `name` and whether `:all` was given.
    fn strip_program(name: &str) -> Option<(&str, bool)> {
        let (name, all) = match name.strip_suffix(Self::USES_ALL) {
            Some(head) => (head, true),
            None => (name, false),
        };
        name.strip_suffix(Self::PROGRAM).map(|rest| (rest, all))
    }

    /// `rest` after `+agree` or `+retry` (`suffix`): empty, `:K` or `:K@T`.
    fn parse_sampled(suffix: &str, rest: &str) -> Result<(usize, f32), String> {
        let default = match suffix {
            Self::RETRY => Self::DEFAULT_RETRIES,
            _ => Self::DEFAULT_SAMPLES,
        };
        let mut out = (default, Self::TEMPERATURE);
        if rest.is_empty() {
            return Ok(out);
        }
        let form = || {
            format!(
                "'{0}{rest}' must be {0}, {0}:K or {0}:K@T: K from 1 to {1} extra samples, \
                 T a sampling temperature above 0 and at most 2",
                suffix,
                Self::MAX_SAMPLES
            )
        };
        let spec = rest.strip_prefix(':').ok_or_else(form)?;
        let (k, t) = match spec.split_once('@') {
            Some((k, t)) => (k, Some(t)),
            None => (spec, None),
        };
        out.0 = k
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=Self::MAX_SAMPLES).contains(k))
            .ok_or_else(form)?;
        if let Some(t) = t {
            out.1 = t
                .parse::<f32>()
                .ok()
                .filter(|t| *t > 0.0 && *t <= 2.0)
                .ok_or_else(form)?;
        }
        Ok(out)
    }

    /// The suffix that asks for this escalation, e.g. `+agree:2`, `+agree:2@0.3`,
    /// `+program`, `+program:all`, `+program+agree:1`, `+retry:1` or `+program:all+retry:1`.
    pub fn suffix(&self) -> String {
        let mut out = String::new();
        if let Some(keep) = &self.keep {
            out.push_str(Self::KEEP);
            if let Some(b) = keep.at {
                out.push_str(&format!("@{b}"));
            }
        }
        // `+retry` implies the program check; `+program` is written only when it adds `:all`
        // or stands alone.
        if self.program && (self.uses_all || self.retries == 0) {
            out.push_str(Self::PROGRAM);
            if self.uses_all {
                out.push_str(Self::USES_ALL);
            }
        }
        let sampled = |suffix: &str, k: usize, t: f32| match k {
            0 => String::new(),
            _ if t != Self::TEMPERATURE => format!("{suffix}:{k}@{t}"),
            _ => format!("{suffix}:{k}"),
        };
        out.push_str(&sampled(Self::RETRY, self.retries, self.retry_temperature));
        out.push_str(&sampled(Self::SUFFIX, self.samples, self.temperature));
        out
    }
}

/// `inner` with the escalation asked for, reported under its name plus the suffix; `inner`
/// itself when none is.
pub fn with_escalation(inner: Box<dyn Policy>, escalation: Option<Escalation>) -> Box<dyn Policy> {
    match escalation {
        Some(e) => Box::new(Named {
            name: format!("{}{}", inner.name(), e.suffix()),
            inner,
            escalation: Some(e),
        }),
        None => inner,
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown policy '{0}' (expected direct:<model>, fixed:<model>, random[:seed], llm-rated:<model>, learned[:<path>][@t], query-level[:<path>][@t] or oracle:<labels>, each optionally followed by +agree[:K[@T]], +program[:all] and/or +retry[:K[@T]], or by +keep[@b])")]
    UnknownPolicy(String),
    #[error("{0}")]
    UnknownModel(String),
    #[error("policy '{policy}': {reason}")]
    Invalid { policy: String, reason: String },
    #[error("policy call failed: {0}")]
    Call(String),
}

impl PolicyError {
    /// Bad user input rather than a runtime failure.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, PolicyError::Call(_))
    }
}

#[async_trait]
pub trait Policy: Send + Sync {
    /// The name this policy was built from, e.g. `fixed:qwen2.5-coder-0.5b`.
    fn name(&self) -> String;

    /// Decide whether to decompose. Baselines that always decompose keep the default.
    async fn route(
        &self,
        _question: &str,
        _family: TaskFamily,
        _pool: &Pool,
    ) -> Result<Route, PolicyError> {
        Ok(Route::Decompose)
    }

    async fn allocate(&self, step: StepContext<'_>) -> Result<Allocation, PolicyError>;

    /// Whether final answers are checked and escalated (the `+agree` suffix). Default: no.
    fn escalation(&self) -> Option<Escalation> {
        None
    }
}

/// Build a policy from its name. Model ids are checked against the pool here, so a typo
/// fails before any model runs.
pub fn parse_policy(name: &str, pool: &Pool) -> Result<Box<dyn Policy>, PolicyError> {
    let (name, escalation) = Escalation::split(name.trim())?;
    Ok(with_escalation(parse_base(name.trim(), pool)?, escalation))
}

/// A policy name without its `+agree` suffix.
fn parse_base(name: &str, pool: &Pool) -> Result<Box<dyn Policy>, PolicyError> {
    let (kind, arg) = match name.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (name, None),
    };
    let model = |arg: Option<&str>| -> Result<usize, PolicyError> {
        let id = arg
            .filter(|a| !a.is_empty())
            .ok_or_else(|| PolicyError::Invalid {
                policy: name.to_string(),
                reason: format!("needs a model id, e.g. {kind}:{}", pool.id(pool.len() - 1)),
            })?;
        pool.config.require(id).map_err(PolicyError::UnknownModel)
    };
    let inner: Box<dyn Policy> = match kind {
        "direct" => Box::new(DirectPolicy::new(model(arg)?)),
        "fixed" => Box::new(FixedPolicy::new(model(arg)?)),
        "llm-rated" => Box::new(LlmRatedPolicy::new(model(arg)?)),
        "random" => {
            let seed = match arg {
                None | Some("") => 0,
                Some(s) => s.parse().map_err(|_| PolicyError::Invalid {
                    policy: name.to_string(),
                    reason: format!("seed '{s}' is not a non-negative integer"),
                })?,
            };
            Box::new(RandomPolicy::new(seed))
        }
        _ => return Err(PolicyError::UnknownPolicy(name.to_string())),
    };
    // Report the policy under the name it was asked for (model ids, not indices), with
    // defaults made explicit so equal policies have equal names.
    let canonical = match (kind, arg) {
        ("random", None | Some("")) => "random:0".to_string(),
        _ => name.to_string(),
    };
    Ok(Box::new(Named {
        name: canonical,
        inner,
        escalation: None,
    }))
}

/// A policy reported under the name it was built from (every policy parser wraps with it),
/// with the escalation its name asked for.
pub struct Named {
    pub name: String,
    pub inner: Box<dyn Policy>,
    pub escalation: Option<Escalation>,
}

#[async_trait]
impl Policy for Named {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn route(
        &self,
        question: &str,
        family: TaskFamily,
        pool: &Pool,
    ) -> Result<Route, PolicyError> {
        self.inner.route(question, family, pool).await
    }

    async fn allocate(&self, step: StepContext<'_>) -> Result<Allocation, PolicyError> {
        self.inner.allocate(step).await
    }

    fn escalation(&self) -> Option<Escalation> {
        self.escalation.clone().or_else(|| self.inner.escalation())
    }
}
