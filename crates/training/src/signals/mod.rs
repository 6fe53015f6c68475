//! `train signals`: what the router can know about whether a pool model will answer a
//! question right — before it answers (the question's text) and after (its answer's
//! confidence and checks) — collected per labelled question and scored by held-out ROC-AUC
//! and Brier score, each with what it costs per question.
//!
//! Invariants: every signal is read off the same calls the executor makes at run time (the
//! direct answer, its program and its samples use the executor's own requests, so the call
//! cache answers them once for labels, signals and benchmarks alike); a record is appended
//! as one line and flushed, so a killed run resumes where it stopped; the label ("was the
//! answer right") comes from the labels file, never from a signal.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use r2_allocator::Escalation;
use r2_bench::run::{ModelUsage, RunSettings};
use r2_decomposer::TaskFamily;
use r2_executor::answer::{final_answer, is_plain_number, same_answer, same_value};
use r2_executor::program::{evaluate, unused_quantities, ProgramError};
use r2_executor::prompts;
use r2_pool::{ChatMessage, FinishReason, GenRequest, Pool, PoolCall, Sampling};
use serde::{Deserialize, Serialize};

use crate::labels::QuestionLabel;
use crate::TrainingError;

pub mod decision;
pub mod fit;
pub mod report;

/// Sampled answers compared with the kept one (`+agree:2`).
pub const SAMPLES: usize = 2;
/// Sampled programs after the greedy one (`+retry:2`), as `+keep` writes them.
pub use r2_signals::keep::RETRIES;

/// The judge's question, after the question and the solution under check.
pub const JUDGE_QUESTION: &str = "Check the student's solution step by step. Is the student's final answer correct? Reply with one word: Yes or No.";

/// The program check of one maths answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramSignal {
    /// The answer is a plain number (no program can confirm `3/4 cups`).
    pub plain: bool,
    /// The greedy program computes the answer's value.
    pub greedy: bool,
    /// ... and uses every quantity of the question (`+program:all`).
    pub greedy_uses_all: bool,
    /// Of `sampled` programs (`+retry`), how many compute the answer's value.
    pub sampled_confirming: u32,
    pub sampled: u32,
}

/// A larger model's verdict on the answer: the probability it gives "Yes".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeSignal {
    pub model: String,
    /// `Some(true)` the verdict token was Yes, `Some(false)` No, `None` something else.
    pub verdict: Option<bool>,
    /// P(Yes), read from the verdict token's probability (`1 - p` when it said No; 0.5 when
    /// it said neither).
    pub p_yes: f64,
}

/// The signals of one model's direct answer to one labelled question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalRecord {
    pub id: String,
    pub model: String,
    /// From the labels: the model's direct answer was graded right.
    pub correct: bool,
    pub answer: String,
    /// Geometric-mean and least token probability of the answer.
    pub confidence: Option<f64>,
    pub min_confidence: Option<f64>,
    /// Maths only.
    pub program: Option<ProgramSignal>,
    /// Share of [`SAMPLES`] sampled answers equal to the answer (collected with every check
    /// only, like the sampled programs and the judge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agree: Option<f64>,
    /// None for the largest model (nothing above it to judge).
    pub judge: Option<JudgeSignal>,
    /// Tokens per signal (`answer`, `program`, `retry`, `agree`, `judge`), per model.
    pub usage: BTreeMap<String, BTreeMap<String, ModelUsage>>,
}

fn add_usage(
    usage: &mut BTreeMap<String, BTreeMap<String, ModelUsage>>,
    signal: &str,
    pool: &Pool,
    call: &PoolCall,
) {
    let u = usage
        .entry(signal.to_string())
        .or_default()
        .entry(pool.id(call.model).to_string())
        .or_default();
    u.calls += 1;
    u.input_tokens += u64::from(call.response.input_tokens);
    u.output_tokens += u64::from(call.response.output_tokens);
}

/// The message a judge reads: the problem, the solution as a student's, then
/// [`JUDGE_QUESTION`]. Shown as the judge's own assistant turn instead (which would let an
/// escalated answer reuse the judge's KV prefix), the solution was approved every time: on 20
/// GSM8K questions the 1.5b's P(yes) had a held-out AUC of 0.43 that way, 0.72 this way
/// (docs/experiments/2026-12-08-signals.md).
pub fn judge_messages(question: &str, solution: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::user(format!(
        "Problem:\n{}\n\nA student's solution:\n{}\n\n{JUDGE_QUESTION}",
        question.trim(),
        solution.trim()
    ))]
}

