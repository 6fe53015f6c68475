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
//! printed (unless text was printed after it), else the last value assigned. With it comes
//! which numbers written in the program that value depends on ([`Computed::inputs`]), so
//! `+program:all` can ask whether it uses every number the question writes
//! ([`unused_quantities`]).
//!
//! Here: reading statements and running them in order. `lex` turns text into tokens and
//! logical lines, `eval` evaluates expressions with Python's semantics while tracking
//! their inputs, `quantities` reads the numbers a question writes.

mod eval;
mod lex;
mod quantities;

use std::collections::HashMap;

use eval::{binary, is_name, Parser, BUILTINS};
use lex::{statements, tokenize, Tok};
pub use quantities::unused_quantities;

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

#[cfg(test)]
mod tests;
