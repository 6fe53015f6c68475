//! Fitting the keep decision `+keep` applies ([`r2_signals::KeepModel`]): one logistic
//! regression over the signals the executor reads at run time (the answer's token
//! probabilities and, for maths, its greedy program and, when that does not confirm the
//! answer, up to 2 sampled ones), and the cheapest pair of thresholds —
//! try the small model when the router's route head predicts it right with probability ≥
//! *a* (`learned+keep`; *a* = 0 tries it on every question), keep its answer when P(right)
//! ≥ *b* — that keeps accuracy within a tolerance of direct on the largest model under one
//! price profile.
//!
//! The threshold is chosen on out-of-fold probabilities (each question scored by a model
//! fitted without it); the held-out figure chooses it on one half of the questions and runs
//! it on the other, both ways. The shipped model is then fitted on every question.

use std::collections::BTreeMap;

use r2_pool::PoolConfig;
use r2_signals::{out_of_fold, KeepFeature, KeepModel, Logistic, Observed, ProgramOutcome};
use serde::Serialize;

use super::decision::{cascade, cheapest, held_out, CascadeCase, CascadePoint};
use super::{rows, SignalRecord};
use crate::labels::QuestionLabel;
use crate::TrainingError;

/// What the executor observes of a recorded answer.
pub fn observed(r: &SignalRecord) -> Observed {
    Observed {
        confidence: r.confidence,
        least_confidence: r.min_confidence,
        program: r
            .program
            .as_ref()
            .filter(|p| p.plain)
            .map(|p| ProgramOutcome {
                confirms: p.greedy,
                uses_all: p.greedy_uses_all,
                sampled_confirms: !p.greedy && p.sampled_confirming > 0,
            }),
    }
}

/// A fitted keep decision and how it does on the questions it was fitted on.
#[derive(Debug, Clone, Serialize)]
pub struct KeepFit {
    pub model: KeepModel,
    pub profile: String,
    pub n: usize,
    pub large_accuracy: f64,
    pub large_cost: f64,
    pub oracle_cost: f64,
    /// With the threshold chosen on out-of-fold probabilities of every question.
    pub chosen: CascadePoint,
    /// Chosen on one half, run on the other (both ways, pooled); None when a half has no
    /// threshold meeting the target.
    pub held_out: Option<CascadePoint>,
}

/// The cheapest pair of thresholds (try 0 to 1 by 0.05, keep 0 to 1 by 0.01) meeting
/// `min_accuracy`; among equally cheap pairs, the most accurate, then the lowest try
/// threshold.
pub fn cheapest_keep(cases: &[CascadeCase], min_accuracy: f64) -> Option<CascadePoint> {
    cheapest(
        (0..=20)
            .flat_map(|t| (0..=100).map(move |k| (f64::from(t) / 20.0, f64::from(k) / 100.0)))
            .map(|(t, k)| cascade(cases, t, k)),
        min_accuracy,
    )
}

/// What a keep decision is fitted on and for.
pub struct FitInputs<'a> {
    pub labels: &'a [QuestionLabel],
    pub signals: &'a [SignalRecord],
    /// The model whose answers it decides, and the one its doubtful answers go to.
    pub small: &'a str,
    pub large: &'a str,
    pub pool: &'a PoolConfig,
    /// The price profile its thresholds are the cheapest under.
    pub profile: &'a str,
    /// Accuracy it may give up against direct on `large` (0.01 = one point).
    pub tolerance: f64,
    /// The route head's P(`small` answers right) per question id; without it (or for a
    /// question it lacks) the small model is always tried.
    pub before: Option<&'a BTreeMap<String, f64>>,
}

