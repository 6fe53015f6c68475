//! List markers: the "1.", "1)", "(1)", "Step 1:", "Subtask 1 -" or bullet that opens a
//! line of a plan. Read by the line reader and by the collector (a JSON string may carry its
//! own marker).

use std::sync::LazyLock;

use regex::Regex;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static STEP_MARK: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^(?:step|subtask|sub-task|sub-question|subquestion|task|part|stage|q)\s*#?\s*(\d{1,3})\b\s*(?:[:.)\]–—-]+\s*|\s+|$)(.*)$",
    )
});
static NUM_MARK: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\(|\[)?(\d{1,3})(\)|\]|[.):]|\s+[–—-])(\s*)(.*)$"));
static BULLET: LazyLock<Regex> = LazyLock::new(|| re(r"^[-*•+–·]\s+(?:\[[ xX]?\]\s*)?(.*)$"));

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Marker<'a> {
    Numbered { label: usize, rest: &'a str },
    Bullet { rest: &'a str },
}

/// The list marker opening `line` (already trimmed and free of markdown emphasis).
pub(crate) fn marker(line: &str) -> Option<Marker<'_>> {
    if let Some(c) = STEP_MARK.captures(line) {
        let label = c[1].parse().ok()?;
        return Some(Marker::Numbered {
            label,
            rest: c.get(2).map_or("", |m| m.as_str()).trim(),
        });
    }
    if let Some(c) = NUM_MARK.captures(line) {
        let open = c.get(1).map(|m| m.as_str());
        let close = &c[3];
        let spaced = !c[4].is_empty();
        let rest = c.get(5).map_or("", |m| m.as_str()).trim();
        let starts_digit = rest.starts_with(|ch: char| ch.is_ascii_digit());
        let ok = match (open, close) {
            (Some("("), ")") | (Some("["), "]") => true,
            (Some(_), _) => false,
            // "3.5 liters" and "10:30" are numbers, not markers.
            (None, "." | ":") => spaced || !starts_digit,
            _ => true,
        };
        if ok {
            let label = c[2].parse().ok()?;
            // "1. Step 1: Find x" carries two markers.
            let rest = match STEP_MARK.captures(rest) {
                Some(inner) if inner[1].parse::<usize>().ok() == Some(label) => {
                    inner.get(2).map_or("", |m| m.as_str()).trim()
                }
                _ => rest,
            };
            return Some(Marker::Numbered { label, rest });
        }
    }
    BULLET.captures(line).map(|c| Marker::Bullet {
        rest: c.get(1).map_or("", |m| m.as_str()).trim(),
    })
}

/// `line` without its list marker: `(label, rest)`; the label is `None` for a bullet.
pub(crate) fn strip_marker(line: &str) -> Option<(Option<usize>, &str)> {
    match marker(line.trim())? {
        Marker::Numbered { label, rest } => Some((Some(label), rest)),
        Marker::Bullet { rest } => Some((None, rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(label: usize, rest: &str) -> Option<Marker<'_>> {
        Some(Marker::Numbered { label, rest })
    }

    #[test]
    fn markers() {
        let cases: &[(&str, Option<Marker>)] = &[
            ("1. Find x", num(1, "Find x")),
            ("1) Find x", num(1, "Find x")),
            ("(2) Find x", num(2, "Find x")),
            ("[3] Find x", num(3, "Find x")),
            ("2: Find x", num(2, "Find x")),
            ("4 - Find x", num(4, "Find x")),
            ("1.Find x", num(1, "Find x")),
            ("Step 1: Find x", num(1, "Find x")),
            ("step 12 - Find x", num(12, "Find x")),
            ("Subtask 3 - Find x", num(3, "Find x")),
            ("Sub-question 2: Find x", num(2, "Find x")),
            ("Q1: Find x", num(1, "Find x")),
            ("Step 1", num(1, "")),
            ("1. Step 1: Find x", num(1, "Find x")),
            ("3.5 liters of water", None),
            ("10:30 is the time", None),
            ("2x + 3 = 7", None),
            ("- Find x", Some(Marker::Bullet { rest: "Find x" })),
            ("* Find x", Some(Marker::Bullet { rest: "Find x" })),
            ("• Find x", Some(Marker::Bullet { rest: "Find x" })),
            ("- [ ] Find x", Some(Marker::Bullet { rest: "Find x" })),
            ("-5 is negative", None),
            ("Stepping stones", None),
        ];
        for (line, expected) in cases {
            assert_eq!(&marker(line), expected, "line: {line}");
        }
    }
}
