//! A tiny, safe interpreter for the straight-line arithmetic programs a model writes to
//! check its own maths answer (escalation's `+program` check).
//!
//! It reads a subset of Python: assignments of arithmetic expressions to names
//! (`total = price * 3`, `left -= 2`), `print(...)`, comments, `import math`, numbers
//! (`1_000`, `2.5`, `1e3`), `+ - * / // % **` with Python's precedence and semantics,
//! parentheses, and calls of `round`, `abs`, `min`, `max`, `int`, `float`, `math.ceil`,
//! `math.floor` and `math.sqrt`. Docstrings and prints of text are skipped. Anything else
//! (loops, conditionals, definitions, other calls or imports, indented lines) is an error,
//! so a program that needs it gives no value and the answer escalates. There is no I/O and
//! no unbounded work: nesting and exponents are bounded. Every value is a finite number of
//! magnitude at most 2^53, where floating point still counts integers exactly; anything
//! beyond is an error rather than a rounded value.
//!
//! The program's value is the variable `answer` if it is assigned, else the last value
//! printed (unless text was printed after it), else the last value assigned.

use std::collections::HashMap;

use crate::numeric::{Tolerance, EXACT_INTEGERS};

/// Why a program gave no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProgramError {
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("line {line}: '{name}' is not defined")]
    Undefined { line: usize, name: String },
    #[error("line {line}: {reason}")]
    Arithmetic { line: usize, reason: String },
    #[error("the program assigns and prints nothing")]
    Empty,
    #[error("the program is cut off (an unclosed code block, or the token limit)")]
    CutOff,
}

/// The value of the first fenced code block of `text` (or of `text` itself when it has
/// none), run as a program.
pub fn run_program(text: &str) -> Result<f64, ProgramError> {
    evaluate(text).map(|c| c.value)
}

/// What a program computed: its value and the numbers written in the program that the
/// value depends on (through the assignments that lead to it), sorted and deduplicated.
#[derive(Debug, Clone, PartialEq)]
pub struct Computed {
    pub value: f64,
    pub inputs: Vec<f64>,
}

impl Computed {
    /// `inputs` in any order, with repeats.
    fn new(value: f64, mut inputs: Vec<f64>) -> Self {
        inputs.sort_by(f64::total_cmp);
        inputs.dedup();
        Computed { value, inputs }
    }
}

/// [`run_program`], with the numbers the value depends on.
pub fn evaluate(text: &str) -> Result<Computed, ProgramError> {
    let code = match first_code_block(text) {
        Some(Some(code)) => code,
        // An open fence never closed: the model ran out of tokens mid-program.
        Some(None) => return Err(ProgramError::CutOff),
        None => text,
    };
    let tokens = tokenize(code)?;
    let mut env: HashMap<String, Computed> = HashMap::new();
    let mut printed = None;
    // The name assigned last: its entry in `env` is the last value assigned.
    let mut last = None;
    for (line, statement) in statements(&tokens) {
        match Statement::read(line, &statement)? {
            Statement::Skip => {}
            // What a print of text shows is unknown: an earlier printed number no longer
            // speaks for the program.
            Statement::PrintText => printed = None,
            Statement::Print(args) => {
                for arg in args {
                    printed = Some(Parser::new(line, arg, &env).whole()?);
                }
            }
            Statement::Assign { name, op, value } => {
                let rhs = Parser::new(line, value, &env).whole()?;
                let var = match op {
                    None => rhs,
                    Some(op) => {
                        let lhs = env.get(name).ok_or_else(|| ProgramError::Undefined {
                            line,
                            name: name.to_string(),
                        })?;
                        let value = binary(line, op, lhs.value, rhs.value)?;
                        Computed::new(value, [&lhs.inputs[..], &rhs.inputs[..]].concat())
                    }
                };
                last = Some(name);
                env.insert(name.to_string(), var);
            }
        }
    }
    env.remove("answer")
        .or(printed)
        .or_else(|| last.and_then(|name| env.remove(name)))
        .ok_or(ProgramError::Empty)
}

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

