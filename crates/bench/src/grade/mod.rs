//! Grading a model's free-text answer against a dataset's gold answer.
//!
//! Extraction first (the `ANSWER:` marker the executor prompts ask for, then `\boxed{}`,
//! "the answer is", the last number / letter / code block), then a dataset-specific check:
//!
//! | gold | method | check |
//! |---|---|---|
//! | `Number` | `numeric` | numeric equality ([`Tolerance::Grading`]); commas, `$`, units, `%`, `18.0` tolerated |
//! | `MathExpr` | `math-equiv` | normalised LaTeX, then structural/numeric/symbolic equality |
//! | `Choice` | `choice` | option letter |
//! | `YesNo` | `yes-no` | yes/no (true/false) |
//! | `Actions` | `exact-actions` | SCAN action tokens, `I_` prefix dropped |
//! | `Champ` | `champ-numeric`, `champ-yes-no` or `needs-judge` | see [`champ`] |
//! | `Mbpp`, `P3` | `code-exec` | run in a sandboxed `python3` (see [`exec`]) |

mod champ;
mod equiv;
pub mod exec;
pub mod latex;

use r2_decomposer::TaskFamily;
use r2_executor::answer::{after_marker, final_answer, last_boxed, last_code_block, last_number};
use r2_executor::numeric::Tolerance;
use serde::{Deserialize, Serialize};

use crate::datasets::Gold;

pub use champ::{champ_needs_judge, gold_values as champ_gold_values};
pub use equiv::math_equiv;
pub use exec::{ExecLimits, ExecStatus};
/// The answer evaluator lives with the executor's numeric comparisons; re-exported for the
/// callers that reach it here (the fuzz targets).
pub use r2_executor::numeric::expr;

/// The verdict on one prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grade {
    pub correct: bool,
    /// The answer as extracted from the prediction (the code, for code tasks).
    pub extracted: String,
    /// Which check decided: `numeric`, `math-equiv`, `choice`, `yes-no`, `exact-actions`,
    /// `champ-numeric`, `champ-yes-no`, `needs-judge`, `code-exec`.
    pub method: &'static str,
    /// Why it failed, when there is something to say (`timeout`, an assertion, ...).
    pub detail: String,
}

