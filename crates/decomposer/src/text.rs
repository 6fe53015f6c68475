//! Judgements about one piece of model text: is it a step at all, is it the model solving
//! instead of planning, is it an echo of the prompt, is it a repeat of an earlier step.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

use crate::prompts::ECHO_PHRASES;

/// Output beyond this many bytes is not read (a looping model at a large `max_tokens`).
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// A step longer than this is cut: sub-questions are short, and a paragraph is not a step.
pub const MAX_STEP_CHARS: usize = 500;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// Cuts `output` to `MAX_OUTPUT_BYTES` (on a char boundary), turns every line break into
/// `\n` and drops control and zero-width characters. Returns the text and whether it was cut.
pub(crate) fn sanitize(output: &str) -> (String, bool) {
    let mut end = output.len().min(MAX_OUTPUT_BYTES);
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    let mut s = String::with_capacity(end);
    for c in output[..end].chars() {
        match c {
            '\r' | '\u{2028}' | '\u{2029}' => s.push('\n'),
            '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => {}
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => s.push(c),
        }
    }
    (s, end < output.len())
}

/// Removes markdown emphasis and heading/quote markers: `**Step 1**:` → `Step 1:`.
pub(crate) fn strip_markdown(s: &str) -> String {
    let s = s.replace("**", "").replace("__", "");
    s.trim().trim_start_matches(['#', '>']).trim().to_string()
}

/// Cuts `s` to at most `MAX_STEP_CHARS` characters, at a word boundary when there is one.
pub(crate) fn cap_len(s: &str) -> Option<String> {
    let (end, _) = s.char_indices().nth(MAX_STEP_CHARS)?;
    let head = &s[..end];
    let head = head.rsplit_once(' ').map_or(head, |(h, _)| h);
    Some(format!("{}…", head.trim_end()))
}

/// Enough letters to be words (any script), and not mostly symbols or replacement characters.
pub(crate) fn looks_like_text(s: &str) -> bool {
    let mut letters = 0usize;
    let mut visible = 0usize;
    for c in s.chars().filter(|c| !c.is_whitespace()) {
        visible += 1;
        if c.is_alphabetic() {
            letters += 1;
        }
    }
    letters >= 2 && letters * 10 >= visible * 3
}

const SEQUENCE_WORDS: &[&str] = &[
    "first",
    "firstly",
    "then",
    "next",
    "now",
    "finally",
    "lastly",
    "second",
    "secondly",
    "third",
    "thirdly",
    "afterwards",
];
const STOPWORDS: &[&str] = &["the", "a", "an"];

/// Lower-case words without punctuation, articles or a leading "then"/"next"/"finally".
pub(crate) fn words(s: &str) -> Vec<String> {
    let lower = s.to_lowercase();
    let mut out: Vec<String> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(w))
        .map(str::to_string)
        .collect();
    while out.len() > 1 && SEQUENCE_WORDS.contains(&out[0].as_str()) {
        out.remove(0);
    }
    out
}

pub(crate) fn normalize(s: &str) -> String {
    words(s).join(" ")
}

/// What duplicate detection compares.
#[derive(Debug, Clone)]
pub(crate) struct Fingerprint {
    pub norm: String,
    set: BTreeSet<String>,
    numbers: Vec<String>,
}

impl Fingerprint {
    pub fn new(text: &str) -> Self {
        let w = words(text);
        let numbers = w
            .iter()
            .filter(|x| x.chars().any(|c| c.is_ascii_digit()))
            .cloned()
            .collect();
        Fingerprint {
            norm: w.join(" "),
            set: w.into_iter().collect(),
            numbers,
        }
    }

    /// The same step again, as a looping model writes it: equal up to case, punctuation and
    /// articles, or nearly the same words (Jaccard ≥ 0.85) with exactly the same numbers.
    /// "Find the area of room 1" and "... room 2" differ; so do two steps that differ by a
    /// substituted word ("apples" / "oranges"), which keeps the similarity below 0.85.
    pub fn near_duplicate(&self, other: &Fingerprint) -> bool {
        if self.norm == other.norm {
            return true;
        }
        if self.numbers != other.numbers || self.set.len() < 4 || other.set.len() < 4 {
            return false;
        }
        let common = self.set.intersection(&other.set).count();
        let union = self.set.len() + other.set.len() - common;
        common * 100 >= union * 85
    }
}

