//! Pulling the marked result out of free text. Model output is untrusted: every function
//! here returns something sensible for any input and never panics.

use r2_decomposer::TaskFamily;

use crate::numeric::{plain_value, Tolerance};
use crate::prompts::{ANSWER_MARKER, RESULT_MARKER};

/// The text after the last `marker` (case-insensitive, tolerant of markdown bold and
/// of the marker standing alone on its line with the value on the next).
pub fn after_marker(text: &str, marker: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let m = marker.to_ascii_lowercase();
    let pos = lower.rfind(&m)?;
    let rest = &text[pos + marker.len()..];
    // "The answer is: 42", "**ANSWER:** 42": the colon and markup belong to the marker.
    let rest = rest.trim_start_matches(['*', '_', ' ', '\t', ':']);
    let line = rest
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.trim_matches(['*', '_']).is_empty())?;
    let cleaned = clean(line);
    (!cleaned.is_empty()).then_some(cleaned)
}

fn clean(s: &str) -> String {
    let s = s.trim().trim_matches(['*', '_', '`']).trim();
    let s = s.strip_suffix('.').unwrap_or(s);
    s.trim().to_string()
}

/// Content of the last `\boxed{...}`, brace-balanced.
pub fn last_boxed(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(text[start..start + i].trim().to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// The last number in the text (commas between digit groups allowed), normalised.
pub fn last_number(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    while end > 0 {
        // find the end of the last digit run
        while end > 0 && !bytes[end - 1].is_ascii_digit() {
            end -= 1;
        }
        if end == 0 {
            return None;
        }
        let mut start = end;
        while start > 0
            && (bytes[start - 1].is_ascii_digit()
                || bytes[start - 1] == b'.'
                || bytes[start - 1] == b',')
        {
            start -= 1;
        }
        let raw = text[start..end].trim_start_matches(['.', ',']);
        let neg = start > 0 && bytes[start - 1] == b'-';
        let digits: String = raw.chars().filter(|c| *c != ',').collect();
        if !digits.is_empty() {
            return Some(if neg { format!("-{digits}") } else { digits });
        }
        end = start;
    }
    None
}

/// A step's result: after `RESULT:`, else the last non-empty line.
pub fn step_result(text: &str) -> String {
    after_marker(text, RESULT_MARKER)
        .or_else(|| {
            text.lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .map(clean)
        })
        .unwrap_or_default()
}

/// The final answer in the family's format.
pub fn final_answer(family: TaskFamily, text: &str) -> String {
    let marked = after_marker(text, ANSWER_MARKER);
    match family {
        TaskFamily::Math => marked
            .map(|m| last_boxed(&m).unwrap_or(m))
            .or_else(|| last_boxed(text))
            .or_else(|| after_marker(text, "the answer is"))
            .or_else(|| last_number(text))
            .map(|a| a.trim_start_matches('$').trim().to_string())
            .unwrap_or_default(),
        TaskFamily::MultipleChoice => marked
            .as_deref()
            .and_then(choice_letter)
            .or_else(|| {
                after_marker(text, "answer is")
                    .as_deref()
                    .and_then(choice_letter)
            })
            .or_else(|| text.lines().rev().find_map(choice_letter))
            .unwrap_or_default(),
        TaskFamily::Code => last_code_block(text).unwrap_or_else(|| text.trim().to_string()),
        _ => marked
            .or_else(|| after_marker(text, "the answer is"))
            .or_else(|| {
                text.lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty())
                    .map(clean)
            })
            .unwrap_or_default(),
    }
}

/// Whether two final answers of the same family say the same thing: the self-consistency
/// check of escalation. Math answers that are plain numbers ([`plain_value`]) compare by
/// value, exactly: both are written, so there is no rounding to forgive (`$1,200.00` =
/// `1200`, also as the result of a worked line: `9 * 2 = 18` = `18`); anything else
/// compares as text, case- and space-insensitively, so `5 hours` and `5 minutes`, or
/// `\sqrt{2}` and `2`, differ. Empty answers never agree.
pub fn same_answer(family: TaskFamily, a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() || b.is_empty() {
        return false;
    }
    if family == TaskFamily::Math {
        if let (Some(x), Some(y)) = (plain_value(a), plain_value(b)) {
            return x == y;
        }
    }
    let norm = |s: &str| -> String {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .trim_end_matches('.')
            .to_lowercase()
    };
    norm(a) == norm(b)
}

/// Whether a math answer is one plain number (see [`same_answer`]), which a program's value
/// can confirm.
pub fn is_plain_number(answer: &str) -> bool {
    plain_value(answer).is_some()
}

/// Whether a math answer that is one plain number (see [`same_answer`]) equals `value`, a
/// program's result, up to [`Tolerance::Check`]: the program check of escalation.
pub fn same_value(answer: &str, value: f64) -> bool {
    plain_value(answer).is_some_and(|a| Tolerance::Check.close(a, value))
}

/// `value` as a person would write it: `18`, `2.5`, `0.333333`.
pub fn show_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let s = format!("{value:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A standalone option letter A–E: "C", "(C)", "C)", "C.", "option C", "**C**".
pub fn choice_letter(s: &str) -> Option<String> {
    let t = s.trim().trim_matches(['*', '_', '`']).trim();
    let words: Vec<&str> = t
        .split(|c: char| c.is_whitespace() || "()[]:.,*".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    // Prefer a single-letter token; the first one wins ("C) cat" → C).
    words
        .iter()
        .find(|w| {
            w.len() == 1
                && ("A"..="E").contains(&w.to_ascii_uppercase().as_str())
                && w.chars().all(|c| c.is_ascii_uppercase())
        })
        .map(|w| w.to_string())
}

/// The last fenced code block's body.
pub fn last_code_block(text: &str) -> Option<String> {
    let start = text.rfind("```")?;
    let before = &text[..start];
    let open = before.rfind("```")?;
    let body = &text[open + 3..start];
    let body = body
        .split_once('\n')
        .map(|(lang, rest)| {
            if lang.trim().chars().all(|c| c.is_alphanumeric()) {
                rest
            } else {
                body
            }
        })
        .unwrap_or(body);
    let body = body.trim_end();
    (!body.trim().is_empty()).then(|| body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(family: TaskFamily, text: &str, expect: &str) {
        assert_eq!(final_answer(family, text), expect, "input: {text:?}");
    }

    #[test]
    fn a_colon_after_the_marker_is_not_part_of_the_answer() {
        let got = after_marker("So the answer is: 42", "the answer is");
        assert_eq!(got.as_deref(), Some("42"));
        let got = after_marker("The answer is:\n**18**", "the answer is");
        assert_eq!(got.as_deref(), Some("18"));
    }

    #[test]
    fn math_answers() {
        use TaskFamily::Math;
        check(Math, "3 + 4 = 7\nANSWER: 7", "7");
        check(Math, "so **ANSWER:** $1,200.", "1,200");
        check(Math, "ANSWER:\n\\boxed{\\frac{1}{2}}", "\\frac{1}{2}");
        check(Math, "We get \\boxed{42} as the result", "42");
        check(Math, "Thus the answer is 18.", "18");
        check(Math, "She pays 3 * 5 = 15 dollars, then 15 - 2 = 13", "13");
        check(Math, "no digits here", "");
        check(Math, "", "");
    }

    #[test]
    fn choice_answers() {
        use TaskFamily::MultipleChoice;
        check(MultipleChoice, "A person would... ANSWER: (C) bank", "C");
        check(MultipleChoice, "ANSWER: **B**", "B");
        check(MultipleChoice, "I think the answer is E.", "E");
        check(MultipleChoice, "Reasoning...\nD", "D");
        check(MultipleChoice, "nothing", "");
    }

    #[test]
    fn step_results() {
        assert_eq!(step_result("First 3*4=12.\nRESULT: 12 apples"), "12 apples");
        assert_eq!(step_result("**Result:** 5."), "5");
        assert_eq!(step_result("just text\nlast line"), "last line");
        assert_eq!(step_result(""), "");
    }

    #[test]
    fn numbers_and_code() {
        assert_eq!(
            last_number("total -5 and 1,234.5 dollars").as_deref(),
            Some("1234.5")
        );
        assert_eq!(last_number("was -3").as_deref(), Some("-3"));
        assert_eq!(last_number("v1. end.").as_deref(), Some("1"));
        assert_eq!(
            last_code_block("x\n```python\ndef f():\n    return 1\n```\nANSWER: done").as_deref(),
            Some("def f():\n    return 1")
        );
        assert_eq!(last_code_block("no code"), None);
        assert_eq!(last_boxed("\\boxed{a{b}c} and \\boxed{x"), None);
        assert_eq!(last_boxed("\\boxed{a{b}c}").as_deref(), Some("a{b}c"));
    }

    #[test]
    fn answers_agree_by_value() {
        let m = TaskFamily::Math;
        assert!(same_answer(m, "18", "18"));
        assert!(same_answer(m, "$18.00", "18"));
        assert!(same_answer(m, "\\$1,200", "1200"));
        assert!(same_answer(m, "-3", "-3.0"));
        assert!(same_answer(m, "\u{2212}3", "-3"));
        assert!(same_answer(m, ".5", "0.50"));
        assert!(same_answer(m, "18.", "18"));
        assert!(same_answer(m, "\\$100 - \\$30 = \\$70", "70"));
        assert!(same_answer(m, "9 - 2 = 7", "7"));
        assert!(same_answer(m, "3/4", " 3/4 "));
        for (a, b) in [
            ("18", "-18"),
            ("18", "81"),
            ("-$5", "5"),
            ("\u{2212}3", "3"),
            (".50", "50"),
            ("1,5", "15"),
            ("1000000000", "1000000001"),
            ("3/4", "1/4"),
            ("\\sqrt{2}", "2"),
            ("2\\pi", "2"),
            ("x > 3", "x < 3"),
            ("x \\le 3", "x \\ge 3"),
            ("x = 5, y = 3", "x = 4, y = 3"),
            ("5 hours", "5 minutes"),
            ("9 - 2 = 7", "9 - 2"),
            ("", ""),
            ("18", ""),
        ] {
            assert!(!same_answer(m, a, b), "{a} vs {b}");
        }
        let c = TaskFamily::MultipleChoice;
        assert!(same_answer(c, "B", "b"));
        assert!(!same_answer(c, "B", "C"));
        let g = TaskFamily::General;
        assert!(same_answer(g, "Walk  twice.", "walk twice"));
        assert!(!same_answer(g, "walk", "run"));
    }

    #[test]
    fn a_program_value_confirms_only_the_same_plain_number() {
        assert!(same_value("$1,200.00", 1200.0));
        assert!(same_value("0.3", 0.1 + 0.2));
        assert!(same_value("9 * 2 = 18", 18.0));
        assert!(same_value("-5", -5.0));
        for (answer, value) in [
            ("1000001", 1_000_000.0),
            ("33.33", 100.0 / 3.0),
            ("18 dollars", 18.0),
            ("3/4", 0.75),
            ("18", f64::INFINITY),
            ("18", f64::NAN),
            ("", 0.0),
            ("5", -5.0),
        ] {
            assert!(!same_value(answer, value), "{answer} vs {value}");
        }
        assert!(is_plain_number("$18.00") && !is_plain_number("18 dollars"));
        assert_eq!(show_value(18.0), "18");
        assert_eq!(show_value(-2.5), "-2.5");
        assert_eq!(show_value(100.0 / 3.0), "33.333333");
    }

    #[test]
    fn never_panics_on_odd_unicode() {
        for s in [
            "ANSWER:é",
            "é\\boxed{",
            "RESULT:",
            "ANSWER:   \n\n",
            "```",
            "–5",
        ] {
            for f in [
                TaskFamily::Math,
                TaskFamily::MultipleChoice,
                TaskFamily::Code,
                TaskFamily::General,
            ] {
                let _ = final_answer(f, s);
            }
            let _ = step_result(s);
        }
    }
}
