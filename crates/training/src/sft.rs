//! Supervised fine-tuning of the allocator on labels: the step head learns, per pool
//! model, whether a step run on it keeps the answer right; the route head learns whether
//! each direct answer and the decomposed plan answer correctly.
//!
//! Invariants: the held-out split is a seeded hash of each question's id, so it does not
//! depend on file order; initialisation and shuffles are seeded; a non-finite loss or
//! weight stops training with the last good weights ([`TrainingError::NotFinite`]); the
//! manifest records the labels' families and the measured route order (`decompose_at`).

use std::path::{Path, PathBuf};

use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use r2_router::choice::{first_clearing, sigmoid, Fallback};
use r2_router::features::Featurizer;
use r2_router::net::{to_tensor, Manifest, RouteCandidate, RouterNet};
use serde::Serialize;

use crate::labels::QuestionLabel;
use crate::tensor::{masked_bce, scalar};
use crate::TrainingError;

#[derive(Debug, Clone)]
pub struct SftOptions {
    pub seed: u64,
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub hidden: usize,
    /// Share of questions held out for metrics (chosen by a seeded hash of the id).
    pub holdout: f64,
    pub threshold: f64,
    /// Where decomposing sits among the route candidates (None: before direct on the
    /// largest model); [`crate::labels::decompose_position`] measures it.
    pub decompose_at: Option<usize>,
}

impl Default for SftOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            epochs: 300,
            lr: 3e-3,
            weight_decay: 1e-4,
            hidden: 64,
            holdout: 0.2,
            threshold: 0.5,
            decompose_at: None,
        }
    }
}

/// Feature rows with per-output targets and masks.
#[derive(Debug, Default, Clone)]
pub struct Examples {
    pub x: Vec<Vec<f32>>,
    pub y: Vec<Vec<f32>>,
    pub mask: Vec<Vec<f32>>,
    /// Step examples: the labelled model index (None = no allocation succeeded).
    pub label: Vec<Option<usize>>,
}

impl Examples {
    fn push(&mut self, x: Vec<f32>, y: Vec<f32>, mask: Vec<f32>, label: Option<usize>) {
        self.x.push(x);
        self.y.push(y);
        self.mask.push(mask);
        self.label.push(label);
    }
}

/// Step examples: a step labelled `ℓ` succeeds on every model `m ≥ ℓ` (the pool is ordered
/// by strength); a step of a question no allocation answered fails on all.
pub fn step_examples(
    labels: &[QuestionLabel],
    pool: &[String],
    f: &Featurizer,
) -> Result<Examples, TrainingError> {
    let mut ex = Examples::default();
    let n = pool.len();
    for q in labels {
        for s in &q.steps {
            let label = s
                .label
                .as_ref()
                .and_then(|l| pool.iter().position(|p| p == l));
            let y = (0..n)
                .map(|m| f32::from(u8::from(label.is_some_and(|l| m >= l))))
                .collect();
            ex.push(
                f.step_features(&q.question, q.family, &s.info)?,
                y,
                vec![1.0; n],
                label,
            );
        }
    }
    Ok(ex)
}

/// Route examples: one per question, targets in `candidates` order (the route head's,
/// [`RouterNet::route_candidates`]); a route that was not tried is masked out.
pub fn route_examples(
    labels: &[QuestionLabel],
    pool: &[String],
    candidates: &[RouteCandidate],
    f: &Featurizer,
) -> Result<Examples, TrainingError> {
    let mut ex = Examples::default();
    for q in labels {
        let mut y = Vec::new();
        let mut mask = Vec::new();
        for &c in candidates {
            let v = match c {
                RouteCandidate::Direct(m) => q.direct_correct(&pool[m]),
                RouteCandidate::Decompose => q
                    .tried
                    .iter()
                    .any(|t| matches!(t.route, crate::labels::RouteLabel::Decompose { .. }))
                    .then(|| q.decomposed_success()),
            };
            y.push(f32::from(u8::from(v == Some(true))));
            mask.push(f32::from(u8::from(v.is_some())));
        }
        ex.push(f.route_features(&q.question, q.family)?, y, mask, None);
    }
    Ok(ex)
}