/// Fits the keep decision for `small`'s answers (escalating to `large`) under `profile`.
pub fn fit_keep(inputs: &FitInputs<'_>) -> Result<KeepFit, TrainingError> {
    let &FitInputs {
        labels,
        signals,
        small,
        large,
        pool,
        profile,
        tolerance,
        before,
    } = inputs;
    let fail = |why: String| TrainingError::Signals(format!("keep decision for {small}: {why}"));
    let rows: Vec<_> = rows(labels, signals, small)
        .into_iter()
        .filter(|(l, _)| l.direct(large).is_some())
        .collect();
    let features = if rows.iter().any(|(_, r)| r.program.is_some()) {
        vec![
            KeepFeature::Confidence,
            KeepFeature::LeastConfidence,
            KeepFeature::Program,
            KeepFeature::ProgramUsesAll,
            KeepFeature::Confirmed,
        ]
    } else {
        vec![KeepFeature::Confidence, KeepFeature::LeastConfidence]
    };
    let mut x = Vec::new();
    let mut cases = Vec::new();
    for (l, r) in &rows {
        // An answer without token probabilities cannot be scored at run time either.
        let Ok(row) = KeepModel::row(&features, &observed(r)) else {
            continue;
        };
        let (Some(s), Some(g)) = (l.direct(small), l.direct(large)) else {
            continue;
        };
        let cost = |u| r2_bench::summary::cost_of(u, pool, profile);
        x.push(row);
        cases.push(CascadeCase {
            before: before.and_then(|b| b.get(&l.id)).copied().unwrap_or(1.0),
            after: 0.0,
            small_correct: r.correct,
            large_correct: g.correct,
            small_cost: cost(&s.usage),
            signal_cost: ["program", "retry"]
                .iter()
                .filter_map(|k| r.usage.get(*k))
                .map(cost)
                .sum(),
            large_cost: cost(&g.usage),
        });
    }
    let y: Vec<bool> = cases.iter().map(|c| c.small_correct).collect();
    let err = |e: r2_signals::SignalsError| fail(e.to_string());
    let oof = out_of_fold(&x, &y, 5, 17, 1.0).map_err(err)?;
    for (c, p) in cases.iter_mut().zip(oof) {
        c.after = p;
    }
    let n = cases.len();
    let mean = |f: &dyn Fn(&CascadeCase) -> f64| cases.iter().map(f).sum::<f64>() / n as f64;
    let large_accuracy = mean(&|c| f64::from(u8::from(c.large_correct)));
    let large_cost = mean(&|c| c.large_cost);
    let oracle_cost = mean(&|c| {
        if c.small_correct {
            c.small_cost
        } else {
            c.large_cost
        }
    });
    let target = large_accuracy - tolerance;
    let chosen = cheapest_keep(&cases, target).ok_or_else(|| {
        fail(format!(
            "no threshold keeps accuracy at {:.1}% or more on these {n} questions",
            100.0 * target
        ))
    })?;
    let held_out = held_out(&cases, tolerance, cheapest_keep);
    let model = KeepModel {
        model: small.to_string(),
        features,
        logistic: Logistic::fit(&x, &y, 1.0).map_err(err)?,
        threshold: chosen.keep_at,
    };
    Ok(KeepFit {
        model,
        profile: profile.to_string(),
        n,
        large_accuracy,
        large_cost,
        oracle_cost,
        chosen,
        held_out,
    })
}

/// The fit as a short Markdown table.
pub fn render_fit(small: &str, large: &str, fit: &KeepFit) -> String {
    let saving = |c: f64| 100.0 * (fit.large_cost - c) / fit.large_cost.max(f64::MIN_POSITIVE);
    let of_oracle = |c: f64| {
        let o = fit.large_cost - fit.oracle_cost;
        if o > 0.0 {
            100.0 * (fit.large_cost - c) / o
        } else {
            0.0
        }
    };
    let cells = |p: &CascadePoint| {
        format!(
            "{:.1}% | {:+.1}% | {:.0}% | {:.0}%",
            100.0 * p.accuracy,
            -saving(p.cost_per_item),
            of_oracle(p.cost_per_item),
            100.0 * p.kept
        )
    };
    format!(
        "\n`+keep` for {small} under `{}` prices ({} questions; {large} direct {:.1}%; oracle saving {:.1}%): try it when the route head's P(right) ≥ {:.2}, keep its answer when P(right) ≥ {:.2}\n\n| | accuracy | cost vs direct {large} | of the oracle's saving | kept from {small} |\n|---|---|---|---|---|\n| threshold chosen on all (out-of-fold) | {} |\n| held out (half/half) | {} |\n",
        fit.profile,
        fit.n,
        100.0 * fit.large_accuracy,
        saving(fit.oracle_cost),
        fit.chosen.try_at,
        fit.model.threshold,
        cells(&fit.chosen),
        fit.held_out
            .as_ref()
            .map_or("– | – | – | –".to_string(), cells),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(after: f64, small_correct: bool) -> CascadeCase {
        CascadeCase {
            before: 1.0,
            after,
            small_correct,
            large_correct: true,
            small_cost: 0.0,
            signal_cost: 0.1,
            large_cost: 1.0,
        }
    }

    #[test]
    fn the_cheapest_keep_threshold_meets_the_target() {
        // Right answers score 0.8, wrong ones 0.3: keeping above 0.3 loses nothing.
        let cases: Vec<CascadeCase> = (0..20)
            .map(|i| case(if i % 2 == 0 { 0.8 } else { 0.3 }, i % 2 == 0))
            .collect();
        let p = cheapest_keep(&cases, 1.0).unwrap();
        assert!(p.keep_at > 0.3 && p.keep_at <= 0.8, "{p:?}");
        assert_eq!(p.accuracy, 1.0);
        assert_eq!(p.kept, 0.5);
        // A target nothing meets.
        let wrong: Vec<CascadeCase> = (0..4)
            .map(|_| CascadeCase {
                large_correct: false,
                ..case(0.5, false)
            })
            .collect();
        assert!(cheapest_keep(&wrong, 0.5).is_none());
    }

    #[test]
    fn a_route_head_that_knows_saves_the_tries_it_skips() {
        // The small model is right on the questions the route head scores 0.9 and wrong on
        // those it scores 0.2, and its answers' signals say nothing (0.5): trying only above
        // 0.2 spares the wasted tries.
        let cases: Vec<CascadeCase> = (0..20)
            .map(|i| CascadeCase {
                before: if i % 2 == 0 { 0.9 } else { 0.2 },
                small_cost: 0.2,
                ..case(0.5, i % 2 == 0)
            })
            .collect();
        let p = cheapest_keep(&cases, 1.0).unwrap();
        assert!(p.try_at > 0.2 && p.try_at <= 0.9, "{p:?}");
        assert!(p.keep_at <= 0.5, "{p:?}");
        assert_eq!((p.accuracy, p.kept), (1.0, 0.5));
    }
}
