//! The labels file (`train label` writes it; SFT, the oracle and GRPO's normaliser read
//! it): one JSON object per question.
//!
//! Invariants: a label is appended as one write of its line and newline, then flushed, so a
//! killed run leaves at most a partial last line; reading is bounded (`r2-files`), skips
//! malformed lines (keeping the first few) and refuses a model id the pool lacks; usage is
//! kept as tokens, so any price profile recomputes a route's cost; a written label reads
//! back equal.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use r2_bench::run::ModelUsage;
use r2_decomposer::TaskFamily;
use r2_pool::PoolConfig;
use r2_router::features::StepInfo;
use serde::{Deserialize, Serialize};

use crate::TrainingError;

/// A route as stored: answer directly with one model, or decompose and run step `i`
/// (plan order, then the synthesis step) on `allocation[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouteLabel {
    Direct { model: String },
    Decompose { allocation: Vec<String> },
}

/// One executed route and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriedRoute {
    pub route: RouteLabel,
    pub correct: bool,
    /// Tokens per model, so cost can be recomputed under any price profile.
    pub usage: BTreeMap<String, ModelUsage>,
    pub error: Option<String>,
    /// The answer the grader read (the signals "after the answer" are read off it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The confidence (geometric-mean token probability) of the call whose answer stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

impl TriedRoute {
    /// What this route cost under `pool`'s active price profile.
    pub fn cost(&self, pool: &PoolConfig) -> f64 {
        r2_bench::summary::cost_of(&self.usage, pool, &pool.price_profile)
    }
}

/// One step of the decomposed plan and its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLabel {
    #[serde(flatten)]
    pub info: StepInfo,
    /// The cheapest model (pool id) that kept the answer right in the cheapest allocation
    /// found; `None` when no allocation answered correctly.
    pub label: Option<String>,
    /// Whether any allocation of this plan answered correctly.
    pub success: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionLabel {
    pub id: String,
    pub question: String,
    pub family: TaskFamily,
    /// Pool model ids, cheapest first, when the labels were made.
    pub pool: Vec<String>,
    /// The decomposed plan's steps (empty when the decomposer gave a one-step plan, which
    /// is answered like a direct route).
    pub steps: Vec<StepLabel>,
    /// Every route executed for this question, direct ones first.
    pub tried: Vec<TriedRoute>,
    /// Decomposed executions the search spent (cache hits included).
    pub executions: usize,
}

impl QuestionLabel {
    /// The direct answer of `model`, when it was tried and did not fail.
    pub fn direct(&self, model: &str) -> Option<&TriedRoute> {
        self.tried.iter().find(|t| {
            matches!(&t.route, RouteLabel::Direct { model: m } if m == model) && t.error.is_none()
        })
    }

    /// Whether direct on `model` answered correctly (None: not tried).
    pub fn direct_correct(&self, model: &str) -> Option<bool> {
        self.direct(model).map(|t| t.correct)
    }

    /// Whether any decomposed allocation answered correctly.
    pub fn decomposed_success(&self) -> bool {
        self.tried
            .iter()
            .any(|t| matches!(t.route, RouteLabel::Decompose { .. }) && t.correct)
    }