/// Reads the verdict off a one-token reply.
pub fn verdict(call: &PoolCall) -> JudgeSignal {
    let word = call.response.text.trim().to_ascii_lowercase();
    let verdict = if word.starts_with("yes") {
        Some(true)
    } else if word.starts_with("no") {
        Some(false)
    } else {
        None
    };
    let p = call
        .response
        .token_logprobs
        .as_ref()
        .and_then(|l| l.first())
        .map(|&l| f64::from(l).exp().clamp(0.0, 1.0));
    let p_yes = match (verdict, p) {
        (Some(true), Some(p)) => p,
        (Some(false), Some(p)) => 1.0 - p,
        (Some(true), None) => 1.0,
        (Some(false), None) => 0.0,
        (None, _) => 0.5,
    };
    JudgeSignal {
        model: String::new(),
        verdict,
        p_yes,
    }
}

/// Which signals [`collect`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// What the `+keep` decision reads: token probabilities, the greedy program and, when
    /// it does not confirm the answer, up to [`RETRIES`] sampled programs until one does
    /// (as `+retry:2`).
    Keep,
    /// Also every sampled program, [`SAMPLES`] sampled answers and the next model's verdict.
    All,
}

/// Collects the signals of `model`'s direct answer to `label`'s question; None when the
/// labels have no direct answer of that model, or when the answer regenerated now is not
/// the one the labels graded.
pub async fn collect(
    pool: &Pool,
    settings: &RunSettings,
    label: &QuestionLabel,
    model: usize,
    checks: Checks,
) -> Result<Option<SignalRecord>, TrainingError> {
    let id = pool.id(model).to_string();
    let Some(correct) = label.direct_correct(&id) else {
        return Ok(None);
    };
    let call = |m: usize, request: GenRequest| async move {
        pool.call(m, &request, settings.exec.step_timeout)
            .await
            .map_err(|e| TrainingError::Signals(format!("{}: {e}", label.id)))
    };
    let family = label.family;
    let question = label.question.as_str();
    let max_tokens = settings.exec.answer_max_tokens;
    let mut usage = BTreeMap::new();
    let mut direct = GenRequest::new(prompts::direct(family, question), max_tokens);
    direct.sampling = settings.exec.sampling;
    let answered = call(model, direct.clone()).await?;
    add_usage(&mut usage, "answer", pool, &answered);
    let answer = final_answer(family, &answered.response.text);
    // The label graded the answer it recorded: a regenerated answer that differs (greedy
    // decoding in a batch is not bit-reproducible across machines) has no grade here.
    let labelled = label.direct(&id).and_then(|t| t.answer.as_deref());
    if labelled.is_some_and(|l| !same_answer(family, l, &answer)) {
        return Ok(None);
    }
    let min_confidence = answered.response.least_confidence();

    let program = if family == TaskFamily::Math {
        let plain = is_plain_number(&answer);
        let mut signal = ProgramSignal {
            plain,
            greedy: false,
            greedy_uses_all: false,
            sampled_confirming: 0,
            sampled: 0,
        };
        if plain {
            for k in 0..=RETRIES {
                let mut asked = direct.clone();
                asked.messages = prompts::program(question);
                if k > 0 {
                    asked.sampling = Sampling::Temperature {
                        temperature: Escalation::TEMPERATURE,
                        seed: k as u64,
                    };
                }
                let c = call(model, asked).await?;
                add_usage(
                    &mut usage,
                    if k == 0 { "program" } else { "retry" },
                    pool,
                    &c,
                );
                let computed = match c.response.finish {
                    FinishReason::Length => Err(ProgramError::CutOff),
                    _ => evaluate(&c.response.text),
                };
                let confirms = computed
                    .as_ref()
                    .is_ok_and(|v| same_value(&answer, v.value));
                if k == 0 {
                    signal.greedy = confirms;
                    signal.greedy_uses_all = confirms
                        && computed
                            .as_ref()
                            .is_ok_and(|v| unused_quantities(question, &v.inputs).is_empty());
                } else {
                    signal.sampled += 1;
                    signal.sampled_confirming += u32::from(confirms);
                }
                if checks == Checks::Keep && confirms {
                    break;
                }
            }
        }
        Some(signal)
    } else {
        None
    };

    let mut record = SignalRecord {
        id: label.id.clone(),
        model: id,
        correct,
        answer,
        confidence: answered.response.confidence(),
        min_confidence,
        program,
        agree: None,
        judge: None,
        usage,
    };
    if checks == Checks::Keep {
        return Ok(Some(record));
    }
    let mut agreeing = 0;
    for k in 1..=SAMPLES {
        let mut again = direct.clone();
        again.sampling = Sampling::Temperature {
            temperature: Escalation::TEMPERATURE,
            seed: k as u64,
        };
        let c = call(model, again).await?;
        add_usage(&mut record.usage, "agree", pool, &c);
        agreeing += usize::from(same_answer(
            family,
            &final_answer(family, &c.response.text),
            &record.answer,
        ));
    }

    let judge = if model + 1 < pool.len() {
        let mut asked = GenRequest::new(judge_messages(question, &answered.response.text), 1);
        asked.sampling = Sampling::Greedy;
        let c = call(model + 1, asked).await?;
        add_usage(&mut record.usage, "judge", pool, &c);
        let mut j = verdict(&c);
        j.model = pool.id(model + 1).to_string();
        Some(j)
    } else {
        None
    };

    record.agree = Some(agreeing as f64 / SAMPLES as f64);
    record.judge = judge;
    Ok(Some(record))
}

