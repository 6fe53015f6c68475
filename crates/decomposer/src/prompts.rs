//! Decomposition prompts: one short system message per task family plus one or two few-shot
//! exchanges (user question → assistant plan) in the exact output format `parse_plan` reads.
//!
//! Written for a 1.5B instruct model with a 4096-token context: the whole prompt for any family
//! stays around 300 tokens before the question. Few-shot turns are real chat turns, because
//! small models copy the format of an assistant turn far more reliably than they follow a
//! description of it.

use r2_pool::ChatMessage;

use crate::family::TaskFamily;

/// What the model writes when splitting would not help; `parse_plan` turns it into
/// `Plan::direct`.
pub const DIRECT_STEP: &str = "Answer the question directly.";

/// A few-shot example: a question and the plan we want for it.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    pub question: &'static str,
    /// The assistant turn, exactly as the model should write it.
    pub plan: &'static str,
}

struct Template {
    hint: &'static str,
    examples: &'static [Example],
}

const SYSTEM: &str =
    "You break a question into short steps that other models will answer one at a time. \
Do not answer or solve anything yourself.
Write only a numbered list, one step per line. Each step is a short instruction or sub-question. \
If a step needs results of earlier steps, end it with (depends on N, M). \
Use at most {max} steps; the last step gives the final answer.
If the question is easy, write only: 1. Answer the question directly.";

const MATH: Template = Template {
    hint: "Each step computes one quantity. Never write the numbers you would get.",
    examples: &[
        Example {
            question: "A shop sells pens at $3 each and notebooks at $5 each. Tom buys 4 pens and 2 notebooks and pays with a $50 bill. How much change does he get?",
            plan: "1. Find the cost of 4 pens.\n2. Find the cost of 2 notebooks.\n3. Add the two costs to get the total. (depends on 1, 2)\n4. Subtract the total from $50. (depends on 3)",
        },
        Example {
            question: "What is 15% of 80?",
            plan: "1. Answer the question directly.",
        },
    ],
};

const MULTIPLE_CHOICE: Template = Template {
    hint: "Steps recall the facts needed and test the options; the last step picks one option letter.",
    examples: &[Example {
        question: "Which animal is a mammal that lays eggs?\nThe options are: A: bat; B: platypus; C: penguin; D: dolphin; E: frog",
        plan: "1. Recall which mammals lay eggs.\n2. Find the option that names one of them. (depends on 1)\n3. Give the letter of that option. (depends on 2)",
    }],
};

const CODE: Template = Template {
    hint: "Steps cover the input and output, the edge cases and the algorithm; the last step writes the complete code.",
    examples: &[Example {
        question: "Write a Python function that returns the second largest distinct number in a list, or None if there is none.",
        plan: "1. Remove duplicate values from the list.\n2. Return None if fewer than two values remain. (depends on 1)\n3. Sort the values and take the second largest. (depends on 1)\n4. Write the complete function. (depends on 2, 3)",
    }],
};

const PUZZLE: Template = Template {
    hint: "Steps state the constraints and deduce one fact at a time; the last step states the answer.",
    examples: &[Example {
        question: "Ann, Ben and Cy each own one pet: a cat, a dog or a fish. Ann is allergic to fur. The dog belongs to neither Ann nor Ben. Who owns the cat?",
        plan: "1. Decide Ann's pet from her fur allergy.\n2. Decide who owns the dog.\n3. Give the remaining pet to the remaining person and name the cat's owner. (depends on 1, 2)",
    }],
};

const COMMAND: Template = Template {
    hint: "Split the command into parts and translate each part into actions. In \"X after Y\" Y runs first; in \"X and Y\" X runs first. The last step joins the actions in order.",
    examples: &[Example {
        question: "jump twice after walk left",
        plan: "1. Translate \"walk left\" into actions.\n2. Translate \"jump twice\" into actions.\n3. Join the actions, \"walk left\" first. (depends on 1, 2)",
    }],
};

const GENERAL: Template = Template {
    hint: "Each step asks for one fact or one inference; the last step answers the question.",
    examples: &[
        Example {
            question: "Could a person born in 1995 vote in the 2012 US presidential election?",
            plan: "1. Find the minimum voting age in the US.\n2. Find the person's age on election day 2012.\n3. Compare the age with the voting age. (depends on 1, 2)",
        },
        Example {
            question: "Who wrote Hamlet?",
            plan: "1. Answer the question directly.",
        },
    ],
};

