//! Shared helpers: `check(output, expected)` parses a decomposer output and compares a
//! compact rendering of the plan with the expectation, one line per subtask
//! (`N. text  <- deps`), `DIRECT` for `Plan::direct(question)`, and `! warning` lines.
#![allow(dead_code)]

use r2_decomposer::{parse_plan, Plan};

/// A GSM8K test question, the pilot's benchmark.
pub const GSM: &str = "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?";

pub fn show(plan: &Plan, question: &str) -> String {
    let mut lines = Vec::new();
    if plan.is_direct() && plan.subtasks[0].text == question.trim() {
        lines.push("DIRECT".to_string());
    } else {
        for s in &plan.subtasks {
            let deps: Vec<String> = s.depends_on.iter().map(|d| d.to_string()).collect();
            if deps.is_empty() {
                lines.push(format!("{}. {}", s.id, s.text));
            } else {
                lines.push(format!("{}. {}  <- {}", s.id, s.text, deps.join(",")));
            }
        }
    }
    lines.extend(plan.warnings.iter().map(|w| format!("! {w}")));
    lines.join("\n")
}

fn dedent(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses `output` for the GSM8K question with `max_subtasks = 6`.
pub fn check(output: &str, expected: &str) {
    check_with(output, GSM, 6, expected);
}

pub fn check_with(output: &str, question: &str, max: usize, expected: &str) {
    let plan = parse_plan(output, question, max);
    assert_eq!(plan.validate(), Ok(()), "invalid plan {plan:?}");
    assert!(
        (1..=max.max(1)).contains(&plan.len()),
        "{} steps",
        plan.len()
    );
    let got = show(&plan, question);
    let want = dedent(expected);
    assert_eq!(
        got, want,
        "\n--- decomposer output ---\n{output}\n--- got ---\n{got}\n--- want ---\n{want}\n"
    );
}