static ANSWER_LINE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^(?:so,?\s+)?(?:the\s+)?(?:final\s+|correct\s+|right\s+|best\s+)?(?:answer|result|solution|option|choice)(?:\s+is\b|\s*[:=])|####|\\boxed",
    )
});
/// A line that is only a number (with a currency, percent or one unit word): "18", "$18.00".
static ONLY_NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)^(?:[=≈]\s*)?[$€£]?\s*-?\d[\d,]*(?:\.\d+)?\s*(?:%|[a-z]+)?\s*[.!]?$")
});
static ASSIGNMENT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^[a-z]\s*=\s*[$€£]?\s*-?\d[\d,]*(?:\.\d+)?\s*[.!]?$"));
/// SCAN output tokens: a step that contains them is the translation itself.
static ACTION_TOKENS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\bI_(?:WALK|RUN|JUMP|LOOK|TURN_LEFT|TURN_RIGHT)\b|^(?:(?:WALK|RUN|JUMP|LOOK|TURN_LEFT|TURN_RIGHT)\s*,?\s*)+$",
    )
});
static CONCLUSION: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)^(?:so|therefore|thus|hence|in\s+total|altogether|this\s+means)\b.*\d")
});
/// What may follow the last `=` of a computed result: a number and up to three unit words.
static RESULT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^[$€£]?\s*-?\d[\d,]*(?:\.\d+)?\s*%?\s*(?:[a-z']+\s*){0,3}[.!]?$"));
static OPERATOR: LazyLock<Regex> =
    LazyLock::new(|| re(r"\d[\d,.]*\s*%?\s*(?:[-+*/×÷]|\sx\s)\s*[$€£(]?\s*\d"));
static TIMES_X: LazyLock<Regex> = LazyLock::new(|| re(r"(\d)\s+[xX]\s+([$€£]?\d)"));
/// An algebra variable: a lone letter other than "a"/"I", or a coefficient like "2x".
static VARIABLE: LazyLock<Regex> = LazyLock::new(|| re(r"\b(?:[b-hj-zB-HJ-Z]|\d+[a-zA-Z])\b"));

/// A line where the model computes instead of planning: "16 - 3 = 13 eggs", "So she makes
/// $18.", "Answer: 18", a bare "42". Equations to solve ("Solve 2x + 3 = 7") and open
/// computations ("Compute 5 * 3 = ?") are steps, not solving.
pub(crate) fn is_solving(s: &str) -> bool {
    let s = s.trim();
    if ANSWER_LINE.is_match(s)
        || ONLY_NUMBER.is_match(s)
        || ASSIGNMENT.is_match(s)
        || CONCLUSION.is_match(s)
        || ACTION_TOKENS.is_match(s)
        || s.starts_with('=')
    {
        return true;
    }
    let Some((left, right)) = s.rsplit_once('=') else {
        return false;
    };
    if left.ends_with(['<', '>', '!', '=']) || !RESULT.is_match(right.trim()) {
        return false;
    }
    // The expression right before the last `=` (after any earlier `=` of a chain).
    let expr = left.rsplit_once('=').map_or(left, |(_, e)| e);
    // "4 x 3" is a product, not a variable.
    let expr = TIMES_X.replace_all(expr, "$1 * $2");
    OPERATOR.is_match(&expr) && !VARIABLE.is_match(&expr)
}

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)<\s*(?:your\s+)?(?:step|sub-?question|sub-?task|question|instruction|text|first|second|next|last)[a-z \-_]{0,30}>|\[(?:your|insert|step)\b[^\]]*\]",
    )
});

/// The model repeating its instructions or a template placeholder instead of writing a step.
pub(crate) fn is_echo(s: &str) -> bool {
    let lower = s.to_lowercase();
    ECHO_PHRASES.iter().any(|p| lower.contains(p))
        || PLACEHOLDER.is_match(s)
        || matches!(
            lower.trim_end_matches('.'),
            "..." | "etc" | "and so on" | "…"
        )
}