/// Held-out metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SftMetrics {
    pub train_questions: usize,
    pub heldout_questions: usize,
    pub train_steps: usize,
    pub heldout_steps: usize,
    /// Held-out steps with a label whose chosen model equals the label.
    pub step_accuracy: Option<f64>,
    /// Mean squared error of the predicted success probabilities (steps, all models).
    pub step_brier: Option<f64>,
    /// rows: label (pool models, then "none"), columns: chosen model.
    pub confusion: Vec<Vec<usize>>,
    pub route_brier: Option<f64>,
    pub final_train_loss: f64,
}

fn split(labels: &[QuestionLabel], opts: &SftOptions) -> (Vec<QuestionLabel>, Vec<QuestionLabel>) {
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for q in labels {
        let h =
            r2_router::rng::SplitMix64::stream(opts.seed, &[r2_router::rng::fnv1a(&q.id)]).unit();
        if h < opts.holdout {
            held.push(q.clone());
        } else {
            train.push(q.clone());
        }
    }
    // Too few questions to hold any out: train on all, report no held-out metrics.
    if train.is_empty() {
        std::mem::swap(&mut train, &mut held);
    }
    (train, held)
}

/// Train a fresh network on `labels`. On NaN the last good weights are kept and an error
/// returned with them (the caller saves them).
pub fn train_sft(
    labels: &[QuestionLabel],
    pool: &[String],
    f: &Featurizer,
    opts: &SftOptions,
) -> Result<(RouterNet, SftMetrics), TrainingError> {
    if labels.is_empty() {
        return Err(TrainingError::Invalid(
            "the labels file has no usable questions".into(),
        ));
    }
    let (train, held) = split(labels, opts);
    let mut net = RouterNet::new(pool.to_vec(), f.layout(), opts.hidden, opts.seed)?;
    net.manifest.threshold = opts.threshold;
    net.manifest.stage = "sft".into();
    net.manifest.decompose_at = opts.decompose_at;
    net.manifest.add_families(train.iter().map(|q| q.family));
    let steps = step_examples(&train, pool, f)?;
    let routes = route_examples(&train, pool, &net.route_candidates(), f)?;
    let tensors = |e: &Examples| -> Result<Option<[candle_core::Tensor; 3]>, TrainingError> {
        if e.x.is_empty() {
            return Ok(None);
        }
        Ok(Some([
            to_tensor(&e.x)?,
            to_tensor(&e.y)?,
            to_tensor(&e.mask)?,
        ]))
    };
    let (st, rt) = (tensors(&steps)?, tensors(&routes)?);
    let mut opt = AdamW::new(
        net.vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let mut good = net.snapshot()?;
    let mut last = f64::NAN;
    for epoch in 0..opts.epochs {
        let mut loss: Option<candle_core::Tensor> = None;
        if let Some([x, y, m]) = &st {
            loss = Some(masked_bce(&net.step.forward(x)?, y, m)?);
        }
        if let Some([x, y, m]) = &rt {
            let l = masked_bce(&net.route.forward(x)?, y, m)?;
            loss = Some(match loss {
                Some(s) => (s + l)?,
                None => l,
            });
        }
        let Some(loss) = loss else { break };
        let value = scalar(&loss)?;
        if !value.is_finite() {
            return Err(TrainingError::NotFinite {
                epoch,
                last_good: Box::new(good),
            });
        }
        last = value;
        opt.backward_step(&loss)?;
        if !net.is_finite()? {
            return Err(TrainingError::NotFinite {
                epoch,
                last_good: Box::new(good),
            });
        }
        if epoch % 10 == 9 {
            good = net.snapshot()?;
        }
    }
    let mut metrics = evaluate(&net, &held, pool, f, opts.threshold)?;
    metrics.train_questions = train.len();
    metrics.train_steps = steps.x.len();
    metrics.final_train_loss = last;
    Ok((net, metrics))
}

/// Step accuracy against the label, Brier scores and the confusion matrix on `labels`.
pub fn evaluate(
    net: &RouterNet,
    labels: &[QuestionLabel],
    pool: &[String],
    f: &Featurizer,
    threshold: f64,
) -> Result<SftMetrics, TrainingError> {
    let n = pool.len();
    let steps = step_examples(labels, pool, f)?;
    let routes = route_examples(labels, pool, &net.route_candidates(), f)?;
    let mut m = SftMetrics {
        heldout_questions: labels.len(),
        heldout_steps: steps.x.len(),
        confusion: vec![vec![0; n]; n + 1],
        ..Default::default()
    };
    let brier = |z: &[Vec<f64>], e: &Examples| -> Option<f64> {
        let (mut sum, mut count) = (0.0, 0.0);
        for (row, (y, mask)) in z.iter().zip(e.y.iter().zip(&e.mask)) {
            for k in 0..row.len() {
                if mask[k] > 0.0 {
                    sum += (sigmoid(row[k]) - y[k] as f64).powi(2);
                    count += 1.0;
                }
            }
        }
        (count > 0.0).then(|| sum / count)
    };
    let z = net.step_logits(&steps.x)?;
    m.step_brier = brier(&z, &steps);
    let (mut right, mut labelled) = (0usize, 0usize);
    for (row, label) in z.iter().zip(&steps.label) {
        let chosen = first_clearing(row, threshold, Fallback::Last);
        m.confusion[label.unwrap_or(n)][chosen] += 1;
        if let Some(l) = label {
            labelled += 1;
            right += usize::from(chosen == *l);
        }
    }
    m.step_accuracy = (labelled > 0).then(|| right as f64 / labelled as f64);
    m.route_brier = brier(&net.route_logits(&routes.x)?, &routes);
    Ok(m)
}

/// The held-out metrics as text (printed by `train sft`).
pub fn report(m: &SftMetrics, pool: &[String]) -> String {
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{:.1}%", 100.0 * x));
    let num = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.4}"));
    let mut s = format!(
        "trained on {} questions ({} steps); held out {} questions ({} steps)\n\
         held-out step accuracy (chosen model = label): {}\n\
         held-out Brier score: steps {}, routes {}\n\
         final training loss: {:.4}\n",
        m.train_questions,
        m.train_steps,
        m.heldout_questions,
        m.heldout_steps,
        pct(m.step_accuracy),
        num(m.step_brier),
        num(m.route_brier),
        m.final_train_loss
    );
    s.push_str("confusion (rows: label, columns: chosen)\n");
    s.push_str(&format!("{:>22}", ""));
    for p in pool {
        s.push_str(&format!(" {p:>20}"));
    }
    s.push('\n');
    for (r, row) in m.confusion.iter().enumerate() {
        let name = pool.get(r).map(String::as_str).unwrap_or("none succeeded");
        s.push_str(&format!("{name:>22}"));
        for c in row {
            s.push_str(&format!(" {c:>20}"));
        }
        s.push('\n');
    }
    s
}

