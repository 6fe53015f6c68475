//! MATH answer equivalence: normalised strings, then structure (tuples and intervals
//! element-wise, unbracketed lists as multisets, matrices, equations), then numeric or
//! sampled symbolic equality of the atoms.

use super::latex::normalize;
use r2_executor::numeric::expr;

const MAX_DEPTH: usize = 4;

/// Whether `pred` is an equivalent answer to `gold` (both raw answer strings).
pub fn math_equiv(gold: &str, pred: &str) -> bool {
    let (g, p) = (normalize(gold), normalize(pred));
    !p.is_empty() && equal(&g, &p, 0)
}

#[derive(Debug)]
enum Shape<'a> {
    /// `(a, b)`, `[a, b)`: ordered, bracket kinds must agree.
    Seq(char, char, Vec<&'a str>),
    /// `a, b, c` without brackets: compared as multisets (see `expand_pm`).
    List,
    Matrix(Vec<Vec<&'a str>>),
    Atom,
}

fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Whether the bracket opened at the first char closes exactly at the last char.
fn wrapped(s: &str) -> bool {
    let mut depth = 0i32;
    let n = s.chars().count();
    for (k, c) in s.chars().enumerate() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return k == n - 1;
        }
    }
    false
}

fn shape(s: &str) -> Shape<'_> {
    for env in ["pmatrix", "bmatrix", "matrix"] {
        let (open, close) = (format!("\\begin{{{env}}}"), format!("\\end{{{env}}}"));
        if let Some(body) = s.strip_prefix(&open).and_then(|r| r.strip_suffix(&close)) {
            let rows = body
                .split("\\cr")
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(|r| r.split('&').map(str::trim).collect())
                .collect();
            return Shape::Matrix(rows);
        }
    }
    let first = s.chars().next().unwrap_or(' ');
    let last = s.chars().last().unwrap_or(' ');
    if "([".contains(first) && ")]".contains(last) && wrapped(s) {
        let inner = &s[1..s.len() - 1];
        let items = split_top(inner, ',');
        if items.len() > 1 {
            return Shape::Seq(first, last, items);
        }
    }
    if split_top(s, ',').len() > 1 {
        return Shape::List;
    }
    Shape::Atom
}

fn is_word(s: &str) -> bool {
    s.len() > 1 && s.chars().all(|c| c.is_alphabetic() || c == ' ')
}

fn equal(g: &str, p: &str, depth: usize) -> bool {
    if g == p || (is_word(g) && g.eq_ignore_ascii_case(p)) {
        return true;
    }
    if depth > MAX_DEPTH || g.is_empty() || p.is_empty() {
        return false;
    }
    let eq = |a: &str, b: &str| equal(a.trim(), b.trim(), depth + 1);
    match (shape(g), shape(p)) {
        (Shape::Seq(o1, c1, a), Shape::Seq(o2, c2, b)) => {
            o1 == o2 && c1 == c2 && a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| eq(x, y))
        }
        (Shape::Matrix(a), Shape::Matrix(b)) => {
            a.len() == b.len()
                && a.iter().zip(&b).all(|(ra, rb)| {
                    ra.len() == rb.len() && ra.iter().zip(rb).all(|(x, y)| eq(x, y))
                })
        }
        (Shape::Atom, Shape::Atom) if !g.contains("\\pm") && !p.contains("\\pm") => {
            atom_equal(g, p)
        }
        (Shape::List | Shape::Atom, Shape::List | Shape::Atom) => {
            let (a, b) = (expand_pm(g), expand_pm(p));
            if a.len() != b.len() {
                return false;
            }
            let mut used = vec![false; b.len()];
            a.iter().all(|x| {
                let hit = (0..b.len()).find(|&j| !used[j] && eq(x, &b[j]));
                hit.map(|j| used[j] = true).is_some()
            })
        }
        _ => false,
    }
}

/// The items of an unbracketed list, with `a \pm b` as the two items `a+b`, `a-b`.
fn expand_pm(s: &str) -> Vec<String> {
    split_top(s, ',')
        .into_iter()
        .flat_map(|item| match item.matches("\\pm").count() {
            1 => vec![item.replace("\\pm", "+"), item.replace("\\pm", "-")],
            _ => vec![item.to_string()],
        })
        .collect()
}

fn atom_equal(g: &str, p: &str) -> bool {
    let (gs, ps) = (split_top(g, '='), split_top(p, '='));
    if gs.len() == 2 && ps.len() == 2 {
        let same = |a: &str, b: &str| a == b || expr::equivalent(a, b);
        return (same(gs[0], ps[0]) && same(gs[1], ps[1]))
            || (same(gs[0], ps[1]) && same(gs[1], ps[0]));
    }
    if gs.len() != 1 || ps.len() != 1 {
        return false;
    }
    expr::equivalent(g, p)
}

#[cfg(test)]
mod tests {
    use super::math_equiv as eq;

    #[test]
    fn equivalent_forms() {
        for (g, p) in [
            ("\\frac{1}{2}", "0.5"),
            ("\\frac{1}{2}", "1/2"),
            ("\\dfrac{9}{7}", "9/7"),
            ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
            ("10\\%", "10"),
            ("90^\\circ", "90"),
            ("x = 5", "5"),
            ("\\$18.00", "18"),
            ("2\\sqrt{3}", "\\sqrt{12}"),
            ("6\\frac{1}{4}", "25/4"),
            ("[1,2)", "[1, 2)"),
            ("1, -2", "-2, 1"),
            ("\\{1, 2\\}", "2,1"),
            ("y = 2x + 3", "y=3+2x"),
            (
                "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
                "\\begin{pmatrix}1\\\\ 2.0\\end{pmatrix}",
            ),
            ("\\text{Evelyn}", "evelyn"),
            ("\\text{(C)}", "C"),
            ("(-\\infty, 3]", "(-\\infty,3]"),
            ("10,\\!000", "10000"),
            ("\\frac{\\sqrt{3}}{3}", "1/\\sqrt{3}"),
            ("x^2+2x+1", "(x+1)^2"),
            ("1 \\pm \\sqrt{19}", "1-\\sqrt{19}, 1+\\sqrt{19}"),
            ("\\{1\\pm\\sqrt{5},-2\\}", "-2, 1+\\sqrt5, 1-\\sqrt5"),
            ("6 - 5i", "-5i+6"),
        ] {
            assert!(eq(g, p), "{g:?} should equal {p:?}");
        }
    }

    #[test]
    fn different_forms() {
        for (g, p) in [
            ("\\frac{1}{2}", "0.51"),
            ("(1,2)", "[1,2]"),
            ("(1,2)", "(2,1)"),
            ("1,2", "1,2,3"),
            ("\\pi", "3.14"),
            ("2x", "2y"),
            ("\\text{Evelyn}", "Devon"),
            ("5", ""),
            ("x^2+2x+1", "(x+1)^3"),
            ("y = 2x + 3", "y=2x+4"),
            ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}"),
            ("(0,9) \\cup (9,36)", "(0,9) \\cup (9,37)"),
        ] {
            assert!(!eq(g, p), "{g:?} should differ from {p:?}");
        }
    }
}
