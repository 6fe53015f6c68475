//! The numbers a question writes in digits, and which of them a program's value leaves
//! out (`+program:all`). A written number counts as used when one of the program's inputs
//! is the same number under [`Tolerance::Check`], in any of the forms programs write it.

use crate::numeric::Tolerance;

/// A number written in a question: `48`, `1,200`, `2.5`, `25%` (or `25 percent`), `3/4`.
#[derive(Debug, Clone, PartialEq)]
struct Quantity<'q> {
    text: &'q str,
    value: f64,
    kind: QuantityKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum QuantityKind {
    Plain,
    Percent,
    /// `a/b`: a program may write the value or both parts.
    Fraction(f64, f64),
}

/// The numbers written in digits in `question`. Digits joined to letters (`1st`, `3pm`,
/// `Q2`) are labels, not quantities, and are left out.
fn quantities(question: &str) -> Vec<Quantity<'_>> {
    let b = question.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let joined =
            i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'.');
        if !b[i].is_ascii_digit() || joined {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = digits(i);
        // Thousands separators: `1,200,000` but not `3,4` or `1, 2`.
        while b.get(end) == Some(&b',') && digits(end + 1) == end + 4 {
            end += 4;
        }
        if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
            end = digits(end + 1);
        }
        let whole: String = question[start..end].chars().filter(|c| *c != ',').collect();
        let value: f64 = whole.parse().unwrap_or(f64::NAN);
        let mut kind = QuantityKind::Plain;
        let mut text_end = end;
        if b.get(end) == Some(&b'/') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
            let den_end = digits(end + 1);
            let den: f64 = question[end + 1..den_end].parse().unwrap_or(f64::NAN);
            kind = QuantityKind::Fraction(value, den);
            text_end = den_end;
        } else if b.get(end) == Some(&b'%') {
            kind = QuantityKind::Percent;
            text_end = end + 1;
        } else if question[end..].starts_with(" percent") {
            kind = QuantityKind::Percent;
        }
        let labelled = b
            .get(text_end)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
        let value = match kind {
            QuantityKind::Fraction(a, d) => a / d,
            _ => value,
        };
        if !labelled && value.is_finite() {
            out.push(Quantity {
                text: &question[start..text_end],
                value,
                kind,
            });
        }
        i = text_end.max(start + 1);
    }
    out
}

/// The numbers written in `question` that a program's value does not depend on (each
/// once, as written), given the program's [`Computed::inputs`]. A percentage counts as
/// used when the program writes it as `25`, `0.25`, `1.25` or `0.75`; a fraction `a/b`
/// when it writes its value or both `a` and `b` (`b` alone when `a` is 1).
pub fn unused_quantities<'q>(question: &'q str, inputs: &[f64]) -> Vec<&'q str> {
    let has = |x: f64| inputs.iter().any(|i| Tolerance::Check.close(*i, x));
    let mut out: Vec<&str> = Vec::new();
    for q in quantities(question) {
        let used = match q.kind {
            QuantityKind::Plain => has(q.value),
            QuantityKind::Percent => {
                let f = q.value / 100.0;
                has(q.value) || has(f) || has(1.0 + f) || has(1.0 - f)
            }
            // `1/2 of x` is often written `x / 2`: a numerator of 1 goes without saying.
            QuantityKind::Fraction(a, d) => has(q.value) || ((a == 1.0 || has(a)) && has(d)),
        };
        if !used && !out.contains(&q.text) {
            out.push(q.text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_question_numbers_a_program_leaves_out() {
        let q = "Tom buys 1,200 pens at $2.50 in the 3rd week, 25% off, and gives away 3/4 \
                 of them. In Q2 he has 12 left; 12 is 20 percent of what?";
        let texts: Vec<&str> = quantities(q).iter().map(|q| q.text).collect();
        assert_eq!(texts, ["1,200", "2.50", "25%", "3/4", "12", "12", "20"]);
        // Everything used, in the forms programs write them.
        assert!(unused_quantities(q, &[1200.0, 2.5, 0.75, 0.75, 12.0, 0.2]).is_empty());
        assert!(unused_quantities(q, &[1200.0, 2.5, 25.0, 3.0, 4.0, 12.0, 20.0]).is_empty());
        assert!(unused_quantities(q, &[1200.0, 2.5, 1.25, 0.75, 12.0, 1.2]).is_empty());
        // Missing ones are named once, as written.
        assert_eq!(
            unused_quantities(q, &[1200.0, 3.0, 0.25, 20.0]),
            ["2.50", "3/4", "12"]
        );
        assert_eq!(
            unused_quantities("How much is 1, 2 and 3,5?", &[]),
            ["1", "2", "3", "5"]
        );
        let half = "She sees 30 bees, then 1/2 that many.";
        assert!(unused_quantities(half, &[30.0, 2.0]).is_empty());
        assert_eq!(unused_quantities("2/3 of 30", &[30.0, 3.0]), ["2/3"]);
        assert!(unused_quantities("What is the answer?", &[]).is_empty());
    }

    proptest::proptest! {
        /// Any question text: every number found is finite and written in it, and a
        /// program that writes all of them leaves none out.
        #[test]
        fn reads_the_numbers_of_any_question(q in "[0-9a-z ,./%$]{0,80}") {
            let found = quantities(&q);
            for n in &found {
                proptest::prop_assert!(n.value.is_finite() && q.contains(n.text));
            }
            let all: Vec<f64> = found.iter().map(|n| n.value).collect();
            proptest::prop_assert!(unused_quantities(&q, &all).is_empty());
        }
    }
}
