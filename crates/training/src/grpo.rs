//! GRPO refinement of the allocator: per question sample a group of routes and
//! allocations from the current policy, execute them, reward = correct − λ·cost /
//! cost(all steps on the largest model), normalise advantages within the group, and take
//! clipped policy-gradient steps with a KL penalty towards the SFT policy.
//!
//! With an escalation (`GrpoOptions::escalation`, e.g. `+program:all+retry`), rollouts and dev
//! evaluation run with that check on the final answers, so a route's reward is that of the
//! checked route: an answer a smaller model got wrong but whose check sent it up costs the
//! climb, not the accuracy. The router learns when trying a cheaper model first pays.
//!
//! The reward's cost is relative to a per-question normaliser: by default the cost of the
//! decomposed plan with every step on the largest model, or (`Normaliser::Direct`) the cost
//! of answering directly on the largest model, the baseline cost figures are reported
//! against. The latter is one call per question instead of a decomposition and every step.
//!
//! Invariants: each rollout's seed is fixed by its place in the batch and rollouts are
//! collected in that order, so concurrency does not change what is learned (up to
//! batched-decoding numerics on real models); every drawn group is in the loss (a group
//! whose rewards tie gets zero advantages and still counts under the KL term); a
//! non-finite loss or weight stops training with the last good weights; `out` holds the
//! checkpoint [`Selection`] keeps at every moment.
//!
//! Rollouts sample the stop process of `r2_router::choice` (`π(m) = q_m Π_{j<m}(1 − q_j)`,
//! `q = σ(z − logit t)`), whose sharp limit is the threshold rule `learned` decides by. The
//! [`loss`] is minus the clipped surrogate plus `kl` times the KL to the SFT policy,
//! averaged over decisions and checked term by term against [`crate::grpo_math`].
//! [`Selection`] keeps the best dev reward, the later iteration on a tie within 1e-9;
//! patience counts from the last strict improvement.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use futures::{stream, StreamExt};
use r2_allocator::Escalation;
use r2_bench::run::{run_item, RunSettings};
use r2_bench::Item;
use r2_pool::Pool;
use r2_router::choice::Fallback;
use r2_router::features::Featurizer;
use r2_router::net::{sibling, to_tensor, Mlp, RouterNet};
use r2_router::policy::{Decision, LearnedPolicy, SamplingPolicy};
use r2_router::rng::SplitMix64;
use serde::Serialize;

use crate::grpo_math::{group_advantages, reward};
use crate::pinned::{PinnedPolicy, PinnedRoute};
use crate::tensor::{column, one_hot, scalar, stop_log_probs};
use crate::TrainingError;

#[derive(Debug, Clone)]
pub struct GrpoOptions {
    pub group: usize,
    pub lambda: f64,
    pub iterations: usize,
    /// Questions per iteration.
    pub batch: usize,
    /// Gradient steps on each iteration's rollouts.
    pub epochs: usize,
    pub lr: f64,
    pub clip: f64,
    pub kl: f64,
    pub threshold: f64,
    pub seed: u64,
    /// Stop after this many iterations without a better dev reward.
    pub patience: usize,
    /// The check final answers get in rollouts and dev evaluation (none: unchecked).
    pub escalation: Option<Escalation>,
    /// What a rollout's cost is measured against.
    pub normaliser: Normaliser,
}

/// The per-question cost a reward's cost term is divided by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Normaliser {
    /// The decomposed plan with every step on the largest model.
    #[default]
    Decomposed,
    /// The question answered directly on the largest model.
    Direct,
}

impl Normaliser {
    pub fn name(self) -> &'static str {
        match self {
            Normaliser::Decomposed => "decomposed",
            Normaliser::Direct => "direct",
        }
    }
}

impl std::str::FromStr for Normaliser {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "decomposed" => Ok(Normaliser::Decomposed),
            "direct" => Ok(Normaliser::Direct),
            other => Err(format!(
                "unknown normaliser '{other}' (expected 'decomposed' or 'direct')"
            )),
        }
    }
}

impl Default for GrpoOptions {
    fn default() -> Self {
        Self {
            group: 4,
            lambda: 0.5,
            iterations: 20,
            batch: 8,
            epochs: 4,
            lr: 1e-3,
            clip: 0.2,
            kl: 0.05,
            threshold: 0.5,
            seed: 0,
            patience: 4,
            escalation: None,
            normaliser: Normaliser::Decomposed,
        }
    }
}

