//! Dependency annotations inside a step's text: "(depends on 1, 3)", "(uses steps 1 and 2)",
//! "[deps: 2]", "- depends on step 1", "(no dependencies)", and inline mentions such as
//! "add the results of steps 1 and 2".

use std::sync::LazyLock;

use regex::Regex;

/// What a step's text says about its dependencies, in the model's own numbering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DepInfo {
    /// Numbers from an explicit annotation (removed from the text).
    pub explicit: Vec<usize>,
    /// The step was explicitly marked as having no dependencies.
    pub explicit_none: bool,
    /// Steps mentioned in the prose of the step ("the result of step 2"); kept in the text.
    pub hints: Vec<usize>,
}

/// Largest range ("steps 1-40") expanded; anything bigger is noise.
const MAX_RANGE: usize = 32;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static BRACKET: LazyLock<Regex> = LazyLock::new(|| re(r"[\(\[\{]([^\(\)\[\]\{\}]{0,120})[\)\]\}]"));
/// Where an unbracketed annotation may start.
static TRAIL_KEYWORD: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(?:^|[\s,;:.|*_–—-])(depends?\s+on|dependencies|dependency|deps?|requires?|needs?|uses?|using|based\s+on|relies\s+on|builds?\s+on)\b",
    )
});
static KEYWORD: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^(?:this\s+step\s+)?(depends?\s+on|dependencies|dependency|deps?|requires?|needs?|uses?|using|based\s+on|relies\s+on|builds?\s+on|after|from|inputs?)\b\s*[:=]?\s*(.*)$",
    )
});
static NONE_CLAUSE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)^(no\s+dependenc(?:y|ies)|no\s+deps?|independent|none|no\s+prior\s+steps?)\.?$")
});
static HINT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(?:steps?|subtasks?)\s*#?(\d{1,4})((?:\s*(?:,|and|&|or)\s*(?:steps?\s*)?#?\d{1,4})*)",
    )
});
static NUM: LazyLock<Regex> = LazyLock::new(|| re(r"\d{1,4}"));

const FILLER: &[&str] = &[
    "the",
    "result",
    "results",
    "of",
    "answer",
    "answers",
    "to",
    "from",
    "output",
    "outputs",
    "step",
    "steps",
    "subtask",
    "subtasks",
    "sub-task",
    "sub-tasks",
    "task",
    "tasks",
    "and",
    "or",
    "both",
    "on",
    "in",
    "s",
    "previous",
    "prior",
];
const NONE_WORDS: &[&str] = &["none", "nothing", "no", "n/a", "na", "-"];

enum Clause {
    Deps(Vec<usize>),
    None,
}

/// Reads an annotation's inside ("depends on steps 1 and 2"). `bracketed` allows the looser
/// keywords ("(from 2)"); unbracketed "uses"/"needs" must name a step so that
/// "compute the area using 3 tiles" is not read as a dependency.
fn clause(inner: &str, bracketed: bool) -> Option<Clause> {
    let inner = inner
        .trim()
        .trim_matches(|c: char| c == '*' || c == '_')
        .trim();
    if bracketed && NONE_CLAUSE.is_match(inner) {
        return Some(Clause::None);
    }
    let caps = KEYWORD.captures(inner)?;
    let keyword = caps[1].to_ascii_lowercase();
    let rest = caps[2].trim().trim_end_matches(['.', '*', '_']).trim();
    let loose = matches!(keyword.as_str(), "after" | "from" | "input" | "inputs");
    if loose && !bracketed {
        return None;
    }
    let declarative = keyword.starts_with("depend") || keyword.starts_with("dep");
    let mut numbers = Vec::new();
    let mut names_step = false;
    let mut says_none = false;
    for token in rest.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '&' | '/' | '+'))
    {
        let token = token.trim_matches(|c: char| matches!(c, '#' | '.' | ':' | '"' | '\''));
        if token.is_empty() {
            continue;
        }
        let lower = token.to_ascii_lowercase();
        if let Ok(n) = lower.parse::<usize>() {
            numbers.push(n);
        } else if let Some((a, b)) = lower.split_once(['-', '–']) {
            let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
            if a > b || b - a > MAX_RANGE {
                return None;
            }
            numbers.extend(a..=b);
        } else if let Some(n) = lower
            .strip_prefix("step")
            .or_else(|| lower.strip_prefix('s'))
            .and_then(|d| d.parse::<usize>().ok())
        {
            numbers.push(n);
            names_step = true;
        } else if NONE_WORDS.contains(&lower.as_str()) {
            says_none = true;
        } else if FILLER.contains(&lower.as_str()) {
            names_step |=
                lower.starts_with("step") || lower.contains("task") || lower.starts_with("result");
        } else {
            return None;
        }
    }
    if numbers.is_empty() {
        return (says_none && (declarative || bracketed)).then_some(Clause::None);
    }
    (bracketed || declarative || names_step).then_some(Clause::Deps(numbers))
}

