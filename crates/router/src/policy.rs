//! The policies a trained router drives: `learned:<path>[@t]` and `query-level:<path>[@t]`
//! ([`LearnedPolicy`]), and the sampling policy of GRPO rollouts ([`SamplingPolicy`]).
//!
//! Invariants: both read a question and a step through the same feature rows and logits
//! (`route_scores`, `step_scores`), so what GRPO samples is the relaxation of what
//! `learned` decides; `learned` takes the first option clearing its threshold
//! ([`first_clearing`]); a sampled draw is a pure function of (seed, question, step).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use r2_allocator::{
    Allocation, Escalation, KeepSet, Policy, PolicyError, Route, StepContext, StepKind,
};
use r2_decomposer::TaskFamily;
use r2_pool::Pool;

use crate::choice::{first_clearing, sample_stop, sigmoid, stop_log_probs, Fallback};
use crate::features::{Featurizer, StepInfo};
use crate::net::{RouteCandidate, RouterNet};
use crate::rng::{fnv1a, SplitMix64};

/// What the step head sees of the step being allocated.
pub fn step_info(step: &StepContext<'_>) -> StepInfo {
    let position = match step.kind {
        StepKind::Synthesis => step.plan.len(),
        StepKind::Subtask => step.subtask.id.saturating_sub(1),
    };
    StepInfo {
        text: step.subtask.text.clone(),
        position,
        plan_len: step.plan.len(),
        depends_on: step.subtask.depends_on.len(),
        synthesis: step.kind == StepKind::Synthesis,
    }
}

fn call_err(e: crate::RouterError) -> PolicyError {
    PolicyError::Call(e.to_string())
}

/// `learned:<path>[@t]`: the route head takes the cheapest route (direct on a model, or
/// decomposing) whose predicted success clears the threshold, else the route most likely
/// to succeed; the step head picks, for each step, the cheapest model whose predicted
/// success clears the threshold, else the largest.
pub struct LearnedPolicy {
    pub net: Arc<RouterNet>,
    pub features: Arc<Featurizer>,
    pub threshold: f64,
    /// Never decompose: the query-level baseline.
    pub query_level: bool,
    /// With `+keep`: the router's keep decisions. For a family they cover, the route is
    /// two-way — the cheapest model with a keep decision whose predicted success clears the
    /// threshold (its answer then faces the decision), else the largest model.
    pub keep: Option<Arc<KeepSet>>,
}

impl LearnedPolicy {
    /// The learned policy at `threshold`, with `escalation`'s check on its answers (None:
    /// unchecked): the policy GRPO's dev evaluation and calibration score.
    pub fn checked(
        net: Arc<RouterNet>,
        features: Arc<Featurizer>,
        threshold: f64,
        escalation: Option<Escalation>,
    ) -> Box<dyn Policy> {
        r2_allocator::with_escalation(
            Box::new(LearnedPolicy {
                net,
                features,
                threshold,
                query_level: false,
                keep: None,
            }),
            escalation,
        )
    }
}

/// The route head's predicted success of answering `question` directly on `model`.
pub fn direct_success(
    net: &RouterNet,
    features: &Featurizer,
    question: &str,
    family: TaskFamily,
    model: usize,
) -> Result<f64, PolicyError> {
    let (_, z) = route_scores(net, features, question, family)?;
    net.route_candidates()
        .iter()
        .position(|c| *c == RouteCandidate::Direct(model))
        .map(|i| sigmoid(z[i]))
        .ok_or_else(|| PolicyError::Call(format!("the router has no route for model {model}")))
}

/// The route head's input row for `question` and its logits (one per route candidate).
fn route_scores(
    net: &RouterNet,
    features: &Featurizer,
    question: &str,
    family: TaskFamily,
) -> Result<(Vec<f32>, Vec<f64>), PolicyError> {
    let f = features
        .route_features(question, family)
        .map_err(call_err)?;
    let mut z = net
        .route_logits(std::slice::from_ref(&f))
        .map_err(call_err)?;
    Ok((f, z.pop().unwrap_or_default()))
}

/// The step head's input row for a step and its logits (one per pool model).
fn step_scores(
    net: &RouterNet,
    features: &Featurizer,
    step: &StepContext<'_>,
    info: &StepInfo,
) -> Result<(Vec<f32>, Vec<f64>), PolicyError> {
    let f = features
        .step_features(step.question, step.family, info)
        .map_err(call_err)?;
    let mut z = net
        .step_logits(std::slice::from_ref(&f))
        .map_err(call_err)?;
    Ok((f, z.pop().unwrap_or_default()))
}

/// The route a chosen candidate stands for; `z` is its logit.
fn route_for(candidate: RouteCandidate, z: f64) -> Route {
    match candidate {
        RouteCandidate::Direct(model) => Route::Direct {
            model,
            score: sigmoid(z),
        },
        RouteCandidate::Decompose => Route::Decompose,
    }
}