/// Appends one record as one line and flushes it.
pub fn append(out: &mut std::fs::File, record: &SignalRecord) -> Result<(), TrainingError> {
    let mut line = serde_json::to_string(record)
        .map_err(|e| TrainingError::Signals(format!("cannot serialise a record: {e}")))?;
    line.push('\n');
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| TrainingError::Signals(format!("cannot write the signals file: {e}")))
}

/// The records of a signals file (bounded, streamed line by line). Malformed lines — a
/// killed run's partial last line — are skipped and returned with their line numbers.
pub fn read(path: &Path) -> Result<(Vec<SignalRecord>, r2_files::Malformed), TrainingError> {
    let mut malformed = r2_files::Malformed::new(r2_files::MALFORMED_KEPT);
    let mut records = Vec::new();
    for line in r2_files::lines(path, r2_files::limits::DATA, r2_files::limits::LINE)? {
        let (n, text) = match line {
            Ok(l) => l,
            Err(e) if e.is_line_error() => {
                malformed.push(e.line().unwrap_or(0), e.to_string());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<SignalRecord>(&text) {
            Ok(r) => records.push(r),
            Err(e) => malformed.push(n, e.to_string()),
        }
    }
    Ok((records, malformed))
}

/// Structural features of a question: log length in characters and words, the count of
/// numbers, of sentences, and of digits in its longest number.
pub fn structural(question: &str) -> Vec<f64> {
    let words = question.split_whitespace().count();
    let mut numbers = 0usize;
    let mut longest = 0usize;
    for token in question.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',')) {
        let digits = token.chars().filter(char::is_ascii_digit).count();
        if digits > 0 {
            numbers += 1;
            longest = longest.max(digits);
        }
    }
    let sentences = question
        .split(['.', '?', '!'])
        .filter(|s| s.split_whitespace().count() >= 2)
        .count();
    vec![
        (question.len() as f64 + 1.0).ln(),
        (words as f64 + 1.0).ln(),
        numbers as f64,
        sentences as f64,
        longest as f64,
    ]
}

/// Mean and least token probability of the answer (0 when the backend gives none).
fn confidence(r: &SignalRecord) -> Vec<f64> {
    vec![r.confidence.unwrap_or(0.0), r.min_confidence.unwrap_or(0.0)]
}

/// Whether a program confirmed the answer: the greedy one, or (as `+retry`) a sampled one
/// written after it did not.
fn confirmed(r: &SignalRecord) -> f64 {
    r.program.as_ref().map_or(0.0, |p| {
        f64::from(u8::from(p.greedy || p.sampled_confirming > 0))
    })
}

/// The program check as numbers: greedy confirms, greedy uses every quantity, share of the
/// sampled programs that confirm (all 0 outside maths or for an answer no program can confirm).
fn program(r: &SignalRecord) -> Vec<f64> {
    r.program.as_ref().map_or(vec![0.0, 0.0, 0.0], |p| {
        vec![
            f64::from(u8::from(p.greedy)),
            f64::from(u8::from(p.greedy_uses_all)),
            f64::from(p.sampled_confirming) / f64::from(p.sampled.max(1)),
        ]
    })
}

/// The judge's P(yes) (0.5 when there was no judge).
fn judge(r: &SignalRecord) -> f64 {
    r.judge.as_ref().map_or(0.5, |j| j.p_yes)
}

/// Features read off one record.
pub type Features = Box<dyn Fn(&SignalRecord) -> Vec<f64> + Send + Sync>;

/// A named set of after-answer features, and the signals whose tokens reading it costs.
pub struct SignalSet {
    pub name: String,
    pub features: Features,
    pub costs: Vec<&'static str>,
    /// Offered to the try/keep decision (combinations; single signals are only reported).
    pub for_decision: bool,
    /// Read only from records collected with every check ([`Checks::All`]).
    pub all_checks: bool,
}

impl SignalSet {
    fn new(
        name: impl Into<String>,
        costs: &[&'static str],
        for_decision: bool,
        features: impl Fn(&SignalRecord) -> Vec<f64> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            features: Box::new(features),
            costs: costs.to_vec(),
            for_decision,
            all_checks: costs.iter().any(|c| ["agree", "judge"].contains(c)),
        }
    }
}

