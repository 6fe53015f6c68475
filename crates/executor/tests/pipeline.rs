//! The executor under a scripted backend: plan parsing into execution, dependency order,
//! concurrency, cost accounting, one-step plans, failures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use r2_allocator::{parse_policy, FixedPolicy};
use r2_decomposer::TaskFamily;
use r2_executor::{ExecError, ExecOptions, Executor};
use r2_pool::{GenRequest, Pool, PoolConfig, Sampling, ScriptedBackend};

const QUESTION: &str =
    "Tom buys 4 pens at 3 dollars and 2 books at 5 dollars. How much does he spend?";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Decompose,
    Step,
    Synthesis,
    Direct,
    Rate,
}

fn kind(req: &GenRequest) -> Kind {
    let system = &req.messages[0].content;
    let last = &req.messages.last().unwrap().content;
    if system.starts_with("You break a question") {
        Kind::Decompose
    } else if system.starts_with("You are working on one step") {
        Kind::Step
    } else if system.starts_with("You estimate how hard") {
        Kind::Rate
    } else if last.contains("Notes from working through it") {
        Kind::Synthesis
    } else {
        Kind::Direct
    }
}

/// A scripted model: a fixed plan, step results named after the step, a synthesis that
/// reports which notes it saw. Every request is logged.
fn scripted(
    plan: &'static str,
    delay: Duration,
) -> (Arc<ScriptedBackend>, Arc<Mutex<Vec<GenRequest>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    let backend = ScriptedBackend::with_delay(delay, move |req| {
        log2.lock().unwrap().push(req.clone());
        Ok(match kind(req) {
            Kind::Decompose => plan.to_string(),
            Kind::Step => {
                let this = req.messages[1]
                    .content
                    .rsplit("This step: ")
                    .next()
                    .unwrap_or("")
                    .to_string();
                format!(
                    "thinking about it\nRESULT: done({})",
                    this.trim_end_matches('.')
                )
            }
            Kind::Synthesis => "adding up\nANSWER: 22".to_string(),
            Kind::Direct => "4*3 + 2*5 = 22\nANSWER: 22".to_string(),
            Kind::Rate => "2".to_string(),
        })
    });
    (backend, log)
}

fn pool_with(backend: Arc<ScriptedBackend>, concurrency: u32) -> Pool {
    let mut cfg = PoolConfig::embedded();
    for m in &mut cfg.models {
        m.max_concurrency = concurrency;
    }
    Pool::uniform(cfg, backend)
}

const PLAN: &str = "1. Find the cost of the pens.\n2. Find the cost of the books.\n3. Add the two costs. (depends on 1, 2)";

#[tokio::test]
async fn runs_the_plan_in_dependency_order_with_dependency_results_in_prompts() {
    let (backend, log) = scripted(PLAN, Duration::ZERO);
    let pool = pool_with(backend, 1);
    let exec = Executor::new(&pool, ExecOptions::default());
    let answer = exec
        .run(QUESTION, TaskFamily::Math, &FixedPolicy::new(1), 2)
        .await
        .unwrap();

    assert_eq!(answer.answer, "22");
    let ids: Vec<&str> = answer.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["decompose", "1", "2", "3", "synthesis"]);
    assert_eq!(
        answer.steps[0].model, "qwen2.5-coder-1.5b",
        "the decomposer model writes the plan"
    );
    assert!(answer.steps[1..]
        .iter()
        .all(|s| s.model == "qwen2.5-coder-0.5b"));
    assert_eq!(answer.steps[3].depends_on, ["1", "2"]);
    assert_eq!(answer.steps[4].depends_on, ["1", "2", "3"]);

    let log = log.lock().unwrap();
    let step_prompt = |needle: &str| {
        log.iter()
            .filter(|r| kind(r) == Kind::Step)
            .map(|r| r.messages[1].content.clone())
            .find(|c| c.ends_with(needle))
            .unwrap()
    };
    let p1 = step_prompt("Find the cost of the pens.");
    assert!(
        p1.contains(QUESTION) && !p1.contains("Results of earlier steps"),
        "{p1}"
    );
    let p3 = step_prompt("Add the two costs.");
    assert!(
        p3.contains("done(Find the cost of the pens)")
            && p3.contains("done(Find the cost of the books)"),
        "{p3}"
    );
    // Step 3 ran after both of its dependencies.
    let pos = |needle: &str| {
        log.iter()
            .position(|r| r.messages.last().unwrap().content.ends_with(needle))
            .unwrap()
    };
    assert!(pos("Add the two costs.") > pos("Find the cost of the pens."));
    assert!(pos("Add the two costs.") > pos("Find the cost of the books."));
    let synth = log.iter().find(|r| kind(r) == Kind::Synthesis).unwrap();
    assert!(synth.messages[1]
        .content
        .contains("3. Add the two costs. Result: done(Add the two costs)"));
}