/// The body of the first ```-fenced block if there is one (`None` inside when the block
/// is never closed).
fn first_code_block(text: &str) -> Option<Option<&str>> {
    let open = text.find("```")?;
    let rest = &text[open + 3..];
    let Some(newline) = rest.find('\n') else {
        return Some(None);
    };
    let body = &rest[newline + 1..];
    Some(body.find("```").map(|end| &body[..end]))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
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
fn tokenize(code: &str) -> Result<Vec<(usize, Tok<'_>)>, ProgramError> {
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
fn statements<'t, 'a>(
    tokens: &'t [(usize, Tok<'a>)],
) -> impl Iterator<Item = (usize, Vec<Tok<'a>>)> + 't {
    tokens
        .split(|(_, t)| *t == Tok::End)
        .filter(|s| !s.is_empty())
        .map(|s| (s[0].0, s.iter().map(|(_, t)| t.clone()).collect()))
}

enum Statement<'s, 'a> {
    Skip,
    PrintText,
    Print(Vec<&'s [Tok<'a>]>),
    Assign {
        name: &'a str,
        op: Option<&'static str>,
        value: &'s [Tok<'a>],
    },
}

impl<'s, 'a> Statement<'s, 'a> {
    fn read(line: usize, s: &'s [Tok<'a>]) -> Result<Self, ProgramError> {
        let unsupported = || ProgramError::Syntax {
            line,
            reason: "only assignments of arithmetic and print(...) are supported".into(),
        };
        match s {
            [Tok::Str] => Ok(Statement::Skip), // a docstring
            [Tok::Name("import"), Tok::Name("math")] => Ok(Statement::Skip),
            [Tok::Name("print"), Tok::Op("("), inner @ .., Tok::Op(")")] => {
                // Prints of text (`print(f"... {x}")`) say nothing we can read.
                if inner.contains(&Tok::Str) {
                    return Ok(Statement::PrintText);
                }
                Ok(Statement::Print(split_args(inner)))
            }
            [Tok::Name(name), Tok::Op(op), value @ ..]
                if is_name(name) && !BUILTINS.contains(name) && *name != "math" =>
            {
                let op = match *op {
                    "=" => None,
                    "+=" => Some("+"),
                    "-=" => Some("-"),
                    "*=" => Some("*"),
                    "/=" => Some("/"),
                    "//=" => Some("//"),
                    "%=" => Some("%"),
                    "**=" => Some("**"),
                    _ => return Err(unsupported()),
                };
                Ok(Statement::Assign { name, op, value })
            }
            _ => Err(unsupported()),
        }
    }
}

fn is_name(word: &str) -> bool {
    !KEYWORDS.contains(&word)
}

const KEYWORDS: [&str; 20] = [
    "if", "else", "elif", "for", "while", "def", "return", "import", "from", "class", "lambda",
    "True", "False", "None", "and", "or", "not", "in", "is", "print",
];

/// Top-level comma-separated arguments.
fn split_args<'s, 'a>(toks: &'s [Tok<'a>]) -> Vec<&'s [Tok<'a>]> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Op("(") => depth += 1,
            Tok::Op(")") => depth -= 1,
            Tok::Op(",") if depth == 0 => {
                out.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < toks.len() {
        out.push(&toks[start..]);
    }
    out
}

/// Functions callable by their bare name, as in Python without imports.
const BUILTINS: [&str; 6] = ["abs", "int", "float", "round", "min", "max"];

const MAX_DEPTH: usize = 64;
const MAX_EXPONENT: f64 = 64.0;

/// Evaluates one expression as it parses it (precedence climbing).
struct Parser<'s, 'a, 'e> {
    line: usize,
    toks: &'s [Tok<'a>],
    pos: usize,
    env: &'e HashMap<String, Computed>,
    depth: usize,
    /// Every number written in the expression and every input of the variables it reads.
    inputs: Vec<f64>,
}

