//! Every MBPP reference solution of the standard test split (task ids 11–510) passes its
//! own asserts in the sandbox, and a broken candidate fails them.

mod common;

use r2_bench::datasets::Gold;
use r2_bench::grade::grade;

/// Reference solutions that fail their own tests in the dataset as shipped.
const KNOWN_BAD: &[&str] = &[];

#[test]
fn mbpp_reference_solutions_pass() {
    let items = common::load("mbpp", None);
    assert_eq!(items.len(), 500);
    assert!(items.iter().all(|it| matches!(it.gold, Gold::Mbpp { .. })));
    let results = common::par_map(&items, common::threads(), |it| {
        let code = it
            .reference
            .as_deref()
            .expect("MBPP items carry their reference code");
        let answer = format!("```python\n{code}\n```\nANSWER: done");
        grade(&it.gold, &answer)
    });
    let mut failed: Vec<String> = Vec::new();
    for (it, g) in items.iter().zip(&results) {
        assert_eq!(g.method, "code-exec");
        if !g.correct {
            failed.push(format!("{}: {}", it.id, g.detail));
        }
    }
    let unexpected: Vec<&String> = failed
        .iter()
        .filter(|f| !KNOWN_BAD.iter().any(|id| f.starts_with(&format!("{id}:"))))
        .collect();
    assert!(
        unexpected.is_empty(),
        "reference solutions failing:\n{unexpected:#?}"
    );
    let known_failing = failed.len();
    assert_eq!(
        known_failing,
        KNOWN_BAD.len(),
        "a known-bad reference now passes: {failed:?}"
    );
}

/// A candidate that returns the wrong thing fails every task.
#[test]
fn mbpp_wrong_candidates_fail() {
    let items = common::select_every(common::load("mbpp", None), 10);
    let results = common::par_map(&items, common::threads(), |it| {
        let Gold::Mbpp { tests, .. } = &it.gold else {
            unreachable!()
        };
        // Define the tested function to return a sentinel no test expects.
        let name = tests[0]
            .trim_start_matches("assert")
            .trim()
            .trim_start_matches(['(', ' ', '!'])
            .trim_start_matches("not ")
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .find(|w| {
                !w.is_empty() && !["math", "set", "round", "abs", "sorted", "isclose"].contains(w)
            })
            .unwrap_or("f")
            .to_string();
        let code = format!("def {name}(*args, **kwargs):\n    return object()");
        (
            it.id.clone(),
            grade(&it.gold, &format!("```python\n{code}\n```")),
        )
    });
    for (id, g) in results {
        assert!(!g.correct, "{id}: a sentinel candidate passed");
    }
}