impl Grade {
    pub fn new(correct: bool, extracted: impl Into<String>, method: &'static str) -> Self {
        Grade {
            correct,
            extracted: extracted.into(),
            method,
            detail: String::new(),
        }
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
    /// Whether a judge model must decide (CHAMP free-form answers).
    pub fn needs_judge(&self) -> bool {
        self.method == "needs-judge"
    }
}

/// Grade `prediction_text` (a model's whole final output) against `gold`, with the default
/// code-execution limits.
pub fn grade(gold: &Gold, prediction_text: &str) -> Grade {
    grade_with(gold, prediction_text, &ExecLimits::default())
}

/// [`grade`] with explicit code-execution limits.
pub fn grade_with(gold: &Gold, text: &str, limits: &ExecLimits) -> Grade {
    match gold {
        Gold::Number(g) => {
            let extracted = extract_math(text);
            let ok = match (parse_number(g), parse_number(&extracted)) {
                (Some(a), Some(b)) => Tolerance::Grading.close(a, b),
                _ => false,
            };
            Grade::new(ok, extracted, "numeric")
        }
        Gold::MathExpr(g) => {
            let extracted = extract_math(text);
            Grade::new(math_equiv(g, &extracted), extracted, "math-equiv")
        }
        Gold::Choice(c) => {
            let extracted = final_answer(TaskFamily::MultipleChoice, text);
            let ok = extracted.starts_with(c.to_ascii_uppercase());
            Grade::new(ok, extracted, "choice")
        }
        Gold::YesNo(b) => {
            let got = yes_no_of(text);
            let extracted = got.map_or("", |v| if v { "yes" } else { "no" });
            Grade::new(got == Some(*b), extracted, "yes-no")
        }
        Gold::Actions(want) => {
            let got = extract_actions(text);
            let ok = &got == want;
            Grade::new(ok, got.join(" "), "exact-actions")
        }
        Gold::Champ(g) => champ::grade_champ(g, text),
        Gold::Mbpp { tests, setup } => {
            let code = final_answer(TaskFamily::Code, text);
            let status = exec::run_mbpp(&code, setup, tests, limits);
            code_grade(code, status)
        }
        Gold::P3 { sat, ans_type } => {
            let literal = extract_literal(text);
            let status = exec::run_p3(sat, ans_type, &literal, limits);
            code_grade(literal, status)
        }
    }
}

fn code_grade(extracted: String, status: ExecStatus) -> Grade {
    let detail = if status.passed() {
        String::new()
    } else {
        status.describe()
    };
    Grade::new(status.passed(), extracted, "code-exec").with_detail(detail)
}

/// Where the final-answer marker starts: the last `ANSWER:` (any case) that begins its line
/// (after `*`, `#`, spaces or "Final") or is written in capitals. "check our answer: ..."
/// in running text is not a marker.
pub fn marker_pos(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    lower.rmatch_indices("answer").map(|(i, _)| i).find(|&i| {
        let after = lower[i + 6..].trim_start_matches(['*', ' ']);
        if !after.starts_with(':') {
            return false;
        }
        let line_start = lower[..i].rfind('\n').map_or(0, |p| p + 1);
        let lead =
            lower[line_start..i].trim_matches(|c: char| c.is_whitespace() || c == '*' || c == '#');
        &text[i..i + 6] == "ANSWER" || lead.is_empty() || lead == "final"
    })
}

fn marked(text: &str) -> Option<String> {
    after_marker(&text[marker_pos(text)?..], "answer")
        .map(|a| a.trim_start_matches(['*', ' ', ':']).trim().to_string())
        .filter(|a| !a.is_empty())
}

/// A math answer from free text: the marked line (or a `\boxed{}` in it), else a
/// `\boxed{}` written after the marker, else "the answer is", else the last number. A
/// marked line without any letter or digit (`ANSWER: \[`) is skipped.
pub fn extract_math(text: &str) -> String {
    let pos = marker_pos(text);
    let boxed = text.rfind("\\boxed");
    if let (Some(m), Some(b)) = (pos, boxed) {
        if b > m {
            if let Some(v) = last_boxed(text) {
                return v;
            }
        }
    }
    let from_marker = marked(text)
        .map(|m| last_boxed(&m).unwrap_or(m))
        .filter(|m| m.chars().any(char::is_alphanumeric));
    from_marker
        .or_else(|| last_boxed(text))
        .or_else(|| after_marker(text, "the answer is"))
        .or_else(|| last_number(text))
        .map(|a| a.trim_matches('$').trim().to_string())
        .unwrap_or_default()
}

/// A number from an answer phrase: `1,200`, `$18.00`, `18 dollars`, `25%`, `\frac{3}{4}`,
/// `9 * 2 = 18`; else the first number in it. Lenient, as grading wants: the gold decides
/// what counts. (Escalation reads answers strictly: `r2_executor::numeric::plain_value`.)
pub fn parse_number(s: &str) -> Option<f64> {
    let n = latex::normalize(s);
    if let Some(v) = expr::eval(&n) {
        return Some(v);
    }
    if let Some(tail) = n.rsplit('=').next().filter(|_| n.contains('=')) {
        if let Some(v) = expr::eval(tail) {
            return Some(v);
        }
    }
    first_number(&n.replace(['$', ','], ""))
}

fn first_number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let start = b.iter().position(u8::is_ascii_digit)?;
    let mut end = start;
    while end < b.len()
        && (b[end].is_ascii_digit()
            || (b[end] == b'.' && b.get(end + 1).is_some_and(u8::is_ascii_digit)))
    {
        end += 1;
    }
    let v: f64 = s[start..end].parse().ok()?;
    Some(if start > 0 && b[start - 1] == b'-' {
        -v
    } else {
        v
    })
}

