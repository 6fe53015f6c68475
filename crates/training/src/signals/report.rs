//! Held-out scores of each signal: out-of-fold logistic probabilities (5 folds), their
//! ROC-AUC and Brier score, and the mean extra cost per question of reading the signal.

use std::collections::BTreeMap;
use std::sync::Arc;

use r2_pool::PoolConfig;
use r2_router::features::Encoder;
use r2_signals::{brier, out_of_fold, roc_auc, SignalsError};
use serde::Serialize;

use super::{after_sets, rows, structural, SignalRecord};
use crate::labels::QuestionLabel;
use crate::TrainingError;

/// One row of the report: a signal (or a combination) and how well it predicts.
#[derive(Debug, Clone, Serialize)]
pub struct SignalScore {
    pub stage: &'static str,
    pub signal: String,
    pub n: usize,
    pub auc: f64,
    /// Of the out-of-fold logistic probability (None for a raw score that is no probability).
    pub brier: Option<f64>,
    /// Mean extra cost per question (USD) under each price profile.
    pub cost: BTreeMap<String, f64>,
}

/// Held-out AUC and Brier of a feature set: out-of-fold logistic probabilities.
fn score_features(x: &[Vec<f64>], y: &[bool], seed: u64) -> Result<(f64, f64), SignalsError> {
    let p = out_of_fold(x, y, 5, seed, 1.0)?;
    Ok((roc_auc(&p, y)?, brier(&p, y)?))
}

/// What the report compares: named encoders of the question for the "before" signals.
pub struct ReportInputs<'a> {
    pub labels: &'a [QuestionLabel],
    pub signals: &'a [SignalRecord],
    pub model: &'a str,
    pub encoders: &'a [(String, Arc<dyn Encoder>)],
    pub pool: &'a PoolConfig,
}

/// Scores every signal for `model` on the questions that have both a label and a record.
pub fn report(inputs: &ReportInputs<'_>) -> Result<Vec<SignalScore>, TrainingError> {
    let rows = rows(inputs.labels, inputs.signals, inputs.model);
    if rows.is_empty() {
        return Err(TrainingError::Signals(format!(
            "no question has both a label and signals for {}",
            inputs.model
        )));
    }
    let y: Vec<bool> = rows.iter().map(|(_, r)| r.correct).collect();
    let n = rows.len();
    let profiles: Vec<String> = inputs
        .pool
        .models
        .first()
        .map(|m| m.prices.keys().cloned().collect())
        .unwrap_or_default();
    let cost_of = |signals: &[&str], picked: &[bool]| -> BTreeMap<String, f64> {
        let count = picked.iter().filter(|&&p| p).count().max(1);
        profiles
            .iter()
            .map(|profile| {
                let total: f64 = rows
                    .iter()
                    .zip(picked)
                    .filter(|(_, &p)| p)
                    .flat_map(|((_, r), _)| signals.iter().filter_map(|s| r.usage.get(*s)))
                    .map(|u| r2_bench::summary::cost_of(u, inputs.pool, profile))
                    .sum();
                // `+ 0.0`: an empty sum is -0.0.
                (profile.clone(), total / count as f64 + 0.0)
            })
            .collect()
    };
    let err = |e: SignalsError| TrainingError::Signals(e.to_string());
    let mut out = Vec::new();
    // `picked` marks the questions a signal is scored on (all, or those collected with every
    // check); `x` has one row per picked question.
    let mut push = |stage: &'static str,
                    signal: String,
                    picked: &[bool],
                    x: Vec<Vec<f64>>,
                    cost: BTreeMap<String, f64>|
     -> Result<(), TrainingError> {
        let y: Vec<bool> = y
            .iter()
            .zip(picked)
            .filter(|(_, &p)| p)
            .map(|(&y, _)| y)
            .collect();
        let (auc, b) = score_features(&x, &y, 17).map_err(err)?;
        out.push(SignalScore {
            stage,
            signal,
            n: y.len(),
            auc,
            brier: Some(b),
            cost,
        });
        Ok(())
    };
    let every = vec![true; n];
    let free = || cost_of(&[], &every);

    // Before the answer: the question alone.
    let structure: Vec<Vec<f64>> = rows.iter().map(|(l, _)| structural(&l.question)).collect();
    push(
        "before",
        "length (characters)".into(),
        &every,
        structure.iter().map(|s| vec![s[0]]).collect(),
        free(),
    )?;
    push(
        "before",
        "structural".into(),
        &every,
        structure.clone(),
        free(),
    )?;
    let questions: Vec<&str> = rows.iter().map(|(l, _)| l.question.as_str()).collect();
    for (name, encoder) in inputs.encoders {
        let emb = encoder
            .encode(&questions)
            .map_err(|e| TrainingError::Signals(e.to_string()))?;
        let x: Vec<Vec<f64>> = emb
            .iter()
            .map(|v| v.iter().map(|&f| f64::from(f)).collect())
            .collect();
        push("before", name.clone(), &every, x.clone(), free())?;
        let both: Vec<Vec<f64>> = x
            .iter()
            .zip(&structure)
            .map(|(a, b)| a.iter().chain(b).copied().collect())
            .collect();
        push(
            "before",
            format!("{name} + structural"),
            &every,
            both,
            free(),
        )?;
    }

    // After the answer: its confidence and checks, alone and together. Signals read only
    // with every check are scored on the questions collected that way, when there are
    // enough of them.
    let full: Vec<bool> = rows.iter().map(|(_, r)| r.all_checks()).collect();
    let has_program = rows.iter().any(|(_, r)| r.program.is_some());
    let has_judge = rows.iter().any(|(_, r)| r.judge.is_some());
    for set in after_sets(has_program, has_judge) {
        let picked = if set.all_checks { &full } else { &every };
        let x = rows
            .iter()
            .zip(picked)
            .filter(|(_, &p)| p)
            .map(|((_, r), _)| (set.features)(r))
            .collect();
        let cost = cost_of(&set.costs, picked);
        match push("after", set.name, picked, x, cost) {
            // Too few fully checked questions to score a signal only they carry.
            Err(_) if set.all_checks => {}
            r => r?,
        }
    }
    Ok(out)
}

/// The report as a Markdown table.
pub fn render(model: &str, scores: &[SignalScore], positives: usize) -> String {
    let profiles: Vec<&String> = scores
        .first()
        .map(|s| s.cost.keys().collect())
        .unwrap_or_default();
    let mut out = format!(
        "Signals for \"{model} answers right\" ({} questions, {positives} right; held-out: 5-fold logistic regression; n: the questions a signal was read on)\n\n| stage | signal | n | AUC | Brier |",
        scores.first().map_or(0, |s| s.n)
    );
    for p in &profiles {
        out.push_str(&format!(" extra cost/question ({p}) |"));
    }
    out.push_str("\n|---|---|---|---|---|");
    for _ in &profiles {
        out.push_str("---|");
    }
    out.push('\n');
    for s in scores {
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {} |",
            s.stage,
            s.signal,
            s.n,
            s.auc,
            s.brier.map_or("–".to_string(), |b| format!("{b:.3}"))
        ));
        for p in &profiles {
            out.push_str(&format!(
                " ${:.7} |",
                s.cost.get(*p).copied().unwrap_or(0.0)
            ));
        }
        out.push('\n');
    }
    out
}
