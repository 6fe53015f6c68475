//! Plans written as JSON, as instruction-tuned coder models like to.

mod common;
use common::{check, check_with};

const WANT: &str = "1. Find the eggs left each day.
                    2. Find the price of one egg.
                    3. Multiply the eggs left by the price.  <- 1,2";

#[test]
fn array_of_objects() {
    check(
        r#"[{"id": 1, "text": "Find the eggs left each day.", "depends_on": []},
            {"id": 2, "text": "Find the price of one egg.", "depends_on": []},
            {"id": 3, "text": "Multiply the eggs left by the price.", "depends_on": [1, 2]}]"#,
        WANT,
    );
}

#[test]
fn wrapped_in_an_object_with_other_key_names() {
    check(
        r#"{"subtasks": [{"step": 1, "description": "Find the eggs left each day."},
                         {"step": 2, "description": "Find the price of one egg.", "dependencies": null},
                         {"step": 3, "description": "Multiply the eggs left by the price.", "dependencies": ["step 1", "step 2"]}]}"#,
        WANT,
    );
    check(
        r#"{"Steps": [{"id": "1", "task": "Find the eggs left each day."},
                      {"id": "2", "task": "Find the price of one egg."},
                      {"id": "3", "task": "Multiply the eggs left by the price.", "deps": "1, 2"}]}"#,
        WANT,
    );
}

#[test]
fn fenced_with_prose_around_it() {
    check(
        "Sure! Here is the decomposition in JSON format:\n\n```json\n[\n  {\"id\": 1, \"text\": \"Find the eggs left each day.\"},\n  {\"id\": 2, \"text\": \"Find the price of one egg.\"},\n  {\"id\": 3, \"text\": \"Multiply the eggs left by the price.\", \"depends_on\": [1, 2]}\n]\n```\n\nEach subtask can be solved independently except the last one.",
        WANT,
    );
}

#[test]
fn array_of_strings_is_a_chain() {
    check(
        r#"["Find the eggs left each day.", "Find the price of one egg.", "Multiply the eggs left by the price."]"#,
        "1. Find the eggs left each day.
         2. Find the price of one egg.  <- 1
         3. Multiply the eggs left by the price.  <- 1,2",
    );
    // Strings that carry their own numbers and annotations.
    check(
        r#"```
["1. Find the eggs left each day.", "2. Find the price of one egg.", "3. Multiply the eggs left by the price. (depends on 1, 2)"]
```"#,
        WANT,
    );
}

#[test]
fn all_empty_dependency_lists_read_as_a_chain() {
    // A model filling in a template says nothing by writing `[]` everywhere.
    check(
        r#"[{"id":1,"text":"Find the eggs left each day.","depends_on":[]},{"id":2,"text":"Multiply the eggs left by the price.","depends_on":[]}]"#,
        "1. Find the eggs left each day.
         2. Multiply the eggs left by the price.  <- 1",
    );
}

#[test]
fn json_cut_off_by_the_token_limit() {
    // The unterminated last string is not a step.
    check(
        "```json\n[\n  {\"id\": 1, \"text\": \"Find the eggs left each day.\"},\n  {\"id\": 2, \"text\": \"Find the price of one egg.\"},\n  {\"id\": 3, \"text\": \"Multiply the eggs left by the price.\", \"depends_on\": [1, 2]},\n  {\"id\": 4, \"text\": \"Multiply the eggs left by",
        "1. Find the eggs left each day.
         2. Find the price of one egg.
         3. Multiply the eggs left by the price.  <- 1,2",
    );
}

#[test]
fn json_with_trailing_commas_and_bad_and_forward_dependencies() {
    check(
        "[\n {\"id\": 1, \"text\": \"Find the eggs left each day.\", \"depends_on\": [3],},\n {\"id\": 2, \"text\": \"Find the price of one egg.\",},\n {\"id\": 3, \"text\": \"Multiply the eggs left by the price.\", \"depends_on\": [1, 2, 3],},\n]",
        "1. Find the eggs left each day.
         2. Find the price of one egg.
         3. Multiply the eggs left by the price.  <- 1,2
         ! step 1: dropped dependency on 3 (not an earlier step)
         ! step 3: dropped dependency on 3 (not an earlier step)",
    );
}

#[test]
fn json_loops_and_solving_are_handled_like_text() {
    let mut items: Vec<String> = vec![
        r#"{"id": 1, "text": "Find the eggs left each day."}"#.into(),
        r#"{"id": 2, "text": "16 - 3 - 4 = 9"}"#.into(),
    ];
    for id in 3..30 {
        items.push(format!(
            r#"{{"id": {id}, "text": "Multiply the eggs left by the price."}}"#
        ));
    }
    check_with(
        &format!("[{}]", items.join(",\n")),
        common::GSM,
        6,
        "1. Find the eggs left each day.
         2. Multiply the eggs left by the price.  <- 1
         ! dropped 26 repeated step(s): the decomposer looped
         ! dropped 1 line(s) where the decomposer computed instead of planning",
    );
}

#[test]
fn json_with_no_steps_falls_back_to_lines_or_direct() {
    check(
        "{\"answer\": 18}",
        "DIRECT
         ! no usable steps in the decomposer output; answering the question directly",
    );
    check(
        "[1, 2, 3]\n1. Find the eggs left each day.\n2. Multiply the eggs left by the price.",
        "1. Find the eggs left each day.
         2. Multiply the eggs left by the price.  <- 1",
    );
}

#[test]
fn numbered_object() {
    check(
        r#"{"step_1": "Find the eggs left each day.", "step_2": "Find the price of one egg.", "step_10": "Multiply the eggs left by the price."}"#,
        "1. Find the eggs left each day.
         2. Find the price of one egg.  <- 1
         3. Multiply the eggs left by the price.  <- 1,2",
    );
}
