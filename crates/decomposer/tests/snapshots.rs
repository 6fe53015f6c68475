//! Snapshots of `parse_plan` on representative decomposer outputs: each snapshot holds the
//! model's output and the whole parsed plan (subtasks, dependencies, warnings), so a change
//! in parsing shows up as a reviewable diff (`cargo insta review`).

mod common;
use common::GSM;
use r2_decomposer::{parse_plan, Plan};

#[derive(serde::Serialize)]
struct Case<'a> {
    output: &'a str,
    plan: Plan,
}

/// Parses `output` for the GSM8K question with `max_subtasks = 5`; the snapshot `name`
/// holds the output and the plan.
fn check(name: &str, output: &str) {
    let plan = parse_plan(output, GSM, 5);
    assert_eq!(plan.validate(), Ok(()), "{plan:?}");
    insta::with_settings!({omit_expression => true}, {
        insta::assert_yaml_snapshot!(name, Case { output, plan });
    });
}

#[test]
fn a_numbered_list_with_dependency_phrases() {
    check(
        "a_numbered_list_with_dependency_phrases",
        "Here is the plan:\n\
         1. Find how many eggs Janet uses each day.\n\
         2. Find how many eggs are left to sell. (depends on 1)\n\
         3. Multiply the eggs left by $2. (depends on step 2)",
    );
}

#[test]
fn a_json_plan() {
    check(
        "a_json_plan",
        r#"```json
{"subtasks": [
  {"id": 1, "text": "Add the eggs eaten and the eggs baked", "depends_on": []},
  {"id": 2, "text": "Subtract that from 16", "depends_on": [1]},
  {"id": 3, "text": "Multiply the remainder by 2", "depends_on": [2]}
]}
```"#,
    );
}

#[test]
fn markdown_steps_followed_by_solving() {
    check(
        "markdown_steps_followed_by_solving",
        "**Step 1:** Find the eggs eaten and baked per day.\n\
         **Step 2:** Find the eggs left over.\n\
         \n\
         Now let's solve each step.\n\
         Step 1: 3 + 4 = 7",
    );
}

#[test]
fn a_model_that_solves_instead_of_planning() {
    check(
        "a_model_that_solves_instead_of_planning",
        "1. Janet's ducks lay 16 eggs per day.\n\
         2. She eats 3 eggs for breakfast, so 16 - 3 = 13 eggs left.\n\
         3. She bakes muffins with 4 eggs, so 13 - 4 = 9 eggs left.\n\
         4. She sells 9 eggs at $2 each, so 9 * 2 = $18.\n\
         The answer is 18.",
    );
}

#[test]
fn a_looping_list_over_the_cap_with_a_chat_turn() {
    check(
        "a_looping_list_over_the_cap_with_a_chat_turn",
        "- Find the eggs eaten.\n\
         - Find the eggs baked.\n\
         - Find the eggs eaten.\n\
         - Find the eggs left.\n\
         - Find the price per egg.\n\
         - Multiply eggs left by the price.\n\
         - Check the units.\n\
         <|im_end|>\n<|im_start|>user\nWhat is 2 + 2?",
    );
}

#[test]
fn prose_without_steps() {
    check(
        "prose_without_steps",
        "To find out how much Janet makes, we need to know how many eggs she has left.",
    );
}
