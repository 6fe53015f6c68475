//! `train signals` on a scripted pool: each signal is read off the calls the executor makes,
//! the judge's verdict off its token probability, and an answer that differs from the
//! labelled one is left out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use r2_bench::run::{ModelUsage, RunSettings};
use r2_decomposer::TaskFamily;
use r2_executor::ExecOptions;
use r2_pool::{
    Backend, BackendError, FinishReason, GenRequest, GenResponse, Pool, PoolConfig, Sampling,
};
use r2_training::labels::{QuestionLabel, RouteLabel, TriedRoute};
use r2_training::signals::fit::{fit_keep, FitInputs};
use r2_training::signals::{collect, Checks, ProgramSignal, SignalRecord, JUDGE_QUESTION};

/// Answers 42 greedily (and on the seed-2 sample, 41 on seed 1), writes a program that
/// computes 42 from the question's numbers, and judges "Yes" with probability 0.7.
struct Scripted;

#[async_trait]
impl Backend for Scripted {
    async fn generate(&self, request: &GenRequest) -> Result<GenResponse, BackendError> {
        let last = &request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let (text, logprobs) = if last.ends_with(JUDGE_QUESTION) {
            ("Yes".to_string(), vec![0.7f32.ln()])
        } else if last.contains("Write Python code") {
            ("x = 40\ny = 2\nanswer = x + y".to_string(), vec![-0.1; 3])
        } else {
            let answer = match request.sampling {
                Sampling::Temperature { seed: 1, .. } => "41",
                _ => "42",
            };
            (
                format!("40 + 2 = {answer}\nANSWER: {answer}"),
                vec![-0.1, -0.5, -0.2],
            )
        };
        Ok(GenResponse {
            text,
            input_tokens: 10,
            output_tokens: logprobs.len() as u32,
            token_logprobs: Some(logprobs),
            finish: FinishReason::Stop,
        })
    }
}

fn pool() -> Pool {
    let cfg = PoolConfig::embedded();
    let map: HashMap<String, Arc<dyn Backend>> = cfg
        .models
        .iter()
        .map(|m| (m.id.clone(), Arc::new(Scripted) as Arc<dyn Backend>))
        .collect();
    Pool::new(cfg, map).unwrap()
}

fn label(pool: &Pool, labelled_answer: &str) -> QuestionLabel {
    QuestionLabel {
        id: "q1".into(),
        question: "Ann has 40 apples and gets 2 more. How many now?".into(),
        family: TaskFamily::Math,
        pool: (0..pool.len()).map(|m| pool.id(m).to_string()).collect(),
        steps: vec![],
        tried: (0..pool.len())
            .map(|m| TriedRoute {
                route: RouteLabel::Direct {
                    model: pool.id(m).to_string(),
                },
                correct: true,
                usage: BTreeMap::from([(pool.id(m).to_string(), ModelUsage::default())]),
                error: None,
                answer: Some(labelled_answer.into()),
                confidence: None,
            })
            .collect(),
        executions: 0,
    }
}

fn settings() -> RunSettings {
    RunSettings {
        out_dir: std::env::temp_dir(),
        concurrency: 1,
        exec: ExecOptions::default(),
        decomposer: 2,
        judge: 2,
        limits: Default::default(),
    }
}

#[tokio::test]
async fn every_signal_is_read_off_its_calls() {
    let pool = pool();
    let r = collect(&pool, &settings(), &label(&pool, "42"), 1, Checks::All)
        .await
        .unwrap()
        .expect("the labelled answer is the one given again");
    assert_eq!(r.model, pool.id(1));
    assert_eq!(r.answer, "42");
    assert!(r.correct);
    let mean = ((-0.1f64 - 0.5 - 0.2) / 3.0).exp();
    assert!((r.confidence.unwrap() - mean).abs() < 1e-6, "{r:?}");
    assert!((r.min_confidence.unwrap() - (-0.5f64).exp()).abs() < 1e-6);
    let p = r.program.as_ref().unwrap();
    assert!(p.plain && p.greedy && p.greedy_uses_all, "{p:?}");
    assert_eq!((p.sampled_confirming, p.sampled), (2, 2));
    // Sample 1 said 41, sample 2 said 42.
    assert_eq!(r.agree, Some(0.5));
    let j = r.judge.as_ref().unwrap();
    assert_eq!(j.model, pool.id(2));
    assert_eq!(j.verdict, Some(true));
    assert!((j.p_yes - 0.7).abs() < 1e-6);
    // Each signal's tokens are kept apart, on the model that spent them.
    assert_eq!(r.usage["judge"][pool.id(2)].calls, 1);
    assert_eq!(r.usage["agree"][pool.id(1)].calls, 2);
    assert_eq!(r.usage["retry"][pool.id(1)].calls, 2);
    assert_eq!(r.usage["program"][pool.id(1)].calls, 1);
}

