//! Task families: which few-shot template the decomposer gets, and a cheap guess of the
//! family from the question text when the caller (e.g. a benchmark) does not say.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskFamily {
    Math,
    MultipleChoice,
    Code,
    Puzzle,
    Command,
    General,
}

impl TaskFamily {
    pub const ALL: [TaskFamily; 6] = [
        TaskFamily::Math,
        TaskFamily::MultipleChoice,
        TaskFamily::Code,
        TaskFamily::Puzzle,
        TaskFamily::Command,
        TaskFamily::General,
    ];

    /// Case-insensitive; `-` and spaces count as `_`. Accepts `math`, `multiple_choice`
    /// (`mc`, `choice`), `code`, `puzzle`, `command` (`scan`), `general`.
    pub fn parse(s: &str) -> Option<Self> {
        let key = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        Some(match key.as_str() {
            "math" | "maths" => TaskFamily::Math,
            "multiple_choice" | "multiplechoice" | "mc" | "choice" => TaskFamily::MultipleChoice,
            "code" | "coding" => TaskFamily::Code,
            "puzzle" => TaskFamily::Puzzle,
            "command" | "scan" => TaskFamily::Command,
            "general" => TaskFamily::General,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskFamily::Math => "math",
            TaskFamily::MultipleChoice => "multiple_choice",
            TaskFamily::Code => "code",
            TaskFamily::Puzzle => "puzzle",
            TaskFamily::Command => "command",
            TaskFamily::General => "general",
        }
    }

    /// Heuristic guess from the question text. Checked in this order, first match wins:
    /// answer choices (`A)`, `(A)`, `A.` lines, `Answer Choices:`, CSQA's `A: x; B: y`) →
    /// MultipleChoice; "write a (python) function", `def f(`, code fences → Code; a SCAN
    /// command ("jump twice after walk left") → Command; logic-puzzle words → Puzzle;
    /// numbers with arithmetic words, an arithmetic expression or LaTeX → Math; else General.
    pub fn guess(question: &str) -> Self {
        if looks_multiple_choice(question) {
            TaskFamily::MultipleChoice
        } else if looks_code(question) {
            TaskFamily::Code
        } else if looks_command(question) {
            TaskFamily::Command
        } else if PUZZLE.is_match(question) {
            TaskFamily::Puzzle
        } else if looks_math(question) {
            TaskFamily::Math
        } else {
            TaskFamily::General
        }
    }
}

impl fmt::Display for TaskFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown task family '{0}' (expected math, multiple_choice, code, puzzle, command or general)"
)]
pub struct UnknownFamily(pub String);

