//! Running one policy over a list of items: bounded concurrency, per-item JSONL written as
//! items finish (so an interrupted run resumes where it stopped), model failures recorded
//! per item instead of aborting the run.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use r2_allocator::Policy;
use r2_executor::{Answer, ExecOptions, Executor, StepTrace};
use r2_pool::{ChatMessage, GenRequest, Pool};
use serde::{Deserialize, Serialize};

use crate::datasets::{Gold, Item};
use crate::grade::{grade_with, ExecLimits};

/// Tokens and calls of one model within one item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelUsage {
    pub calls: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A judge's verdict on a free-form answer (CHAMP), kept apart from the policy's cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub model: String,
    pub verdict: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// One line of `items.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    pub id: String,
    pub policy: String,
    pub gold: Gold,
    /// The executor's extracted answer.
    pub answer: String,
    /// What the grader extracted from the final output.
    pub prediction: String,
    pub correct: bool,
    pub grade_method: String,
    pub grade_detail: String,
    /// Cost under the price profile the run was started with.
    pub cost_usd: f64,
    pub usage: BTreeMap<String, ModelUsage>,
    /// Wall time of the item, queueing for a model slot included.
    pub latency_ms: f64,
    pub decomposition_failed: bool,
    pub warnings: Vec<String>,
    pub steps: Vec<StepTrace>,
    pub judge: Option<Judgement>,
    /// Set when a model call failed: the item counts as errored, not as wrong.
    pub error: Option<String>,
}

pub struct RunSettings {
    pub out_dir: PathBuf,
    pub concurrency: usize,
    pub exec: ExecOptions,
    pub decomposer: usize,
    /// The model that judges free-form answers the graders cannot decide.
    pub judge: usize,
    pub limits: ExecLimits,
}