fn template(family: TaskFamily) -> &'static Template {
    match family {
        TaskFamily::Math => &MATH,
        TaskFamily::MultipleChoice => &MULTIPLE_CHOICE,
        TaskFamily::Code => &CODE,
        TaskFamily::Puzzle => &PUZZLE,
        TaskFamily::Command => &COMMAND,
        TaskFamily::General => &GENERAL,
    }
}

/// The few-shot examples of `family` (also used to recognise a model that copies them).
pub fn examples(family: TaskFamily) -> &'static [Example] {
    template(family).examples
}

/// The system message for `family` with the step budget filled in.
pub fn system_prompt(family: TaskFamily, max_subtasks: usize) -> String {
    let max = max_subtasks.max(1).to_string();
    format!(
        "{}\n{}",
        SYSTEM.replace("{max}", &max),
        template(family).hint
    )
}

fn user_turn(question: &str) -> String {
    format!("Question: {}", question.trim())
}

/// Messages asking `family`'s decomposer to split `question` into at most `max_subtasks`
/// steps: the system message, each few-shot exchange as a user/assistant pair, then the question.
pub fn decompose_prompt(
    family: TaskFamily,
    question: &str,
    max_subtasks: usize,
) -> Vec<ChatMessage> {
    let t = template(family);
    let mut messages = Vec::with_capacity(2 + 2 * t.examples.len());
    messages.push(ChatMessage::system(system_prompt(family, max_subtasks)));
    for ex in t.examples {
        messages.push(ChatMessage::user(user_turn(ex.question)));
        messages.push(ChatMessage::assistant(ex.plan));
    }
    messages.push(ChatMessage::user(user_turn(question)));
    messages
}

/// Phrases of the instructions above that never belong in a real step: a step containing one
/// is the model echoing its prompt. Lower-case.
pub(crate) const ECHO_PHRASES: &[&str] = &[
    "do not answer or solve",
    "do not solve",
    "don't solve",
    "write only a numbered list",
    "numbered list",
    "one step per line",
    "short instruction or sub-question",
    "depends on n, m",
    "(depends on n",
    "other models will answer",
    "break a question into",
    "the last step gives the final answer",
    "if the question is easy",
];

#[cfg(test)]
mod tests {
    use super::*;
    use r2_pool::Role;

    #[test]
    fn every_family_has_system_examples_and_question_last() {
        for f in TaskFamily::ALL {
            let msgs = decompose_prompt(f, "  What is 2 + 2?  ", 5);
            assert_eq!(msgs[0].role, Role::System);
            assert!(msgs[0].content.contains("at most 5 steps"), "{f}");
            assert!(!msgs[0].content.contains("{max}"));
            let n = examples(f).len();
            assert!((1..=2).contains(&n), "{f}: {n} examples");
            assert_eq!(msgs.len(), 2 + 2 * n);
            for pair in msgs[1..msgs.len() - 1].chunks(2) {
                assert_eq!(pair[0].role, Role::User);
                assert_eq!(pair[1].role, Role::Assistant);
            }
            let last = msgs.last().unwrap();
            assert_eq!(last.role, Role::User);
            assert_eq!(last.content, "Question: What is 2 + 2?");
        }
    }

    #[test]
    fn prompts_stay_short() {
        // ~4 characters per token: keep each family's prompt under ~400 tokens.
        for f in TaskFamily::ALL {
            let chars: usize = decompose_prompt(f, "", 6)
                .iter()
                .map(|m| m.content.len())
                .sum();
            assert!(chars < 1600, "{f}: {chars} chars");
        }
    }

    #[test]
    fn max_subtasks_zero_still_asks_for_one_step() {
        assert!(system_prompt(TaskFamily::Math, 0).contains("at most 1 steps"));
    }

    #[test]
    fn few_shot_plans_parse_to_themselves() {
        for f in TaskFamily::ALL {
            for ex in examples(f) {
                let plan = crate::parse_plan(ex.plan, ex.question, 8);
                assert!(plan.warnings.is_empty(), "{f}: {:?}", plan.warnings);
                if ex.plan == format!("1. {DIRECT_STEP}") {
                    assert!(plan.is_direct());
                    assert_eq!(plan.subtasks[0].text, ex.question);
                } else {
                    assert_eq!(plan.render(), ex.plan, "{f}");
                }
            }
        }
    }

    #[test]
    fn echo_phrases_are_lower_case_and_occur_in_the_prompt() {
        let all: String = TaskFamily::ALL
            .iter()
            .map(|&f| system_prompt(f, 0))
            .collect::<String>()
            .to_lowercase();
        for p in ECHO_PHRASES {
            assert_eq!(*p, p.to_lowercase());
            assert!(
                all.contains(p) || *p == "do not solve" || *p == "don't solve",
                "{p}"
            );
        }
    }
}
