//! P3 reference solutions: `sol()` is run (trusted dataset code) to get an answer, whose
//! `repr` must then grade correct as a literal; another puzzle's answer must not.

mod common;

use r2_bench::datasets::{Gold, Item};
use r2_bench::grade::exec::{run_p3_solution, ExecLimits, ExecStatus};
use r2_bench::grade::grade;

/// Reference solutions that do not yield an accepted answer. None in the paper subset;
/// in the full `puzzles.json`, `ExponentialCoinMoves:0`'s answer is an 81 MB literal, over
/// the sandbox's 64 MiB output cap (no model would write it either).
const KNOWN_BAD: &[&str] = &["ExponentialCoinMoves:0"];

/// Puzzles that genuinely accept the other puzzle's answer used as the negative example:
/// `length=0`/`length=1` makes the `LongestMonotonicSubstring` checks vacuous, and the
/// move list borrowed for `WaterPouring:2` happens to reach its goal state.
const ACCEPT_OTHER_ANSWER: &[&str] = &[
    "LongestMonotonicSubstring:3",
    "LongestMonotonicSubstring:4",
    "LongestMonotonicSubstringTricky:2",
    "WaterPouring:2",
];

fn reference_answers(items: &[Item]) -> Vec<Option<String>> {
    let runs = common::par_map(items, common::threads(), |it| {
        let sol = it.reference.as_deref()?;
        Some(run_p3_solution(sol, &ExecLimits::default()))
    });
    let mut failed = Vec::new();
    let answers = items
        .iter()
        .zip(runs)
        .map(|(it, run)| match run? {
            ExecStatus::Pass(repr) => Some(repr),
            other => {
                if !KNOWN_BAD.contains(&it.id.as_str()) {
                    failed.push(format!("{}: {}", it.id, other.describe()));
                }
                None
            }
        })
        .collect();
    assert!(
        failed.is_empty(),
        "reference solutions did not run:\n{}",
        failed.join("\n")
    );
    answers
}

fn check(items: Vec<Item>, min_with_reference: usize, negatives: bool) {
    let answers = reference_answers(&items);
    let with_ref = answers.iter().filter(|a| a.is_some()).count();
    assert!(with_ref >= min_with_reference, "only {with_ref} references");
    let jobs: Vec<(usize, String, bool)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, _)| answers[i].clone().map(|a| (i, a, true)))
        .chain(
            items
                .iter()
                .enumerate()
                .filter(|_| negatives)
                .filter_map(|(i, it)| {
                    // A wrong answer of the right type: the answer of the next puzzle of another
                    // family (`Family:k` names) with the same answer type.
                    let Gold::P3 { ans_type, .. } = &it.gold else {
                        unreachable!()
                    };
                    let family = |k: usize| items[k].id.split(':').next().unwrap_or("").to_string();
                    (1..items.len())
                        .map(|k| (i + k) % items.len())
                        .find_map(|j| {
                            let Gold::P3 { ans_type: t, .. } = &items[j].gold else {
                                unreachable!()
                            };
                            (t == ans_type && family(j) != family(i))
                                .then(|| answers[j].clone())
                                .flatten()
                        })
                        .map(|a| (i, a, false))
                }),
        )
        .collect();
    let results = common::par_map(&jobs, common::threads(), |(i, answer, _)| {
        grade(&items[*i].gold, &format!("Reasoning.\nANSWER: {answer}"))
    });
    let mut bad = Vec::new();
    for ((i, answer, should_pass), g) in jobs.iter().zip(&results) {
        let id = &items[*i].id;
        let expected = if *should_pass {
            !KNOWN_BAD.contains(&id.as_str())
        } else {
            ACCEPT_OTHER_ANSWER.contains(&id.as_str())
        };
        if g.correct != expected {
            let a: String = answer.chars().take(80).collect();
            bad.push(format!("{id}: expected {expected}, got {g:?} for {a}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn paper_p3_reference_solutions() {
    check(common::load("paper-p3", None), 199, true);
}

/// Every reference solution in `puzzles.json` (1,661 of 1,715 puzzles have one; slow).
#[test]
#[ignore]
fn all_p3_reference_solutions() {
    check(common::load("p3", Some("all")), 1660, false);
}