/// Removes explicit dependency annotations from `text` and reports them.
pub(crate) fn split_deps(text: &str) -> (String, DepInfo) {
    let mut info = DepInfo::default();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in BRACKET.captures_iter(text) {
        let whole = m.get(0).expect("match");
        match clause(&m[1], true) {
            Some(Clause::Deps(d)) => info.explicit.extend(d),
            Some(Clause::None) => info.explicit_none = true,
            None => continue,
        }
        out.push_str(&text[last..whole.start()]);
        last = whole.end();
    }
    out.push_str(&text[last..]);

    // An unbracketed annotation runs to the end of the step.
    let mut cut = None;
    for m in TRAIL_KEYWORD.captures_iter(&out) {
        let kw = m.get(1).expect("group");
        match clause(&out[kw.start()..], false) {
            Some(Clause::Deps(d)) => info.explicit.extend(d),
            Some(Clause::None) => info.explicit_none = true,
            None => continue,
        }
        cut = Some(kw.start());
        break;
    }
    if let Some(at) = cut {
        out.truncate(at);
    }

    for caps in HINT.captures_iter(&out) {
        for n in NUM.find_iter(&caps[0]) {
            if let Ok(n) = n.as_str().parse() {
                info.hints.push(n);
            }
        }
    }
    let cleaned = out
        .trim()
        .trim_end_matches(|c: char| {
            c.is_whitespace() || matches!(c, ',' | ';' | ':' | '-' | '–' | '—' | '|' | '*' | '_')
        })
        .trim()
        .to_string();
    if !info.explicit.is_empty() {
        info.explicit_none = false;
    }
    (cleaned, info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, text: &str, explicit: &[usize], none: bool, hints: &[usize]) {
        let (t, info) = split_deps(input);
        assert_eq!(t, text, "input: {input}");
        assert_eq!(info.explicit, explicit, "input: {input}");
        assert_eq!(info.explicit_none, none, "input: {input}");
        assert_eq!(info.hints, hints, "input: {input}");
    }

    #[test]
    fn annotations() {
        check(
            "Add the costs. (depends on 1, 3)",
            "Add the costs.",
            &[1, 3],
            false,
            &[],
        );
        check(
            "Add the costs (uses steps 1 and 2)",
            "Add the costs",
            &[1, 2],
            false,
            &[],
        );
        check("Add the costs [deps: 2]", "Add the costs", &[2], false, &[]);
        check(
            "Add the costs - depends on step 1",
            "Add the costs",
            &[1],
            false,
            &[],
        );
        check(
            "Add the costs, depends on steps 1, 2.",
            "Add the costs",
            &[1, 2],
            false,
            &[],
        );
        check(
            "Add the costs *(Depends on: 1 & 2)*",
            "Add the costs",
            &[1, 2],
            false,
            &[],
        );
        check(
            "Add the costs (depends on step #1 and step #2)",
            "Add the costs",
            &[1, 2],
            false,
            &[],
        );
        check(
            "Add the costs (depends on steps 1-3)",
            "Add the costs",
            &[1, 2, 3],
            false,
            &[],
        );
        check(
            "Add the costs (requires the results of steps 1 and 2)",
            "Add the costs",
            &[1, 2],
            false,
            &[],
        );
        check("Add the costs (from 2)", "Add the costs", &[2], false, &[]);
        check(
            "Add the costs {depends_on: [1]}",
            "Add the costs {depends_on: [1]}",
            &[],
            false,
            &[],
        );
        check(
            "Find the price (no dependencies)",
            "Find the price",
            &[],
            true,
            &[],
        );
        check(
            "Find the price (depends on: none)",
            "Find the price",
            &[],
            true,
            &[],
        );
        check(
            "Find the price (independent)",
            "Find the price",
            &[],
            true,
            &[],
        );
        check(
            "Find the price. Depends on: nothing",
            "Find the price.",
            &[],
            true,
            &[],
        );
    }

    #[test]
    fn prose_is_not_an_annotation() {
        check(
            "Compute the area using 3 tiles",
            "Compute the area using 3 tiles",
            &[],
            false,
            &[],
        );
        check("Find f(2) and f(3)", "Find f(2) and f(3)", &[], false, &[]);
        check("Sort [3, 1, 2]", "Sort [3, 1, 2]", &[], false, &[]);
        check(
            "List what the answer depends on",
            "List what the answer depends on",
            &[],
            false,
            &[],
        );
        check("Note (A) and (B)", "Note (A) and (B)", &[], false, &[]);
        check(
            "Use the (depends on N, M) format",
            "Use the (depends on N, M) format",
            &[],
            false,
            &[],
        );
        check(
            "Add 5 (from the box)",
            "Add 5 (from the box)",
            &[],
            false,
            &[],
        );
        check(
            "Find the cost after 2 years",
            "Find the cost after 2 years",
            &[],
            false,
            &[],
        );
    }

    #[test]
    fn inline_mentions_are_hints() {
        check(
            "Add the results of steps 1 and 2",
            "Add the results of steps 1 and 2",
            &[],
            false,
            &[1, 2],
        );
        check(
            "Subtract the answer of step 3 from 50 (depends on 3)",
            "Subtract the answer of step 3 from 50",
            &[3],
            false,
            &[3],
        );
    }

    #[test]
    fn huge_ranges_are_ignored() {
        check(
            "Do it (depends on 1-100000)",
            "Do it (depends on 1-100000)",
            &[],
            false,
            &[],
        );
    }
}