/// Checkpoint selection on dev reward: which iteration's weights `out` holds, and when
/// patience has run out. A dev reward equal to the best (within 1e-9) keeps the later, more
/// trained weights: small dev sets tie often (every question routed the same way scores
/// the same), and on the embedded pool the latest of the tied routers met the accuracy and
/// saving targets where the earliest did not (docs/experiments/2026-12-02-tie-break-latest.md).
/// Patience counts from the last strict improvement, so a plateau still ends training.
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    reward: f64,
    kept: usize,
    kept_score: Score,
    improved: usize,
}

impl Selection {
    /// Starts from the initial weights (iteration 0) and their dev score.
    pub fn new(initial: Score) -> Self {
        Self {
            reward: initial.reward,
            kept: 0,
            kept_score: initial,
            improved: 0,
        }
    }

    /// Records an iteration's dev score; true when its weights are now the kept ones.
    pub fn offer(&mut self, iteration: usize, score: Score) -> bool {
        let better = score.reward > self.reward + 1e-9;
        let ties = !better && score.reward >= self.reward - 1e-9;
        if better {
            self.reward = score.reward;
            self.improved = iteration;
        }
        let keep = better || ties;
        if keep {
            self.kept = iteration;
            self.kept_score = score;
        }
        keep
    }

    /// True once `patience` iterations have passed without a better dev reward.
    pub fn exhausted(&self, iteration: usize, patience: usize) -> bool {
        iteration - self.improved >= patience
    }

    /// The iteration whose weights are kept (0: the initial ones).
    pub fn kept(&self) -> usize {
        self.kept
    }

    pub fn kept_score(&self) -> Score {
        self.kept_score
    }
}

/// Mean reward, accuracy and relative cost over a set of executions.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Score {
    pub reward: f64,
    pub accuracy: f64,
    /// Cost relative to the normaliser (by default all steps on the largest model).
    pub relative_cost: f64,
    pub cost_usd: f64,
    pub items: usize,
}

impl Score {
    fn of(samples: &[(bool, f64, f64)], lambda: f64) -> Self {
        let n = samples.len().max(1) as f64;
        let mut s = Score {
            items: samples.len(),
            ..Default::default()
        };
        for &(ok, cost, norm) in samples {
            s.reward += reward(ok, cost, norm, lambda) / n;
            s.accuracy += f64::from(u8::from(ok)) / n;
            s.relative_cost += if norm > 0.0 { cost / norm / n } else { 0.0 };
            s.cost_usd += cost / n;
        }
        s
    }
}

/// One line of the training log.
#[derive(Debug, Clone, Serialize)]
pub struct IterLog {
    pub iteration: usize,
    pub train: Score,
    pub dev: Score,
    pub loss: f64,
    /// Mean KL to the reference policy over all of the batch's decisions.
    pub kl: f64,
    /// The same mean over the route head's decisions alone (null when the batch had none).
    pub kl_route: Option<f64>,
    /// The same mean over the step head's decisions alone (null when the batch had none).
    pub kl_step: Option<f64>,
    /// Mean entropy (nats) of the route head's distributions over the batch's route
    /// decisions, before the update (null when the batch had none). Near 0 the head picks
    /// one route whatever it samples, and its groups tie.
    pub entropy_route: Option<f64>,
    pub decisions: usize,
    pub route_decisions: usize,
    /// Questions drawn (rolled out) this iteration.
    pub questions: usize,
    /// Of those, the groups whose rewards differ (the only ones with an advantage).
    pub informative: usize,
    /// This iteration's weights are now the kept ones (`out`): a better or an equal dev
    /// reward.
    pub best: bool,
}

/// KL to the reference policy from one loss evaluation, overall and per head, and the
/// route head's mean entropy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KlParts {
    pub all: f64,
    pub route: Option<f64>,
    pub step: Option<f64>,
    pub entropy_route: Option<f64>,
}

pub struct GrpoReport {
    pub log: Vec<IterLog>,
    /// The iteration whose weights `out` holds (0: the initial ones).
    pub best_iteration: usize,
    pub initial_dev: Score,
    pub best_dev: Score,
    pub stopped_early: bool,
}

