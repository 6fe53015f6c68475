//! Every MATH gold answer grades correct against itself (in the forms a model writes it) and
//! a perturbed answer grades incorrect: all of MATH-500, the full MATH test and the paper's
//! 200-item subset.

mod common;

use r2_bench::datasets::Gold;
use r2_bench::grade::grade;

fn gold_of(item: &r2_bench::datasets::Item) -> &str {
    match &item.gold {
        Gold::MathExpr(g) => g,
        other => panic!("{}: not a MATH gold: {other:?}", item.id),
    }
}

fn check_all(name: &str, expected: usize) {
    let items = common::load(name, None);
    assert_eq!(items.len(), expected, "{name}");
    let mut failures = Vec::new();
    for it in &items {
        let gold = gold_of(it);
        let one_line = gold.replace('\n', " ");
        for text in [
            format!("Reasoning...\nANSWER: {one_line}"),
            format!("So the final answer is $\\boxed{{{gold}}}$."),
            format!("**ANSWER:** ${one_line}$"),
        ] {
            let g = grade(&it.gold, &text);
            if !g.correct {
                failures.push(format!(
                    "{}: gold {gold:?} not accepted from {text:?} (extracted {:?})",
                    it.id, g.extracted
                ));
            }
            assert_eq!(g.method, "math-equiv");
        }
        let wrong = common::bump_first_number(gold);
        let g = grade(&it.gold, &format!("ANSWER: {wrong}"));
        if g.correct {
            failures.push(format!(
                "{}: perturbed {wrong:?} accepted for gold {gold:?}",
                it.id
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn math500_golds() {
    check_all("math500", 500);
}

#[test]
fn paper_math_golds() {
    check_all("paper-math", 200);
}

#[test]
fn full_math_test_golds() {
    check_all("math", 5000);
}

/// The worked solution itself (which ends in `\boxed{gold}`) grades correct.
#[test]
fn math_solutions_grade_correct() {
    let items = common::load("math500", None);
    for it in &items {
        let solution = it.reference.as_deref().expect("MATH-500 has solutions");
        let g = grade(&it.gold, solution);
        assert!(
            g.correct,
            "{}: solution not accepted (extracted {:?}, gold {:?})",
            it.id,
            g.extracted,
            gold_of(it)
        );
    }
}

/// Golds with a constant value (after normalisation) also accept that value written as a
/// decimal, and reject it off by 1e-4: the evaluator understands the forms the data uses.
#[test]
fn numeric_golds_accept_their_decimal_value() {
    use r2_bench::grade::latex;
    use r2_executor::numeric::expr;
    let items = common::load("math500", None);
    let mut valued = 0;
    let mut skipped = Vec::new();
    for it in &items {
        let gold = gold_of(it);
        let Some(v) = expr::eval(&latex::normalize(gold)) else {
            skipped.push(gold.to_string());
            continue;
        };
        valued += 1;
        let exact = grade(&it.gold, &format!("ANSWER: {v:.15}"));
        assert!(exact.correct, "{}: {gold:?} should accept {v:.15}", it.id);
        let off = v + 1e-4 * v.abs().max(1.0);
        let g = grade(&it.gold, &format!("ANSWER: {off:.15}"));
        assert!(!g.correct, "{}: {gold:?} should reject {off:.15}", it.id);
    }
    eprintln!("{valued} numeric golds; not constant: {skipped:?}");
    assert!(
        valued >= 330,
        "only {valued} of 500 MATH-500 golds evaluate"
    );
}
