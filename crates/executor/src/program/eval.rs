//! Expressions evaluated as they are parsed (precedence climbing), with Python's
//! precedence and semantics (`//` and `%` floor, `-2 ** 2` is -4, `round` halves to even),
//! and the numbers each value depends on. Bounded: nesting depth at most 64, exponents at
//! most 64 in magnitude, and every value finite and at most 2^53 in magnitude, else an
//! error naming the line.

use std::collections::HashMap;

use super::lex::Tok;
use super::{Computed, ProgramError};
use crate::numeric::EXACT_INTEGERS;

/// Whether `word` may name a variable: anything but a Python keyword (or `print`).
pub(super) fn is_name(word: &str) -> bool {
    !KEYWORDS.contains(&word)
}

const KEYWORDS: [&str; 20] = [
    "if", "else", "elif", "for", "while", "def", "return", "import", "from", "class", "lambda",
    "True", "False", "None", "and", "or", "not", "in", "is", "print",
];

/// Functions callable by their bare name, as in Python without imports.
pub(super) const BUILTINS: [&str; 6] = ["abs", "int", "float", "round", "min", "max"];

const MAX_DEPTH: usize = 64;
const MAX_EXPONENT: f64 = 64.0;

/// Evaluates one expression as it parses it (precedence climbing).
pub(super) struct Parser<'s, 'a, 'e> {
    line: usize,
    toks: &'s [Tok<'a>],
    pos: usize,
    env: &'e HashMap<String, Computed>,
    depth: usize,
    /// Every number written in the expression and every input of the variables it reads.
    inputs: Vec<f64>,
}

impl<'s, 'a, 'e> Parser<'s, 'a, 'e> {
    pub(super) fn new(
        line: usize,
        toks: &'s [Tok<'a>],
        env: &'e HashMap<String, Computed>,
    ) -> Self {
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
    pub(super) fn whole(mut self) -> Result<Computed, ProgramError> {
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

pub(super) fn finite(line: usize, v: f64) -> Result<f64, ProgramError> {
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
pub(super) fn binary(line: usize, op: &str, a: f64, b: f64) -> Result<f64, ProgramError> {
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
