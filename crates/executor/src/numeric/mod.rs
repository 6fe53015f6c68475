//! Numeric answers: reading them, evaluating them and comparing them. One module for the
//! executor (escalation's checks) and the bench graders, so that each comparison of two
//! numbers says which tolerance it means.
//!
//! Three comparisons of numbers exist, on purpose:
//!
//! | compares | how | where |
//! |---|---|---|
//! | two written answers (a sample against the answer) | exactly, as [`plain_value`]s | [`crate::answer::same_answer`] (`+agree`) |
//! | a computed value against a written number | [`Tolerance::Check`] | [`crate::answer::same_value`], [`crate::program::unused_quantities`] (`+program`) |
//! | a predicted answer against a gold answer, both evaluated | [`Tolerance::Grading`] | the bench graders, [`expr::equivalent`] |
//!
//! Invariants: nothing here panics or loops on any input (model output is untrusted); a
//! non-finite value is never close to a finite one; [`plain_value`] gives only finite
//! values; [`expr`] bounds input length and nesting.

pub mod expr;

/// Integers of magnitude up to 2^53 are exact in an `f64`; beyond it one may already be
/// rounded. Model-written programs refuse larger values, and grading compares integers
/// below it exactly.
pub const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// How near two numbers must be to count as the same. Both tolerances forgive
/// floating-point rounding, not a different answer (`0.333` is never `1/3`, `33.33` never
/// `100/3`); they differ in where rounding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerance {
    /// A value a model-written program computed, against a number written in text: the
    /// answer it checks, or the numbers of the question it should use (escalation's
    /// program check). A program is a chain of operations whose rounding error scales
    /// with its intermediate values, not with the result (`1000000.1 - 1000000 - 0.1` is
    /// 9e-11, not 0), so the bound is relative 1e-9 of the larger magnitude, and absolute
    /// 1e-9 below magnitude 1; non-finite values are never close. Integers get no special case: at 1e9 and above, values a
    /// unit apart count as close (a known looseness, kept since the check was tuned with
    /// it).
    Check,
    /// A predicted answer against a gold answer, each evaluated from what was written
    /// (bench graders). Evaluating one written expression rounds far less than a chain of
    /// program steps, and a count that is off by one is wrong however large it is: two
    /// integers below [`EXACT_INTEGERS`] must be equal, infinities equal only
    /// themselves, and other values may differ by relative 1e-9 plus absolute 1e-12.
    Grading,
}

impl Tolerance {
    /// Whether `a` and `b` are the same number under this tolerance.
    pub fn close(self, a: f64, b: f64) -> bool {
        match self {
            // Programs compute finite values only; without the guard 18 would be close to
            // infinity (an infinite bound).
            Tolerance::Check => {
                a.is_finite()
                    && b.is_finite()
                    && (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
            }
            Tolerance::Grading => {
                if !a.is_finite() || !b.is_finite() {
                    return a == b;
                }
                if a.fract() == 0.0 && b.fract() == 0.0 && a.abs().max(b.abs()) < EXACT_INTEGERS {
                    return a == b;
                }
                a == b || (a - b).abs() <= 1e-12 + 1e-9 * a.abs().max(b.abs())
            }
        }
    }
}

/// The value of a maths answer that is one plain number (`18`, `$18.00`, `\$1,200`, `-3`,
/// `.5`), or a single worked line ending in one (`100 - 30 = 70`); `None` for anything
/// else (`3/4`, `18 dollars`, `x = 5, y = 3`). Strict on purpose: only such an answer can
/// be confirmed by a program's value or compared by value between samples. (Graders read
/// numbers leniently instead: `r2_bench::grade::parse_number`.)
pub fn plain_value(s: &str) -> Option<f64> {
    let s = s.trim();
    let tail = match s.rsplit_once('=') {
        Some((head, _)) if head.contains([',', ';', '<', '>', '≤', '≥']) => return None,
        Some((_, tail)) => tail,
        None => s,
    };
    let t = tail
        .replace("\\(", "")
        .replace("\\)", "")
        .replace(['$', '\\'], "")
        .replace('\u{2212}', "-");
    let t = t.trim().trim_end_matches('.').trim_end();
    let (negative, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, t),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    if frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    let int_ok = if int.is_empty() {
        frac.is_some() // `.5`
    } else {
        // Commas only as thousands separators: `1,200` but not `1,5`.
        let mut groups = int.split(',');
        let first = groups.next().unwrap_or("");
        digits(first)
            && (!int.contains(',') || first.len() <= 3)
            && groups.all(|g| g.len() == 3 && digits(g))
    };
    if !int_ok {
        return None;
    }
    let plain: String = body.chars().filter(|c| *c != ',').collect();
    let v: f64 = format!("0{plain}").parse().ok()?;
    v.is_finite().then_some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_tolerances_differ_only_at_the_edges() {
        use Tolerance::{Check, Grading};
        // Both forgive rounding, and neither a different answer.
        for t in [Check, Grading] {
            assert!(t.close(0.1 + 0.2, 0.3));
            assert!(t.close(-5.0, -5.0));
            assert!(!t.close(33.33, 100.0 / 3.0));
            assert!(!t.close(1_000_001.0, 1_000_000.0));
            assert!(!t.close(18.0, f64::NAN));
            assert!(!t.close(18.0, f64::INFINITY));
        }
        // A program's cancellation residue near zero passes the check only.
        let residue = 1000000.1 - 1000000.0 - 0.1;
        assert!(Check.close(residue, 0.0) && !Grading.close(residue, 0.0));
        // Large integers a unit apart: close for the check, different for grading.
        assert!(Check.close(1e9, 1e9 + 1.0) && !Grading.close(1e9, 1e9 + 1.0));
        // Infinity is itself only when grading.
        assert!(Grading.close(f64::INFINITY, f64::INFINITY));
        assert!(!Check.close(f64::INFINITY, f64::INFINITY));
    }

    #[test]
    fn plain_values() {
        for (s, v) in [
            ("18", 18.0),
            (" $18.00 ", 18.0),
            ("\\$1,200", 1200.0),
            ("\u{2212}3", -3.0),
            (".5", 0.5),
            ("18.", 18.0),
            ("\\$100 - \\$30 = \\$70", 70.0),
        ] {
            assert_eq!(plain_value(s), Some(v), "{s}");
        }
        for s in ["3/4", "18 dollars", "1,5", "x = 5, y = 3", "", "-", "1e400"] {
            assert_eq!(plain_value(s), None, "{s}");
        }
    }
}
