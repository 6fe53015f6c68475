//! `parse_plan`: model output → `Plan`, never failing.

use std::sync::LazyLock;

use regex::Regex;

use crate::collect::Collector;
use crate::json::json_steps;
use crate::lines::read_lines;
use crate::plan::Plan;
use crate::text::{sanitize, MAX_OUTPUT_BYTES};

static SPECIAL_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<\|[a-z_]{2,20}\|>|</s>|<(?:end|start)_of_turn>|\[/?INST\]").expect("static regex")
});

/// Never fails: parse model output into a plan; unusable output → `Plan::direct(question)`
/// plus a warning.
///
/// Reads JSON plans (a fenced block or a line opening with `[`/`{`) and otherwise numbered,
/// bulleted or plain-imperative lists, ignoring prose around them. Then, in this order:
/// lines that echo the prompt, compute results ("16 - 3 = 13", "Answer: 18", a bare number)
/// or are not text are dropped; repeats of an earlier step (a looping model) are dropped;
/// the plan is capped at `max_subtasks` (at least 1); dependencies that do not point to an
/// earlier step are dropped. A plan that comes out with one step, that starts with
/// "Answer the question directly", or whose lines were mostly computed results becomes
/// `Plan::direct(question)`. Dependency semantics: see the `plan` module.
///
/// Every repair leaves a warning in `Plan::warnings`; a clean plan has none.
pub fn parse_plan(output: &str, question: &str, max_subtasks: usize) -> Plan {
    let (text, cut) = sanitize(output);
    let cut_warning = cut.then(|| {
        format!("decomposer output longer than {MAX_OUTPUT_BYTES} bytes; only the start was read")
    });

    let mut col = Collector::new(question, max_subtasks);
    // A chat-template token ends the turn; what follows is an invented next turn.
    let text = match SPECIAL_TOKEN.find(&text) {
        Some(m) => {
            if !text[m.end()..].trim().is_empty() {
                col.warn("ignored the decomposer output after an end-of-turn token");
            }
            &text[..m.start()]
        }
        None => &text[..],
    };
    if let Some(steps) = json_steps(text) {
        for step in steps {
            if col.push(step) == crate::collect::Flow::Stop {
                break;
            }
        }
    } else {
        read_lines(text, &mut col);
    }
    let mut plan = col.finish();
    if let Some(w) = cut_warning {
        plan.warnings.insert(0, w);
    }
    debug_assert!(plan.validate().is_ok(), "{plan:?}");
    plan
}
