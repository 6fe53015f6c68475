//! Plans as small instruct models really write them: preambles, markdown, odd numbering,
//! dependency phrases, one-line lists, plain sentences.

mod common;
use common::{check, check_with};

#[test]
fn clean_plan_with_preamble_and_epilogue() {
    check(
        "Here is the plan:\n\n\
         1. Calculate the number of eggs Janet eats for breakfast each day.\n\
         2. Calculate the number of eggs Janet uses to bake muffins each day.\n\
         3. Subtract the eggs eaten and used for muffins from the total eggs laid. (depends on 1, 2)\n\
         4. Multiply the remaining eggs by the price per egg to find her daily earnings. (depends on 3)\n\n\
         This plan breaks the problem into simple steps that can be solved one at a time.",
        "1. Calculate the number of eggs Janet eats for breakfast each day.
         2. Calculate the number of eggs Janet uses to bake muffins each day.
         3. Subtract the eggs eaten and used for muffins from the total eggs laid.  <- 1,2
         4. Multiply the remaining eggs by the price per egg to find her daily earnings.  <- 3",
    );
}

#[test]
fn markdown_headings_with_solved_sub_bullets() {
    // Qwen2.5-1.5B's favourite shape: bold step titles, then it works each one out.
    check(
        "To solve this problem, we can break it down into the following steps:\n\n\
         ### Step 1: **Determine the total number of eggs laid per day**\n\
         - Janet's ducks lay 16 eggs per day.\n\n\
         ### Step 2: **Calculate the eggs used**\n\
         - She eats 3 eggs for breakfast.\n\
         - She uses 4 eggs for muffins.\n\
         - Total used = 3 + 4 = 7 eggs.\n\n\
         ### Step 3: **Find the remaining eggs**\n\
         - Remaining = 16 - 7 = 9 eggs.\n\n\
         ### Step 4: **Calculate the daily earnings**\n\
         - 9 eggs * $2 = $18.\n\n\
         So, Janet makes **$18** every day at the farmers' market.",
        "1. Determine the total number of eggs laid per day
         2. Calculate the eggs used  <- 1
         3. Find the remaining eggs  <- 1,2
         4. Calculate the daily earnings  <- 1,2,3",
    );
}

#[test]
fn numbering_styles() {
    let want = "1. Find the eggs left after breakfast and baking.
                2. Find the money from selling them.  <- 1";
    for output in [
        "1) Find the eggs left after breakfast and baking.\n2) Find the money from selling them.",
        "(1) Find the eggs left after breakfast and baking.\n(2) Find the money from selling them.",
        "Step 1: Find the eggs left after breakfast and baking.\nStep 2: Find the money from selling them.",
        "**Step 1**: Find the eggs left after breakfast and baking.\n**Step 2**: Find the money from selling them.",
        "**Step 1:** Find the eggs left after breakfast and baking.\n**Step 2:** Find the money from selling them.",
        "Subtask 1 - Find the eggs left after breakfast and baking.\nSubtask 2 - Find the money from selling them.",
        "1. **Find the eggs left after breakfast and baking.**\n2. **Find the money from selling them.**",
        "Step 1:\nFind the eggs left after breakfast and baking.\nStep 2:\nFind the money from selling them.",
        "1. Step 1: Find the eggs left after breakfast and baking.\n2. Step 2: Find the money from selling them.",
        "1. Find the eggs left after breakfast and baking.\n1. Find the money from selling them.",
        "- Find the eggs left after breakfast and baking.\n- Find the money from selling them.",
        "* Find the eggs left after breakfast and baking.\n* Find the money from selling them.",
        "  1.   Find the eggs left after breakfast and baking.  \r\n  2.   Find the money from selling them.  \r\n",
        "> 1. Find the eggs left after breakfast and baking.\n> 2. Find the money from selling them.",
        "1. Find the eggs left after breakfast and baking. 2. Find the money from selling them.",
        "Find the eggs left after breakfast and baking.\nFind the money from selling them.",
        "First, find the eggs left after breakfast and baking. Then find the money from selling them.",
    ] {
        check(output, want);
    }
}

#[test]
fn dependency_phrases() {
    check(
        "1. Find the eggs eaten and baked each day.\n\
         2. Find the eggs left each day - depends on step 1\n\
         3. Find the price of one egg. (no dependencies)\n\
         4. Multiply the eggs left by the price (uses steps 2 and 3)\n\
         5. Report the daily income in dollars [deps: 4]",
        "1. Find the eggs eaten and baked each day.
         2. Find the eggs left each day  <- 1
         3. Find the price of one egg.
         4. Multiply the eggs left by the price  <- 2,3
         5. Report the daily income in dollars  <- 4",
    );
}

#[test]
fn declared_dependencies_make_undeclared_steps_independent() {
    check(
        "1. Find the eggs eaten for breakfast.\n\
         2. Find the eggs used for muffins.\n\
         3. Subtract both from 16. (depends on 1, 2)",
        "1. Find the eggs eaten for breakfast.
         2. Find the eggs used for muffins.
         3. Subtract both from 16.  <- 1,2",
    );
}