pub struct Grpo<'a> {
    pub pool: &'a Pool,
    pub settings: &'a RunSettings,
    pub features: Arc<Featurizer>,
    pub options: GrpoOptions,
    norm: Mutex<HashMap<String, f64>>,
}

impl<'a> Grpo<'a> {
    pub fn new(
        pool: &'a Pool,
        settings: &'a RunSettings,
        features: Arc<Featurizer>,
        options: GrpoOptions,
    ) -> Self {
        Self {
            pool,
            settings,
            features,
            options,
            norm: Mutex::new(HashMap::new()),
        }
    }

    /// The question's cost on the largest model, decomposed or direct as the options say
    /// (cached per question).
    async fn all_largest_cost(&self, item: &Item) -> f64 {
        if let Some(c) = self.norm.lock().ok().and_then(|m| m.get(&item.id).copied()) {
            return c;
        }
        let policy = PinnedPolicy::new(match self.options.normaliser {
            Normaliser::Decomposed => PinnedRoute::Decompose(Vec::new()),
            Normaliser::Direct => PinnedRoute::Direct(self.pool.len().saturating_sub(1)),
        });
        let r = run_item(self.pool, &policy, self.settings, item).await;
        if let Ok(mut m) = self.norm.lock() {
            m.insert(item.id.clone(), r.cost_usd);
        }
        r.cost_usd
    }

    /// The deterministic policy on `items`: (correct, cost, normaliser) per item.
    pub async fn evaluate(&self, net: &Arc<RouterNet>, items: &[Item]) -> Score {
        let policy = LearnedPolicy::checked(
            net.clone(),
            self.features.clone(),
            self.options.threshold,
            self.options.escalation.clone(),
        );
        let policy = policy.as_ref();
        let samples: Vec<(bool, f64, f64)> = stream::iter(items)
            .map(|item| async move {
                let norm = self.all_largest_cost(item).await;
                let r = run_item(self.pool, policy, self.settings, item).await;
                (r.correct && r.error.is_none(), r.cost_usd, norm)
            })
            .buffered(self.settings.concurrency.max(1))
            .collect()
            .await;
        Score::of(&samples, self.options.lambda)
    }

