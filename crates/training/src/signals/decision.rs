//! The two-threshold decision: try the small model first when P(right | question) ≥ a; keep
//! its answer when P(right | its signals) ≥ b; else the large model answers. The cheapest
//! (a, b) that keeps accuracy within a tolerance of direct on the large model is chosen per
//! price profile, on out-of-fold probabilities, and measured held out (chosen on one half of
//! the questions, run on the other, both ways).

use r2_pool::PoolConfig;
use r2_signals::{out_of_fold, SignalsError};
use serde::Serialize;

use super::{after_sets, rows, structural, SignalRecord};
use crate::labels::QuestionLabel;
use crate::TrainingError;

/// One labelled question as the two-threshold decision sees it.
#[derive(Debug, Clone)]
pub struct CascadeCase {
    /// Out-of-fold P(the small model answers right), from the question alone.
    pub before: f64,
    /// Out-of-fold P(its answer is right), from the answer's signals.
    pub after: f64,
    pub small_correct: bool,
    pub large_correct: bool,
    /// The small model's answer; the signals the keep decision read; the large model's answer.
    pub small_cost: f64,
    pub signal_cost: f64,
    pub large_cost: f64,
}

/// The outcome of one pair of thresholds over a set of cases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CascadePoint {
    /// Try the small model first when `before ≥ try_at`; keep its answer when `after ≥ keep_at`.
    pub try_at: f64,
    pub keep_at: f64,
    pub accuracy: f64,
    pub cost_per_item: f64,
    /// Share of questions answered by the small model.
    pub kept: f64,
}

/// Runs the decision at (`try_at`, `keep_at`) over `cases`.
pub fn cascade(cases: &[CascadeCase], try_at: f64, keep_at: f64) -> CascadePoint {
    let (mut right, mut cost, mut kept) = (0usize, 0.0, 0usize);
    for c in cases {
        if c.before >= try_at {
            cost += c.small_cost + c.signal_cost;
            if c.after >= keep_at {
                kept += 1;
                right += usize::from(c.small_correct);
                continue;
            }
        }
        cost += c.large_cost;
        right += usize::from(c.large_correct);
    }
    let n = cases.len().max(1) as f64;
    CascadePoint {
        try_at,
        keep_at,
        accuracy: right as f64 / n,
        cost_per_item: cost / n,
        kept: kept as f64 / n,
    }
}

/// Direct on the large model's accuracy over `cases`, less `tolerance`: the target a
/// decision on them must meet.
pub fn target_of(cases: &[CascadeCase], tolerance: f64) -> f64 {
    let right = cases.iter().filter(|c| c.large_correct).count();
    right as f64 / cases.len().max(1) as f64 - tolerance
}

/// The cheapest pair of thresholds (on a 0.05 grid; "never try" included) whose accuracy is
/// at least `min_accuracy`.
pub fn cheapest_cascade(cases: &[CascadeCase], min_accuracy: f64) -> Option<CascadePoint> {
    let grid: Vec<f64> = (0..=20).map(|i| f64::from(i) * 0.05).collect();
    let never = cascade(cases, f64::INFINITY, f64::INFINITY);
    // "Never try" first: among equally cheap points the first is kept, and a pair of
    // thresholds that tries nothing is that point.
    cheapest(
        std::iter::once(never).chain(
            grid.iter()
                .flat_map(|&t| grid.iter().map(move |&k| (t, k)))
                .map(|(t, k)| cascade(cases, t, k)),
        ),
        min_accuracy,
    )
}

/// The cheapest of `points` with accuracy at least `min_accuracy`; among equally cheap ones
/// the most accurate, then the first.
pub fn cheapest(
    points: impl Iterator<Item = CascadePoint>,
    min_accuracy: f64,
) -> Option<CascadePoint> {
    points
        .filter(|p| p.accuracy + 1e-12 >= min_accuracy)
        .min_by(|a, b| {
            a.cost_per_item
                .total_cmp(&b.cost_per_item)
                .then(b.accuracy.total_cmp(&a.accuracy))
        })
}

/// The held-out outcome of a way of choosing thresholds: chosen on one half of `cases`
/// (alternate cases), each half held to its own direct-on-the-large-model accuracy less
/// `tolerance`, and run on the other, both ways, pooled. None when a half has no point
/// meeting its target.
pub fn held_out(
    cases: &[CascadeCase],
    tolerance: f64,
    choose: impl Fn(&[CascadeCase], f64) -> Option<CascadePoint>,
) -> Option<CascadePoint> {
    let half =
        |h: usize| -> Vec<CascadeCase> { cases.iter().skip(h).step_by(2).cloned().collect() };
    let (a, b) = (half(0), half(1));
    let pa = choose(&a, target_of(&a, tolerance))?;
    let pb = choose(&b, target_of(&b, tolerance))?;
    let on_b = cascade(&b, pa.try_at, pa.keep_at);
    let on_a = cascade(&a, pb.try_at, pb.keep_at);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let mix = |x: f64, y: f64| (x * nb + y * na) / (na + nb).max(1.0);
    Some(CascadePoint {
        try_at: f64::NAN,
        keep_at: f64::NAN,
        accuracy: mix(on_b.accuracy, on_a.accuracy),
        cost_per_item: mix(on_b.cost_per_item, on_a.cost_per_item),
        kept: mix(on_b.kept, on_a.kept),
    })
}

