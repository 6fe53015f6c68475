//! LaTeX answer normalisation (in the spirit of the MATH paper's `strip_string`): removes
//! presentation (`\left`, `\!`, `$`, spaces, `\dfrac`, degrees, `\%`, units in `\text{}`,
//! `x =` prefixes) so that equal answers become equal strings where possible.

use std::sync::LazyLock;

use regex::Regex;

static RE_UNIT_TAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(.*[0-9})\]])\s+[A-Za-z]{2,}\.?(\s+[A-Za-z]+\.?)*(\^\{?[23]\}?)?$").unwrap()
});
static RE_VAR_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z](_\{?[A-Za-z0-9]+\}?)?(\([A-Za-z]\))?\s*(=|\\in)\s*").unwrap()
});
static RE_THOUSANDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$").unwrap());
static RE_MIXED_PLAIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(-?)(\d+)\s+(\d+)/(\d+)$").unwrap());
static RE_MIXED_TEX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(-?)(\d+)\\frac\{?(\d+)\}?\{?(\d+)\}?$").unwrap());
static RE_BASE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([0-9A-Za-z]+)_\{?(\d+)\}?$").unwrap());
static RE_LETTER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\(([A-Za-z])\)$").unwrap());

/// Replace `\name` (not followed by another letter) with `with`.
pub fn replace_cmd(s: &str, name: &str, with: &str) -> String {
    let pat = format!("\\{name}");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(&pat) {
        let after = &rest[pos + pat.len()..];
        out.push_str(&rest[..pos]);
        if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.push_str(&pat);
        } else {
            out.push_str(with);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The brace-balanced group starting at `s[open]` (which must be `{`): (content, end index
/// just past the closing brace).
pub fn group_at(s: &str, open: usize) -> Option<(&str, usize)> {
    if !s[open..].starts_with('{') {
        return None;
    }
    let mut depth = 0usize;
    for (i, c) in s[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&s[open + 1..open + i], open + i + 1));
                }
            }
            _ => {}
        }
    }
    None
}

/// Unwrap `\text{..}`-like groups; a group of words right after a number is a unit and
/// is dropped (with a following `^2`/`^3`).
fn unwrap_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let cmd = [
            "\\text",
            "\\textbf",
            "\\textrm",
            "\\mathrm",
            "\\mbox",
            "\\textnormal",
        ]
        .iter()
        .filter(|c| rest.starts_with(*c) && rest[c.len()..].starts_with('{'))
        .max_by_key(|c| c.len());
        let Some(cmd) = cmd else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
            continue;
        };
        let Some((content, end)) = group_at(s, i + cmd.len()) else {
            out.push_str(rest);
            break;
        };
        let words = content.trim();
        let after_number = out
            .trim_end()
            .ends_with(|c: char| c.is_ascii_digit() || c == '}' || c == ')');
        let power = ["^{2}", "^{3}", "^2", "^3"]
            .iter()
            .find(|p| s[end..].starts_with(*p))
            .map_or(0, |p| p.len());
        let at_end = s[end + power..].trim().trim_matches(['.', '$']).is_empty();
        let is_unit = !words.is_empty()
            && words
                .chars()
                .all(|c| c.is_ascii_alphabetic() || c == ' ' || c == '.')
            && after_number
            && at_end;
        i = end;
        if is_unit {
            i += power;
        } else {
            out.push_str(content);
        }
    }
    out
}