#[async_trait]
impl Policy for LearnedPolicy {
    fn name(&self) -> String {
        let kind = if self.query_level {
            "query-level"
        } else {
            "learned"
        };
        format!("{kind}@{}", self.threshold)
    }

    async fn route(
        &self,
        question: &str,
        family: TaskFamily,
        _pool: &Pool,
    ) -> Result<Route, PolicyError> {
        if !self.net.manifest.routes_family(family) {
            // Never trained on this family: its predictions are not evidence, so none is
            // computed; a fixed route, scored like `direct:`.
            return Ok(Route::Direct {
                model: self.net.models().saturating_sub(1),
                score: 1.0,
            });
        }
        let largest = self.net.models().saturating_sub(1);
        if let Some(keep) = &self.keep {
            let mut tried: Vec<usize> = keep
                .models
                .iter()
                .filter(|_| keep.families.contains(&family))
                .filter_map(|k| self.net.manifest.pool.iter().position(|id| *id == k.model))
                .filter(|&m| m < largest)
                .collect();
            tried.sort_unstable();
            for m in tried {
                let p = direct_success(&self.net, &self.features, question, family, m)?;
                if p >= self.threshold {
                    return Ok(Route::Direct { model: m, score: p });
                }
            }
            return Ok(Route::Direct {
                model: largest,
                score: 1.0,
            });
        }
        let (_, z) = route_scores(&self.net, &self.features, question, family)?;
        let candidates = self.net.route_candidates();
        if self.query_level {
            // Only the direct options, cheapest first.
            let (idx, zs): (Vec<usize>, Vec<f64>) = candidates
                .iter()
                .enumerate()
                .filter_map(|(i, c)| match c {
                    RouteCandidate::Direct(m) => Some((*m, z[i])),
                    RouteCandidate::Decompose => None,
                })
                .unzip();
            let pick = first_clearing(&zs, self.threshold, Fallback::Last);
            return Ok(Route::Direct {
                model: idx[pick],
                score: sigmoid(zs[pick]),
            });
        }
        let pick = first_clearing(&z, self.threshold, Fallback::MostLikely);
        Ok(route_for(candidates[pick], z[pick]))
    }

    async fn allocate(&self, step: StepContext<'_>) -> Result<Allocation, PolicyError> {
        let (_, z) = step_scores(&self.net, &self.features, &step, &step_info(&step))?;
        let model = first_clearing(&z, self.threshold, Fallback::Last);
        Ok(Allocation::plain(model, sigmoid(z[model])))
    }
}

/// One sampled decision of a GRPO rollout.
#[derive(Debug, Clone)]
pub struct Decision {
    pub route_head: bool,
    pub features: Vec<f32>,
    pub chosen: usize,
    pub logp_old: f64,
}

/// Samples routes and allocations from the stop process of the current network and
/// records every decision. Draws are a pure function of (seed, question, step), so
/// concurrent steps do not change what is sampled.
pub struct SamplingPolicy {
    pub net: Arc<RouterNet>,
    pub features: Arc<Featurizer>,
    pub threshold: f64,
    pub seed: u64,
    pub decisions: Mutex<Vec<Decision>>,
    /// The check final answers get (GRPO with escalation in its rollouts).
    pub escalation: Option<Escalation>,
}

impl SamplingPolicy {
    fn draw(&self, question: &str, what: u64) -> f64 {
        SplitMix64::stream(self.seed, &[fnv1a(question), what]).unit()
    }

    fn record(&self, route_head: bool, features: Vec<f32>, z: &[f64], u: f64) -> usize {
        let fallback = Fallback::for_head(route_head);
        let chosen = sample_stop(z, self.threshold, fallback, u);
        let logp_old = stop_log_probs(z, self.threshold, fallback)[chosen];
        if let Ok(mut d) = self.decisions.lock() {
            d.push(Decision {
                route_head,
                features,
                chosen,
                logp_old,
            });
        }
        chosen
    }
}

#[async_trait]
impl Policy for SamplingPolicy {
    fn name(&self) -> String {
        format!("sampled:{}", self.seed)
    }

    async fn route(
        &self,
        question: &str,
        family: TaskFamily,
        _pool: &Pool,
    ) -> Result<Route, PolicyError> {
        let (f, z) = route_scores(&self.net, &self.features, question, family)?;
        let chosen = self.record(true, f, &z, self.draw(question, u64::MAX));
        Ok(route_for(self.net.route_candidates()[chosen], z[chosen]))
    }

    async fn allocate(&self, step: StepContext<'_>) -> Result<Allocation, PolicyError> {
        let info = step_info(&step);
        let (f, z) = step_scores(&self.net, &self.features, &step, &info)?;
        let chosen = self.record(false, f, &z, self.draw(step.question, info.position as u64));
        Ok(Allocation::plain(chosen, sigmoid(z[chosen])))
    }

    fn escalation(&self) -> Option<Escalation> {
        self.escalation.clone()
    }
}