/// The two-threshold decision for one price profile, on out-of-fold probabilities.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionReport {
    pub profile: String,
    pub n: usize,
    /// Direct on the largest model: what the decision must match (less `tolerance`).
    pub large_accuracy: f64,
    pub large_cost: f64,
    pub small_accuracy: f64,
    /// The post-hoc direct-answer oracle: the small model where it was right, else the large.
    pub oracle_accuracy: f64,
    pub oracle_cost: f64,
    pub tolerance: f64,
    /// Per set of after-answer signals: the cheapest thresholds meeting the target on all
    /// questions (what would ship), and the held-out outcome — thresholds chosen on one half
    /// of the questions and run on the other, both ways, pooled.
    pub chosen: Vec<(String, Option<CascadePoint>, Option<CascadePoint>)>,
}

/// The costs and outcomes of `small` and `large` answering directly, under `profile`.
fn direct_outcome(
    label: &QuestionLabel,
    model: &str,
    pool: &PoolConfig,
    profile: &str,
) -> Option<(bool, f64)> {
    let t = label.direct(model)?;
    Some((
        t.correct,
        r2_bench::summary::cost_of(&t.usage, pool, profile),
    ))
}

/// Chooses the thresholds of "try `small` first" and "keep its answer" for each profile, on
/// held-out probabilities: before = structural features of the question; after = each
/// named set of answer signals (with the costs of the signals it reads).
pub fn decide(
    labels: &[QuestionLabel],
    signals: &[SignalRecord],
    small: &str,
    large: &str,
    pool: &PoolConfig,
    tolerance: f64,
) -> Result<Vec<DecisionReport>, TrainingError> {
    let rows: Vec<_> = rows(labels, signals, small)
        .into_iter()
        .filter(|(l, _)| l.direct_correct(large).is_some())
        .collect();
    let err = |e: SignalsError| TrainingError::Signals(e.to_string());
    let y: Vec<bool> = rows.iter().map(|(_, r)| r.correct).collect();
    let before_x: Vec<Vec<f64>> = rows.iter().map(|(l, _)| structural(&l.question)).collect();
    let before = out_of_fold(&before_x, &y, 5, 17, 1.0).map_err(err)?;
    let has_program = rows.iter().any(|(_, r)| r.program.is_some());
    let has_judge = rows.iter().any(|(_, r)| r.judge.is_some());
    // A decision is offered only signals every question has.
    let all_checks = rows.iter().all(|(_, r)| r.all_checks());
    let sets: Vec<_> = after_sets(has_program, has_judge)
        .into_iter()
        .filter(|s| s.for_decision && (all_checks || !s.all_checks))
        .collect();
    let profiles: Vec<String> = pool
        .models
        .first()
        .map(|m| m.prices.keys().cloned().collect())
        .unwrap_or_default();
    let mut reports = Vec::new();
    let probs: Vec<(String, Vec<f64>, Vec<&'static str>)> = sets
        .into_iter()
        .map(|set| {
            let x: Vec<Vec<f64>> = rows.iter().map(|(_, r)| (set.features)(r)).collect();
            let p = out_of_fold(&x, &y, 5, 17, 1.0).map_err(err)?;
            Ok((set.name, p, set.costs))
        })
        .collect::<Result<_, TrainingError>>()?;
    for profile in profiles {
        let mut base = Vec::new();
        for (l, _) in &rows {
            let (Some(s), Some(g)) = (
                direct_outcome(l, small, pool, &profile),
                direct_outcome(l, large, pool, &profile),
            ) else {
                continue;
            };
            base.push((s, g));
        }
        let n = base.len().max(1) as f64;
        let large_accuracy = base.iter().filter(|(_, g)| g.0).count() as f64 / n;
        let large_cost = base.iter().map(|(_, g)| g.1).sum::<f64>() / n;
        let small_accuracy = base.iter().filter(|(s, _)| s.0).count() as f64 / n;
        let oracle_accuracy = base.iter().filter(|(s, g)| s.0 || g.0).count() as f64 / n;
        let oracle_cost = base
            .iter()
            .map(|(s, g)| if s.0 { s.1 } else { g.1 })
            .sum::<f64>()
            / n;
        let mut chosen = Vec::new();
        for (name, after, cost_keys) in &probs {
            let cases: Vec<CascadeCase> = rows
                .iter()
                .enumerate()
                .filter_map(|(i, (l, r))| {
                    let s = direct_outcome(l, small, pool, &profile)?;
                    let g = direct_outcome(l, large, pool, &profile)?;
                    let signal_cost = cost_keys
                        .iter()
                        .filter_map(|k| r.usage.get(*k))
                        .map(|u| r2_bench::summary::cost_of(u, pool, &profile))
                        .sum();
                    Some(CascadeCase {
                        before: before[i],
                        after: after[i],
                        small_correct: s.0,
                        large_correct: g.0,
                        small_cost: s.1,
                        signal_cost,
                        large_cost: g.1,
                    })
                })
                .collect();
            let target = large_accuracy - tolerance;
            let held_out = held_out(&cases, tolerance, cheapest_cascade);
            chosen.push((name.clone(), cheapest_cascade(&cases, target), held_out));
        }
        reports.push(DecisionReport {
            profile,
            n: base.len(),
            large_accuracy,
            large_cost,
            small_accuracy,
            oracle_accuracy,
            oracle_cost,
            tolerance,
            chosen,
        });
    }
    Ok(reports)
}

/// The decision reports as Markdown.
pub fn render_decision(small: &str, large: &str, reports: &[DecisionReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let saving = |c: f64| 100.0 * (r.large_cost - c) / r.large_cost.max(f64::MIN_POSITIVE);
        let oracle_saving = r.large_cost - r.oracle_cost;
        out.push_str(&format!(
            "\nDecision under `{}` prices ({} questions): direct {large} {:.1}% at ${:.6}/q; direct {small} {:.1}%; oracle {:.1}% at ${:.6}/q ({:+.1}%). Target: accuracy ≥ {:.1}%.\n\n| after-answer signals | thresholds try / keep | accuracy | cost/q | vs direct {large} | of the oracle's saving | kept from {small} | held-out accuracy | cost/q | vs direct | of the oracle's saving | kept |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            r.profile,
            r.n,
            100.0 * r.large_accuracy,
            r.large_cost,
            100.0 * r.small_accuracy,
            100.0 * r.oracle_accuracy,
            r.oracle_cost,
            -saving(r.oracle_cost),
            100.0 * (r.large_accuracy - r.tolerance),
        ));
        let thresholds = |p: &CascadePoint| {
            if p.try_at.is_finite() {
                format!("{:.2} / {:.2}", p.try_at, p.keep_at)
            } else {
                "never try".to_string()
            }
        };
        let cells = |p: &CascadePoint| {
            format!(
                "{:.1}% | ${:.6} | {:+.1}% | {:.0}% | {:.0}%",
                100.0 * p.accuracy,
                p.cost_per_item,
                -saving(p.cost_per_item),
                if oracle_saving > 0.0 {
                    100.0 * (r.large_cost - p.cost_per_item) / oracle_saving
                } else {
                    0.0
                },
                100.0 * p.kept,
            )
        };
        for (name, all, held) in &r.chosen {
            let dash = "– | – | – | – | –".to_string();
            out.push_str(&format!(
                "| {name} | {} | {} | {} |\n",
                all.as_ref().map_or("–".into(), thresholds),
                all.as_ref().map_or(dash.clone(), cells),
                held.as_ref().map_or(dash, cells),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(after: f64, small_correct: bool) -> CascadeCase {
        CascadeCase {
            before: 0.5,
            after,
            small_correct,
            large_correct: true,
            small_cost: 0.0,
            signal_cost: 0.1,
            large_cost: 1.0,
        }
    }

    #[test]
    fn the_decision_keeps_what_the_signal_says_is_right_and_no_more() {
        // The small model is right exactly where the after-signal is high.
        let cases: Vec<CascadeCase> = (0..40)
            .map(|i| case(if i % 4 == 0 { 0.9 } else { 0.2 }, i % 4 == 0))
            .collect();
        let p = cheapest_cascade(&cases, 1.0).expect("a point meets the target");
        assert_eq!(p.accuracy, 1.0);
        assert!((p.kept - 0.25).abs() < 1e-12, "{p:?}");
        // Trying costs 0.1 each; keeping a quarter saves 0.25: 1.0 - 0.25 + 0.1.
        assert!((p.cost_per_item - 0.85).abs() < 1e-12, "{p:?}");
        // A signal that says nothing: never trying is the cheapest way to stay accurate.
        let blind: Vec<CascadeCase> = (0..40).map(|i| case(0.5, i % 4 == 0)).collect();
        let p = cheapest_cascade(&blind, 1.0).unwrap();
        assert_eq!((p.kept, p.cost_per_item), (0.0, 1.0), "{p:?}");
        assert!(p.try_at.is_infinite(), "shown as never trying: {p:?}");
        // With a point to give up, the blind decision still may not keep wrong answers.
        assert!(cheapest_cascade(&blind, 0.99).unwrap().kept == 0.0);
    }
}