impl FromStr for TaskFamily {
    type Err = UnknownFamily;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskFamily::parse(s).ok_or_else(|| UnknownFamily(s.to_string()))
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// A choice label opening a line: `A)`, `(A)`, `A.`, `A:`.
static CHOICE_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)^\s*\(?([A-Ea-e])[\).:]\s+\S"));
/// A choice label inside a line (`(A) x (B) y`, `A: x; B: y`).
static CHOICE_INLINE: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:^|[\s;,])(?:\(([A-Ea-e])\)|([A-E])[\):])\s*\S"));
static CHOICE_HEADER: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\b(answer\s+choices|the\s+options\s+are|options|choices)\s*:"));
static CODE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)```|\bdef\s+\w+\s*\(|\bfn\s+\w+\s*\(|\b(write|implement|complete|create|code)\b[^.\n]{0,40}\b(function|program|script|method|class)\b|\bpython\b",
    )
});
static PUZZLE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(puzzle|riddle|knaves?|truth-?tellers?|liars?|always\s+lies?|logic\s+grid|clues?|sudoku|(make|get|reach|obtain)\s+24)\b",
    )
});
// `-` only with spaces around it: "1945-46" is a range of years, not a subtraction.
static ARITHMETIC: LazyLock<Regex> = LazyLock::new(|| re(r"\d\s*[+*/×÷^=]\s*\(?\d|\d\s+-\s+\(?\d"));
static LATEX: LazyLock<Regex> =
    LazyLock::new(|| re(r"\\(frac|dfrac|sqrt|cdot|times|pi|binom)|\$[^$]*\d[^$]*\$"));
static MATH_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(how\s+many|how\s+much|total|sum|product|difference|percent|average|cost|costs|price|each|per|remainder|divisible|equation|solve|calculate|compute|integers?|probability|ratio|fraction)\b|%|\$\s?\d",
    )
});
static NUMBER: LazyLock<Regex> = LazyLock::new(|| re(r"\d+(?:[.,]\d+)?"));

fn looks_multiple_choice(q: &str) -> bool {
    let letters = |r: &Regex| -> [bool; 5] {
        let mut seen = [false; 5];
        for c in r.captures_iter(q) {
            let Some(m) = c.get(1).or_else(|| c.get(2)) else {
                continue;
            };
            let l = m.as_str().to_ascii_uppercase().as_bytes()[0];
            seen[(l - b'A') as usize] = true;
        }
        seen
    };
    let lines = letters(&CHOICE_LINE);
    if lines[0] && lines[1] {
        return true;
    }
    let inline = letters(&CHOICE_INLINE);
    if inline[0] && inline[1] && inline[2] {
        return true;
    }
    CHOICE_HEADER.is_match(q) && (inline[0] || lines[0])
}

fn looks_code(q: &str) -> bool {
    CODE.is_match(q)
}

const SCAN_ACTIONS: [&str; 5] = ["walk", "run", "jump", "look", "turn"];
const SCAN_WORDS: [&str; 8] = [
    "left", "right", "around", "opposite", "twice", "thrice", "and", "after",
];

fn scan_like(text: &str) -> bool {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_ascii_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() || words.len() > 40 {
        return false;
    }
    let known = |w: &str| SCAN_ACTIONS.contains(&w) || SCAN_WORDS.contains(&w);
    words.iter().any(|w| SCAN_ACTIONS.contains(&w.as_str())) && words.iter().all(|w| known(w))
}

fn looks_command(q: &str) -> bool {
    let q = q.trim();
    let q = q.strip_prefix("IN:").unwrap_or(q);
    let q = q.split(" OUT:").next().unwrap_or(q);
    if scan_like(q) {
        return true;
    }
    // "Translate the command into actions: jump twice" / "... 'jump twice'".
    let lower = q.to_ascii_lowercase();
    if lower.contains("command") {
        if let Some((_, tail)) = q.rsplit_once(':') {
            if scan_like(tail) {
                return true;
            }
        }
        if let Some(quoted) = q.split(['"', '\'']).nth(1) {
            return scan_like(quoted);
        }
    }
    false
}

fn looks_math(q: &str) -> bool {
    let numbers = NUMBER.find_iter(q).count();
    ARITHMETIC.is_match(q) || LATEX.is_match(q) || (numbers >= 1 && MATH_WORDS.is_match(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_as_str_round_trip() {
        for f in TaskFamily::ALL {
            assert_eq!(TaskFamily::parse(f.as_str()), Some(f));
            assert_eq!(f.as_str().parse::<TaskFamily>(), Ok(f));
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
        }
        assert_eq!(TaskFamily::parse(" MC "), Some(TaskFamily::MultipleChoice));
        assert_eq!(
            TaskFamily::parse("choice"),
            Some(TaskFamily::MultipleChoice)
        );
        assert_eq!(
            TaskFamily::parse("Multiple-Choice"),
            Some(TaskFamily::MultipleChoice)
        );
        assert_eq!(TaskFamily::parse("scan"), Some(TaskFamily::Command));
        assert_eq!(TaskFamily::parse("poetry"), None);
        assert!("".parse::<TaskFamily>().is_err());
    }

    fn check(question: &str, expected: TaskFamily) {
        assert_eq!(
            TaskFamily::guess(question),
            expected,
            "question: {question}"
        );
    }

    #[test]
    fn guesses_families_of_benchmark_questions() {
        use TaskFamily::*;
        let cases: &[(&str, TaskFamily)] = &[
            ("Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?", Math),
            ("What is the positive difference between $120\\%$ of 30 and $130\\%$ of 20?", Math),
            ("What is 12 * 7?", Math),
            ("How many strings of length 5 using the digits {0, 1, ..., 9} have strictly increasing digits?", Math),
            ("The sanctions against the school were a punishing blow, and they seemed to what the efforts the school had made to change?\nThe options are: A: ignore; B: enforce; C: authoritarian; D: yell at; E: avoid", MultipleChoice),
            ("Which planet is largest?\nA) Mars\nB) Jupiter\nC) Venus", MultipleChoice),
            ("Which planet is largest? (A) Mars (B) Jupiter (C) Venus (D) Earth", MultipleChoice),
            ("A train leaves at 3 pm and travels 60 miles per hour. How far has it gone by 5 pm? Answer Choices: (a) 60 (b) 120 (c) 180", MultipleChoice),
            ("Write a python function to find the first repeated character in a given string.", Code),
            ("def sat(s: str):\n    return s.count('o') == 1000 and s.count('oo') == 0", Code),
            ("Complete this:\n```\nfn add(a: i32) {}\n```", Code),
            ("walk opposite right thrice after run opposite right", Command),
            ("jump twice and look left", Command),
            ("IN: turn around left OUT: I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT", Command),
            ("Translate the command into actions: jump around right twice", Command),
            ("Knights always tell the truth and knaves always lie. A says B is a knave. Who is who?", Puzzle),
            ("Use 4, 9, 10 and 13 with + - * / to make 24.", Puzzle),
            ("Could a llama birth twice during the War in Vietnam (1945-46)?", General),
            ("Who wrote Hamlet?", General),
            ("", General),
            ("Is the run of a play longer than a walk in the park?", General),
        ];
        for (q, f) in cases {
            check(q, *f);
        }
    }
}
