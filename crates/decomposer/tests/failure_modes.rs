//! What the pilot saw small models do instead of planning: solve inline, loop, echo the
//! prompt, invent the next question; plus broken dependencies, caps and hostile input.

mod common;
use common::{check, check_with, GSM};
use r2_decomposer::{decompose_prompt, parse_plan, TaskFamily, MAX_OUTPUT_BYTES};

#[test]
fn empty_and_blank_output() {
    for output in ["", "   ", "\n\n\n", "\t \r\n"] {
        check(
            output,
            "DIRECT
             ! no usable steps in the decomposer output; answering the question directly",
        );
    }
}

#[test]
fn prose_without_any_step() {
    check(
        "To find out how much Janet makes, we need to know how many eggs she has left after eating and baking, and then multiply that by the price.",
        "DIRECT
         ! no usable steps in the decomposer output; answering the question directly",
    );
}

#[test]
fn half_billion_model_solves_inline() {
    // Qwen2.5-Coder-0.5B on the pilot: 0/40 usable plans, all like this.
    check(
        "1. Janet's ducks lay 16 eggs per day.\n\
         2. She eats 3 eggs for breakfast, so 16 - 3 = 13 eggs left.\n\
         3. She bakes muffins with 4 eggs, so 13 - 4 = 9 eggs left.\n\
         4. She sells 9 eggs at $2 each, so 9 * 2 = $18.\n\
         The answer is 18.",
        "DIRECT
         ! the decomposer solved the question instead of planning it (3 of 4 lines computed results); answering the question directly",
    );
    check(
        "Step 1: 16 - 3 - 4 = 9\nStep 2: 9 * 2 = 18\nStep 3: 18",
        "DIRECT
         ! the decomposer solved the question instead of planning it; answering the question directly",
    );
}

#[test]
fn one_leaked_result_in_a_good_plan_is_dropped() {
    check(
        "1. Find the number of eggs used each day.\n\
         2. Eggs used: 3 + 4 = 7\n\
         3. Find the number of eggs left to sell. (depends on 1)\n\
         4. Multiply the eggs left by $2. (depends on 3)",
        "1. Find the number of eggs used each day.
         2. Find the number of eggs left to sell.  <- 1
         3. Multiply the eggs left by $2.  <- 2
         ! dropped 1 line(s) where the decomposer computed instead of planning",
    );
}

#[test]
fn looping_model_repeats_the_last_step() {
    let mut output = String::from(
        "1. Calculate the number of eggs left after breakfast.\n\
         2. Calculate the number of eggs left after baking muffins.\n",
    );
    for n in 3..40 {
        output.push_str(&format!(
            "{n}. Calculate the money made from selling the remaining eggs.\n"
        ));
    }
    output.push_str("40. Calculate the money made from selling the remaining");
    check(
        &output,
        "1. Calculate the number of eggs left after breakfast.
         2. Calculate the number of eggs left after baking muffins.  <- 1
         3. Calculate the money made from selling the remaining eggs.  <- 1,2
         ! dropped 37 repeated step(s): the decomposer looped",
    );
}

#[test]
fn looping_model_with_near_duplicates_maps_dependencies_to_the_original() {
    check(
        "1. Find the eggs eaten for breakfast.\n\
         2. Find the number of eggs Janet uses for baking each day.\n\
         3. Find the number of eggs Janet uses for baking muffins each day.\n\
         4. Find the eggs left to sell (depends on 1, 3)\n\
         5. Find the eggs left to sell. (depends on 1, 3)",
        "1. Find the eggs eaten for breakfast.
         2. Find the number of eggs Janet uses for baking each day.
         3. Find the eggs left to sell  <- 1,2
         ! dropped 2 repeated step(s): the decomposer looped",
    );
}

