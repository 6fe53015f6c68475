//! Snapshots of `ask`'s two outputs, the table and `--json`, through the binary on a pool
//! of two `openai` models whose upstream (`r2_test_support::upstream`) answers by script:
//! a two-step plan, step results and a synthesis. No model runs, so the answer, the tokens,
//! costs and confidences are fixed; only latencies vary, and they are redacted.

use std::path::{Path, PathBuf};

use r2_test_support::bin;
use r2_test_support::cli::{run, text};
use r2_test_support::upstream::{Fault, Upstream};
use serde_json::Value;

const KEY_VAR: &str = "R2_ASK_SNAPSHOT_KEY";
const QUESTION: &str = "What is 6 * 7, plus 0?";

/// The scripted model: which prompt this is, by its system message.
fn answer(body: &Value) -> String {
    let system = body["messages"][0]["content"].as_str().unwrap_or("");
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    if system.starts_with("You break a question") {
        "1. Multiply 6 by 7.\n2. Add 0 to the product.".into()
    } else if system.starts_with("You are working on one step") {
        "6 * 7 = 42, and 42 + 0 = 42.\nRESULT: 42".into()
    } else if last.contains("Notes from working through it") {
        "The product plus 0 is 42.\nANSWER: 42".into()
    } else {
        "6 * 7 + 0 = 42.\nANSWER: 42".into()
    }
}

fn pool(dir: &Path, url: &str) -> PathBuf {
    let model = |id: &str, parameters: u64, price: f64| {
        format!("[[models]]\nid = \"{id}\"\nbackend = \"openai\"\nbase_url = \"{url}\"\napi_model = \"upstream-{id}\"\napi_key_env = \"{KEY_VAR}\"\nmax_retries = 0\nparameters = {parameters}\ncontext_length = 4096\nprices.compute = {{ input = {price}, output = {price} }}\n\n")
    };
    let text = format!(
        "decomposer = \"big\"\npolicy = \"fixed:small\"\n\n{}{}",
        model("small", 100_000_000, 0.1),
        model("big", 1_000_000_000, 1.0)
    );
    let path = dir.join("pool.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `ask` with `args` on the scripted pool; its standard output.
fn ask(args: &[&str]) -> String {
    let upstream = Upstream::start(vec![Fault::Ok]).with_answer(answer);
    let dir = tempfile::tempdir().unwrap();
    let cfg = pool(dir.path(), &upstream.url);
    let o = run(bin!()
        .env("R2REASONER_HOME", dir.path())
        .env(KEY_VAR, "sk-ask-snapshot")
        .arg("--config")
        .arg(&cfg)
        .arg("ask")
        .args(args)
        .arg(QUESTION));
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

/// The table's latency column (`{:>8.1}s`) is the one thing that varies.
fn assert_table(name: &str, table: &str) {
    insta::with_settings!({filters => vec![(r"\b\d+\.\ds ", "[latency] ")]}, {
        insta::assert_snapshot!(name, table);
    });
}

#[test]
fn ask_prints_a_table_of_the_steps() {
    assert_table("table", &ask(&[]));
}

#[test]
fn ask_direct_prints_one_step() {
    assert_table("table_direct", &ask(&["--direct", "small"]));
}

#[test]
fn ask_json_prints_the_whole_answer() {
    let v: Value = serde_json::from_str(&ask(&["--json"])).unwrap();
    insta::assert_json_snapshot!("json", v, {".steps[].latency_ms" => "[latency]"});
}
