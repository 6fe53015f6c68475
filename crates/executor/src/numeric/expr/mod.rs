//! A small, safe evaluator for the arithmetic found in answers: `+ - * / ^ !`, implicit
//! multiplication (`2\sqrt{3}`, `3x`, `(x+1)(x-1)`), `\frac`, `\sqrt[n]{}`, `\binom`,
//! `C(n, k)`, `\pi`, floor/ceil, `| |`, log/ln/exp/sin/cos/tan and single-letter variables.
//! The bench graders evaluate gold and predicted answers with it. Input is untrusted:
//! lengths and nesting depth are bounded, nothing is executed, and a value is finite
//! unless the input writes `\infty`.

use std::collections::{BTreeMap, BTreeSet};

use super::Tolerance;

const MAX_LEN: usize = 4000;
const MAX_DEPTH: usize = 100;

mod lex;

use lex::{tokenize, Tok};

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    vars: &'a BTreeMap<char, f64>,
}

type R = Result<f64, ()>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), ()> {
        self.eat(c).then_some(()).ok_or(())
    }
    fn enter(&mut self) -> Result<(), ()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(()).ok_or(())
    }

    fn expr(&mut self) -> R {
        self.enter()?;
        let mut v = self.term()?;
        loop {
            if self.eat('+') {
                v += self.term()?;
            } else if self.eat('-') {
                v -= self.term()?;
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(v)
    }

    fn starts_primary(&self) -> bool {
        match self.peek() {
            Some(Tok::Var(_)) | Some(Tok::Cmd(_)) => true,
            Some(Tok::Sym(c)) => matches!(c, '(' | '{'),
            _ => false,
        }
    }

    fn term(&mut self) -> R {
        let mut v = self.unary()?;
        loop {
            if self.eat('*') {
                v *= self.unary()?;
            } else if self.eat('/') {
                v /= self.unary()?;
            } else if self.starts_primary() {
                v *= self.power()?;
            } else {
                break;
            }
        }
        Ok(v)
    }

    fn unary(&mut self) -> R {
        self.enter()?;
        let v = if self.eat('-') {
            -self.unary()?
        } else if self.eat('+') {
            self.unary()?
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(v)
    }

    fn power(&mut self) -> R {
        let base = self.postfix()?;
        if self.eat('^') {
            let exp = self.unary()?;
            return Ok(base.powf(exp));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> R {
        let mut v = self.primary()?;
        while self.eat('!') {
            v = factorial(v)?;
        }
        Ok(v)
    }

    /// A braced group, or a single primary (for `\frac12`, `\sqrt2`, `\sin x`).
    fn arg(&mut self) -> R {
        if self.eat('{') {
            let v = self.expr()?;
            self.expect('}')?;
            Ok(v)
        } else {
            self.power()
        }
    }

    fn paren_args(&mut self) -> Result<Vec<f64>, ()> {
        let close = if self.eat('(') {
            ')'
        } else if self.eat('{') {
            '}'
        } else {
            return Err(());
        };
        let mut args = vec![self.expr()?];
        while self.eat(',') {
            args.push(self.expr()?);
        }
        self.expect(close)?;
        Ok(args)
    }

    fn primary(&mut self) -> R {
        self.enter()?;
        let tok = self.peek().cloned().ok_or(())?;
        self.pos += 1;
        let v = match tok {
            Tok::Num(n) => n,
            Tok::Var('C') if self.peek() == Some(&Tok::Sym('(')) => {
                let save = self.pos;
                match self.paren_args()?.as_slice() {
                    [n, k] => binom(*n, *k)?,
                    [x] => self.vars.get(&'C').ok_or(())? * x,
                    _ => {
                        self.pos = save;
                        return Err(());
                    }
                }
            }
            Tok::Var(c) => *self.vars.get(&c).ok_or(())?,
            Tok::Sym('(') => {
                let v = self.expr()?;
                self.expect(')')?;
                v
            }
            Tok::Sym('{') => {
                let v = self.expr()?;
                self.expect('}')?;
                v
            }
            Tok::Sym('|') => {
                let v = self.expr()?;
                self.expect('|')?;
                v.abs()
            }
            Tok::Cmd(name) => self.command(&name)?,
            Tok::Sym(_) => return Err(()),
        };
        self.depth -= 1;
        Ok(v)
    }

    fn command(&mut self, name: &str) -> R {
        Ok(match name {
            "pi" => std::f64::consts::PI,
            "infty" | "inf" => f64::INFINITY,
            "frac" => {
                let a = self.arg()?;
                a / self.arg()?
            }
            "binom" => {
                let n = self.arg()?;
                binom(n, self.arg()?)?
            }
            "sqrt" => {
                if self.eat('[') {
                    let n = self.expr()?;
                    self.expect(']')?;
                    let x = self.arg()?;
                    if x < 0.0 && n.fract() == 0.0 && (n as i64) % 2 == 1 {
                        -(-x).powf(1.0 / n)
                    } else {
                        x.powf(1.0 / n)
                    }
                } else {
                    self.arg()?.sqrt()
                }
            }
            "lfloor" | "lceil" => {
                let v = self.expr()?;
                let close = if name == "lfloor" { "rfloor" } else { "rceil" };
                if self.peek() != Some(&Tok::Cmd(close.into())) {
                    return Err(());
                }
                self.pos += 1;
                if name == "lfloor" {
                    v.floor()
                } else {
                    v.ceil()
                }
            }
            "floor" | "ceil" => {
                let args = self.paren_args()?;
                let [x] = args.as_slice() else { return Err(()) };
                if name == "floor" {
                    x.floor()
                } else {
                    x.ceil()
                }
            }
            "log" | "ln" | "exp" | "sin" | "cos" | "tan" => {
                let base = if self.eat('_') {
                    Some(self.arg()?)
                } else {
                    None
                };
                let x = self.arg()?;
                match (name, base) {
                    ("log", Some(b)) => x.ln() / b.ln(),
                    ("log", None) | ("ln", None) => x.ln(),
                    ("exp", None) => x.exp(),
                    ("sin", None) => x.sin(),
                    ("cos", None) => x.cos(),
                    ("tan", None) => x.tan(),
                    _ => return Err(()),
                }
            }
            _ => return Err(()),
        })
    }
}

fn factorial(v: f64) -> R {
    if v < 0.0 || v.fract() != 0.0 || v > 170.0 {
        return Err(());
    }
    Ok((1..=v as u64).fold(1.0, |acc, k| acc * k as f64))
}

fn binom(n: f64, k: f64) -> R {
    if n.fract() != 0.0 || k.fract() != 0.0 || !(0.0..=10_000.0).contains(&n) {
        return Err(());
    }
    if k < 0.0 || k > n {
        return Ok(0.0);
    }
    let k = k.min(n - k) as u64;
    Ok((0..k)
        .fold(1.0, |acc, i| acc * (n - i as f64) / (i + 1) as f64)
        .round())
}

/// Evaluate `s` with the given variable values; `None` if it is not an expression we
/// understand (text, equations, unknown variables, unbalanced brackets).
pub fn eval_with(s: &str, vars: &BTreeMap<char, f64>) -> Option<f64> {
    if s.len() > MAX_LEN {
        return None;
    }
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return None;
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        vars,
    };
    let v = p.expr().ok()?;
    // Overflow (`3^{2005}`) and division by zero give no value; only `\infty` is infinite.
    let infinite_ok = p
        .toks
        .iter()
        .any(|t| matches!(t, Tok::Cmd(c) if c == "infty" || c == "inf"));
    let ok = p.pos == p.toks.len() && !v.is_nan() && (v.is_finite() || infinite_ok);
    ok.then_some(v)
}

/// Evaluate a constant expression (no variables).
pub fn eval(s: &str) -> Option<f64> {
    eval_with(s, &BTreeMap::new())
}

/// The single-letter variables of `s` (`C(n, k)` counts as binomial, not a variable).
pub fn variables(s: &str) -> BTreeSet<char> {
    let Some(toks) = tokenize(s) else {
        return BTreeSet::new();
    };
    toks.iter()
        .enumerate()
        .filter_map(|(i, t)| match t {
            Tok::Var('C') if toks.get(i + 1) == Some(&Tok::Sym('(')) => None,
            Tok::Var(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// Whether two expressions agree under [`Tolerance::Grading`]: as numbers, or (with the
/// same variables) at several sample points.
pub fn equivalent(a: &str, b: &str) -> bool {
    let (va, vb) = (variables(a), variables(b));
    if va != vb || va.len() > 6 {
        return false;
    }
    if va.is_empty() {
        return matches!((eval(a), eval(b)), (Some(x), Some(y)) if Tolerance::Grading.close(x, y));
    }
    let mut agreed = 0;
    for round in 0..4u32 {
        let vars: BTreeMap<char, f64> = va
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    *c,
                    0.61 + 0.37 * (round as f64) + 0.53 * (i as f64 + 1.0).sqrt(),
                )
            })
            .collect();
        match (eval_with(a, &vars), eval_with(b, &vars)) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                if !Tolerance::Grading.close(x, y) {
                    return false;
                }
                agreed += 1;
            }
            (None, None) => {}
            _ => return false,
        }
    }
    agreed >= 2
}

#[cfg(test)]
mod tests;