impl<'s, 'a, 'e> Parser<'s, 'a, 'e> {
    fn new(line: usize, toks: &'s [Tok<'a>], env: &'e HashMap<String, Computed>) -> Self {
        Parser {
            line,
            toks,
            pos: 0,
            env,
            depth: 0,
            inputs: Vec::new(),
        }
    }

    fn syntax(&self, reason: impl Into<String>) -> ProgramError {
        ProgramError::Syntax {
            line: self.line,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<&Tok<'a>> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, op: &'static str) -> bool {
        let found = self.peek() == Some(&Tok::Op(op));
        if found {
            self.pos += 1;
        }
        found
    }

    /// The whole token run as one expression. Its value depends on everything it reads:
    /// straight-line arithmetic has no branch that could leave a part unused.
    fn whole(mut self) -> Result<Computed, ProgramError> {
        if self.toks.is_empty() {
            return Err(self.syntax("missing expression"));
        }
        let v = self.expr()?;
        if self.pos != self.toks.len() {
            return Err(self.syntax("unexpected text after the expression"));
        }
        Ok(Computed::new(v, self.inputs))
    }

    fn expr(&mut self) -> Result<f64, ProgramError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.syntax("expression nested too deeply"));
        }
        let mut v = self.term()?;
        while let Some(Tok::Op(op @ ("+" | "-"))) = self.peek().cloned() {
            self.pos += 1;
            let r = self.term()?;
            v = binary(self.line, op, v, r)?;
        }
        self.depth -= 1;
        Ok(v)
    }

    fn term(&mut self) -> Result<f64, ProgramError> {
        let mut v = self.unary()?;
        while let Some(Tok::Op(op @ ("*" | "/" | "//" | "%"))) = self.peek().cloned() {
            self.pos += 1;
            let r = self.unary()?;
            v = binary(self.line, op, v, r)?;
        }
        Ok(v)
    }

    /// Unary signs bind looser than `**` on their right: `-2 ** 2` is -4.
    fn unary(&mut self) -> Result<f64, ProgramError> {
        match self.peek() {
            Some(Tok::Op("-")) => {
                self.pos += 1;
                self.descend(|p| p.unary()).map(|v| -v)
            }
            Some(Tok::Op("+")) => {
                self.pos += 1;
                self.descend(|p| p.unary())
            }
            _ => self.power(),
        }
    }

    fn descend(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<f64, ProgramError>,
    ) -> Result<f64, ProgramError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.syntax("expression nested too deeply"));
        }
        let v = f(self)?;
        self.depth -= 1;
        Ok(v)
    }

    /// `**` is right-associative and its exponent may carry a sign: `2 ** -1`.
    fn power(&mut self) -> Result<f64, ProgramError> {
        let base = self.atom()?;
        if self.peek() == Some(&Tok::Op("**")) {
            self.pos += 1;
            let exp = self.descend(|p| p.unary())?;
            return binary(self.line, "**", base, exp);
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<f64, ProgramError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(self.syntax("missing expression"));
        };
        self.pos += 1;
        match tok {
            Tok::Num(v) => {
                self.inputs.push(v);
                Ok(v)
            }
            Tok::Op("(") => {
                let v = self.descend(|p| p.expr())?;
                if !self.eat(")") {
                    return Err(self.syntax("missing ')'"));
                }
                Ok(v)
            }
            Tok::Name("math") if self.eat(".") => match self.peek().cloned() {
                Some(Tok::Name(f @ ("ceil" | "floor" | "sqrt"))) => {
                    self.pos += 1;
                    let args = self.call_args()?;
                    self.apply(f, &args)
                }
                _ => Err(self.syntax("only math.ceil, math.floor and math.sqrt are supported")),
            },
            Tok::Name(name) if self.peek() == Some(&Tok::Op("(")) => {
                if !BUILTINS.contains(&name) {
                    return Err(self.syntax(format!("the function '{name}' is not supported")));
                }
                let args = self.call_args()?;
                self.apply(name, &args)
            }
            Tok::Name(name) if is_name(name) => {
                let var = self.env.get(name).ok_or_else(|| ProgramError::Undefined {
                    line: self.line,
                    name: name.to_string(),
                })?;
                self.inputs.extend_from_slice(&var.inputs);
                Ok(var.value)
            }
            Tok::Str => Err(self.syntax("text is not a number")),
            other => Err(self.syntax(format!("unexpected {}", describe(&other)))),
        }
    }

    fn call_args(&mut self) -> Result<Vec<f64>, ProgramError> {
        if !self.eat("(") {
            return Err(self.syntax("missing '('"));
        }
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.descend(|p| p.expr())?);
            if self.eat(")") {
                return Ok(args);
            }
            if !self.eat(",") {
                return Err(self.syntax("missing ')'"));
            }
        }
    }

    fn apply(&self, f: &str, args: &[f64]) -> Result<f64, ProgramError> {
        let one: Option<fn(f64) -> f64> = match f {
            "abs" => Some(f64::abs),
            "int" => Some(f64::trunc),
            "float" => Some(|x| x),
            "ceil" => Some(f64::ceil),
            "floor" => Some(f64::floor),
            "sqrt" => Some(f64::sqrt),
            _ => None,
        };
        if let Some(g) = one {
            let [x] = args else {
                return Err(self.syntax(format!("{f}() takes 1 argument(s), got {}", args.len())));
            };
            if f == "sqrt" && *x < 0.0 {
                return Err(ProgramError::Arithmetic {
                    line: self.line,
                    reason: "square root of a negative number".into(),
                });
            }
            return finite(self.line, g(*x));
        }
        let v = match f {
            // Python rounds halves to even.
            "round" => match args {
                [x] => x.round_ties_even(),
                // From the exact decimal value, as Python does: round(0.015, 2) is 0.01.
                [x, n] if n.fract() == 0.0 && (0.0..=12.0).contains(n) => {
                    let digits = *n as usize;
                    format!("{x:.digits$}")
                        .parse()
                        .map_err(|_| self.syntax("round() failed"))?
                }
                [x, n] if n.fract() == 0.0 && (-12.0..0.0).contains(n) => {
                    let scale = 10f64.powi(-*n as i32);
                    (x / scale).round_ties_even() * scale
                }
                _ => return Err(self.syntax("round() takes a number and optional digits")),
            },
            "min" | "max" if args.len() >= 2 => {
                let pick = if f == "min" { f64::min } else { f64::max };
                args.iter().copied().fold(args[0], pick)
            }
            _ => return Err(self.syntax(format!("the function '{f}' is not supported"))),
        };
        finite(self.line, v)
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Num(v) => format!("number {v}"),
        Tok::Name(n) => format!("'{n}'"),
        Tok::Str => "text".into(),
        Tok::Op(o) => format!("'{o}'"),
        Tok::End => "end of line".into(),
    }
}