    /// The cheapest correct route under `pool`'s active price profile (ties: fewer
    /// tokens), or None when nothing answered correctly. This is the oracle.
    pub fn cheapest_correct(&self, pool: &PoolConfig) -> Option<&TriedRoute> {
        let key = |t: &TriedRoute| {
            let cost = t.cost(pool);
            let tokens: u64 = t
                .usage
                .values()
                .map(|u| u.input_tokens + u.output_tokens)
                .sum();
            (cost, tokens)
        };
        self.tried
            .iter()
            .filter(|t| t.correct && t.error.is_none())
            .min_by(|a, b| {
                key(a)
                    .partial_cmp(&key(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
    }
}

/// Where decomposing belongs among the direct answers, cheapest first: the number of pool
/// models whose direct answer costs less on average (over the questions where it was tried)
/// than the cheapest correct decomposed allocation (averaged over the questions that have
/// one), under `pool`'s active price profile. That is what a decomposed route costs when
/// the step head allocates perfectly, so it is a lower bound of its cost. With no correct
/// decomposition in the labels, decomposing goes last.
pub fn decompose_position(labels: &[QuestionLabel], pool: &PoolConfig) -> usize {
    let cost = |t: &TriedRoute| t.cost(pool);
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let ids = pool.ids();
    let decomposed: Vec<f64> = labels
        .iter()
        .filter_map(|q| {
            q.tried
                .iter()
                .filter(|t| {
                    matches!(t.route, RouteLabel::Decompose { .. })
                        && t.correct
                        && t.error.is_none()
                })
                .map(cost)
                .min_by(f64::total_cmp)
        })
        .collect();
    let Some(decomposed) = mean(&decomposed) else {
        return ids.len();
    };
    ids.iter()
        .filter(|id| {
            let direct: Vec<f64> = labels
                .iter()
                .flat_map(|q| &q.tried)
                .filter(|t| {
                    matches!(&t.route, RouteLabel::Direct { model } if model == *id)
                        && t.error.is_none()
                })
                .map(cost)
                .collect();
            mean(&direct).is_some_and(|d| d < decomposed)
        })
        .count()
}

/// A labels file, read against a pool.
#[derive(Debug, Default)]
pub struct LabelSet {
    pub questions: Vec<QuestionLabel>,
    /// Lines that could not be read (the first few, and how many); they are skipped.
    pub malformed: r2_files::Malformed,
}

/// Read a labels file: a regular file, streamed line by line (bounded per line; a read
/// error ends the read and is an error). Malformed lines are skipped and reported with
/// their line numbers; a model id the pool does not have is an error (the labels belong
/// to another pool).
pub fn read_labels(path: &Path, pool: &[String]) -> Result<LabelSet, TrainingError> {
    let lines = r2_files::lines(path, r2_files::limits::DATA, r2_files::limits::LINE)?;
    parse_labels(lines, path, pool)
}

/// Labels from lines (of a file or any reader, e.g. [`r2_files::Lines::new`] over bytes).
pub fn parse_labels<R: std::io::Read>(
    lines: r2_files::Lines<R>,
    path: &Path,
    pool: &[String],
) -> Result<LabelSet, TrainingError> {
    let mut set = LabelSet {
        questions: Vec::new(),
        malformed: r2_files::Malformed::new(r2_files::MALFORMED_KEPT),
    };
    for line in lines {
        let (n, line) = match line {
            Ok(l) => l,
            Err(e) if e.is_line_error() => {
                set.malformed.push(e.line().unwrap_or(0), e.to_string());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if line.trim().is_empty() {
            continue;
        }
        let q: QuestionLabel = match serde_json::from_str(&line) {
            Ok(q) => q,
            Err(e) => {
                set.malformed.push(n, e.to_string());
                continue;
            }
        };
        let known = |id: &str| pool.iter().any(|p| p == id);
        let mut ids: Vec<&str> = q.steps.iter().filter_map(|s| s.label.as_deref()).collect();
        for t in &q.tried {
            match &t.route {
                RouteLabel::Direct { model } => ids.push(model),
                RouteLabel::Decompose { allocation } => {
                    ids.extend(allocation.iter().map(|s| s.as_str()))
                }
            }
        }
        if let Some(bad) = ids.into_iter().find(|id| !known(id)) {
            return Err(TrainingError::Labels {
                path: path.to_path_buf(),
                line: n,
                reason: format!(
                    "model '{bad}' is not in the pool ({}); these labels were made for another pool",
                    pool.join(", ")
                ),
            });
        }
        set.questions.push(q);
    }
    Ok(set)
}

/// Append one question's labels (one line, flushed).
pub fn append_label(file: &mut impl Write, q: &QuestionLabel) -> Result<(), TrainingError> {
    let mut line = serde_json::to_string(q).map_err(|e| TrainingError::Invalid(e.to_string()))?;
    line.push('\n');
    // One write for the record and its newline, so a kill cannot fall between them.
    file.write_all(line.as_bytes())
        .and_then(|_| file.flush())
        .map_err(|e| TrainingError::Invalid(format!("cannot write labels: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tried(route: RouteLabel, correct: bool, model: &str, tokens: u64) -> TriedRoute {
        let usage = BTreeMap::from([(
            model.to_string(),
            ModelUsage {
                calls: 1,
                input_tokens: tokens,
                output_tokens: tokens,
            },
        )]);
        TriedRoute {
            route,
            correct,
            usage,
            error: None,
            answer: None,
            confidence: None,
        }
    }

    fn question(pool: &[&str], decomposed: Vec<TriedRoute>) -> QuestionLabel {
        let mut t: Vec<TriedRoute> = pool
            .iter()
            .map(|m| {
                let direct = RouteLabel::Direct {
                    model: m.to_string(),
                };
                tried(direct, false, m, 200)
            })
            .collect();
        t.extend(decomposed);
        QuestionLabel {
            id: "q".into(),
            question: "q".into(),
            family: TaskFamily::Math,
            pool: pool.iter().map(|m| m.to_string()).collect(),
            steps: vec![],
            tried: t,
            executions: 1,
        }
    }

    #[test]
    fn decomposing_is_placed_by_its_measured_cost() {
        let cfg = PoolConfig::embedded();
        let ids = cfg.ids();
        let (small, large) = (ids[0], ids[ids.len() - 1]);
        let decompose = |m: &str| RouteLabel::Decompose {
            allocation: vec![m.to_string()],
        };
        // Correct decompositions that cost more than every direct answer: last.
        let dear = question(&ids, vec![tried(decompose(large), true, large, 2000)]);
        assert_eq!(decompose_position(&[dear], &cfg), ids.len());
        // A question's cheapest correct allocation is what counts: this one is cheaper than
        // every direct answer, so decomposing comes first.
        let cheap = question(
            &ids,
            vec![
                tried(decompose(large), true, large, 2000),
                tried(decompose(small), true, small, 100),
            ],
        );
        assert_eq!(decompose_position(&[cheap], &cfg), 0);
        // On the same small model with more tokens than a direct answer: after it.
        let mid = question(&ids, vec![tried(decompose(small), true, small, 400)]);
        assert_eq!(decompose_position(&[mid], &cfg), 1);
        // No correct decomposition at all: last, whatever it cost.
        let failed = question(&ids, vec![tried(decompose(small), false, small, 10)]);
        assert_eq!(decompose_position(&[failed], &cfg), ids.len());
        assert_eq!(decompose_position(&[], &cfg), ids.len());
    }
}
