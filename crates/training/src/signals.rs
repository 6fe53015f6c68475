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
use std::sync::Arc;

use r2_allocator::Escalation;
use r2_bench::run::{ModelUsage, RunSettings};
use r2_decomposer::TaskFamily;
use r2_executor::answer::{final_answer, is_plain_number, same_answer, same_value};
use r2_executor::program::{evaluate, unused_quantities, ProgramError};
use r2_executor::prompts;
use r2_pool::{ChatMessage, FinishReason, GenRequest, Pool, PoolCall, PoolConfig, Sampling};
use r2_router::features::Encoder;
use r2_signals::{brier, out_of_fold, roc_auc, SignalsError};
use serde::{Deserialize, Serialize};

use crate::labels::QuestionLabel;
use crate::TrainingError;

/// Sampled answers compared with the kept one (`+agree:2`).
pub const SAMPLES: usize = 2;
/// Sampled programs after the greedy one (`+retry:2`).
pub const RETRIES: usize = 2;

/// The judge's question, after the question and the solution under check.
pub const JUDGE_QUESTION: &str =
    "Check the solution above step by step. Is its final answer correct? Reply with one word: Yes or No.";

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
    /// Share of [`SAMPLES`] sampled answers equal to the answer.
    pub agree: f64,
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

/// The messages a judge reads: the question as the direct prompt asks it, the solution
/// as the assistant's turn, then [`JUDGE_QUESTION`]. Starting like the judge's own direct
/// prompt lets its answer reuse the prompt's KV prefix when the route climbs to it.
pub fn judge_messages(family: TaskFamily, question: &str, solution: &str) -> Vec<ChatMessage> {
    let mut messages = prompts::direct(family, question);
    messages.push(ChatMessage::assistant(solution.trim()));
    messages.push(ChatMessage::user(JUDGE_QUESTION));
    messages
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

/// Collects the signals of `model`'s direct answer to `label`'s question; None when the
/// labels have no direct answer of that model, or when the answer regenerated now is not
/// the one the labels graded.
pub async fn collect(
    pool: &Pool,
    settings: &RunSettings,
    label: &QuestionLabel,
    model: usize,
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
    let labelled = label.tried.iter().find_map(|t| match &t.route {
        crate::labels::RouteLabel::Direct { model: m } if *m == id => t.answer.as_deref(),
        _ => None,
    });
    if labelled.is_some_and(|l| !same_answer(family, l, &answer)) {
        return Ok(None);
    }
    let probs: Vec<f64> = answered
        .response
        .token_logprobs
        .iter()
        .flatten()
        .map(|&l| f64::from(l).exp())
        .collect();
    let min_confidence = probs.iter().copied().reduce(f64::min);

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
            }
        }
        Some(signal)
    } else {
        None
    };

    let mut agreeing = 0;
    for k in 1..=SAMPLES {
        let mut again = direct.clone();
        again.sampling = Sampling::Temperature {
            temperature: Escalation::TEMPERATURE,
            seed: k as u64,
        };
        let c = call(model, again).await?;
        add_usage(&mut usage, "agree", pool, &c);
        agreeing += usize::from(same_answer(
            family,
            &final_answer(family, &c.response.text),
            &answer,
        ));
    }

    let judge = if model + 1 < pool.len() {
        let mut asked =
            GenRequest::new(judge_messages(family, question, &answered.response.text), 1);
        asked.sampling = Sampling::Greedy;
        let c = call(model + 1, asked).await?;
        add_usage(&mut usage, "judge", pool, &c);
        let mut j = verdict(&c);
        j.model = pool.id(model + 1).to_string();
        Some(j)
    } else {
        None
    };

    Ok(Some(SignalRecord {
        id: label.id.clone(),
        model: id,
        correct,
        answer,
        confidence: answered.response.confidence(),
        min_confidence,
        program,
        agree: agreeing as f64 / SAMPLES as f64,
        judge,
        usage,
    }))
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
    let by_id: BTreeMap<&str, &QuestionLabel> =
        inputs.labels.iter().map(|l| (l.id.as_str(), l)).collect();
    let rows: Vec<(&QuestionLabel, &SignalRecord)> = inputs
        .signals
        .iter()
        .filter(|r| r.model == inputs.model)
        .filter_map(|r| by_id.get(r.id.as_str()).map(|l| (*l, r)))
        .collect();
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
    let cost_of = |signals: &[&str]| -> BTreeMap<String, f64> {
        profiles
            .iter()
            .map(|profile| {
                let total: f64 = rows
                    .iter()
                    .flat_map(|(_, r)| signals.iter().filter_map(|s| r.usage.get(*s)))
                    .map(|u| r2_bench::summary::cost_of(u, inputs.pool, profile))
                    .sum();
                (profile.clone(), total / n as f64)
            })
            .collect()
    };
    let err = |e: SignalsError| TrainingError::Signals(e.to_string());
    let mut out = Vec::new();
    let mut push = |stage: &'static str,
                    signal: String,
                    x: Vec<Vec<f64>>,
                    cost: BTreeMap<String, f64>|
     -> Result<(), TrainingError> {
        let (auc, b) = score_features(&x, &y, 17).map_err(err)?;
        out.push(SignalScore {
            stage,
            signal,
            n,
            auc,
            brier: Some(b),
            cost,
        });
        Ok(())
    };
    let free = || cost_of(&[]);

    // Before the answer: the question alone.
    let structure: Vec<Vec<f64>> = rows.iter().map(|(l, _)| structural(&l.question)).collect();
    push(
        "before",
        "length (characters)".into(),
        structure.iter().map(|s| vec![s[0]]).collect(),
        free(),
    )?;
    push("before", "structural".into(), structure.clone(), free())?;
    let questions: Vec<&str> = rows.iter().map(|(l, _)| l.question.as_str()).collect();
    for (name, encoder) in inputs.encoders {
        let emb = encoder
            .encode(&questions)
            .map_err(|e| TrainingError::Signals(e.to_string()))?;
        let x: Vec<Vec<f64>> = emb
            .iter()
            .map(|v| v.iter().map(|&f| f64::from(f)).collect())
            .collect();
        push("before", name.clone(), x.clone(), free())?;
        let both: Vec<Vec<f64>> = x
            .iter()
            .zip(&structure)
            .map(|(a, b)| a.iter().chain(b).copied().collect())
            .collect();
        push("before", format!("{name} + structural"), both, free())?;
    }

    // After the answer: its confidence and checks.
    let conf = |r: &SignalRecord| r.confidence.unwrap_or(0.0);
    let min_conf = |r: &SignalRecord| r.min_confidence.unwrap_or(0.0);
    let program = |r: &SignalRecord| {
        r.program.as_ref().map_or(vec![0.0, 0.0, 0.0], |p| {
            vec![
                f64::from(u8::from(p.greedy)),
                f64::from(u8::from(p.greedy_uses_all)),
                f64::from(p.sampled_confirming) / f64::from(p.sampled.max(1)),
            ]
        })
    };
    let judge = |r: &SignalRecord| r.judge.as_ref().map_or(0.5, |j| j.p_yes);
    let col = |f: &dyn Fn(&SignalRecord) -> f64| -> Vec<Vec<f64>> {
        rows.iter().map(|(_, r)| vec![f(r)]).collect()
    };
    push("after", "confidence (mean)".into(), col(&conf), free())?;
    push("after", "confidence (min)".into(), col(&min_conf), free())?;
    let has_program = rows.iter().any(|(_, r)| r.program.is_some());
    if has_program {
        push(
            "after",
            "program (greedy)".into(),
            rows.iter().map(|(_, r)| vec![program(r)[0]]).collect(),
            cost_of(&["program"]),
        )?;
        push(
            "after",
            format!("program + {RETRIES} sampled"),
            rows.iter().map(|(_, r)| program(r)).collect(),
            cost_of(&["program", "retry"]),
        )?;
    }
    push(
        "after",
        format!("agreement of {SAMPLES} samples"),
        col(&|r| r.agree),
        cost_of(&["agree"]),
    )?;
    let has_judge = rows.iter().any(|(_, r)| r.judge.is_some());
    if has_judge {
        push(
            "after",
            "judge P(yes)".into(),
            col(&judge),
            cost_of(&["judge"]),
        )?;
    }
    let after = |r: &SignalRecord, with_judge: bool| -> Vec<f64> {
        let mut v = vec![conf(r), min_conf(r), r.agree];
        if has_program {
            v.extend(program(r));
        }
        if with_judge {
            v.push(judge(r));
        }
        v
    };
    let mut all_cost = vec!["agree"];
    if has_program {
        all_cost.extend(["program", "retry"]);
    }
    push(
        "after",
        "all checks without the judge".into(),
        rows.iter().map(|(_, r)| after(r, false)).collect(),
        cost_of(&all_cost),
    )?;
    if has_judge {
        all_cost.push("judge");
        push(
            "after",
            "all checks with the judge".into(),
            rows.iter().map(|(_, r)| after(r, true)).collect(),
            cost_of(&all_cost),
        )?;
        let mut x: Vec<Vec<f64>> = rows.iter().map(|(_, r)| after(r, true)).collect();
        for (row, s) in x.iter_mut().zip(&structure) {
            row.extend(s);
        }
        push(
            "after",
            "all checks with the judge + structural".into(),
            x,
            cost_of(&all_cost),
        )?;
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
        "Signals for \"{model} answers right\" ({} questions, {positives} right; held-out: 5-fold logistic regression)\n\n| stage | signal | AUC | Brier |",
        scores.first().map_or(0, |s| s.n)
    );
    for p in &profiles {
        out.push_str(&format!(" extra cost/question ({p}) |"));
    }
    out.push_str("\n|---|---|---|---|");
    for _ in &profiles {
        out.push_str("---|");
    }
    out.push('\n');
    for s in scores {
        out.push_str(&format!(
            "| {} | {} | {:.3} | {} |",
            s.stage,
            s.signal,
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
        // With a point to give up, the blind decision still may not keep wrong answers.
        assert!(cheapest_cascade(&blind, 0.99).unwrap().kept == 0.0);
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

/// The cheapest pair of thresholds (on a 0.05 grid; "never try" included) whose accuracy is
/// at least `min_accuracy`.
pub fn cheapest_cascade(cases: &[CascadeCase], min_accuracy: f64) -> Option<CascadePoint> {
    let grid: Vec<f64> = (0..=20).map(|i| f64::from(i) * 0.05).collect();
    let never = cascade(cases, f64::INFINITY, f64::INFINITY);
    grid.iter()
        .flat_map(|&t| grid.iter().map(move |&k| (t, k)))
        .map(|(t, k)| cascade(cases, t, k))
        .chain(std::iter::once(never))
        .filter(|p| p.accuracy + 1e-12 >= min_accuracy)
        .min_by(|a, b| {
            a.cost_per_item
                .total_cmp(&b.cost_per_item)
                .then(b.accuracy.total_cmp(&a.accuracy))
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
    label.tried.iter().find_map(|t| match &t.route {
        crate::labels::RouteLabel::Direct { model: m } if m == model && t.error.is_none() => {
            Some((
                t.correct,
                r2_bench::summary::cost_of(&t.usage, pool, profile),
            ))
        }
        _ => None,
    })
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
    let by_id: BTreeMap<&str, &QuestionLabel> = labels.iter().map(|l| (l.id.as_str(), l)).collect();
    let rows: Vec<(&QuestionLabel, &SignalRecord)> = signals
        .iter()
        .filter(|r| r.model == small)
        .filter_map(|r| by_id.get(r.id.as_str()).map(|l| (*l, r)))
        .filter(|(l, _)| l.direct_correct(large).is_some())
        .collect();
    let err = |e: SignalsError| TrainingError::Signals(e.to_string());
    let y: Vec<bool> = rows.iter().map(|(_, r)| r.correct).collect();
    let before_x: Vec<Vec<f64>> = rows.iter().map(|(l, _)| structural(&l.question)).collect();
    let before = out_of_fold(&before_x, &y, 5, 17, 1.0).map_err(err)?;
    let sets = after_sets(&rows);
    let profiles: Vec<String> = pool
        .models
        .first()
        .map(|m| m.prices.keys().cloned().collect())
        .unwrap_or_default();
    let mut reports = Vec::new();
    let probs: Vec<(String, Vec<f64>, Vec<&'static str>)> = sets
        .into_iter()
        .map(|(name, x, cost)| Ok((name, out_of_fold(&x, &y, 5, 17, 1.0).map_err(err)?, cost)))
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
            let half = |h: usize| -> Vec<CascadeCase> {
                cases.iter().skip(h).step_by(2).cloned().collect()
            };
            let (a, b) = (half(0), half(1));
            let held_out = match (cheapest_cascade(&a, target), cheapest_cascade(&b, target)) {
                (Some(pa), Some(pb)) => {
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
                _ => None,
            };
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

/// The sets of after-answer signals the decision is tried with: name, features per row,
/// and the usage keys whose cost reading them adds.
fn after_sets(
    rows: &[(&QuestionLabel, &SignalRecord)],
) -> Vec<(String, Vec<Vec<f64>>, Vec<&'static str>)> {
    let has_program = rows.iter().any(|(_, r)| r.program.is_some());
    let has_judge = rows.iter().any(|(_, r)| r.judge.is_some());
    let conf =
        |r: &SignalRecord| vec![r.confidence.unwrap_or(0.0), r.min_confidence.unwrap_or(0.0)];
    let program = |r: &SignalRecord| {
        r.program.as_ref().map_or(vec![0.0, 0.0, 0.0], |p| {
            vec![
                f64::from(u8::from(p.greedy)),
                f64::from(u8::from(p.greedy_uses_all)),
                f64::from(p.sampled_confirming) / f64::from(p.sampled.max(1)),
            ]
        })
    };
    let judge = |r: &SignalRecord| r.judge.as_ref().map_or(0.5, |j| j.p_yes);
    let mut sets: Vec<(String, Vec<Vec<f64>>, Vec<&'static str>)> = vec![(
        "confidence".into(),
        rows.iter().map(|(_, r)| conf(r)).collect(),
        vec![],
    )];
    if has_program {
        sets.push((
            "confidence + program".into(),
            rows.iter()
                .map(|(_, r)| [conf(r), vec![program(r)[0], program(r)[1]]].concat())
                .collect(),
            vec!["program"],
        ));
        sets.push((
            format!("confidence + program + {RETRIES} sampled + agreement"),
            rows.iter()
                .map(|(_, r)| [conf(r), program(r), vec![r.agree]].concat())
                .collect(),
            vec!["program", "retry", "agree"],
        ));
    } else {
        sets.push((
            "confidence + agreement".into(),
            rows.iter()
                .map(|(_, r)| [conf(r), vec![r.agree]].concat())
                .collect(),
            vec!["agree"],
        ));
    }
    if has_judge {
        sets.push((
            "confidence + judge".into(),
            rows.iter()
                .map(|(_, r)| [conf(r), vec![judge(r)]].concat())
                .collect(),
            vec!["judge"],
        ));
        let mut all = vec!["agree", "judge"];
        if has_program {
            all.extend(["program", "retry"]);
        }
        sets.push((
            "every signal".into(),
            rows.iter()
                .map(|(_, r)| [conf(r), program(r), vec![r.agree, judge(r)]].concat())
                .collect(),
            all,
        ));
    }
    sets
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