#[tokio::test]
async fn without_declared_dependencies_each_step_sees_all_earlier_results() {
    let (backend, log) = scripted(
        "1. Find the cost of the pens.\n2. Find the cost of the books.\n3. Add the two costs.",
        Duration::ZERO,
    );
    let pool = pool_with(backend, 1);
    let answer = Executor::new(&pool, ExecOptions::default())
        .run(QUESTION, TaskFamily::Math, &FixedPolicy::new(0), 2)
        .await
        .unwrap();
    assert_eq!(answer.steps[3].depends_on, ["1", "2"]);
    let log = log.lock().unwrap();
    let p2 = log
        .iter()
        .map(|r| r.messages.last().unwrap().content.clone())
        .find(|c| c.ends_with("Find the cost of the books."))
        .unwrap();
    assert!(p2.contains("done(Find the cost of the pens)"), "{p2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn independent_steps_run_concurrently_within_the_model_bound() {
    let plan = "1. Find the cost of the pens.\n2. Find the cost of the books.\n3. Find the tax. (depends on none)\n4. Add everything. (depends on 1, 2, 3)";
    let (backend, _) = scripted(plan, Duration::from_millis(40));
    let pool = pool_with(backend.clone(), 3);
    let answer = Executor::new(&pool, ExecOptions::default())
        .run(QUESTION, TaskFamily::Math, &FixedPolicy::new(0), 2)
        .await
        .unwrap();
    assert_eq!(answer.steps.len(), 6);
    assert_eq!(
        backend.max_in_flight(),
        3,
        "steps 1-3 are independent and the model allows 3 at once"
    );

    let (backend, _) = scripted(plan, Duration::from_millis(10));
    let pool = pool_with(backend.clone(), 1);
    Executor::new(&pool, ExecOptions::default())
        .run(QUESTION, TaskFamily::Math, &FixedPolicy::new(0), 2)
        .await
        .unwrap();
    assert_eq!(
        backend.max_in_flight(),
        1,
        "max_concurrency = 1 serialises calls to one model"
    );
}

#[tokio::test]
async fn cost_is_the_sum_of_priced_steps() {
    let (backend, _) = scripted(PLAN, Duration::ZERO);
    let mut cfg = PoolConfig::embedded();
    cfg.set_price_profile("api").unwrap();
    let pool = Pool::uniform(cfg, backend);
    let answer = Executor::new(&pool, ExecOptions::default())
        .run(QUESTION, TaskFamily::Math, &FixedPolicy::new(1), 2)
        .await
        .unwrap();
    let sum: f64 = answer.steps.iter().map(|s| s.cost_usd).sum();
    assert!((answer.total_cost_usd - sum).abs() < 1e-15);
    // Under `api` only the largest model costs money: here only the decomposition call.
    let d = &answer.steps[0];
    let expect = (d.input_tokens as f64 * 2.5 + d.output_tokens as f64 * 10.0) / 1e6;
    assert!(d.input_tokens > 0 && d.output_tokens > 0);
    assert!(
        (answer.total_cost_usd - expect).abs() < 1e-15,
        "{} vs {expect}",
        answer.total_cost_usd
    );
}

#[tokio::test]
async fn a_one_step_plan_costs_the_same_as_direct() {
    let (backend, _) = scripted("1. Answer the question directly.", Duration::ZERO);
    let pool = pool_with(backend, 1);
    let exec = Executor::new(&pool, ExecOptions::default());
    let routed = exec
        .run(QUESTION, TaskFamily::Math, &FixedPolicy::new(1), 2)
        .await
        .unwrap();
    let direct = exec.direct(QUESTION, TaskFamily::Math, 1).await.unwrap();
    let ids: Vec<&str> = routed.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["decompose", "1"]);
    assert_eq!(routed.answer, direct.answer);
    let (a, b) = (&routed.steps[1], &direct.steps[0]);
    assert_eq!(
        (a.input_tokens, a.output_tokens, a.model.as_str()),
        (b.input_tokens, b.output_tokens, b.model.as_str())
    );
    assert_eq!(a.cost_usd, b.cost_usd);
    assert!(routed.total_cost_usd <= direct.total_cost_usd + routed.steps[0].cost_usd);
}

#[tokio::test]
async fn unusable_plans_degrade_to_one_step_with_a_warning() {
    let (backend, _) = scripted("", Duration::ZERO);
    let pool = pool_with(backend, 1);
    let answer = Executor::new(&pool, ExecOptions::default())
        .run(QUESTION, TaskFamily::Math, &FixedPolicy::new(0), 2)
        .await
        .unwrap();
    assert_eq!(answer.steps.len(), 2);
    assert_eq!(answer.answer, "22");
    assert!(!answer.warnings.is_empty());
}

#[tokio::test]
async fn policies_route_and_record_their_own_calls() {
    let (backend, _) = scripted(PLAN, Duration::ZERO);
    let pool = pool_with(backend, 1);
    let exec = Executor::new(&pool, ExecOptions::default());
    let direct = parse_policy("direct:smollm2-135m", &pool).unwrap();
    let a = exec
        .run(QUESTION, TaskFamily::Math, direct.as_ref(), 2)
        .await
        .unwrap();
    assert_eq!(a.steps.len(), 1, "direct never decomposes");
    assert_eq!(a.steps[0].model, "smollm2-135m");

    let rated = parse_policy("llm-rated:qwen2.5-coder-1.5b", &pool).unwrap();
    let a = exec
        .run(QUESTION, TaskFamily::Math, rated.as_ref(), 2)
        .await
        .unwrap();
    let rates = a.steps.iter().filter(|s| s.id.starts_with("rate:")).count();
    assert_eq!(rates, 4, "one rating per subtask and one for synthesis");
    // The scripted rater answers 2 → the second-cheapest model.
    assert!(a
        .steps
        .iter()
        .filter(|s| s.id.parse::<usize>().is_ok())
        .all(|s| s.model == "qwen2.5-coder-0.5b"));

    let random = parse_policy("random:7", &pool).unwrap();
    let x = exec
        .run(QUESTION, TaskFamily::Math, random.as_ref(), 2)
        .await
        .unwrap();
    let y = exec
        .run(QUESTION, TaskFamily::Math, random.as_ref(), 2)
        .await
        .unwrap();
    let models =
        |a: &r2_executor::Answer| a.steps.iter().map(|s| s.model.clone()).collect::<Vec<_>>();
    assert_eq!(
        models(&x),
        models(&y),
        "a seeded random policy is reproducible"
    );

    for bad in ["fixed:gpt-9", "fixed", "teleport", "random:x"] {
        let err = parse_policy(bad, &pool).err().unwrap();
        assert!(err.is_input_error(), "{bad}: {err}");
    }
    let err = parse_policy("fixed:gpt-9", &pool)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("gpt-9") && err.contains("smollm2-135m"),
        "{err}"
    );
}

