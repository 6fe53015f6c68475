//! Reads a plan written as text: numbered lists ("1.", "1)", "(1)", "Step 1:", "**Step 1**:",
//! "Subtask 1 -"), bullet lists when nothing is numbered, and plain imperative lines when
//! there is no list at all. Prose around the list is ignored; reading stops where the model
//! starts solving, starts a second list, or invents the next chat turn.

use std::sync::LazyLock;

use regex::Regex;

use crate::collect::{Collector, Flow, RawStep};
use crate::marker::{marker, Marker};
use crate::text::strip_markdown;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static STOP: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^(?:(?:question|problem)\s*:|(?:final\s+)?answers?\s*(?:[:=]|is\b)|the\s+(?:final\s+)?answer\s+is|(?:solutions?|solving|calculations?|execution|explanation|verification)\b\s*[:.]?|(?:now|next),?\s+(?:let'?s|let\s+us|we|i)\s+(?:will\s+|can\s+)?(?:solve|calculate|compute|answer|work|execute|find|do)|let'?s\s+(?:solve|calculate|compute|answer|work|execute|now)|(?:user|assistant|human|system)\s*:|####)|<\||</s>|<end_of_turn>|\[/?INST\]",
    )
});
static INLINE_SPLIT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)[.?!;)]\s+(?:step\s+)?(\d{1,3})[.):]\s+"));
static SEQUENCE_SPLIT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"[.!?;]\s+(?:Then|Next|Finally|Lastly|After that|Second(?:ly)?|Third(?:ly)?),?\s+")
});
static SEQUENCE_START: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)^(?:first(?:ly)?|then|next|finally|lastly|after that|second(?:ly)?|third(?:ly)?),?\s+")
});

fn is_stop(line: &str) -> bool {
    STOP.is_match(line)
}

const IMPERATIVES: &[&str] = &[
    "find",
    "calculate",
    "compute",
    "determine",
    "identify",
    "figure",
    "work",
    "add",
    "subtract",
    "multiply",
    "divide",
    "count",
    "list",
    "check",
    "compare",
    "decide",
    "recall",
    "translate",
    "write",
    "return",
    "sort",
    "remove",
    "convert",
    "estimate",
    "name",
    "state",
    "give",
    "choose",
    "pick",
    "select",
    "evaluate",
    "simplify",
    "solve",
    "use",
    "apply",
    "express",
    "set",
    "define",
    "test",
    "verify",
    "implement",
    "handle",
    "create",
    "build",
    "combine",
    "join",
    "sum",
    "get",
    "explain",
    "describe",
    "consider",
    "read",
    "parse",
    "iterate",
    "initialize",
    "split",
    "deduce",
    "infer",
    "eliminate",
    "assign",
    "substitute",
    "rewrite",
    "expand",
    "factor",
    "derive",
    "prove",
    "show",
    "search",
    "collect",
    "group",
    "filter",
    "merge",
    "look",
    "research",
    "analyze",
    "analyse",
    "understand",
    "establish",
    "obtain",
    "measure",
    "map",
    "answer",
];

/// A line outside any list that reads as a step: a question, or an instruction.
fn plain_step(line: &str) -> bool {
    if line.ends_with(':') || line.len() > 300 {
        return false;
    }
    let line = SEQUENCE_START.replace(line, "");
    let first = line
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_lowercase();
    line.trim_end().ends_with('?') || IMPERATIVES.contains(&first.as_str())
}