/// Save a network, recording the metrics in its manifest.
pub fn save_with_metrics(
    net: &mut RouterNet,
    metrics: &SftMetrics,
    path: &Path,
) -> Result<(), TrainingError> {
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(metrics) {
        net.manifest
            .notes
            .insert("sft_metrics".into(), serde_json::Value::Object(map));
    }
    Ok(net.save(path)?)
}

/// Record in the manifest what the weights were trained on: the labels' file names (names
/// only: manifests get committed and shared), how many questions, the seed, and the price
/// profile the route order (`decompose_at`) was measured under.
pub fn note_run(
    manifest: &mut Manifest,
    labels: &[PathBuf],
    questions: usize,
    seed: u64,
    price_profile: &str,
) {
    let names: Vec<String> = labels
        .iter()
        .map(|p| {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let notes = &mut manifest.notes;
    notes.insert("questions".into(), serde_json::json!(questions));
    notes.insert("labels".into(), serde_json::json!(names));
    notes.insert("seed".into(), serde_json::json!(seed));
    notes.insert("price_profile".into(), serde_json::json!(price_profile));
}

/// The route head's candidates, cheapest first, as `direct:<model id>` and `decompose`.
pub fn route_order(net: &RouterNet, pool: &[String]) -> Vec<String> {
    net.route_candidates()
        .iter()
        .map(|c| match c {
            RouteCandidate::Direct(m) => format!("direct:{}", pool[*m]),
            RouteCandidate::Decompose => "decompose".into(),
        })
        .collect()
}