fn yes_no_word(w: &str) -> Option<bool> {
    match w
        .trim_matches(|c: char| !c.is_alphabetic())
        .to_ascii_lowercase()
        .as_str()
    {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// Yes/no from free text: the first yes/no word of the marked answer (`ANSWER:`, "the
/// answer is"), else of the last non-empty line.
pub fn yes_no_of(text: &str) -> Option<bool> {
    let marked = marked(text).or_else(|| after_marker(text, "the answer is"));
    let last_line = text.lines().map(str::trim).rfind(|l| !l.is_empty());
    marked
        .as_deref()
        .and_then(|m| m.split_whitespace().find_map(yes_no_word))
        .or_else(|| last_line?.split_whitespace().find_map(yes_no_word))
}

/// SCAN actions from free text: upper-cased tokens with any `I_` prefix dropped;
/// `TURN LEFT` joined to `TURN_LEFT`, `LTURN`/`RTURN` mapped.
pub fn extract_actions(text: &str) -> Vec<String> {
    let line = final_answer(TaskFamily::Command, text);
    let words: Vec<String> = line
        .split(|c: char| c.is_whitespace() || ",;[]()'\"`".contains(c))
        .map(|w| w.trim_matches(['.', '*', ':']).to_ascii_uppercase())
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::new();
    for w in words {
        let w = w.strip_prefix("I_").unwrap_or(&w).to_string();
        let w = match w.as_str() {
            "LTURN" => "TURN_LEFT".to_string(),
            "RTURN" => "TURN_RIGHT".to_string(),
            _ => w,
        };
        if (w == "LEFT" || w == "RIGHT") && out.last().is_some_and(|l| l == "TURN") {
            out.pop();
            out.push(format!("TURN_{w}"));
        } else {
            out.push(w);
        }
    }
    out
}

/// A P3 answer: what follows the last `ANSWER:` (a fenced block in it, else all of it,
/// minus an `x =` prefix), else the last code block, else the last non-empty line.
pub fn extract_literal(text: &str) -> String {
    let raw = if let Some(pos) = marker_pos(text) {
        let rest = &text[pos..];
        let rest = &rest[rest.find(':').map_or(0, |c| c + 1)..];
        last_code_block(rest).unwrap_or_else(|| rest.to_string())
    } else if let Some(block) = last_code_block(text) {
        block
    } else {
        text.lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("")
            .to_string()
    };
    let mut s = raw.trim().trim_matches(['*', '`']).trim();
    for prefix in ["python\n", "x =", "x="] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest.trim();
        }
    }
    if s.len() > 1 && s.ends_with('.') && s[..s.len() - 1].ends_with(['\'', '"', ']', ')', '}']) {
        s = &s[..s.len() - 1];
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for (s, v) in [
            ("1,200", 1200.0),
            ("$18.00", 18.0),
            ("18 dollars", 18.0),
            ("25%", 25.0),
            ("\\frac{3}{4}", 0.75),
            ("9 * 2 = 18", 18.0),
            ("-3", -3.0),
            ("about 7 hours and 30 minutes", 7.0),
        ] {
            assert_eq!(parse_number(s), Some(v), "{s}");
        }
        assert_eq!(parse_number("none"), None);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let golds = [
            Gold::Number("18".into()),
            Gold::MathExpr("\\frac{1}{2}".into()),
            Gold::Choice('E'),
            Gold::YesNo(true),
            Gold::Actions(vec!["JUMP".into()]),
            Gold::Champ("C(10, 5), or equivalently 252".into()),
            Gold::Champ("2^(n-1)".into()),
        ];
        let deep = format!("ANSWER: {}1{}", "(".repeat(5000), ")".repeat(5000));
        let braces = format!("\\boxed{{{}", "{".repeat(3000));
        for text in [
            "",
            "ANSWER:",
            "ANSWER:é",
            "–5",
            "ANSWER: \\frac{",
            "ANSWER: \\text{",
            "answer: ）",
            "ANSWER: (é, ü]",
            "ANSWER: 9^9^9^9",
            "ANSWER: 171!",
            "ANSWER: 10^{400}",
            "```",
            "ANSWER: \\sqrt[",
            "ANSWER: |",
            "ANSWER: C(",
            "ANSWER: 1/0",
            "ANSWER: (1 (i.e.,",
            deep.as_str(),
            braces.as_str(),
        ] {
            for g in &golds {
                let r = grade(g, text);
                assert!(!r.correct, "{text:?} graded correct against {g:?}");
            }
        }
    }

    #[test]
    fn extraction() {
        assert_eq!(yes_no_of("Thinking... ANSWER: No."), Some(false));
        assert_eq!(yes_no_of("So the answer is yes"), Some(true));
        assert_eq!(yes_no_of("maybe"), None);
        assert_eq!(
            extract_actions("ANSWER: I_TURN_LEFT jump, turn right WALK"),
            ["TURN_LEFT", "JUMP", "TURN_RIGHT", "WALK"]
        );
        assert_eq!(extract_literal("so\nANSWER: x = [1, 2]."), "[1, 2]");
        assert_eq!(extract_literal("ANSWER:\n```python\n'ab'\n```"), "'ab'");
        assert_eq!(extract_literal("x\n```\n3\n```\n"), "3");
        assert_eq!(extract_literal("just 5"), "just 5");
        assert_eq!(
            extract_math("We check our answer: 3 = 3. So \\boxed{4}"),
            "4"
        );
        assert_eq!(extract_math("**Final Answer:** 7"), "7");
        assert_eq!(extract_math("answer: 7\nmore"), "7");
        assert_eq!(extract_math("x ANSWER: $5$"), "5");
    }
}