#[tokio::test]
async fn the_largest_model_has_no_judge_and_a_changed_answer_no_record() {
    let pool = pool();
    let largest = pool.len() - 1;
    let r = collect(
        &pool,
        &settings(),
        &label(&pool, "42"),
        largest,
        Checks::All,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(r.judge.is_none());
    assert!(
        collect(&pool, &settings(), &label(&pool, "17"), 1, Checks::All)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn the_keep_checks_read_the_answer_and_its_greedy_program_only() {
    let pool = pool();
    let r = collect(&pool, &settings(), &label(&pool, "42"), 1, Checks::Keep)
        .await
        .unwrap()
        .unwrap();
    assert!((r.min_confidence.unwrap() - (-0.5f64).exp()).abs() < 1e-6);
    let p = r.program.as_ref().unwrap();
    assert!(p.greedy && p.greedy_uses_all, "{p:?}");
    assert_eq!(p.sampled, 0);
    assert!(r.agree.is_none() && r.judge.is_none() && !r.all_checks());
    let calls: Vec<&str> = r.usage.keys().map(String::as_str).collect();
    assert_eq!(calls, ["answer", "program"]);
}

/// Labels and records where the 0.5b is right exactly when its greedy program confirms its
/// answer; its confidence says nothing.
fn program_carries_it(pool: &Pool, n: usize) -> (Vec<QuestionLabel>, Vec<SignalRecord>) {
    let usage = |m: &str| {
        BTreeMap::from([(
            m.to_string(),
            ModelUsage {
                calls: 1,
                input_tokens: 100,
                output_tokens: 200,
            },
        )])
    };
    let mut labels = Vec::new();
    let mut records = Vec::new();
    for i in 0..n {
        let right = i % 3 != 0;
        let mut l = label(pool, "42");
        l.id = format!("q{i}");
        for t in &mut l.tried {
            let RouteLabel::Direct { model } = &t.route else {
                unreachable!()
            };
            t.correct = model != pool.id(1) || right;
            t.usage = usage(model);
        }
        labels.push(l);
        records.push(SignalRecord {
            id: format!("q{i}"),
            model: pool.id(1).to_string(),
            correct: right,
            answer: "42".into(),
            confidence: Some(0.5 + 0.4 * ((i * 7) % 10) as f64 / 10.0),
            min_confidence: Some(0.2 + 0.5 * ((i * 3) % 10) as f64 / 10.0),
            program: Some(ProgramSignal {
                plain: true,
                greedy: right,
                greedy_uses_all: right && i % 2 == 0,
                sampled_confirming: 0,
                sampled: 0,
            }),
            agree: None,
            judge: None,
            usage: BTreeMap::from([("program".to_string(), usage(pool.id(1)))]),
        });
    }
    (labels, records)
}

#[test]
fn the_keep_decision_learns_the_one_signal_that_carries_correctness() {
    let pool = pool();
    let (labels, records) = program_carries_it(&pool, 60);
    let fit = fit_keep(&FitInputs {
        labels: &labels,
        signals: &records,
        small: pool.id(1),
        large: pool.id(2),
        pool: &pool.config,
        profile: "compute",
        tolerance: 0.0,
        before: None,
    })
    .unwrap();
    // It keeps every right answer and nothing else: the 1.5b's accuracy, at the cost of
    // the 0.5b's answer and program plus a third of the 1.5b's answers.
    assert_eq!(fit.n, 60);
    assert_eq!(fit.chosen.accuracy, 1.0);
    assert!(
        (fit.chosen.kept - 40.0 / 60.0).abs() < 1e-9,
        "{:?}",
        fit.chosen
    );
    assert!(fit.chosen.cost_per_item < fit.large_cost, "{fit:?}");
    let held = fit.held_out.expect("each half meets the target");
    assert_eq!(held.accuracy, 1.0);
    // The fitted model scores a confirmed answer right and an unconfirmed one wrong,
    // whatever its confidence.
    let m = &fit.model;
    m.validate().unwrap();
    let obs = |confirms: bool, conf: f64| r2_signals::Observed {
        confidence: Some(conf),
        least_confidence: Some(conf / 2.0),
        program: Some(r2_signals::ProgramOutcome {
            confirms,
            uses_all: false,
            sampled_confirms: false,
        }),
    };
    for conf in [0.5, 0.7, 0.9] {
        assert!(m.probability(&obs(true, conf)).unwrap() >= m.threshold);
        assert!(m.probability(&obs(false, conf)).unwrap() < m.threshold);
    }
    // Too few questions, or none right: an error, not a panic.
    let (labels, records) = program_carries_it(&pool, 3);
    assert!(fit_keep(&FitInputs {
        labels: &labels,
        signals: &records,
        small: pool.id(1),
        large: pool.id(2),
        pool: &pool.config,
        profile: "api",
        tolerance: 0.0,
        before: None,
    })
    .is_err());
}