/// Remove whitespace except between a command or letter and a following letter
/// (`\pi r` keeps its space so that it does not become `\pir`).
fn squeeze(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space
            && c.is_ascii_alphabetic()
            && out.ends_with(|p: char| p.is_ascii_alphabetic())
        {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

/// Normalise one answer string.
pub fn normalize(answer: &str) -> String {
    let mut s = answer.trim().to_string();
    for a in ["\\(", "\\)", "\\[", "\\]"] {
        if s.starts_with(a) || s.ends_with(a) {
            s = s.replace(a, "");
        }
    }
    for (a, b) in [
        ("\\\\", "\\cr "),
        ("\\$", ""),
        ("$", ""),
        ("\\!", ""),
        ("\\,", " "),
        ("\\;", " "),
        ("\\:", " "),
        ("\\ ", " "),
        ("~", " "),
        ("{,}", ","),
        ("\\%", ""),
        ("%", ""),
        ("\\{", ""),
        ("\\}", ""),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("°", ""),
        ("−", "-"),
        ("\u{2009}", " "),
    ] {
        s = s.replace(a, b);
    }
    for (name, with) in [
        ("left", ""),
        ("right", ""),
        ("displaystyle", ""),
        ("dfrac", "\\frac"),
        ("tfrac", "\\frac"),
        ("dbinom", "\\binom"),
        ("circ", ""),
        ("degree", ""),
        ("cdot", "*"),
        ("times", "*"),
    ] {
        s = replace_cmd(&s, name, with);
    }
    s = unwrap_text(&s);
    let mut s = s
        .trim()
        .trim_end_matches(['.', ',', ';'])
        .trim()
        .to_string();
    for word in [" degrees", " degree", " dollars", " cents", " percent"] {
        if let Some(head) = s.strip_suffix(word) {
            s = head.trim().to_string();
        }
    }
    if let Some(c) = RE_UNIT_TAIL.captures(&s) {
        s = c[1].trim().to_string();
    }
    if let Some(m) = RE_VAR_PREFIX.find(&s) {
        let rest = &s[m.end()..];
        if !rest.contains('=') && !rest.is_empty() {
            s = rest.to_string();
        }
    }
    if let Some(c) = RE_MIXED_PLAIN.captures(s.trim()) {
        s = format!("{}({}+{}/{})", &c[1], &c[2], &c[3], &c[4]);
    }
    let mut s = squeeze(&s);
    if RE_THOUSANDS.is_match(&s) {
        s = s.replace(',', "");
    }
    if let Some(c) = RE_MIXED_TEX.captures(&s) {
        s = format!("{}({}+\\frac{{{}}}{{{}}})", &c[1], &c[2], &c[3], &c[4]);
    }
    if let Some(c) = RE_BASE.captures(&s) {
        s = c[1].to_string();
    }
    if let Some(c) = RE_LETTER.captures(&s) {
        s = c[1].to_string();
    }
    if let Some(rest) = s.strip_prefix('+') {
        s = rest.to_string();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::normalize as n;

    #[test]
    fn presentation_is_removed() {
        assert_eq!(
            n("\\left( 3, \\frac{\\pi}{2} \\right)"),
            "(3,\\frac{\\pi}{2})"
        );
        assert_eq!(n("$\\dfrac{9}{7}$"), "\\frac{9}{7}");
        assert_eq!(n("10,\\!000"), "10000");
        assert_eq!(n("90^\\circ"), "90");
        assert_eq!(n("90 degrees"), "90");
        assert_eq!(n("25\\%"), "25");
        assert_eq!(n("\\$18.50"), "18.50");
        assert_eq!(n("x = 5"), "5");
        assert_eq!(n("f(x) = 2x"), "2x");
        assert_eq!(n("16\\text{ cm}^2"), "16");
        assert_eq!(n("12 square units"), "12");
        assert_eq!(n("\\text{Evelyn}"), "Evelyn");
        assert_eq!(n("\\text{(C)}"), "C");
        assert_eq!(n("2\\frac{1}{2}"), "(2+\\frac{1}{2})");
        assert_eq!(n("2 1/2"), "(2+1/2)");
        assert_eq!(n("1011_2"), "1011");
        assert_eq!(n("\\pi r^2"), "\\pi r^2");
        assert_eq!(n("x \\in [2, 5)"), "[2,5)");
        assert_eq!(n("5."), "5");
        assert_eq!(n("x=1, y=2"), "x=1,y=2");
    }
}
