//! Prompts for answering: direct chain of thought, one plan step, and the final synthesis.
//!
//! The pilot measurements shaped these: terse one-line step answers lost 32 points against
//! direct chain of thought, so every prompt lets the model reason briefly before a clearly
//! marked result, and synthesis re-derives the answer from the question plus all step results.

use r2_decomposer::{Subtask, TaskFamily};
use r2_pool::ChatMessage;

/// The marker that ends a final answer.
pub const ANSWER_MARKER: &str = "ANSWER:";
/// The marker that ends one step's result.
pub const RESULT_MARKER: &str = "RESULT:";

fn answer_instruction(family: TaskFamily) -> &'static str {
    match family {
        TaskFamily::Math => "Solve the problem step by step, briefly. Finish with a last line of the form\nANSWER: <the final number or expression>",
        TaskFamily::MultipleChoice => "Think it through briefly, then pick one option. Finish with a last line of the form\nANSWER: <the option letter>",
        TaskFamily::Code => "Write a correct solution in Python. Give the complete code in one ```python block, then finish with the line\nANSWER: done",
        TaskFamily::Puzzle => "Work it out step by step, briefly. Finish with a last line of the form\nANSWER: <the solution>",
        TaskFamily::Command => "Translate the command into the sequence of actions it means, step by step. Finish with a last line of the form\nANSWER: <the actions separated by spaces>",
        TaskFamily::General => "Think it through briefly. Finish with a last line of the form\nANSWER: <your answer>",
    }
}

/// Chain of thought on the whole question (the `--direct` baseline and one-step plans).
pub fn direct(family: TaskFamily, question: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(answer_instruction(family)),
        ChatMessage::user(question.trim()),
    ]
}

/// The program check of escalation: the model writes straight-line arithmetic that computes
/// the answer, which [`crate::program::run_program`] runs. One user message, no system
/// prompt: small coder models follow it best that way.
pub fn program(question: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::user(format!(
        "{}\n\nWrite Python code that computes the answer to this question. Use only assignments of \
         arithmetic expressions to variables (numbers, variables, + - * / // % **, parentheses); no \
         functions, loops, conditionals or imports. Give each quantity a descriptive name and put the \
         final result in a variable named `answer`. Reply with the code only.",
        question.trim()
    ))]
}

/// One step of a plan. The model sees the question, the results of the steps this one
/// depends on, and only this step's instruction.
pub fn step(
    question: &str,
    subtask: &Subtask,
    dependencies: &[(usize, String, String)],
) -> Vec<ChatMessage> {
    let system = "You are working on one step of a larger problem. Do only this step. \
                  Reason briefly, then finish with a last line of the form\nRESULT: <the result of this step>";
    let mut user = format!("Problem: {}\n", question.trim());
    if !dependencies.is_empty() {
        user.push_str("\nResults of earlier steps:\n");
        for (id, text, result) in dependencies {
            user.push_str(&format!(
                "- Step {id} ({}): {}\n",
                text.trim(),
                result.trim()
            ));
        }
    }
    user.push_str(&format!("\nThis step: {}", subtask.text.trim()));
    vec![ChatMessage::system(system), ChatMessage::user(user)]
}

/// The final step: the question plus every step and its result, answered in the family's format.
pub fn synthesis(
    family: TaskFamily,
    question: &str,
    steps: &[(usize, String, String)],
) -> Vec<ChatMessage> {
    let mut user = format!(
        "{}\n\nNotes from working through it step by step:\n",
        question.trim()
    );
    for (id, text, result) in steps {
        user.push_str(&format!(
            "{id}. {} Result: {}\n",
            text.trim(),
            result.trim()
        ));
    }
    user.push_str("\nUse the notes (check them) to answer the question.");
    vec![
        ChatMessage::system(answer_instruction(family)),
        ChatMessage::user(user),
    ]
}

/// The text shown for the synthesis step in traces.
pub const SYNTHESIS_TEXT: &str = "Combine the step results into the final answer";