/// A policy name made safe as a directory name (`fixed:qwen2.5-coder-0.5b` → `fixed_qwen2.5-coder-0.5b`).
pub fn slug(policy: &str) -> String {
    policy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn items_path(out_dir: &Path, policy: &str) -> PathBuf {
    out_dir.join(slug(policy)).join("items.jsonl")
}

/// Results already on disk for `policy`. Unreadable lines (a run killed mid-write) are skipped.
pub fn read_results(path: &Path) -> Vec<ItemResult> {
    let Ok(lines) = r2_files::lines(path, r2_files::limits::DATA, r2_files::limits::LINE) else {
        return Vec::new();
    };
    // A read error ends the lines (and so the loop).
    lines
        .filter_map(Result::ok)
        .filter_map(|(_, l)| serde_json::from_str::<ItemResult>(&l).ok())
        .collect()
}

/// The decomposer's output was unusable and the plan fell back to answering directly.
pub fn decomposition_failed(answer: &Answer) -> bool {
    answer
        .warnings
        .iter()
        .any(|w| w.ends_with("answering the question directly"))
}

pub fn usage_of(steps: &[StepTrace]) -> BTreeMap<String, ModelUsage> {
    let mut usage: BTreeMap<String, ModelUsage> = BTreeMap::new();
    for s in steps {
        let u = usage.entry(s.model.clone()).or_default();
        u.calls += 1;
        u.input_tokens += s.input_tokens as u64;
        u.output_tokens += s.output_tokens as u64;
    }
    usage
}

fn judge_request(question: &str, gold: &str, answer: &str) -> GenRequest {
    let system =
        "You check whether a student's final answer means the same as the reference answer. \
                  Reply with exactly one word: yes or no.";
    let user = format!("Problem: {question}\n\nReference answer: {gold}\n\nStudent's final answer: {answer}\n\nSame answer?");
    GenRequest::new(
        vec![ChatMessage::system(system), ChatMessage::user(user)],
        4,
    )
}

pub async fn run_item(
    pool: &Pool,
    policy: &dyn Policy,
    settings: &RunSettings,
    item: &Item,
) -> ItemResult {
    let start = Instant::now();
    let executor = Executor::new(pool, settings.exec.clone());
    // `direct:` policies route to a direct answer inside `run`, so one call serves all.
    let outcome = executor
        .run(&item.question, item.family, policy, settings.decomposer)
        .await;
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    let mut result = ItemResult {
        id: item.id.clone(),
        policy: policy.name(),
        gold: item.gold.clone(),
        answer: String::new(),
        prediction: String::new(),
        correct: false,
        grade_method: String::new(),
        grade_detail: String::new(),
        cost_usd: 0.0,
        usage: BTreeMap::new(),
        latency_ms,
        decomposition_failed: false,
        warnings: Vec::new(),
        steps: Vec::new(),
        judge: None,
        error: None,
    };
    let answer = match outcome {
        Ok(a) => a,
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    let final_output = answer
        .steps
        .last()
        .map(|s| s.output.clone())
        .unwrap_or_default();
    let (gold, limits) = (item.gold.clone(), settings.limits.clone());
    let text = final_output.clone();
    let grade = tokio::task::spawn_blocking(move || grade_with(&gold, &text, &limits)).await;
    let grade = match grade {
        Ok(g) => g,
        Err(e) => {
            result.error = Some(format!("grader failed: {e}"));
            return result;
        }
    };
    result.correct = grade.correct;
    result.prediction = grade.extracted.clone();
    result.grade_method = grade.method.to_string();
    result.grade_detail = grade.detail.clone();
    if grade.needs_judge() {
        if let Gold::Champ(gold) = &item.gold {
            let req = judge_request(&item.question, gold, &grade.extracted);
            match pool
                .call(settings.judge, &req, settings.exec.step_timeout)
                .await
            {
                Ok(call) => {
                    let verdict = call.response.text.trim().to_ascii_lowercase();
                    result.correct = verdict.starts_with("yes");
                    result.grade_method = format!("judge:{}", pool.id(settings.judge));
                    result.judge = Some(Judgement {
                        model: pool.id(settings.judge).to_string(),
                        verdict,
                        input_tokens: call.response.input_tokens,
                        output_tokens: call.response.output_tokens,
                    });
                }
                Err(e) => result.error = Some(format!("judge failed: {e}")),
            }
        }
    }
    result.answer = answer.answer.clone();
    result.cost_usd = answer.total_cost_usd;
    result.usage = usage_of(&answer.steps);
    result.decomposition_failed = decomposition_failed(&answer);
    result.warnings = answer.warnings;
    result.steps = answer.steps;
    result
}

/// Progress callback: (finished, total, correct so far, cost so far).
pub type Progress<'a> = &'a (dyn Fn(usize, usize, usize, f64) + Sync);

/// Run `policy` on `items`, skipping those already finished in `out_dir` (errored ones are
/// retried). Returns every result for these items, old and new, in item order.
pub async fn run_policy(
    pool: &Pool,
    policy: &dyn Policy,
    items: &[Item],
    settings: &RunSettings,
    progress: Progress<'_>,
) -> std::io::Result<Vec<ItemResult>> {
    let path = items_path(&settings.out_dir, &policy.name());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let previous = read_results(&path);
    let done: HashSet<String> = previous
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.id.clone())
        .collect();
    let todo: Vec<&Item> = items.iter().filter(|i| !done.contains(&i.id)).collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    // A run killed mid-line left a partial record: end it, so the next record starts clean.
    if !r2_files::ends_with_newline(&path)? {
        file.write_all(b"\n")?;
    }
    let writer = Mutex::new(std::io::BufWriter::new(file));
    let tally = Mutex::new((
        items.len() - todo.len(),
        previous
            .iter()
            .filter(|r| r.error.is_none() && r.correct)
            .count(),
        previous
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.cost_usd)
            .sum::<f64>(),
    ));
    progress(
        tally.lock().map(|t| t.0).unwrap_or(0),
        items.len(),
        tally.lock().map(|t| t.1).unwrap_or(0),
        tally.lock().map(|t| t.2).unwrap_or(0.0),
    );

    let fresh: Vec<ItemResult> = stream::iter(todo)
        .map(|item| async {
            let r = run_item(pool, policy, settings, item).await;
            if let Ok(mut w) = writer.lock() {
                if let Ok(line) = serde_json::to_string(&r) {
                    // One line per item, flushed at once: a killed run loses at most the items in flight.
                    let _ = writeln!(w, "{line}").and_then(|_| w.flush());
                }
            }
            if let Ok(mut t) = tally.lock() {
                t.0 += 1;
                t.1 += usize::from(r.correct && r.error.is_none());
                t.2 += r.cost_usd;
                progress(t.0, items.len(), t.1, t.2);
            }
            r
        })
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;

    // Latest result per id wins (a retried error is replaced by its rerun).
    let mut by_id: BTreeMap<String, ItemResult> = BTreeMap::new();
    for r in previous.into_iter().chain(fresh) {
        by_id.insert(r.id.clone(), r);
    }
    Ok(items.iter().filter_map(|i| by_id.remove(&i.id)).collect())
}