#[test]
fn inline_mentions_of_steps_add_dependencies_only_when_some_are_declared() {
    // No annotation anywhere: a chain, whatever the prose mentions.
    check(
        "1. Find the eggs eaten for breakfast.\n\
         2. Find the eggs used for muffins.\n\
         3. Subtract the results of steps 1 and 2 from 16.",
        "1. Find the eggs eaten for breakfast.
         2. Find the eggs used for muffins.  <- 1
         3. Subtract the results of steps 1 and 2 from 16.  <- 1,2",
    );
    check(
        "1. Find the eggs eaten for breakfast.\n\
         2. Find the eggs used for muffins.\n\
         3. Subtract the results of steps 1 and 2 from 16.\n\
         4. Multiply by the price. (depends on 3)",
        "1. Find the eggs eaten for breakfast.
         2. Find the eggs used for muffins.
         3. Subtract the results of steps 1 and 2 from 16.  <- 1,2
         4. Multiply by the price.  <- 3",
    );
}

#[test]
fn multiple_choice_plan_keeps_option_lists_in_text() {
    let q = "The sanctions against the school were a punishing blow, and they seemed to what the efforts the school had made to change?\nThe options are: A: ignore; B: enforce; C: authoritarian; D: yell at; E: avoid";
    check_with(
        "Sure! Here's how to break it down:\n\
         1. Understand what \"punishing blow\" means for the school's efforts.\n\
         2. Determine what effect the sanctions had on those efforts. (depends on 1)\n\
         3. Evaluate each option (A: ignore, B: enforce, C: authoritarian, D: yell at, E: avoid) against that effect. (depends on 2)\n\
         4. Choose the option letter that fits best. (depends on 3)\n\n\
         Answer: A",
        q,
        5,
        "1. Understand what \"punishing blow\" means for the school's efforts.
         2. Determine what effect the sanctions had on those efforts.  <- 1
         3. Evaluate each option (A: ignore, B: enforce, C: authoritarian, D: yell at, E: avoid) against that effect.  <- 2
         4. Choose the option letter that fits best.  <- 3
         ! ignored the decomposer output after the plan (it went on solving or chatting)",
    );
}

#[test]
fn code_plan_ignores_the_code_it_wrote_anyway() {
    let q = "Write a python function to find the first repeated character in a given string.";
    check_with(
        "Step 1: Initialize an empty set to keep track of seen characters.\n\
         Step 2: Iterate through each character in the string. (depends on 1)\n\
         Step 3: If the character is in the set, return it. (depends on 2)\n\
         Step 4: Write the complete function. (depends on 3)\n\n\
         ```python\n\
         def first_repeated_char(s):\n\
         1. seen = set()\n\
             for c in s:\n\
                 if c in seen:\n\
                     return c\n\
         ```",
        q,
        6,
        "1. Initialize an empty set to keep track of seen characters.
         2. Iterate through each character in the string.  <- 1
         3. If the character is in the set, return it.  <- 2
         4. Write the complete function.  <- 3",
    );
}

#[test]
fn command_plan_drops_leaked_action_sequences() {
    let q = "jump around left twice after walk right";
    check_with(
        "1. Translate \"walk right\" into actions.\n\
         2. Translate \"jump around left twice\" into actions.\n\
         3. I_TURN_RIGHT I_WALK\n\
         4. Join the actions, \"walk right\" first. (depends on 1, 2)",
        q,
        5,
        "1. Translate \"walk right\" into actions.
         2. Translate \"jump around left twice\" into actions.
         3. Join the actions, \"walk right\" first.  <- 1,2
         ! dropped 1 line(s) where the decomposer computed instead of planning",
    );
}

#[test]
fn the_model_chooses_to_answer_directly() {
    for output in [
        "1. Answer the question directly.",
        "1. Answer the question directly.<|im_end|>",
        "Answer the question directly.",
        "**1. Answer the question directly.**\n",
        "1. Answer the question directly.\n1. Answer the question directly.",
    ] {
        let warnings = if output.matches("directly").count() > 1 {
            "! dropped 1 repeated step(s): the decomposer looped"
        } else {
            ""
        };
        check(output, &format!("DIRECT\n{warnings}"));
    }
    // Restating the question is choosing one step too.
    check(&format!("1. {}", common::GSM), "DIRECT");
}

#[test]
fn a_single_real_step_is_a_direct_plan() {
    check("1. Compute the farmers' market income.", "DIRECT");
}

#[test]
fn non_english_plans() {
    check_with(
        "1. 计算每天剩下的鸡蛋数量。\n2. 计算卖鸡蛋的收入。(depends on 1)",
        "珍妮每天卖鸡蛋赚多少钱？",
        4,
        "1. 计算每天剩下的鸡蛋数量。
         2. 计算卖鸡蛋的收入。  <- 1",
    );
}