    /// Train `net` in place. `reference` is the frozen SFT policy of the KL term.
    /// Checkpoints go to `<out>.checkpoints/`, the best by dev reward (the latest of equal
    /// ones) to `out`, the log
    /// to `<out>.log.jsonl`; `on_iter` sees each log line.
    pub async fn train(
        &self,
        mut net: RouterNet,
        reference: &RouterNet,
        train: &[Item],
        dev: &[Item],
        out: &Path,
        mut on_iter: impl FnMut(&IterLog),
    ) -> Result<GrpoReport, TrainingError> {
        if train.is_empty() {
            return Err(TrainingError::Invalid(
                "GRPO needs at least one training question".into(),
            ));
        }
        let o = self.options.clone();
        // A router that records its families has now been trained on these questions' too
        // (its evaluation and its checkpoints route them).
        if net.manifest.families.is_some() {
            net.manifest.add_families(train.iter().map(|i| i.family));
        }
        let net = Arc::new(net);
        let mut opt = AdamW::new(
            net.vars(),
            ParamsAdamW {
                lr: o.lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let ckpt_dir = sibling(out, "checkpoints");
        let log_path = sibling(out, "log.jsonl");
        // The initial weights first: saving creates `out`'s directory, where the log goes.
        let mut saved = self.stamped(&net)?;
        saved.save(out)?;
        let mut log_file = std::fs::File::create(&log_path).map_err(|e| TrainingError::Io {
            path: log_path.clone(),
            reason: e.to_string(),
        })?;
        let initial_dev = self.evaluate(&net, dev).await;
        let mut selection = Selection::new(initial_dev);
        let mut order: Vec<usize> = (0..train.len()).collect();
        SplitMix64::new(o.seed).shuffle(&mut order);
        let mut cursor = 0;
        let mut log = Vec::new();
        let mut stopped_early = false;
        for iteration in 1..=o.iterations {
            let want = o.batch.min(train.len()).max(1);
            let mut questions = Vec::new();
            for _ in 0..want {
                let item = &train[order[cursor % order.len()]];
                cursor += 1;
                questions.push((item, cursor));
            }
            let drawn = questions.len();
            let mut informative = 0usize;
            let mut decisions: Vec<(Decision, f64)> = Vec::new();
            let mut samples = Vec::new();
            for group in self.rollouts(&net, iteration, &questions).await {
                let rewards: Vec<f64> = group
                    .iter()
                    .map(|(ok, cost, norm, _)| reward(*ok, *cost, *norm, o.lambda))
                    .collect();
                let adv = group_advantages(&rewards);
                informative += usize::from(adv.iter().any(|a| *a != 0.0));
                for ((ok, cost, norm, ds), a) in group.into_iter().zip(adv) {
                    samples.push((ok, cost, norm));
                    decisions.extend(ds.into_iter().map(|d| (d, a)));
                }
            }
            // Updates.
            let (mut loss_v, mut kl_v) = (0.0, KlParts::default());
            // The route head's entropy before this iteration's update, learning or not.
            let entropy_route = if decisions.is_empty() {
                None
            } else {
                loss(&net, reference, &decisions, &o)?.1.entropy_route
            };
            let learns = decisions.iter().any(|(_, a)| *a != 0.0);
            if learns {
                for _ in 0..o.epochs.max(1) {
                    let (loss, kl) = loss(&net, reference, &decisions, &o)?;
                    loss_v = scalar(&loss)?;
                    kl_v = kl;
                    if !loss_v.is_finite() {
                        return Err(TrainingError::NotFinite {
                            epoch: iteration,
                            last_good: Box::new(saved),
                        });
                    }
                    opt.backward_step(&loss)?;
                }
                if !net.is_finite()? {
                    return Err(TrainingError::NotFinite {
                        epoch: iteration,
                        last_good: Box::new(saved),
                    });
                }
            }
            let dev_score = self.evaluate(&net, dev).await;
            let is_best = selection.offer(iteration, dev_score);
            let ck = self.stamped(&net)?;
            ck.save(&ckpt_dir.join(format!("iter-{iteration:03}.safetensors")))?;
            if is_best {
                ck.save(out)?;
                saved = ck;
            }
            let line = IterLog {
                iteration,
                train: Score::of(&samples, o.lambda),
                dev: dev_score,
                loss: loss_v,
                kl: kl_v.all,
                kl_route: kl_v.route,
                kl_step: kl_v.step,
                entropy_route,
                decisions: decisions.len(),
                route_decisions: decisions.iter().filter(|(d, _)| d.route_head).count(),
                questions: drawn,
                informative,
                best: is_best,
            };
            if let Ok(s) = serde_json::to_string(&line) {
                let _ = writeln!(log_file, "{s}");
            }
            on_iter(&line);
            log.push(line);
            if selection.exhausted(iteration, o.patience) {
                stopped_early = true;
                break;
            }
        }
        Ok(GrpoReport {
            log,
            best_iteration: selection.kept(),
            initial_dev,
            best_dev: selection.kept_score(),
            stopped_early,
        })
    }

    /// Rolls out a group of samples of the current policy on each question, `concurrency`
    /// at a time: per sample (correct, cost, normaliser, decisions), grouped by question.
    /// Each rollout's seed depends only on the iteration, the question's place in the draw
    /// order and the sample's place in its group, so the order they finish in changes
    /// nothing.
    async fn rollouts(
        &self,
        net: &Arc<RouterNet>,
        iteration: usize,
        questions: &[(&Item, usize)],
    ) -> Vec<Vec<(bool, f64, f64, Vec<Decision>)>> {
        let o = &self.options;
        let group_size = o.group.max(2);
        // Each question's normaliser once, before its samples run side by side.
        let norms: Vec<f64> = stream::iter(questions)
            .map(|(item, _)| self.all_largest_cost(item))
            .buffered(self.settings.concurrency.max(1))
            .collect()
            .await;
        let mut jobs = Vec::new();
        for (&(item, at), &norm) in questions.iter().zip(&norms) {
            for g in 0..group_size {
                let seed =
                    SplitMix64::stream(o.seed, &[iteration as u64, at as u64, g as u64]).next_u64();
                jobs.push((item, norm, seed));
            }
        }
        let rollouts: Vec<(bool, f64, f64, Vec<Decision>)> = stream::iter(jobs)
            .map(|(item, norm, seed)| async move {
                let policy = SamplingPolicy {
                    net: net.clone(),
                    features: self.features.clone(),
                    threshold: o.threshold,
                    seed,
                    decisions: Mutex::new(Vec::new()),
                    escalation: o.escalation.clone(),
                };
                let r = run_item(self.pool, &policy, self.settings, item).await;
                let ok = r.correct && r.error.is_none();
                let d = policy.decisions.into_inner().unwrap_or_default();
                (ok, r.cost_usd, norm, d)
            })
            .buffered(self.settings.concurrency.max(1))
            .collect()
            .await;
        let mut groups = Vec::new();
        let mut it = rollouts.into_iter();
        loop {
            let g: Vec<_> = it.by_ref().take(group_size).collect();
            if g.is_empty() {
                break groups;
            }
            groups.push(g);
        }
    }

    /// A snapshot of `net` marked as GRPO-trained, with the check its rollouts ran under.
    fn stamped(&self, net: &RouterNet) -> Result<RouterNet, TrainingError> {
        let mut ck = net.snapshot()?;
        ck.manifest.stage = "grpo".into();
        if let Some(e) = &self.options.escalation {
            ck.manifest
                .notes
                .insert("grpo_escalation".into(), e.suffix().into());
        }
        Ok(ck)
    }
}

/// The loss GRPO minimises, over both heads' decisions: minus the clipped surrogate plus
/// the KL penalty to the reference, averaged over the decisions. The route head's entropy
/// is reported (`KlParts::entropy_route`), not optimised.
/// `grpo_math` has the same terms per decision in plain f64; a test checks they agree.
pub fn loss(
    net: &RouterNet,
    reference: &RouterNet,
    decisions: &[(Decision, f64)],
    o: &GrpoOptions,
) -> Result<(Tensor, KlParts), TrainingError> {
    let mut total: Option<Tensor> = None;
    let mut kl_sum = 0.0;
    let mut parts = KlParts::default();
    let count = decisions.len().max(1) as f64;
    for route_head in [true, false] {
        let ds: Vec<&(Decision, f64)> = decisions
            .iter()
            .filter(|(d, _)| d.route_head == route_head)
            .collect();
        if ds.is_empty() {
            continue;
        }
        let (head, ref_head): (&Mlp, &Mlp) = if route_head {
            (&net.route, &reference.route)
        } else {
            (&net.step, &reference.step)
        };
        let x = to_tensor(
            &ds.iter()
                .map(|(d, _)| d.features.clone())
                .collect::<Vec<_>>(),
        )?;
        let fallback = Fallback::for_head(route_head);
        let logp = stop_log_probs(&head.forward(&x)?, o.threshold, fallback)?;
        let logp_ref = stop_log_probs(&ref_head.forward(&x)?, o.threshold, fallback)?.detach();
        let n = logp.dim(1)?;
        let mask = one_hot(&ds.iter().map(|(d, _)| d.chosen).collect::<Vec<_>>(), n)?;
        let chosen = (&logp * &mask)?.sum(1)?;
        let old = column(&ds.iter().map(|(d, _)| d.logp_old).collect::<Vec<_>>())?;
        let adv = column(&ds.iter().map(|(_, a)| *a).collect::<Vec<_>>())?;
        let ratio = (chosen - old)?.exp()?;
        let surr = (&ratio * &adv)?.minimum(&(ratio.clamp(1.0 - o.clip, 1.0 + o.clip)? * &adv)?)?;
        let p = logp.exp()?;
        let kl = (&p * (&logp - &logp_ref)?)?.sum(1)?;
        let entropy = (&p * &logp)?.sum(1)?.neg()?;
        let head_kl = scalar(&kl.sum_all()?)?;
        kl_sum += head_kl;
        let mean = Some(head_kl / ds.len() as f64);
        if route_head {
            parts.route = mean;
            parts.entropy_route = Some(scalar(&entropy.sum_all()?)? / ds.len() as f64);
        } else {
            parts.step = mean;
        }
        let part = ((kl * o.kl)? - surr)?.sum_all()?;
        total = Some(match total {
            Some(t) => (t + part)?,
            None => part,
        });
    }
    let total = total.ok_or_else(|| TrainingError::Invalid("no decisions to learn from".into()))?;
    parts.all = kl_sum / count;
    Ok(((total / count)?, parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpo_math::{clipped_surrogate, entropy, kl};
    use r2_router::features::HashEncoder;

    /// Dev rewards 0.1 (initial), then 0.2, 0.2, 0.1, 0.2, 0.3 - 1e-12, 0.3: a tie keeps the
    /// later checkpoint; patience counts from the strict improvements (iterations 1 and 5).
    #[test]
    fn ties_keep_the_latest_checkpoint_and_patience_counts_improvements() {
        let score = |reward: f64| Score {
            reward,
            ..Default::default()
        };
        let rewards = [0.2, 0.2, 0.1, 0.2, 0.3 - 1e-12, 0.3];
        let mut sel = Selection::new(score(0.1));
        let kept: Vec<bool> = (1..)
            .zip(rewards)
            .map(|(i, r)| sel.offer(i, score(r)))
            .collect();
        assert_eq!(kept, [true, true, false, true, true, true]);
        assert_eq!(sel.kept(), 6);
        assert_eq!(sel.kept_score().reward, 0.3);
        assert!(!sel.exhausted(6, 2), "improved at 5");
        assert!(sel.exhausted(7, 2));
        // Iteration 0 is a candidate too: a run that never beats it keeps the last equal
        // iteration, and the initial weights when every later one is worse.
        let mut sel = Selection::new(score(0.5));
        assert!(sel.offer(1, score(0.5)));
        assert!(!sel.offer(2, score(0.4)));
        assert_eq!(sel.kept(), 1);
        assert!(sel.exhausted(2, 2));
        let mut sel = Selection::new(score(0.5));
        assert!(!sel.offer(1, score(0.4)));
        assert_eq!(sel.kept(), 0);
    }

    /// The tensor loss is the plain-f64 formulas of `grpo_math`, term by term.
    #[test]
    fn the_loss_is_the_surrogate_and_kl_of_grpo_math_and_reports_the_entropy() {
        let f = Featurizer::new(Arc::new(HashEncoder::new(16)));
        let pool: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let net = RouterNet::new(pool.clone(), f.layout(), 8, 1).unwrap();
        let reference = RouterNet::new(pool, f.layout(), 8, 2).unwrap();
        let mut rng = SplitMix64::new(7);
        let mut decisions = Vec::new();
        for i in 0..12 {
            let route_head = i % 3 != 0;
            let dim = if route_head {
                f.layout().route_dim
            } else {
                f.layout().step_dim
            };
            let features: Vec<f32> = (0..dim).map(|_| rng.unit() as f32 - 0.5).collect();
            let options = if route_head { 4 } else { 3 };
            let d = Decision {
                route_head,
                features,
                chosen: i % options,
                logp_old: -0.3 - rng.unit(),
            };
            decisions.push((d, rng.unit() * 4.0 - 2.0));
        }
        let o = GrpoOptions {
            kl: 0.07,
            clip: 0.2,
            threshold: 0.4,
            ..Default::default()
        };
        let (got, parts) = loss(&net, &reference, &decisions, &o).unwrap();
        let got = scalar(&got).unwrap();
        let logp = |n: &RouterNet, d: &Decision| -> Vec<f64> {
            let head = if d.route_head { &n.route } else { &n.step };
            let x = to_tensor(std::slice::from_ref(&d.features)).unwrap();
            let z = head.forward(&x).unwrap();
            let lp = stop_log_probs(&z, o.threshold, Fallback::for_head(d.route_head)).unwrap();
            lp.to_dtype(candle_core::DType::F64)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap()[0]
                .clone()
        };
        let (mut want, mut route_entropy, mut routes) = (0.0, 0.0, 0.0);
        for (d, a) in &decisions {
            let (p, q) = (logp(&net, d), logp(&reference, d));
            want += o.kl * kl(&p, &q) - clipped_surrogate(p[d.chosen], d.logp_old, *a, o.clip);
            if d.route_head {
                route_entropy += entropy(&p);
                routes += 1.0;
            }
        }
        want /= decisions.len() as f64;
        assert!(
            (got - want).abs() < 1e-4,
            "tensor loss {got}, f64 formulas {want}"
        );
        let e = parts.entropy_route.unwrap();
        assert!(
            (e - route_entropy / routes).abs() < 1e-4,
            "{e} vs {}",
            route_entropy / routes
        );
    }
}