/// "1. Find a. 2. Find b. 3. Add them." written on one line: split at the next consecutive
/// number after the end of a sentence.
fn split_inline(label: usize, rest: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut label, mut start) = (label, 0);
    for c in INLINE_SPLIT.captures_iter(rest) {
        let whole = c.get(0).expect("match");
        if whole.start() < start || c[1].parse::<usize>().ok() != Some(label + 1) {
            continue;
        }
        out.push((label, rest[start..=whole.start()].trim()));
        label += 1;
        start = whole.end();
    }
    out.push((label, rest[start..].trim()));
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Feeds the steps found in `text` to `col`.
pub(crate) fn read_lines(text: &str, col: &mut Collector<'_>) {
    // Code is never a step: fenced blocks read as empty lines.
    let mut in_fence = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let l = strip_markdown(l);
            if l.starts_with("```") {
                in_fence = !in_fence;
                String::new()
            } else if in_fence {
                String::new()
            } else {
                l
            }
        })
        .collect();
    let numbered = lines
        .iter()
        .any(|l| matches!(marker(l), Some(Marker::Numbered { .. })));
    let bulleted = !numbered
        && lines
            .iter()
            .any(|l| matches!(marker(l), Some(Marker::Bullet { .. })));
    let mut count = 0usize; // steps seen so far (the label of an unnumbered step)
    let mut max_label = 0usize;
    let mut auto = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].as_str();
        i += 1;
        if line.is_empty() {
            continue;
        }
        if is_stop(line) {
            if col.has_steps() {
                col.warn(
                    "ignored the decomposer output after the plan (it went on solving or chatting)",
                );
                return;
            }
            continue;
        }
        let mut steps: Vec<(usize, String)> = Vec::new();
        match marker(line) {
            Some(Marker::Numbered { label, rest }) if numbered => {
                let label = if label == 1 && count > 0 {
                    if auto || max_label == 1 {
                        // Every item numbered "1." (markdown auto-numbering): count by position.
                        auto = true;
                        count + 1
                    } else if col.has_steps() {
                        col.warn("ignored a second numbered list after the plan");
                        return;
                    } else {
                        label
                    }
                } else {
                    label
                };
                max_label = max_label.max(label);
                let mut rest = rest.to_string();
                if rest.is_empty() {
                    // "Step 1:" on its own line, the step on the next one.
                    if let Some(next) = lines
                        .get(i)
                        .filter(|n| !n.is_empty() && marker(n).is_none() && !is_stop(n))
                    {
                        rest = next.clone();
                        i += 1;
                    }
                }
                steps.extend(
                    split_inline(label, &rest)
                        .into_iter()
                        .map(|(l, s)| (l, s.to_string())),
                );
            }
            Some(Marker::Bullet { rest }) if bulleted => steps.push((count + 1, rest.to_string())),
            None if !numbered && !bulleted && plain_step(line) => {
                let mut parts = SEQUENCE_SPLIT.split(line).peekable();
                let mut n = count;
                while let Some(p) = parts.next() {
                    n += 1;
                    let p = if parts.peek().is_some() {
                        format!("{p}.")
                    } else {
                        p.to_string()
                    };
                    steps.push((n, capitalize(&SEQUENCE_START.replace(&p, ""))));
                }
            }
            _ => {}
        }
        for (label, text) in steps {
            count += 1;
            let raw = RawStep {
                label: Some(label),
                text,
                json_deps: Vec::new(),
            };
            if col.push(raw) == Flow::Stop {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_lists_split_only_on_consecutive_numbers() {
        assert_eq!(
            split_inline(1, "Find a. 2. Find b. 3) Add them."),
            vec![(1, "Find a."), (2, "Find b."), (3, "Add them.")]
        );
        assert_eq!(
            split_inline(1, "Multiply by 2. Then add 3."),
            vec![(1, "Multiply by 2. Then add 3.")]
        );
        assert_eq!(
            split_inline(1, "Find a. 3. Find b."),
            vec![(1, "Find a. 3. Find b.")]
        );
    }

    #[test]
    fn stops() {
        for s in [
            "Question: what",
            "Answer: 5",
            "The answer is 5",
            "Solution:",
            "Now, let's solve each step",
            "Let's solve it",
            "<|im_end|>",
            "User: hi",
            "#### 5",
            "Explanation: the plan",
        ] {
            assert!(is_stop(s), "{s}");
        }
        for s in [
            "Questions to answer",
            "Find the answer to step 1",
            "Step 1: Find x",
        ] {
            assert!(!is_stop(s), "{s}");
        }
    }
}