#[tokio::test]
async fn empty_questions_and_timeouts_are_errors() {
    let (backend, _) = scripted(PLAN, Duration::ZERO);
    let pool = pool_with(backend, 1);
    let exec = Executor::new(&pool, ExecOptions::default());
    let err = exec
        .run("  \n", TaskFamily::Math, &FixedPolicy::new(0), 2)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::EmptyQuestion) && err.is_input_error());

    let (slow, _) = scripted(PLAN, Duration::from_secs(10));
    let pool = pool_with(slow, 1);
    let options = ExecOptions {
        step_timeout: Some(Duration::from_millis(20)),
        ..ExecOptions::default()
    };
    let err = Executor::new(&pool, options)
        .run(QUESTION, TaskFamily::Math, &FixedPolicy::new(0), 2)
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("step decompose:") && err.to_string().contains("timed out"),
        "{err}"
    );
}

#[tokio::test]
async fn long_plans_are_capped() {
    let long: &'static str = Box::leak(
        (1..=20)
            .map(|i| format!("{i}. Compute quantity number {i} of the problem.\n"))
            .collect::<String>()
            .into_boxed_str(),
    );
    let (backend, _) = scripted(long, Duration::ZERO);
    let pool = pool_with(backend, 1);
    let options = ExecOptions {
        max_subtasks: 4,
        ..ExecOptions::default()
    };
    let answer = Executor::new(&pool, options)
        .run(QUESTION, TaskFamily::Math, &FixedPolicy::new(0), 2)
        .await
        .unwrap();
    let numbered = answer
        .steps
        .iter()
        .filter(|s| s.id.parse::<usize>().is_ok())
        .count();
    assert_eq!(numbered, 4);
    assert!(
        answer.warnings.iter().any(|w| w.contains('4')),
        "{:?}",
        answer.warnings
    );
}

#[tokio::test]
async fn the_trace_serialises_to_the_documented_schema() {
    let (backend, _) = scripted(PLAN, Duration::ZERO);
    let pool = pool_with(backend, 1);
    let answer = Executor::new(&pool, ExecOptions::default())
        .run(QUESTION, TaskFamily::Math, &FixedPolicy::new(0), 2)
        .await
        .unwrap();
    let v = serde_json::to_value(&answer).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["answer", "steps", "total_cost_usd", "warnings"]);
    let step = v["steps"][1].as_object().unwrap();
    let mut keys: Vec<&str> = step.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "confidence",
            "cost_usd",
            "depends_on",
            "id",
            "input_tokens",
            "latency_ms",
            "model",
            "output",
            "output_tokens",
            "text"
        ]
    );
}

/// A pool where each model answers from its own script; `answers[m](req)` is model m's text.
fn per_model_pool(answers: [fn(&GenRequest) -> String; 3]) -> (Pool, Vec<Arc<ScriptedBackend>>) {
    let cfg = PoolConfig::embedded();
    let mut backends = Vec::new();
    let mut map = std::collections::HashMap::new();
    for (m, spec) in cfg.models.iter().enumerate() {
        let f = answers[m];
        let b = ScriptedBackend::new(move |req| Ok(f(req)));
        map.insert(spec.id.clone(), b.clone() as Arc<dyn r2_pool::Backend>);
        backends.push(b);
    }
    (Pool::new(cfg, map).unwrap(), backends)
}

fn seed(req: &GenRequest) -> Option<u64> {
    match req.sampling {
        Sampling::Greedy => None,
        Sampling::Temperature { seed, .. } => Some(seed),
    }
}

/// Each step's id, in trace order.
fn ids(a: &r2_executor::Answer) -> Vec<&str> {
    a.steps.iter().map(|s| s.id.as_str()).collect()
}

/// Each step's id and model, in trace order.
fn trail(a: &r2_executor::Answer) -> Vec<(&str, &str)> {
    a.steps
        .iter()
        .map(|s| (s.id.as_str(), s.model.as_str()))
        .collect()
}

/// `policy` once on a pool of per-model scripts; the answer and each model's backend.
async fn run_on(
    answers: [fn(&GenRequest) -> String; 3],
    policy: &str,
    options: ExecOptions,
) -> (r2_executor::Answer, Vec<Arc<ScriptedBackend>>) {
    let (pool, calls) = per_model_pool(answers);
    let p = parse_policy(policy, &pool).unwrap();
    let a = Executor::new(&pool, options)
        .run(QUESTION, TaskFamily::Math, p.as_ref(), 2)
        .await
        .unwrap();
    (a, calls)
}

