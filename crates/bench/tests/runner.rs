//! The bench runner on a scripted pool: results on disk, resume, errors, summary arithmetic.

use std::collections::BTreeMap;
use std::io::Write;

use r2_allocator::parse_policy;
use r2_bench::run::{items_path, read_results, run_policy, RunSettings};
use r2_bench::summary::{compare_to_baseline, summarise};
use r2_bench::{Gold, Item};
use r2_decomposer::TaskFamily;
use r2_executor::ExecOptions;
use r2_pool::{BackendError, Pool, PoolConfig, ScriptedBackend};

fn items(n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| Item {
            id: format!("q{i}"),
            question: format!("Question number {i}: what is 40 + 2?"),
            family: TaskFamily::Math,
            // Every other gold is wrong on purpose, so accuracy is 50% for an always-42 model.
            gold: Gold::Number(if i % 2 == 0 { "42".into() } else { "7".into() }),
            reference: None,
            meta: BTreeMap::new(),
        })
        .collect()
}

fn settings(dir: &std::path::Path) -> RunSettings {
    RunSettings {
        out_dir: dir.to_path_buf(),
        concurrency: 3,
        exec: ExecOptions::default(),
        decomposer: 2,
        judge: 2,
        limits: Default::default(),
    }
}

fn no_progress(_: usize, _: usize, _: usize, _: f64) {}

#[tokio::test]
async fn results_resume_and_summarise() {
    let dir = tempfile::tempdir().unwrap();
    let backend = ScriptedBackend::new(|req| {
        if req.messages[1].content.contains("number 3:") {
            return Err(BackendError::Inference {
                model: "m".into(),
                reason: "boom".into(),
            });
        }
        Ok("40 + 2 = 42\nANSWER: 42".into())
    });
    let pool = Pool::uniform(PoolConfig::embedded(), backend.clone());
    let policy = parse_policy("direct:qwen2.5-coder-1.5b", &pool).unwrap();
    let s = settings(dir.path());

    // First run: 3 items.
    let first = run_policy(&pool, policy.as_ref(), &items(6)[..3], &s, &no_progress)
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(backend.calls(), 3);
    // A run killed mid-write leaves a partial line: it is ignored.
    let path = items_path(dir.path(), "direct:qwen2.5-coder-1.5b");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"id\": \"q4\", \"pol")
        .unwrap();

    // Second run over 6 items: only the 3 new ones run; q3 errors without aborting the run.
    let all = run_policy(&pool, policy.as_ref(), &items(6), &s, &no_progress)
        .await
        .unwrap();
    assert_eq!(backend.calls(), 6, "finished items are not run again");
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["q0", "q1", "q2", "q3", "q4", "q5"]
    );
    let q3 = &all[3];
    assert!(q3.error.as_deref().unwrap().contains("boom"));
    assert!(!q3.correct);

    // A rerun retries only the errored item.
    run_policy(&pool, policy.as_ref(), &items(6), &s, &no_progress)
        .await
        .unwrap();
    assert_eq!(backend.calls(), 7);
    assert_eq!(read_results(&path).len(), 7, "3 + 3 + 1 result lines");

    // Summary: q3 errored → 5 graded, correct on q0, q2, q4.
    let sum = summarise("direct:qwen2.5-coder-1.5b", &all, &pool.config);
    assert_eq!((sum.items, sum.graded, sum.correct), (6, 5, 3));
    assert!((sum.accuracy - 0.6).abs() < 1e-12);
    assert!(sum.ci95[0] < 0.6 && sum.ci95[1] > 0.6);
    assert_eq!(sum.errored.len(), 1);
    assert_eq!(sum.step_share["qwen2.5-coder-1.5b"], 1.0);
    // Cost by hand from tokens, under both profiles.
    let u = sum.usage["qwen2.5-coder-1.5b"];
    assert_eq!(u.calls, 5);
    let api = (u.input_tokens as f64 * 2.5 + u.output_tokens as f64 * 10.0) / 1e6;
    let compute = (u.input_tokens as f64 * 0.154 + u.output_tokens as f64 * 0.308) / 1e6;
    assert!((sum.cost_total["api"] - api).abs() < 1e-15);
    assert!((sum.cost_total["compute"] - compute).abs() < 1e-15);
    assert!((sum.cost_per_item["api"] - api / 5.0).abs() < 1e-15);

    let mut cheap = summarise("direct:qwen2.5-coder-1.5b", &all, &pool.config);
    cheap.policy = "cheaper".into();
    cheap.cost_per_item.insert("api".into(), api / 10.0);
    let mut both = vec![sum, cheap];
    compare_to_baseline(&mut both, "direct:qwen2.5-coder-1.5b");
    assert_eq!(both[0].cost_change_vs_baseline["api"], Some(0.0));
    assert!((both[1].cost_change_vs_baseline["api"].unwrap() + 0.5).abs() < 1e-12);
}

#[tokio::test]
async fn decomposed_policies_record_per_model_usage() {
    let dir = tempfile::tempdir().unwrap();
    let backend = ScriptedBackend::new(|req| {
        let system = &req.messages[0].content;
        Ok(if system.starts_with("You break a question") {
            "1. Add 40 and 2.\n2. Check the sum. (depends on 1)".into()
        } else if system.starts_with("You are working on one step") {
            "RESULT: 42".into()
        } else {
            "ANSWER: 42".into()
        })
    });
    let pool = Pool::uniform(PoolConfig::embedded(), backend);
    let policy = parse_policy("fixed:smollm2-135m", &pool).unwrap();
    let r = run_policy(
        &pool,
        policy.as_ref(),
        &items(2),
        &settings(dir.path()),
        &no_progress,
    )
    .await
    .unwrap();
    let u = &r[0].usage;
    assert_eq!(u["qwen2.5-coder-1.5b"].calls, 1, "the decomposer");
    assert_eq!(u["smollm2-135m"].calls, 3, "two steps and the synthesis");
    assert!(r[0].correct && !r[1].correct);
    assert!(!r[0].decomposition_failed);
}
