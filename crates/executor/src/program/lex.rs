//! Program text to tokens: numbers as Python writes them (`1_000`, `2.5`, `1e-3`), names,
//! operators, strings (only their presence is kept) and line ends, with the line each
//! starts on. Newlines inside brackets continue a line, as in Python; an indented line
//! outside a block is an error. Every number token is finite and at most 2^53.

use super::eval::finite;
use super::ProgramError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok<'a> {
    Num(f64),
    Name(&'a str),
    Str,
    Op(&'static str),
    End,
}

const OPS: [&str; 22] = [
    "**=", "//=", "**", "//", "+=", "-=", "*=", "/=", "%=", "==", "!=", "<=", ">=", "+", "-", "*",
    "/", "%", "(", ")", ",", "=",
];
const OTHER_OPS: [&str; 6] = [".", "<", ">", ":", "[", "]"];

/// Tokens with their line numbers; `End` closes each logical line (newlines inside
/// parentheses continue the line, as in Python).
pub(super) fn tokenize(code: &str) -> Result<Vec<(usize, Tok<'_>)>, ProgramError> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut line = 1;
    let b = code.as_bytes();
    let mut i = 0;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i] as char;
        let syntax = move |reason: String| ProgramError::Syntax { line, reason };
        // Python refuses an indented line outside a block (blank and comment lines aside).
        if line_start && depth == 0 && (c == ' ' || c == '\t') {
            let rest = code[i..].trim_start_matches([' ', '\t']);
            if !(rest.is_empty() || rest.starts_with(['\n', '\r', '#'])) {
                return Err(syntax("unexpected indent".into()));
            }
        }
        line_start = c == '\n' && depth == 0;
        match c {
            '\n' | ';' => {
                if c == '\n' {
                    line += 1;
                }
                if depth == 0 {
                    out.push((line, Tok::End));
                }
                i += 1;
            }
            '#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            '\\' if b.get(i + 1) == Some(&b'\n') => {
                line += 1;
                i += 2;
            }
            c if c.is_whitespace() => i += 1,
            c if c.is_ascii_digit()
                || (c == '.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_')
                {
                    // An exponent's sign belongs to the number: `1e-3`.
                    if (b[i] == b'e' || b[i] == b'E')
                        && matches!(b.get(i + 1), Some(b'+') | Some(b'-'))
                    {
                        i += 1;
                    }
                    i += 1;
                }
                let lit = &code[start..i];
                let v = number(lit).ok_or_else(|| syntax(format!("'{lit}' is not a number")))?;
                out.push((line, Tok::Num(finite(line, v)?)));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80)
                {
                    i += 1;
                }
                let word = &code[start..i];
                // String prefixes: f"...", r'...'
                if matches!(b.get(i), Some(b'"') | Some(b'\''))
                    && word.len() <= 2
                    && word.chars().all(|c| "fFrRbBuU".contains(c))
                {
                    continue;
                }
                out.push((line, Tok::Name(word)));
            }
            '"' | '\'' => {
                let triple = code[i..].starts_with(if c == '"' { "\"\"\"" } else { "'''" });
                let quote = if triple {
                    &code[i..i + 3]
                } else {
                    &code[i..i + 1]
                };
                let mut j = i + quote.len();
                loop {
                    if j >= b.len() || (!triple && b[j] == b'\n') {
                        return Err(syntax("unterminated string".into()));
                    }
                    if b[j] == b'\\' {
                        j += 2;
                        continue;
                    }
                    if b[j..].starts_with(quote.as_bytes()) {
                        break;
                    }
                    if b[j] == b'\n' {
                        line += 1;
                    }
                    j += 1;
                }
                i = j + quote.len();
                out.push((line, Tok::Str));
            }
            _ => {
                let rest = &code[i..];
                let op = OPS
                    .iter()
                    .chain(OTHER_OPS.iter())
                    .find(|op| rest.starts_with(**op))
                    .ok_or_else(|| {
                        syntax(format!(
                            "unexpected '{}'",
                            rest.chars().next().unwrap_or(' ')
                        ))
                    })?;
                match *op {
                    "(" | "[" => depth += 1,
                    ")" | "]" => depth = depth.saturating_sub(1),
                    _ => {}
                }
                out.push((line, Tok::Op(op)));
                i += op.len();
            }
        }
    }
    out.push((line, Tok::End));
    Ok(out)
}

/// A Python number literal: underscores only between digits, no leading zeros on integers.
fn number(lit: &str) -> Option<f64> {
    let b = lit.as_bytes();
    let digit = |k: usize| b.get(k).is_some_and(u8::is_ascii_digit);
    let underscores_ok = b
        .iter()
        .enumerate()
        .all(|(k, &c)| c != b'_' || (k > 0 && digit(k - 1) && digit(k + 1)));
    let integer = lit.bytes().all(|c| c.is_ascii_digit() || c == b'_');
    let leading_zero =
        integer && lit.starts_with('0') && lit.bytes().any(|c| c.is_ascii_digit() && c != b'0');
    if !underscores_ok || leading_zero {
        return None;
    }
    lit.replace('_', "").parse().ok()
}

/// The logical lines: each a non-empty run of tokens between `End`s, with its line number.
pub(super) fn statements<'t, 'a>(
    tokens: &'t [(usize, Tok<'a>)],
) -> impl Iterator<Item = (usize, Vec<Tok<'a>>)> + 't {
    tokens
        .split(|(_, t)| *t == Tok::End)
        .filter(|s| !s.is_empty())
        .map(|s| (s[0].0, s.iter().map(|(_, t)| t.clone()).collect()))
}