/// "Answer the question directly." and close variants: the model chose a one-step plan.
pub(crate) fn is_direct_step(s: &str) -> bool {
    let n = normalize(s);
    let n = n.strip_prefix("just ").unwrap_or(&n);
    matches!(
        n,
        "answer question directly"
            | "answer directly"
            | "directly answer question"
            | "answer question"
            | "answer whole question"
            | "answer whole question directly"
            | "solve question directly"
            | "answer question directly no decomposition needed"
            | "no decomposition needed"
            | "no steps needed"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solving_lines() {
        let solving = [
            "16 - 3 = 13",
            "She eats 3 eggs for breakfast, so 16 - 3 = 13 eggs left.",
            "She sells 9 eggs at $2 each, so 9 * 2 = $18.",
            "Find the total: 4 * $3 = $12",
            "x = 16 - 3 = 13",
            "Total cost = 4 x 3 = 12 dollars",
            "= 42",
            "42",
            "$18.00",
            "18 dollars.",
            "x = 5",
            "Answer: 18",
            "The answer is 18.",
            "Final answer: B",
            "So she makes 18 dollars every day.",
            "Therefore, the answer is $18.",
            "#### 18",
            "The result is \\boxed{2}",
            "The correct option is B.",
            "I_TURN_RIGHT I_WALK",
            "Translate walk right: I_TURN_RIGHT I_WALK",
            "TURN_LEFT JUMP JUMP",
        ];
        for s in solving {
            assert!(is_solving(s), "should be solving: {s}");
        }
        let steps = [
            "Solve 2x + 3 = 7 for x.",
            "Compute 5 * 3 = ?",
            "Is 2 + 2 = 4?",
            "Find n such that n + 2 = 5",
            "Check whether a <= 10",
            "Find how many eggs are left after breakfast.",
            "Translate \"jump twice\" into actions.",
            "Compute the value of 3 + 4.",
            "So, find the total cost.",
            "Answer the question directly.",
            "Calculate 1945-46 in years",
            "Translate \"turn left\" into actions.",
            "The answer must be one of the options; check each.",
        ];
        for s in steps {
            assert!(!is_solving(s), "should be a step: {s}");
        }
    }

    #[test]
    fn echoes() {
        assert!(is_echo("Write only a numbered list, one step per line."));
        assert!(is_echo("Do NOT solve the problem"));
        assert!(is_echo("<first sub-question>"));
        assert!(is_echo("[your step here]"));
        assert!(is_echo("Add them (depends on N, M)"));
        assert!(is_echo("etc."));
        assert!(!is_echo("Find the cost of 4 pens."));
        assert!(!is_echo("Check that x < y and y > z"));
        assert!(!is_echo("Return List<int> sorted"));
    }

    #[test]
    fn duplicates() {
        let fp = Fingerprint::new;
        let dup = |a: &str, b: &str| fp(a).near_duplicate(&fp(b));
        assert!(dup("Find the cost of pens.", "find cost of the pens"));
        assert!(dup("Then, find the cost of pens", "Find the cost of pens."));
        assert!(dup(
            "Determine how many eggs Janet sells at the market each day",
            "Determine how many eggs Janet sells at the farmers market each day"
        ));
        assert!(!dup("Find the area of room 1", "Find the area of room 2"));
        assert!(!dup(
            "Find the number of students in the class who like apples",
            "Find the number of students in the class who like oranges"
        ));
        assert!(!dup(
            "Translate \"walk left\" into actions.",
            "Translate \"walk right\" into actions."
        ));
        assert!(!dup("Find the first number", "Find the number"));
    }

    #[test]
    fn text_and_garbage() {
        assert!(looks_like_text("Find x"));
        assert!(looks_like_text("求出鸡蛋的数量"));
        assert!(looks_like_text("Compute $\\frac{2}{x^2+x-6}$"));
        assert!(!looks_like_text(
            "\u{FFFD}\u{FFFD}\u{FFFD}ab\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"
        ));
        assert!(!looks_like_text("---- **** ----"));
        assert!(!looks_like_text("12 34 56"));
    }

    #[test]
    fn sanitize_and_caps() {
        let (s, cut) = sanitize("a\r\nb\u{0}c\u{200B}d\u{FEFF}\re");
        assert_eq!(s, "a\n\nbcd\ne");
        assert!(!cut);
        let big = "é".repeat(MAX_OUTPUT_BYTES);
        let (s, cut) = sanitize(&big);
        assert!(cut && s.len() <= MAX_OUTPUT_BYTES);
        let long = "word ".repeat(300);
        let capped = cap_len(&long).unwrap();
        assert!(capped.chars().count() <= MAX_STEP_CHARS + 1 && capped.ends_with('…'));
        assert_eq!(cap_len("short"), None);
    }

    #[test]
    fn direct_sentinel() {
        assert!(is_direct_step("Answer the question directly."));
        assert!(is_direct_step("**Answer the question directly**"));
        assert!(is_direct_step("Just answer the question directly"));
        assert!(!is_direct_step("Answer the question about pens"));
    }
}
