//! Threshold calibration: run the learned policy at a grid of thresholds on a calibration
//! split and pick the one meeting a cost or accuracy target. Identical calls across
//! thresholds come from the call cache. With an escalation (a `+program`, `+retry`, ...
//! suffix) every threshold is scored with that check on its answers, as the policy will run.
//!
//! Invariant: every threshold runs the same items with the same settings through
//! `run_item`, so the points differ by the threshold alone.

use std::sync::Arc;

use futures::{stream, StreamExt};
use r2_allocator::Escalation;
use r2_bench::run::{run_item, RunSettings};
use r2_bench::Item;
use r2_pool::Pool;
use r2_router::features::Featurizer;
use r2_router::net::RouterNet;
use r2_router::policy::LearnedPolicy;
use serde::Serialize;

pub const GRID: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CalPoint {
    pub threshold: f64,
    pub accuracy: f64,
    /// Mean cost per item (USD) under the pool's price profile.
    pub cost_per_item: f64,
    pub errored: usize,
}

#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// Highest accuracy at a mean cost per item at most this.
    Cost(f64),
    /// Cheapest threshold reaching at least this accuracy (0..=1).
    Accuracy(f64),
}

impl Target {
    /// Exactly one of a cost per item (USD, at least 0) or an accuracy (a fraction in
    /// (0, 1], or a percentage up to 100); None for anything else.
    pub fn new(cost: Option<f64>, accuracy: Option<f64>) -> Option<Target> {
        match (cost, accuracy) {
            (Some(c), None) if c.is_finite() && c >= 0.0 => Some(Target::Cost(c)),
            (None, Some(a)) if a.is_finite() && a > 0.0 && a <= 100.0 => {
                Some(Target::Accuracy(if a > 1.0 { a / 100.0 } else { a }))
            }
            _ => None,
        }
    }
}

/// The router being calibrated and the check its answers get (None: unchecked).
pub struct Calibrated {
    pub net: Arc<RouterNet>,
    pub features: Arc<Featurizer>,
    pub escalation: Option<Escalation>,
}

pub async fn sweep(
    pool: &Pool,
    settings: &RunSettings,
    router: &Calibrated,
    items: &[Item],
    grid: &[f64],
    mut progress: impl FnMut(&CalPoint),
) -> Vec<CalPoint> {
    let mut points = Vec::new();
    for &t in grid {
        let policy = LearnedPolicy::checked(
            router.net.clone(),
            router.features.clone(),
            t,
            router.escalation.clone(),
        );
        let policy = policy.as_ref();
        let results: Vec<_> = stream::iter(items)
            .map(|item| run_item(pool, policy, settings, item))
            .buffered(settings.concurrency.max(1))
            .collect()
            .await;
        let (mut right, mut cost, mut errored) = (0usize, 0.0, 0usize);
        for r in results {
            if r.error.is_some() {
                errored += 1;
            }
            right += usize::from(r.correct && r.error.is_none());
            cost += r.cost_usd;
        }
        let n = items.len().max(1) as f64;
        let p = CalPoint {
            threshold: t,
            accuracy: right as f64 / n,
            cost_per_item: cost / n,
            errored,
        };
        progress(&p);
        points.push(p);
    }
    points
}

/// The point meeting `target`, or None when no threshold does.
pub fn choose(points: &[CalPoint], target: Target) -> Option<CalPoint> {
    match target {
        Target::Cost(max) => points
            .iter()
            .filter(|p| p.cost_per_item <= max)
            .max_by(|a, b| {
                a.accuracy
                    .total_cmp(&b.accuracy)
                    .then(b.cost_per_item.total_cmp(&a.cost_per_item))
            })
            .copied(),
        Target::Accuracy(min) => points
            .iter()
            .filter(|p| p.accuracy >= min)
            .min_by(|a, b| {
                a.cost_per_item
                    .total_cmp(&b.cost_per_item)
                    .then(b.accuracy.total_cmp(&a.accuracy))
            })
            .copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(threshold: f64, accuracy: f64, cost_per_item: f64) -> CalPoint {
        CalPoint {
            threshold,
            accuracy,
            cost_per_item,
            errored: 0,
        }
    }

    #[test]
    fn targets_pick_the_right_threshold() {
        let pts = [p(0.2, 0.3, 1.0), p(0.5, 0.5, 2.0), p(0.8, 0.6, 4.0)];
        assert_eq!(choose(&pts, Target::Cost(2.5)).unwrap().threshold, 0.5);
        assert_eq!(choose(&pts, Target::Accuracy(0.45)).unwrap().threshold, 0.5);
        assert_eq!(choose(&pts, Target::Accuracy(0.6)).unwrap().threshold, 0.8);
        assert!(choose(&pts, Target::Cost(0.5)).is_none());
        assert!(choose(&pts, Target::Accuracy(0.9)).is_none());
    }

    #[test]
    fn a_target_is_one_cost_or_one_accuracy() {
        assert!(matches!(Target::new(Some(0.0), None), Some(Target::Cost(c)) if c == 0.0));
        assert!(matches!(Target::new(None, Some(0.8)), Some(Target::Accuracy(a)) if a == 0.8));
        assert!(matches!(Target::new(None, Some(80.0)), Some(Target::Accuracy(a)) if a == 0.8));
        for (c, a) in [
            (None, None),
            (Some(1.0), Some(0.5)),
            (Some(-1.0), None),
            (Some(f64::NAN), None),
            (None, Some(0.0)),
            (None, Some(101.0)),
        ] {
            assert!(Target::new(c, a).is_none(), "{c:?} {a:?}");
        }
    }
}