fn finite(line: usize, v: f64) -> Result<f64, ProgramError> {
    if v.is_finite() && v.abs() <= EXACT_INTEGERS {
        Ok(v)
    } else {
        Err(ProgramError::Arithmetic {
            line,
            reason: "a number too large to compute exactly".into(),
        })
    }
}

/// Python's `divmod` on floats (`float_divmod` in CPython): the remainder takes the
/// divisor's sign, and the quotient is the floor of the exact one (`0.5 // 0.1` is 4).
fn divmod(a: f64, b: f64) -> (f64, f64) {
    let mut rem = a % b; // fmod
    let mut div = (a - rem) / b;
    if rem != 0.0 {
        if (b < 0.0) != (rem < 0.0) {
            rem += b;
            div -= 1.0;
        }
    } else {
        rem = 0f64.copysign(b);
    }
    let floor = if div != 0.0 {
        let f = div.floor();
        if div - f > 0.5 {
            f + 1.0
        } else {
            f
        }
    } else {
        0f64.copysign(a / b)
    };
    (floor, rem)
}

/// Python's arithmetic on two numbers.
fn binary(line: usize, op: &str, a: f64, b: f64) -> Result<f64, ProgramError> {
    let arith = |reason: &str| ProgramError::Arithmetic {
        line,
        reason: reason.into(),
    };
    let v = match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" | "//" | "%" if b == 0.0 => return Err(arith("division by zero")),
        "/" => a / b,
        "//" => divmod(a, b).0,
        "%" => divmod(a, b).1,
        "**" => {
            if b.abs() > MAX_EXPONENT {
                return Err(arith("exponent too large"));
            }
            if a == 0.0 && b < 0.0 {
                return Err(arith("zero raised to a negative power"));
            }
            if a < 0.0 && b.fract() != 0.0 {
                return Err(arith("fractional power of a negative number"));
            }
            a.powf(b)
        }
        _ => return Err(arith("unknown operator")),
    };
    finite(line, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(code: &str) -> f64 {
        run_program(code).unwrap_or_else(|e| panic!("{code:?}: {e}"))
    }

    fn inputs(code: &str) -> Vec<f64> {
        evaluate(code)
            .unwrap_or_else(|e| panic!("{code:?}: {e}"))
            .inputs
    }

    #[test]
    fn the_value_remembers_the_numbers_it_comes_from() {
        // Through assignments, augmented ones and calls; not from a dead end.
        let code = "a = 4 * 3\nunused = 7\nb = round(a / 8, 1)\nb += 1.5\nanswer = max(b, 2)";
        assert_eq!(inputs(code), [1.0, 1.5, 2.0, 3.0, 4.0, 8.0]);
        // A reassignment forgets the old inputs; `answer` wins over what is printed.
        assert_eq!(inputs("x = 5\nx = 6\nprint(x)"), [6.0]);
        assert_eq!(inputs("x = 5\nanswer = x\nprint(9)"), [5.0]);
        assert_eq!(inputs("answer = 0"), [0.0]);
    }

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

    #[test]
    fn runs_what_small_models_write() {
        let text = "```python\n# Define the number of eggs per day\neggs_per_day = 16\n\n\
                    eggs_sold = eggs_per_day - 3 - 4  # eaten and baked\nrevenue = eggs_sold * 2\n\
                    answer = revenue\nprint(answer)\n```\n```output\n99\n```";
        assert_eq!(value(text), 18.0);
        // No `answer`: the last printed value, else the last assigned.
        assert_eq!(value("a = 2\nb = a / 2\nprint(a + b)\nc = 100"), 3.0);
        assert_eq!(value("a = 2\nb = a * 21"), 42.0);
        assert_eq!(value("x = 10 / 3\nx -= 1\nx *= 3\nanswer = x"), 7.0);
        assert_eq!(
            value("import math\ntotal = (1_000 +\n   500)\nanswer = math.ceil(total / 7)"),
            215.0
        );
        assert_eq!(
            value("a = 5; b = 2\nprint(\"Total:\", a)\nanswer = a // b"),
            2.0
        );
        // A print of text after a printed number: the last assignment speaks instead.
        assert_eq!(
            value("total = 20\nprint(total)\neach = total / 4\nprint(f\"Each pays {each}\")"),
            5.0
        );
        // Indented blank and comment lines are fine; so are 1_000_000 and 0.
        assert_eq!(value("a = 1_000_000\n   \n  # note\nanswer = a + 0"), 1e6);
    }

    #[test]
    fn follows_python_arithmetic() {
        let cases = [
            ("-2 ** 2", -4.0),
            ("2 ** -1", 0.5),
            ("2 ** 3 ** 2", 512.0),
            ("7 // 2", 3.0),
            ("-7 // 2", -4.0),
            ("-7 % 3", 2.0),
            ("7 % -3", -2.0),
            ("1 + 2 * 3 - 4 / 2", 5.0),
            ("(1 + 2) * 3", 9.0),
            ("round(2.5)", 2.0),
            ("round(3.5)", 4.0),
            ("round(2.675, 1)", 2.7),
            ("round(0.015, 2)", 0.01),
            ("round(0.005, 2)", 0.01),
            ("round(0.05, 1)", 0.1),
            ("round(1234.5, -2)", 1200.0),
            ("0.5 // 0.1", 4.0),
            ("1 // 0.1", 9.0),
            ("1 % 0.1", 0.09999999999999995),
            ("-7.5 // 2", -4.0),
            ("7.5 % -2", -0.5),
            ("int(-3.7)", -3.0),
            ("min(4, 2, 9) + max(1, 5)", 7.0),
            ("abs(-3) + float(2)", 5.0),
            ("math.floor(2.9) + math.sqrt(16)", 6.0),
            ("1e3 + .5 + 2.", 1002.5),
            ("1.5e-1 * 10", 1.5),
        ];
        for (expr, want) in cases {
            let got = value(&format!("import math\nanswer = {expr}"));
            assert!((got - want).abs() < 1e-9, "{expr}: got {got}, want {want}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_run_safely() {
        let refused = [
            "if a > 1:\n    answer = 2",
            "for i in range(3):\n    total += i",
            "def f():\n    return 1\nanswer = f()",
            "import os\nanswer = 1",
            "answer = open('x')",
            "answer = undefined_thing * 2",
            "total += 1",
            "answer = 1 / 0",
            "answer = 5 % 0",
            "answer = 2 ** 100000",
            "answer = (-8) ** 0.5",
            "answer = 1e308 * 10",
            "a, b = 1, 2",
            "answer = [1, 2]",
            "answer = x.y",
            "answer = \"18\"",
            "answer = (1 + 2",
            "answer = 1 2",
            "answer =",
            "Let's solve it: 2 + 2 = 4.",
            "",
            "# only a comment",
            "print(f\"The answer is {x}\")",
            "answer = 'unterminated",
            "answer = round(1, 2, 3)",
            "answer = sqrt(4)",
            "answer = 1e999",
            "x = -1e400\nanswer = x",
            "answer = 2 ** 60 + 1 - 2 ** 60",
            "answer = 007",
            "answer = 1__0",
            "answer = 1_",
            "round = 3\nanswer = round(2.5)",
            "answer = min(5)",
            "print(1 / 0, 5)",
            "a = 1\n  answer = 2",
            "```python\nanswer = 2\nanswer = answer + (",
            "```python\nanswer = 2\n",
        ];
        for code in refused {
            assert!(
                run_program(code).is_err(),
                "ran {code:?}: {:?}",
                run_program(code)
            );
        }
        let deep = format!("answer = {}1{}", "(".repeat(500), ")".repeat(500));
        assert!(run_program(&deep).is_err());
        let signs = format!("answer = {}1", "-".repeat(500));
        assert!(run_program(&signs).is_err());
        let err = run_program("a = 1\nanswer = b + 1").unwrap_err();
        assert_eq!(
            err,
            ProgramError::Undefined {
                line: 2,
                name: "b".into()
            }
        );
    }

    proptest::proptest! {
        /// Model output is untrusted: any text gives a value or an error, never a panic or
        /// a non-finite value.
        #[test]
        fn never_panics_on_program_like_text(
            code in "([a-z_]{1,3}|[0-9.e_]{1,4}|[-+*/%=(),#'\"`$\\ \n]|\\*\\*|//|print|math\\.|round|min|é|×){0,40}"
        ) {
            if let Ok(v) = run_program(&code) {
                proptest::prop_assert!(v.is_finite());
            }
        }

        #[test]
        fn never_panics_on_any_text(code in "\\PC{0,200}") {
            if let Ok(v) = run_program(&code) {
                proptest::prop_assert!(v.is_finite());
            }
        }

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