#[test]
fn a_counting_loop_is_capped() {
    let output: String = (1..=200)
        .map(|n| format!("Step {n}: Add the result of step {} to the total.\n", n + 1))
        .collect();
    check_with(
        &output,
        GSM,
        4,
        "1. Add the result of step 2 to the total.
         2. Add the result of step 3 to the total.  <- 1
         3. Add the result of step 4 to the total.  <- 1,2
         4. Add the result of step 5 to the total.  <- 1,2,3
         ! plan truncated to 4 steps (max_subtasks)",
    );
}

#[test]
fn bad_dependencies_are_dropped() {
    check(
        "1. Find the eggs eaten. (depends on 2)\n\
         2. Find the eggs baked. (depends on 2)\n\
         3. Find the eggs left. (depends on 1, 2, 9)\n\
         4. Find the income. (depends on 0, 3)",
        "1. Find the eggs eaten.
         2. Find the eggs baked.
         3. Find the eggs left.  <- 1,2
         4. Find the income.  <- 3
         ! step 1: dropped dependency on 2 (not an earlier step)
         ! step 2: dropped dependency on 2 (not an earlier step)
         ! step 3: dropped dependency on 9 (not an earlier step)
         ! step 4: dropped dependency on 0 (not an earlier step)",
    );
    // Only forward references: nothing valid is declared, so the plan stays a chain.
    check(
        "1. Find the eggs eaten. (depends on 2)\n2. Find the eggs baked. (depends on 3)\n3. Find the income.",
        "1. Find the eggs eaten.
         2. Find the eggs baked.  <- 1
         3. Find the income.  <- 1,2
         ! step 1: dropped dependency on 2 (not an earlier step)
         ! step 2: dropped dependency on 3 (not an earlier step)",
    );
}

#[test]
fn cap_at_max_subtasks() {
    let output = "1. Find A.\n2. Find B.\n3. Find C.\n4. Find D.\n5. Find E. (depends on 4)";
    check_with(
        output,
        GSM,
        3,
        "1. Find A.
         2. Find B.  <- 1
         3. Find C.  <- 1,2
         ! plan truncated to 3 steps (max_subtasks)",
    );
    check_with(
        output,
        GSM,
        0,
        "DIRECT\n! plan truncated to 1 steps (max_subtasks)",
    );
}

#[test]
fn echoed_instructions() {
    check(
        "You break a question into short steps that other models will answer one at a time. Do not answer or solve anything yourself.\n\
         1. Write only a numbered list, one step per line.\n\
         2. Each step is a short instruction or sub-question.\n\
         3. <next step> (depends on N, M)",
        "DIRECT
         ! the decomposer only echoed its instructions; answering the question directly",
    );
    // An echo in front of a real plan costs nothing but a warning.
    check(
        "Write only a numbered list, one step per line.\n\
         1. Do not solve anything yourself.\n\
         1. Find the eggs left each day.\n\
         2. Multiply them by $2.",
        "1. Find the eggs left each day.
         2. Multiply them by $2.  <- 1
         ! dropped 1 line(s) echoing the instructions",
    );
}

#[test]
fn copied_few_shot_example() {
    let msgs = decompose_prompt(TaskFamily::Math, GSM, 6);
    let example_plan = &msgs[2].content;
    check(
        &format!("Question: A shop sells pens at $3 each.\n{example_plan}"),
        "DIRECT
         ! the decomposer copied a few-shot example instead of planning this question; answering the question directly",
    );
}

