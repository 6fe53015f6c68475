//! Replays the committed fuzz inputs on stable: every file of `fuzz/corpus/<target>/` (the
//! minimised corpus) and `fuzz/artifacts/<target>/` (inputs that once crashed, kept as
//! regression tests) goes through the same target body the fuzzer ran.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs every input of one target; returns how many ran and the failures (path: message).
fn replay(target: &str) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failures = Vec::new();
    for kind in ["corpus", "artifacts"] {
        for path in files(&fuzz_dir().join(kind).join(target)) {
            let data = std::fs::read(&path).expect("readable input");
            ran += 1;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                assert!(
                    r2_fuzz_targets::run(target, &data),
                    "unknown target {target}"
                )
            }));
            if let Err(e) = outcome {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: {msg}", path.display()));
            }
        }
    }
    (ran, failures)
}

#[test]
fn every_target_has_a_fuzz_binary_and_a_corpus() {
    for target in r2_fuzz_targets::TARGETS {
        let bin = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        assert!(bin.is_file(), "{} is missing", bin.display());
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "no corpus for {target}");
    }
    let bins = files(&fuzz_dir().join("fuzz_targets"));
    assert_eq!(bins.len(), r2_fuzz_targets::TARGETS.len(), "{bins:?}");
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let (ran, failures) = replay(stringify!($name));
            assert!(ran > 0);
            assert!(
                failures.is_empty(),
                "{} of {ran} inputs failed:\n{}",
                failures.len(),
                failures.join("\n")
            );
        }
    )*};
}

replay_tests!(
    plan,
    program,
    answer,
    grade,
    config,
    chat_request,
    sse,
    labels
);