#[tokio::test]
async fn agree_keeps_a_consistent_answer_and_escalates_a_disagreeing_one() {
    let steady = |req: &GenRequest| match kind(req) {
        Kind::Decompose => PLAN.to_string(),
        Kind::Step => "RESULT: ok".to_string(),
        _ => "ANSWER: 22".to_string(),
    };
    // Greedy says 21, the first sample 23: it disagrees with itself.
    let wobbly = |req: &GenRequest| match seed(req) {
        None => "ANSWER: 21".to_string(),
        Some(s) => format!("ANSWER: {}", 22 + s),
    };
    let silent = |_: &GenRequest| "I am not sure.".to_string();
    let (pool, _) = per_model_pool([silent, steady, steady]);
    let small = "direct:qwen2.5-coder-0.5b+agree:2";
    assert_eq!(parse_policy(small, &pool).unwrap().name(), small);

    // A consistent small model keeps its answer: one greedy call and two samples.
    let (a, calls) = run_on([silent, steady, steady], small, ExecOptions::default()).await;
    assert_eq!(a.answer, "22");
    // The answer that stands is the last step, after the samples that confirmed it.
    assert_eq!(ids(&a), ["1:agree1", "1:agree2", "1"]);
    assert!(a.warnings.is_empty());
    assert_eq!((calls[1].calls(), calls[2].calls()), (3, 0));
    assert!(
        a.steps.iter().all(|s| s.cost_usd > 0.0) && a.total_cost_usd > a.steps[2].cost_usd * 2.5,
        "samples are paid for: {:?}",
        a.steps.iter().map(|s| s.cost_usd).collect::<Vec<_>>()
    );

    // A wobbly one is escalated after its first disagreeing sample.
    let (a, calls) = run_on([silent, wobbly, steady], small, ExecOptions::default()).await;
    assert_eq!(a.answer, "22", "the larger model's answer stands");
    assert_eq!(
        trail(&a),
        [
            ("1", "qwen2.5-coder-0.5b"),
            ("1:agree1", "qwen2.5-coder-0.5b"),
            ("1:up1", "qwen2.5-coder-1.5b"),
        ]
    );
    assert_eq!(calls[2].calls(), 1, "the largest model is not re-sampled");
    assert!(
        a.warnings[0].contains("escalated to qwen2.5-coder-1.5b"),
        "{:?}",
        a.warnings
    );

    // No answer at all escalates without sampling, and climbs one model at a time.
    let (a, calls) = run_on(
        [silent, steady, steady],
        "direct:smollm2-135m+agree:1",
        ExecOptions::default(),
    )
    .await;
    assert_eq!(a.answer, "22");
    assert_eq!(
        (calls[0].calls(), calls[1].calls(), calls[2].calls()),
        (1, 2, 0)
    );

    // Without the suffix nothing is checked.
    let (a, calls) = run_on(
        [silent, wobbly, steady],
        "direct:qwen2.5-coder-0.5b",
        ExecOptions::default(),
    )
    .await;
    assert_eq!((a.answer.as_str(), calls[1].calls()), ("21", 1));

    // A plan's synthesis is checked too; its steps are not.
    let (a, calls) = run_on(
        [silent, wobbly, steady],
        "fixed:qwen2.5-coder-0.5b+agree",
        ExecOptions::default(),
    )
    .await;
    assert_eq!(a.answer, "22");
    let last: Vec<_> = ids(&a).into_iter().rev().take(2).collect();
    assert_eq!(last, ["synthesis:up1", "synthesis:agree1"]);
    assert_eq!(
        calls[1].calls(),
        3 + 2,
        "three steps, the synthesis and one sample"
    );

    let cooled = "direct:qwen2.5-coder-0.5b+agree:3@0.3";
    let p = parse_policy(cooled, &pool).unwrap();
    assert_eq!(p.name(), cooled);
    let e = p.escalation().unwrap();
    assert_eq!((e.samples, e.temperature), (3, 0.3));
    // Agrees with itself only when sampled at 0.3: the suffix's temperature reaches the calls.
    let cool = |req: &GenRequest| match req.sampling {
        Sampling::Temperature { temperature, .. } if (temperature - 0.3).abs() > 1e-6 => {
            "ANSWER: 99".to_string()
        }
        _ => "ANSWER: 22".to_string(),
    };
    let (a, _) = run_on([silent, cool, steady], cooled, ExecOptions::default()).await;
    assert_eq!((a.steps.len(), a.warnings.len()), (4, 0));
    let (a, _) = run_on(
        [silent, cool, steady],
        "direct:qwen2.5-coder-0.5b+agree:3",
        ExecOptions::default(),
    )
    .await;
    assert_eq!((a.steps.len(), a.warnings.len()), (3, 1));

    // When the answer itself was sampled (seed 5), the check's seeds follow it (6, 7).
    let late = |req: &GenRequest| match seed(req) {
        Some(s) if s < 5 => "ANSWER: 99".to_string(),
        _ => "ANSWER: 22".to_string(),
    };
    let sampled = ExecOptions {
        sampling: Sampling::Temperature {
            temperature: 0.7,
            seed: 5,
        },
        ..ExecOptions::default()
    };
    let (a, _) = run_on([silent, late, steady], small, sampled).await;
    assert_eq!(
        (a.steps.len(), a.warnings.len()),
        (3, 0),
        "{:?}",
        a.warnings
    );

    // `+agree` inside a path is part of the name, not a suffix.
    use r2_allocator::Escalation;
    let path = "learned:runs/a+agree/r.safetensors@0.5";
    assert_eq!(Escalation::split(path).unwrap(), (path, None));
    let (base, e) = Escalation::split("learned:runs/a+agree/r.safetensors+agree:4").unwrap();
    assert_eq!(
        (base, e.map(|e| e.samples)),
        ("learned:runs/a+agree/r.safetensors", Some(4))
    );

    for bad in [
        "direct:qwen2.5-coder-0.5b+agree:2@0",
        "direct:qwen2.5-coder-0.5b+agree:2@3",
        "direct:qwen2.5-coder-0.5b+agree:2@x",
        "direct:qwen2.5-coder-0.5b+agree:0",
        "direct:qwen2.5-coder-0.5b+agree:x",
        "direct:qwen2.5-coder-0.5b+agree:99",
        "direct:qwen2.5-coder-0.5b+agreed",
        "+agree:2",
    ] {
        let err = parse_policy(bad, &pool).err().unwrap();
        assert!(err.is_input_error(), "{bad}: {err}");
    }
}

