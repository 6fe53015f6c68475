//! What a GRPO run needs around the training loop ([`crate::grpo::Grpo::train`]): its
//! options checked, the dev split, the curves it plots and the note its manifest keeps.
//!
//! Invariants: a bad `--escalate` suffix fails before anything loads; the dev set is the
//! selection's last items and leaves at least one training question; the manifest's note
//! records the options the run actually used (after [`GrpoOptions::checked`]).

use std::path::Path;

use r2_allocator::Escalation;
use r2_bench::plot::Series;
use r2_bench::Item;
use r2_router::net::RouterNet;
use serde::Serialize;

use crate::grpo::{GrpoOptions, GrpoReport, IterLog};
use crate::TrainingError;

/// The check a policy suffix names (`+retry`, `+program:all+retry`, ...), for rollouts and
/// dev evaluation: exactly what `learned<suffix>` would carry, and nothing but a suffix.
pub fn escalation(suffix: &str) -> Result<Escalation, TrainingError> {
    let named = format!("learned{}", suffix.trim());
    match Escalation::split(&named) {
        Ok(("learned", Some(e))) => Ok(e),
        Ok(_) => Err(TrainingError::Invalid(format!(
            "--escalate takes a policy suffix such as +retry or +program:all+retry, not '{suffix}'"
        ))),
        Err(e) => Err(TrainingError::Invalid(e.to_string())),
    }
}

impl GrpoOptions {
    /// The options with their lower bounds applied: a group of at least two (a group of one
    /// has no advantage), at least one question per batch and one iteration of patience.
    pub fn checked(self) -> Self {
        Self {
            group: self.group.max(2),
            batch: self.batch.max(1),
            patience: self.patience.max(1),
            ..self
        }
    }
}

/// Training and dev questions: the last `dev` items (at most all but one) are the dev set.
pub fn split_dev(items: &[Item], dev: usize) -> Result<(&[Item], &[Item]), TrainingError> {
    let n = items.len();
    let dev = dev.min(n.saturating_sub(1));
    if n - dev == 0 {
        return Err(TrainingError::Invalid(
            "GRPO needs at least one training question besides the dev set".into(),
        ));
    }
    Ok(items.split_at(n - dev))
}

/// The curves of a run: train points score each iteration's batch of rollouts; dev points
/// score the deterministic policy, starting from the initial one at iteration 0.
pub fn curves(report: &GrpoReport) -> Vec<Series> {
    let series = |name: &str, initial: Option<f64>, f: &dyn Fn(&IterLog) -> f64| -> Series {
        let start = initial.map(|v| (0.0, v));
        (
            name.to_string(),
            start
                .into_iter()
                .chain(report.log.iter().map(|l| (l.iteration as f64, f(l))))
                .collect(),
        )
    };
    let d0 = &report.initial_dev;
    vec![
        series("train reward (batch)", None, &|l| l.train.reward),
        series("dev reward", Some(d0.reward), &|l| l.dev.reward),
        series("train accuracy (batch)", None, &|l| l.train.accuracy),
        series("dev accuracy", Some(d0.accuracy), &|l| l.dev.accuracy),
        series("train relative cost (batch)", None, &|l| {
            l.train.relative_cost
        }),
        series("dev relative cost", Some(d0.relative_cost), &|l| {
            l.dev.relative_cost
        }),
    ]
}

/// [`curves`] drawn to `path` (PNG).
pub fn plot(report: &GrpoReport, path: &Path) -> Result<(), String> {
    r2_bench::plot::curves(path, "GRPO", "iteration", &curves(report))
}

/// Where a run's questions came from, as its manifest records them.
#[derive(Debug, Clone, Serialize)]
pub struct DataNote {
    /// The dataset name, or the file's path.
    pub data: String,
    pub split: Option<String>,
    pub offset: usize,
    pub limit: Option<usize>,
    pub shuffle: Option<u64>,
}

/// Record in `out`'s manifest (`notes.grpo`) how the saved weights were refined: the data,
/// the split sizes, the options and the run's outcome.
pub fn note(
    out: &Path,
    data: &DataNote,
    (train, dev): (usize, usize),
    options: &GrpoOptions,
    report: &GrpoReport,
) -> Result<(), TrainingError> {
    let mut best = RouterNet::load(out)?;
    best.manifest.notes.insert(
        "grpo".into(),
        serde_json::json!({
            "data": data.data,
            "split": data.split,
            "offset": data.offset,
            "limit": data.limit,
            "shuffle": data.shuffle,
            "train_questions": train,
            "dev_questions": dev,
            "group": options.group,
            "batch": options.batch,
            "lambda": options.lambda,
            "lr": options.lr,
            "kl": options.kl,
            "seed": options.seed,
            "normaliser": options.normaliser.name(),
            "iterations_run": report.log.len(),
            "best_iteration": report.best_iteration,
            "initial_dev": report.initial_dev,
            "best_dev": report.best_dev,
        }),
    );
    Ok(best.save(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalate_takes_a_suffix_and_nothing_else() {
        let e = escalation("+program:all+retry").unwrap();
        assert!(e.program && e.retries > 0, "{e:?}");
        for bad in ["", "learned", ":x", "+agree:0"] {
            assert!(escalation(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_dev_split_leaves_a_training_question() {
        let items: Vec<Item> = (0..3)
            .map(|i| Item {
                id: format!("q{i}"),
                question: format!("question {i}"),
                family: r2_decomposer::TaskFamily::Math,
                gold: r2_bench::Gold::Number("1".into()),
                reference: None,
                meta: Default::default(),
            })
            .collect();
        let (train, dev) = split_dev(&items, 10).unwrap();
        assert_eq!((train.len(), dev.len()), (1, 2));
        let (train, dev) = split_dev(&items, 1).unwrap();
        assert_eq!((train.len(), dev.len()), (2, 1));
        assert_eq!(dev[0].id, "q2");
        assert!(split_dev(&[], 0).is_err());
    }
}