impl SignalRecord {
    /// Whether it was collected with every check ([`Checks::All`]).
    pub fn all_checks(&self) -> bool {
        self.agree.is_some()
    }
}

/// The after-answer signals and their combinations, for records that have program checks
/// (`has_program`) and judge verdicts (`has_judge`).
pub fn after_sets(has_program: bool, has_judge: bool) -> Vec<SignalSet> {
    let mut sets = vec![
        SignalSet::new("confidence (mean)", &[], false, |r| vec![confidence(r)[0]]),
        SignalSet::new("confidence (min)", &[], false, |r| vec![confidence(r)[1]]),
        SignalSet::new("confidence (mean, min)", &[], true, confidence),
    ];
    if has_program {
        sets.push(SignalSet::new(
            "program (greedy)",
            &["program"],
            false,
            |r| program(r)[..2].to_vec(),
        ));
        let mut every_program = SignalSet::new(
            format!("program + {RETRIES} sampled"),
            &["program", "retry"],
            false,
            program,
        );
        // The share of sampled programs that confirm: only where every one was written.
        every_program.all_checks = true;
        sets.push(every_program);
        sets.push(SignalSet::new(
            "confidence + program",
            &["program"],
            true,
            |r| [confidence(r), program(r)[..2].to_vec()].concat(),
        ));
        sets.push(SignalSet::new(
            format!("program or up to {RETRIES} sampled"),
            &["program", "retry"],
            false,
            |r| vec![confirmed(r)],
        ));
        sets.push(SignalSet::new(
            format!("confidence + program + up to {RETRIES} sampled"),
            &["program", "retry"],
            true,
            |r| [confidence(r), program(r)[..2].to_vec(), vec![confirmed(r)]].concat(),
        ));
    }
    sets.push(SignalSet::new(
        format!("agreement of {SAMPLES} samples"),
        &["agree"],
        false,
        |r| vec![r.agree.unwrap_or(0.0)],
    ));
    let checks: &[&'static str] = if has_program {
        &["program", "retry", "agree"]
    } else {
        &["agree"]
    };
    sets.push(SignalSet::new(
        "every check but the judge",
        checks,
        true,
        |r| [confidence(r), program(r), vec![r.agree.unwrap_or(0.0)]].concat(),
    ));
    if has_judge {
        sets.push(SignalSet::new("judge P(yes)", &["judge"], false, |r| {
            vec![judge(r)]
        }));
        sets.push(SignalSet::new(
            "confidence + judge",
            &["judge"],
            true,
            |r| [confidence(r), vec![judge(r)]].concat(),
        ));
        let all: Vec<&'static str> = checks.iter().copied().chain(["judge"]).collect();
        sets.push(SignalSet::new("every signal", &all, true, |r| {
            [
                confidence(r),
                program(r),
                vec![r.agree.unwrap_or(0.0), judge(r)],
            ]
            .concat()
        }));
    }
    sets
}

/// The labelled questions that have a record of `model`, paired with it.
fn rows<'a>(
    labels: &'a [QuestionLabel],
    signals: &'a [SignalRecord],
    model: &str,
) -> Vec<(&'a QuestionLabel, &'a SignalRecord)> {
    let by_id: BTreeMap<&str, &QuestionLabel> = labels.iter().map(|l| (l.id.as_str(), l)).collect();
    signals
        .iter()
        .filter(|r| r.model == model)
        .filter_map(|r| by_id.get(r.id.as_str()).map(|l| (*l, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structural_features_count_numbers_and_sentences() {
        let f = structural("Tom has 12 apples. He buys 3,400 more. How many now?");
        assert_eq!(f[2], 2.0, "{f:?}");
        assert_eq!(f[3], 3.0, "{f:?}");
        assert_eq!(f[4], 4.0, "{f:?}");
        assert!(structural("").iter().all(|v| v.is_finite()));
    }

    #[test]
    fn a_judge_verdict_reads_its_token_probability() {
        let call = |text: &str, lp: f32| PoolCall {
            model: 1,
            response: r2_pool::GenResponse {
                text: text.into(),
                input_tokens: 10,
                output_tokens: 1,
                token_logprobs: Some(vec![lp]),
                finish: FinishReason::Length,
            },
            cost_usd: 0.0,
            latency: std::time::Duration::ZERO,
        };
        let yes = verdict(&call("Yes", (0.8f32).ln()));
        assert_eq!(yes.verdict, Some(true));
        assert!((yes.p_yes - 0.8).abs() < 1e-6);
        let no = verdict(&call(" no", (0.9f32).ln()));
        assert_eq!(no.verdict, Some(false));
        assert!((no.p_yes - 0.1).abs() < 1e-6);
        assert_eq!(verdict(&call("The", -0.1)).p_yes, 0.5);
    }
}