/// A script that answers program requests with `program` and everything else with `answer`.
macro_rules! answering {
    (program: $program:expr, else: $answer:expr) => {
        |req: &GenRequest| {
            if is_program(req) {
                $program.to_string()
            } else {
                $answer.to_string()
            }
        }
    };
}

fn assert_one_warning(a: &r2_executor::Answer, needle: &str) {
    assert!(
        a.warnings.len() == 1 && a.warnings[0].contains(needle),
        "{:?}",
        a.warnings
    );
}

fn is_program(req: &GenRequest) -> bool {
    req.messages.len() == 1 && req.messages[0].content.contains("Write Python code")
}

#[tokio::test]
async fn program_check_keeps_an_answer_its_program_computes() {
    let steady = |req: &GenRequest| match kind(req) {
        Kind::Decompose => PLAN.to_string(),
        Kind::Step => "RESULT: ok".to_string(),
        _ => "ANSWER: 22".to_string(),
    };
    let silent = |_: &GenRequest| "I am not sure.".to_string();
    // Answers 22 and writes a program that computes 22 when asked the question, greedily,
    // as the answer was.
    let sound = |req: &GenRequest| {
        if is_program(req)
            && !(req.messages[0].content.starts_with(QUESTION) && seed(req).is_none())
        {
            "```python\nanswer = 0\n```".to_string()
        } else if is_program(req) {
            "```python\npens = 4 * 3\nbooks = 2 * 5\nanswer = pens + books\n```".to_string()
        } else {
            "Total: $22.00\nANSWER: $22.00".to_string()
        }
    };
    // Answers 22 but its program computes 21.
    let slip = answering!(program: "```python\nanswer = 4 * 3 + 9\n```", else: "ANSWER: 22");
    // Its program needs a loop, which the checker does not run.
    let looping = answering!(
        program: "```python\ntotal = 0\nfor i in range(22):\n    total += 1\nanswer = total\n```",
        else: "ANSWER: 22"
    );
    let small = "direct:qwen2.5-coder-0.5b+program";
    let (pool, _) = per_model_pool([silent, steady, steady]);
    let p = parse_policy(small, &pool).unwrap();
    assert_eq!(p.name(), small);
    let e = p.escalation().unwrap();
    assert_eq!((e.program, e.samples), (true, 0));

    // A program that computes the answer keeps it: one answer and one program call.
    let (a, calls) = run_on([silent, sound, steady], small, ExecOptions::default()).await;
    assert_eq!(a.answer, "22.00");
    assert_eq!(ids(&a), ["1:program", "1"]);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert_eq!((calls[1].calls(), calls[2].calls()), (2, 0));
    assert!(a.steps[0].cost_usd > 0.0, "the program is paid for");

    // `+program:all` also asks that the program's value depend on every number the
    // question writes: 4, 3, 2 and 5.
    let all = "direct:qwen2.5-coder-0.5b+program:all";
    let p = parse_policy(all, &pool).unwrap();
    assert_eq!(p.name(), all);
    let e = p.escalation().unwrap();
    assert_eq!((e.program, e.uses_all, e.samples), (true, true, 0));
    let (a, _) = run_on([silent, sound, steady], all, ExecOptions::default()).await;
    assert_eq!(ids(&a), ["1:program", "1"]);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    // Computes 22, and writes 2 and 5, but its value does not come from them.
    let partial = answering!(
        program: "```python
books = 2 * 5
pens = 4 * 3
answer = pens + 10
```",
        else: "ANSWER: 22"
    );
    let (a, _) = run_on([silent, partial, steady], small, ExecOptions::default()).await;
    assert!(
        a.warnings.is_empty(),
        "+program alone keeps it: {:?}",
        a.warnings
    );
    let (a, calls) = run_on([silent, partial, steady], all, ExecOptions::default()).await;
    assert_eq!((a.answer.as_str(), calls[2].calls()), ("22", 1));
    assert_one_warning(&a, "never uses 2, 5 from the question");

    // A program that computes something else escalates, and says what it computed.
    for (script, why) in [
        (
            slip as fn(&GenRequest) -> String,
            "computed 21 with its program",
        ),
        (looping, "wrote a program that gives no value"),
    ] {
        let (a, calls) = run_on([silent, script, steady], small, ExecOptions::default()).await;
        assert_eq!(a.answer, "22");
        assert_eq!(
            trail(&a),
            [
                ("1", "qwen2.5-coder-0.5b"),
                ("1:program", "qwen2.5-coder-0.5b"),
                ("1:up1", "qwen2.5-coder-1.5b"),
            ]
        );
        assert_eq!(calls[2].calls(), 1, "the largest model is not checked");
        assert_one_warning(&a, why);
    }

    // A program cut at the token limit confirms nothing, even when what is left would run.
    let long =
        answering!(program: "answer = 22 # four pens at 3 and two books at 5", else: "ANSWER: 22");
    let (a, _) = run_on([silent, long, steady], small, ExecOptions::default()).await;
    assert!(
        a.warnings.is_empty(),
        "with room it confirms: {:?}",
        a.warnings
    );
    let tight = ExecOptions {
        answer_max_tokens: 6,
        ..ExecOptions::default()
    };
    let (a, _) = run_on([silent, long, steady], small, tight).await;
    assert_one_warning(&a, "cut off");

    // An answer no number can equal is escalated without asking for a program.
    let fraction = answering!(program: "answer = 3 / 4", else: "ANSWER: 3/4");
    let (a, calls) = run_on([silent, fraction, steady], small, ExecOptions::default()).await;
    assert_eq!((a.answer.as_str(), calls[1].calls()), ("22", 1));
    assert_one_warning(&a, "not a plain number");

    // A plan's synthesis is program-checked against the question.
    let (a, _) = run_on(
        [silent, sound, steady],
        "fixed:qwen2.5-coder-0.5b+program",
        ExecOptions::default(),
    )
    .await;
    let last: Vec<_> = ids(&a).into_iter().rev().take(2).collect();
    assert_eq!(last, ["synthesis", "synthesis:program"], "{:?}", a.warnings);

    // With both checks the program runs first, then the samples.
    let both = "direct:qwen2.5-coder-0.5b+agree:1@0.3+program";
    let p = parse_policy(both, &pool).unwrap();
    assert_eq!(p.name(), "direct:qwen2.5-coder-0.5b+program+agree:1@0.3");
    let (a, _) = run_on([silent, sound, steady], both, ExecOptions::default()).await;
    assert_eq!(ids(&a), ["1:program", "1:agree1", "1"]);
    // A failed program check spares the samples.
    let (a, calls) = run_on([silent, slip, steady], both, ExecOptions::default()).await;
    assert_eq!((a.answer.as_str(), calls[1].calls()), ("22", 2));

    // Only maths answers are program-checked; others stand, with a warning.
    let (pool, calls) = per_model_pool([silent, sound, steady]);
    let p = parse_policy(small, &pool).unwrap();
    let a = Executor::new(&pool, ExecOptions::default())
        .run(QUESTION, TaskFamily::General, p.as_ref(), 2)
        .await
        .unwrap();
    assert_eq!(calls[1].calls(), 1);
    assert_one_warning(&a, "maths answers only");

    for bad in [
        "+program",
        "direct:qwen2.5-coder-0.5b+programs",
        "direct:qwen2.5-coder-0.5b+program+agree:0",
        "direct:qwen2.5-coder-0.5b+program+program",
        "direct:qwen2.5-coder-0.5b+agree+agree:2",
        "learned:runs/r.safetensors+program+program",
        "direct:qwen2.5-coder-0.5b+program:all+program:all",
        "direct:qwen2.5-coder-0.5b+program+program:all",
        "direct:qwen2.5-coder-0.5b+program:some",
        "+program:all",
    ] {
        let err = parse_policy(bad, &pool).err().unwrap();
        assert!(err.is_input_error(), "{bad}: {err}");
    }
}

/// Answers 22; its programs compute `values[k]` for seed k (greedy is seed 0), then 0.
macro_rules! programs {
    ($values:expr) => {
        |req: &GenRequest| {
            if is_program(req) {
                seeded_program(req, &$values)
            } else {
                "ANSWER: 22".to_string()
            }
        }
    };
}

/// A program whose value depends on the sample's seed (greedy is seed 0).
fn seeded_program(req: &GenRequest, values: &[&str]) -> String {
    let k = seed(req).unwrap_or(0) as usize;
    let v = values.get(k).copied().unwrap_or("0");
    format!("```python\npens = 4 * 3\nbooks = 2 * 5\nanswer = pens + books - 22 + {v}\n```")
}

#[tokio::test]
async fn retry_lets_a_sampled_program_confirm_the_answer() {
    let steady = |req: &GenRequest| match kind(req) {
        Kind::Decompose => PLAN.to_string(),
        Kind::Step => "RESULT: ok".to_string(),
        _ => "ANSWER: 22".to_string(),
    };
    let silent = |_: &GenRequest| "I am not sure.".to_string();
    let retry = "direct:qwen2.5-coder-0.5b+retry";
    let (pool, _) = per_model_pool([silent, steady, steady]);
    let p = parse_policy(retry, &pool).unwrap();
    assert_eq!(p.name(), "direct:qwen2.5-coder-0.5b+retry:1");
    let e = p.escalation().unwrap();
    assert_eq!(
        (e.program, e.uses_all, e.retries, e.samples),
        (true, false, 1, 0)
    );

    // The greedy program confirms the answer: nothing is sampled.
    let agreeing = programs!(["22", "7"]);
    let (a, calls) = run_on([silent, agreeing, steady], retry, ExecOptions::default()).await;
    assert_eq!((a.answer.as_str(), calls[1].calls()), ("22", 2));
    assert_eq!(ids(&a), ["1:program", "1"]);

    // The greedy program computes 21; the sampled one computes 22 and confirms the answer,
    // which stands on the small model.
    let confirmed = programs!(["21", "22"]);
    let (a, calls) = run_on([silent, confirmed, steady], retry, ExecOptions::default()).await;
    assert_eq!(a.answer, "22");
    assert_eq!(ids(&a), ["1:program", "1:retry1", "1"]);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert_eq!((calls[1].calls(), calls[2].calls()), (3, 0));

    // Programs only confirm: two that agree on 21 do not replace the answer 22, which goes
    // up, and the warning says what each computed.
    let outvoting = programs!(["21", "21", "22"]);
    let (a, calls) = run_on([silent, outvoting, steady], retry, ExecOptions::default()).await;
    assert_eq!(
        trail(&a),
        [
            ("1", "qwen2.5-coder-0.5b"),
            ("1:program", "qwen2.5-coder-0.5b"),
            ("1:retry1", "qwen2.5-coder-0.5b"),
            ("1:up1", "qwen2.5-coder-1.5b"),
        ]
    );
    assert_eq!(calls[2].calls(), 1, "the largest model is not checked");
    assert_one_warning(
        &a,
        "computed 21 with its program; computed 21 with its program (2 programs)",
    );
    // A second retry would have confirmed it.
    let (a, _) = run_on(
        [silent, outvoting, steady],
        "direct:qwen2.5-coder-0.5b+retry:2",
        ExecOptions::default(),
    )
    .await;
    assert_eq!(ids(&a), ["1:program", "1:retry1", "1:retry2", "1"]);

    // An answer no program can equal is still escalated without asking for one.
    let worded = answering!(program: "answer = 22", else: "ANSWER: 22 dollars");
    let (a, calls) = run_on([silent, worded, steady], retry, ExecOptions::default()).await;
    assert_eq!((a.answer.as_str(), calls[1].calls()), ("22", 1));
    assert_one_warning(&a, "not a plain number");

    // Retries are sampled at the retry temperature with seeds after the answer's own.
    static SAMPLED: std::sync::Mutex<Vec<Sampling>> = std::sync::Mutex::new(Vec::new());
    let recorded = |req: &GenRequest| {
        if is_program(req) {
            SAMPLED.lock().unwrap().push(req.sampling);
            seeded_program(req, &["21", "20", "19", "18"])
        } else {
            "ANSWER: 22".to_string()
        }
    };
    let (pool, _) = per_model_pool([silent, recorded, steady]);
    let p = parse_policy("direct:qwen2.5-coder-0.5b+retry:3@0.4", &pool).unwrap();
    assert_eq!(p.name(), "direct:qwen2.5-coder-0.5b+retry:3@0.4");
    Executor::new(&pool, ExecOptions::default())
        .run(QUESTION, TaskFamily::Math, p.as_ref(), 2)
        .await
        .unwrap();
    let sampled = SAMPLED.lock().unwrap().clone();
    assert_eq!(sampled.len(), 4);
    assert_eq!(sampled[0], Sampling::Greedy);
    for (k, s) in sampled[1..].iter().enumerate() {
        assert_eq!(
            *s,
            Sampling::Temperature {
                temperature: 0.4,
                seed: k as u64 + 1
            }
        );
    }

    // With `:all`, a retry must also use every number of the question: this one computes
    // 22 without the 5 and confirms nothing.
    let partial = |req: &GenRequest| {
        if is_program(req) && seed(req).is_none() {
            "```python\nanswer = 21\n```".to_string()
        } else if is_program(req) {
            "```python\npens = 4 * 3\nanswer = pens + 2 * 4 + 2\n```".to_string()
        } else {
            "ANSWER: 22".to_string()
        }
    };
    let all = "direct:qwen2.5-coder-0.5b+program:all+retry";
    let p = parse_policy(all, &pool).unwrap();
    assert_eq!(p.name(), "direct:qwen2.5-coder-0.5b+program:all+retry:1");
    let (a, calls) = run_on([silent, partial, steady], all, ExecOptions::default()).await;
    assert_eq!(calls[2].calls(), 1);
    assert_one_warning(&a, "never uses 5 from the question");
    let (a, calls) = run_on([silent, partial, steady], retry, ExecOptions::default()).await;
    assert_eq!(
        (a.answer.as_str(), calls[2].calls()),
        ("22", 0),
        "without :all it confirms: {:?}",
        a.warnings
    );

    for bad in [
        "+retry",
        "direct:qwen2.5-coder-0.5b+retry:0",
        "direct:qwen2.5-coder-0.5b+retry:17",
        "direct:qwen2.5-coder-0.5b+retry:2@0",
        "direct:qwen2.5-coder-0.5b+retry+retry",
        "direct:qwen2.5-coder-0.5b+retry:x",
    ] {
        let err = parse_policy(bad, &pool).err().unwrap();
        assert!(err.is_input_error(), "{bad}: {err}");
    }
    for good in [
        "direct:qwen2.5-coder-0.5b+retry:1+agree:1",
        "direct:qwen2.5-coder-0.5b+agree:1+retry:1",
        "direct:qwen2.5-coder-0.5b+program+retry:1",
    ] {
        assert!(parse_policy(good, &pool).is_ok(), "{good}");
    }
}

/// A keep decision for the 0.5b's maths answers that trusts its greedy program only.
fn keep_on_program(at: Option<f64>) -> r2_allocator::Escalation {
    use r2_signals::{KeepFeature, KeepModel, Logistic};
    let set = r2_allocator::KeepSet {
        profile: "compute".into(),
        try_at: 0.0,
        families: vec![TaskFamily::Math],
        models: vec![KeepModel {
            model: "qwen2.5-coder-0.5b".into(),
            features: vec![KeepFeature::LeastConfidence, KeepFeature::Program],
            logistic: Logistic {
                mean: vec![0.5, 0.5],
                scale: vec![0.5, 0.5],
                weights: vec![0.0, 4.0],
                bias: 0.0,
            },
            threshold: 0.9,
        }],
        calibrated_for: "a test".into(),
    };
    let (_, e) = r2_allocator::Escalation::split("direct:x+keep").unwrap();
    let mut e = e.unwrap();
    let keep = e.keep.as_mut().unwrap();
    keep.set = Arc::new(set);
    keep.at = at;
    e
}

#[tokio::test]
async fn keep_scores_the_answer_and_escalates_below_its_threshold() {
    let direct = |model: usize, at: Option<f64>| {
        r2_allocator::with_escalation(
            Box::new(r2_allocator::DirectPolicy::new(model)),
            Some(keep_on_program(at)),
        )
    };
    let steady = |_: &GenRequest| "ANSWER: 22".to_string();
    let confirmed = |req: &GenRequest| {
        if is_program(req) {
            "```python\nanswer = 4 * 3 + 2 * 5\n```".to_string()
        } else {
            "ANSWER: 22".to_string()
        }
    };
    let unconfirmed = |req: &GenRequest| {
        if is_program(req) {
            "```python\nanswer = 21\n```".to_string()
        } else {
            "ANSWER: 22".to_string()
        }
    };
    let run = |answers: [fn(&GenRequest) -> String; 3],
               model: usize,
               at: Option<f64>,
               family: TaskFamily| async move {
        let (pool, calls) = per_model_pool(answers);
        let policy = direct(model, at);
        assert!(
            policy.name().ends_with("+keep") || at.is_some(),
            "{}",
            policy.name()
        );
        let a = Executor::new(&pool, ExecOptions::default())
            .run(QUESTION, family, policy.as_ref(), 2)
            .await
            .unwrap();
        (a, calls)
    };

    // The program confirms the answer: P(right) = sigmoid(4) ≈ 0.98 clears 0.9; kept.
    let (a, calls) = run([steady, confirmed, steady], 1, None, TaskFamily::Math).await;
    assert_eq!(ids(&a), ["1:program", "1"], "{:?}", a.warnings);
    assert_eq!((calls[1].calls(), calls[2].calls()), (2, 0));
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);

    // It computes something else: P(right) ≈ 0.02, escalated to the 1.5b, whose answer stands.
    let (a, calls) = run([steady, unconfirmed, steady], 1, None, TaskFamily::Math).await;
    assert_eq!(calls[2].calls(), 1);
    assert_eq!(trail(&a).last().unwrap().1, "qwen2.5-coder-1.5b");
    assert_one_warning(&a, "below the keep threshold 0.9");

    // `+keep@b` overrides the calibrated threshold.
    let (a, calls) = run([steady, confirmed, steady], 1, Some(0.99), TaskFamily::Math).await;
    assert_eq!(calls[2].calls(), 1);
    assert_one_warning(&a, "below the keep threshold 0.99");

    // No decision for another model or another family: the answer escalates, unscored.
    let (a, calls) = run([steady, confirmed, steady], 0, None, TaskFamily::Math).await;
    assert_eq!((calls[0].calls(), calls[1].calls()), (1, 2));
    assert_one_warning(&a, "has no keep decision for its math answers");
    let (a, calls) = run([steady, confirmed, steady], 1, None, TaskFamily::General).await;
    assert_eq!((calls[1].calls(), calls[2].calls()), (1, 1));
    assert_one_warning(&a, "has no keep decision for its general answers");
}

#[test]
fn keep_parses_alone_with_an_optional_threshold() {
    use r2_allocator::Escalation;
    let (base, e) = Escalation::split("learned@0.6+keep@0.75").unwrap();
    let e = e.unwrap();
    assert_eq!(
        (base, e.keep.as_ref().unwrap().at),
        ("learned@0.6", Some(0.75))
    );
    assert_eq!(e.suffix(), "+keep@0.75");
    let (_, e) = Escalation::split("direct:qwen2.5-coder-0.5b+keep").unwrap();
    assert_eq!(e.unwrap().suffix(), "+keep");
    for bad in [
        "+keep",
        "direct:qwen2.5-coder-0.5b+keep@1.5",
        "direct:qwen2.5-coder-0.5b+keep@x",
        "direct:qwen2.5-coder-0.5b+keep:2",
        "direct:qwen2.5-coder-0.5b+program+keep",
        "direct:qwen2.5-coder-0.5b+keep+agree",
        "direct:qwen2.5-coder-0.5b+keep+keep",
    ] {
        let err = Escalation::split(bad).err();
        assert!(err.is_some_and(|e| e.is_input_error()), "{bad}");
    }
}
