//! Tokens for the evaluator. LaTeX mode (a backslash or brace in the input) reads one
//! digit as the argument of an unbraced `^`, `\frac` or `\sqrt` (`x^23` is `x^2 3`,
//! `\frac12` is 1/2); plain mode reads whole numbers (`2^10`).

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Num(f64),
    Var(char),
    Cmd(String),
    Sym(char),
}

const WORDS: &[&str] = &[
    "sqrt", "pi", "floor", "ceil", "log", "ln", "sin", "cos", "tan", "exp", "binom", "infty", "inf",
];

pub(super) fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let latex = s.contains('\\') || s.contains('{');
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    // LaTeX takes one digit as the argument of `^`, `\frac`, `\sqrt` when unbraced.
    let mut single_digits = 0u8;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            if single_digits > 0 {
                single_digits -= 1;
                i += 1;
            } else {
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().collect();
            out.push(Tok::Num(text.parse().ok()?));
            continue;
        }
        single_digits = 0;
        if c == '\\' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            if i == start {
                i += 1; // `\,`, `\!`, `\ `: spacing
                continue;
            }
            let name: String = chars[start..i].iter().collect();
            let name = match name.as_str() {
                "dfrac" | "tfrac" => "frac".to_string(),
                "dbinom" | "tbinom" => "binom".to_string(),
                _ => name,
            };
            match name.as_str() {
                "cdot" | "times" | "ast" => out.push(Tok::Sym('*')),
                "div" => out.push(Tok::Sym('/')),
                "left" | "right" | "displaystyle" => {}
                "vert" | "lvert" | "rvert" | "mid" => out.push(Tok::Sym('|')),
                _ => {
                    if latex && matches!(name.as_str(), "frac" | "binom") {
                        single_digits = 2;
                    } else if latex && name == "sqrt" {
                        single_digits = 1;
                    }
                    out.push(Tok::Cmd(name));
                }
            }
            continue;
        }
        if c.is_ascii_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            if word.len() > 1 && WORDS.contains(&lower.as_str()) {
                out.push(Tok::Cmd(lower));
            } else {
                out.extend(word.chars().map(Tok::Var));
            }
            continue;
        }
        match c {
            'π' => out.push(Tok::Cmd("pi".into())),
            '√' => out.push(Tok::Cmd("sqrt".into())),
            '∞' => out.push(Tok::Cmd("infty".into())),
            '×' | '·' | '⋅' => out.push(Tok::Sym('*')),
            '÷' => out.push(Tok::Sym('/')),
            '−' | '–' => out.push(Tok::Sym('-')),
            '+' | '-' | '*' | '/' | '(' | ')' | '{' | '}' | '[' | ']' | ',' | '!' | '|' | '_' => {
                out.push(Tok::Sym(c))
            }
            '^' => {
                out.push(Tok::Sym('^'));
                if latex {
                    single_digits = 1;
                }
            }
            _ => return None,
        }
        i += 1;
    }
    Some(out)
}
