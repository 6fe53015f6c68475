//! CHAMP's free-form answers. When the gold answer has a constant numeric form (e.g.
//! `C(10, 5), or equivalently 252`, `100 (i.e., all values)`) a numeric prediction is
//! graded deterministically; bare `Yes`/`No` golds are graded as yes/no; everything else
//! (formulas in `n`, descriptions) needs a judge model.

use r2_executor::numeric::{expr, Tolerance};

use super::{extract_math, latex, yes_no_of, Grade};

/// Trailing words that do not change a numeric answer ("2 inequalities", "98 values").
const COUNT_WORDS: &[&str] = &[
    "values",
    "value",
    "pairs",
    "roots",
    "inequalities",
    "numbers",
    "solutions",
    "is the only possible value",
];

/// The value of one answer phrase if it is a constant: `252`, `C(10, 5)`, `5/14`,
/// `sqrt(3)/3`, `100 (i.e., all values)`, `0 is the only possible value`.
pub fn phrase_value(phrase: &str) -> Option<f64> {
    let mut s = phrase.trim().trim_end_matches('.').trim().to_string();
    // A trailing parenthetical remark.
    if s.ends_with(')') {
        if let Some(open) = s.rfind(" (") {
            let inner = &s[open + 2..s.len() - 1];
            if inner.contains(' ') || inner.chars().any(char::is_alphabetic) {
                s.truncate(open);
            }
        }
    }
    for w in COUNT_WORDS {
        if let Some(head) = s.strip_suffix(w) {
            if head.ends_with(' ') {
                s = head.trim().to_string();
                break;
            }
        }
    }
    let s = latex::normalize(&s);
    if !expr::variables(&s).is_empty() {
        return None;
    }
    expr::eval(&s).filter(|v| v.is_finite())
}

/// The exact numeric values a CHAMP gold answer states (approximations are skipped).
pub fn gold_values(gold: &str) -> Vec<f64> {
    let mut parts = vec![gold];
    for sep in [
        ", or equivalently ",
        ", or an equivalent form such as ",
        ", or approximately ",
    ] {
        parts = parts.into_iter().flat_map(|p| p.split(sep)).collect();
    }
    let approx_tail = gold.split(", or approximately ").nth(1);
    parts
        .into_iter()
        .filter(|p| Some(*p) != approx_tail)
        .filter_map(phrase_value)
        .collect()
}

fn gold_yes_no(gold: &str) -> Option<bool> {
    match gold
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase()
        .as_str()
    {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// The numeric value of a prediction's final answer, when it has one.
fn predicted_value(extracted: &str) -> Option<f64> {
    if let Some(v) = phrase_value(extracted) {
        return Some(v);
    }
    // "There are 252 such strings": accept a sentence holding exactly one number.
    let numbers: Vec<&str> = extracted
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .map(|w| w.trim_matches(['.', '-']))
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
        .collect();
    match numbers.as_slice() {
        [one] => one.parse().ok(),
        _ => None,
    }
}

/// Whether grading `prediction_text` against this CHAMP gold needs a judge model.
pub fn champ_needs_judge(gold: &str, prediction_text: &str) -> bool {
    grade_champ(gold, prediction_text).method == "needs-judge"
}

pub(super) fn grade_champ(gold: &str, text: &str) -> Grade {
    if let Some(want) = gold_yes_no(gold) {
        let got = yes_no_of(text);
        return Grade::new(
            got == Some(want),
            got.map_or(String::new(), |b| if b { "yes" } else { "no" }.into()),
            "champ-yes-no",
        );
    }
    let extracted = extract_math(text);
    let values = gold_values(gold);
    if !values.is_empty() {
        // The prediction may use the gold's own phrasing ("C(10, 5), or equivalently 252");
        // every value it states must match.
        let mut stated = gold_values(&extracted);
        if stated.is_empty() {
            stated.extend(predicted_value(&extracted));
        }
        if !stated.is_empty() {
            let ok = stated
                .iter()
                .all(|v| values.iter().any(|g| Tolerance::Grading.close(*g, *v)));
            return Grade::new(ok, extracted, "champ-numeric");
        }
    }
    Grade::new(false, extracted, "needs-judge")
        .with_detail("free-form CHAMP answer: needs a judge model")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gold_forms() {
        assert_eq!(
            gold_values("C(10, 5), or equivalently 252"),
            vec![252.0, 252.0]
        );
        assert_eq!(gold_values("100 (i.e., all values)"), vec![100.0]);
        assert_eq!(gold_values("0 is the only possible value"), vec![0.0]);
        assert_eq!(gold_values("2 inequalities"), vec![2.0]);
        assert_eq!(
            gold_values("5/14, or approximately 35.7%"),
            vec![5.0 / 14.0]
        );
        assert_eq!(gold_values("sqrt(3)/3, or equivalently 1/sqrt(3)").len(), 2);
        assert!(gold_values("2^(n-1)").is_empty());
        assert!(gold_values("x=6, y=5").is_empty());
        assert!(gold_values("At least 1 number").is_empty());
        assert!(gold_values("376 and 625").is_empty());
        assert!(gold_values("The limit exists and is equal to 3").is_empty());
    }

    #[test]
    fn predictions() {
        let g = "C(10, 5), or equivalently 252";
        assert!(grade_champ(g, "so ANSWER: 252").correct);
        assert!(grade_champ(g, "ANSWER: \\binom{10}{5}").correct);
        assert!(grade_champ(g, "ANSWER: There are 252 such strings").correct);
        assert!(!grade_champ(g, "ANSWER: C(10, 5), or equivalently 253").correct);
        let wrong = grade_champ(g, "ANSWER: 253");
        assert!(!wrong.correct && wrong.method == "champ-numeric");
        assert!(champ_needs_judge("2^(n-1)", "ANSWER: 2^{n-1}"));
        assert!(champ_needs_judge(g, "ANSWER: ten choose five"));
        assert!(grade_champ("No", "ANSWER: No, it cannot.").correct);
        assert!(!grade_champ("No", "ANSWER: Yes").correct);
    }
}
