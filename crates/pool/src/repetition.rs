//! Detects a model that has started repeating itself, so generation can be cut early.
//! Small models loop ("Step 5: ... Step 5: ...") and would otherwise burn the whole
//! token budget.

/// Longest repeated unit looked for, in bytes.
pub const MAX_PERIOD: usize = 256;
/// A tail counts as a loop once the repeated span covers this many bytes...
pub const MIN_SPAN: usize = 96;
/// ...and at least this many copies of the unit.
pub const MIN_REPEATS: usize = 3;

/// If the end of `text` is one unit repeated (≥ `MIN_REPEATS` copies, ≥ `MIN_SPAN` bytes),
/// return the length of `text` with all but the first copy removed (on a char boundary).
pub fn looping_tail(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let n = b.len();
    if n < MIN_SPAN {
        return None;
    }
    for p in 1..=MAX_PERIOD.min(n / MIN_REPEATS) {
        // Length of the longest suffix that is periodic with period p.
        let mut j = n;
        while j > p && b[j - 1] == b[j - 1 - p] {
            j -= 1;
        }
        let span = n - j + p;
        if span >= MIN_SPAN && span >= MIN_REPEATS * p {
            let mut keep = n - span + p;
            while !text.is_char_boundary(keep) {
                keep += 1;
            }
            return Some(keep.min(n));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_repeated_sentence() {
        let unit = "The answer is to add the numbers. ";
        let text = format!("Let me think. {}", unit.repeat(4));
        let keep = looping_tail(&text).expect("loop");
        // One copy of the unit is kept (the periodic tail may start a few bytes early,
        // where the text before the loop happens to end like the unit does).
        let kept = &text[..keep];
        assert!(
            kept.starts_with("Let me think. The answer is to add the numbers"),
            "{kept}"
        );
        assert_eq!(kept.matches("add the numbers").count(), 1, "{kept}");
    }

    #[test]
    fn ignores_normal_text() {
        let text = "Step 1: add 3 and 4 to get 7.\nStep 2: multiply 7 by 2 to get 14.\nStep 3: subtract 5 from 14 to get 9.\nRESULT: 9";
        assert_eq!(looping_tail(text), None);
        assert_eq!(looping_tail("short"), None);
    }

    #[test]
    fn detects_single_character_runs_and_respects_utf8() {
        let text = format!("ok {}", "é".repeat(80));
        let keep = looping_tail(&text).expect("loop");
        assert!(text.is_char_boundary(keep));
        assert!(keep < text.len());
    }
}