#[test]
fn the_model_invents_the_next_question() {
    check(
        "1. Find the eggs left each day after breakfast and baking.\n\
         2. Multiply the eggs left by $2. (depends on 1)\n\n\
         Question: Tom has 5 apples and buys 3 more. How many apples does he have?\n\
         1. Add 5 and 3.",
        "1. Find the eggs left each day after breakfast and baking.
         2. Multiply the eggs left by $2.  <- 1
         ! ignored the decomposer output after the plan (it went on solving or chatting)",
    );
    check(
        "1. Find the eggs left each day.\n2. Multiply the eggs left by $2.\n\nSolution:\n1. 16 - 3 - 4 = 9 eggs\n2. 9 * 2 = 18",
        "1. Find the eggs left each day.
         2. Multiply the eggs left by $2.  <- 1
         ! ignored the decomposer output after the plan (it went on solving or chatting)",
    );
    check(
        "1. Find the eggs left each day.\n2. Multiply the eggs left by $2.\n1. Find the eggs left each day.\n2. Multiply",
        "1. Find the eggs left each day.
         2. Multiply the eggs left by $2.  <- 1
         ! ignored a second numbered list after the plan",
    );
    check(
        "1. Find the eggs left each day.\n2. Multiply the eggs left by $2.<|im_end|>\n<|im_start|>user\nThanks!",
        "1. Find the eggs left each day.
         2. Multiply the eggs left by $2.  <- 1
         ! ignored the decomposer output after an end-of-turn token",
    );
}

#[test]
fn garbage_bytes() {
    let bytes: Vec<u8> = vec![
        0xff, 0xfe, b'1', b'.', b' ', 0x80, 0x81, b'\n', 0xc3, 0x28, 0x00, 0x1b, b'[', b'3', b'1',
        b'm', b'\n', 0xe2, 0x82, b'\n',
    ];
    let text = String::from_utf8_lossy(&bytes);
    check(
        &text,
        "DIRECT
         ! no usable steps in the decomposer output; answering the question directly",
    );
    // Steps survive among garbage lines.
    let mixed = format!(
        "{text}\n1. Find the eggs left each day.\n2. \u{FFFD}\u{FFFD}\u{FFFD}\n3. Multiply the eggs left by $2.\u{200B}\n\u{0}\u{7}"
    );
    check(
        &mixed,
        "1. Find the eggs left each day.
         2. Multiply the eggs left by $2.  <- 1",
    );
}

#[test]
fn ten_thousand_line_output_stays_fast_and_capped() {
    let started = std::time::Instant::now();
    // A looping model: the same two lines for 10 000 lines.
    let looping =
        "1. Find the eggs left each day.\n2. Multiply the eggs left by $2.\n".repeat(5_000);
    let plan = parse_plan(&looping, GSM, 6);
    assert_eq!(plan.len(), 2);
    // A counting model: 10 000 distinct steps.
    let counting: String = (1..=10_000)
        .map(|n| format!("{n}. Compute partial sum number {n} of the series.\n"))
        .collect();
    let plan = parse_plan(&counting, GSM, 6);
    assert_eq!(plan.len(), 6);
    assert!(plan.warnings.iter().any(|w| w.contains("truncated")));
    // 10 000 lines of unusable prose, every one of which must be read.
    let prose = "The ducks are happy and the market is busy today.\n".repeat(10_000);
    let plan = parse_plan(&prose, GSM, 6);
    assert!(plan.is_direct());
    // One enormous line, and more than MAX_OUTPUT_BYTES of text.
    let huge = format!("1. {}", "eggs ".repeat(MAX_OUTPUT_BYTES));
    let plan = parse_plan(&huge, GSM, 6);
    assert!(plan.is_direct());
    assert!(
        plan.warnings[0].contains("only the start was read"),
        "{:?}",
        plan.warnings
    );
    eprintln!("four 10 000-line outputs parsed in {:?}", started.elapsed());
}

#[test]
fn over_long_steps_are_cut() {
    let long = format!(
        "1. Find {}.\n2. Multiply the eggs left by $2.",
        "the eggs ".repeat(100)
    );
    let plan = parse_plan(&long, GSM, 6);
    assert_eq!(plan.len(), 2);
    assert!(plan.subtasks[0].text.chars().count() <= r2_decomposer::MAX_STEP_CHARS + 1);
    assert!(plan.subtasks[0].text.ends_with('…'));
    assert_eq!(
        plan.warnings,
        vec!["cut 1 over-long step(s) to 500 characters"]
    );
}
