//! Reads a plan written as JSON: `[{"id":1,"text":"...","depends_on":[..]}]`,
//! `{"subtasks":[...]}` (or `steps`, `plan`, ...), `["...", "..."]`, inside a ```json fence
//! or not, and JSON cut off by the token limit (read leniently, field by field).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::collect::RawStep;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

const PLAN_KEYS: &[&str] = &[
    "subtasks",
    "sub_tasks",
    "steps",
    "plan",
    "sub_questions",
    "subquestions",
    "tasks",
    "questions",
    "decomposition",
    "items",
];
const TEXT_KEYS: &[&str] = &[
    "text",
    "subtask",
    "sub_task",
    "task",
    "step",
    "question",
    "sub_question",
    "subquestion",
    "description",
    "content",
    "instruction",
    "action",
    "name",
    "title",
];
const ID_KEYS: &[&str] = &["id", "step", "number", "index", "step_id", "n"];
const DEP_KEYS: &[&str] = &[
    "depends_on",
    "dependencies",
    "deps",
    "depends",
    "depend_on",
    "requires",
    "uses",
    "needs",
    "depends_on_steps",
];
/// JSON values looked at: a fence or a line opening with `[`/`{`.
const MAX_CANDIDATES: usize = 4;

static FIELD_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#""(?:text|subtask|sub_task|task|step|question|sub_question|subquestion|description|content|instruction)"\s*:\s*"((?:[^"\\]|\\.)*)""#,
    )
});
static FIELD_ID: LazyLock<Regex> =
    LazyLock::new(|| re(r#""(?:id|step|number|index|step_id)"\s*:\s*"?(\d{1,4})"#));
static FIELD_DEPS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#""(?:depends_on|dependencies|deps|depends|requires|uses|needs)"\s*:\s*(\[[^\]]*\]?|\d+|"[^"]*")"#,
    )
});
static STRING: LazyLock<Regex> = LazyLock::new(|| re(r#""((?:[^"\\]|\\.)*)""#));
static DIGITS: LazyLock<Regex> = LazyLock::new(|| re(r"\d{1,4}"));

/// Steps from the first JSON plan in `text`, or `None` when there is none.
pub(crate) fn json_steps(text: &str) -> Option<Vec<RawStep>> {
    for cand in candidates(text) {
        let mut stream = serde_json::Deserializer::from_str(cand).into_iter::<Value>();
        if let Some(Ok(value)) = stream.next() {
            let steps = from_value(&value);
            if !steps.is_empty() {
                return Some(steps);
            }
        }
        let steps = lenient(cand);
        if !steps.is_empty() {
            return Some(steps);
        }
    }
    None
}

/// Fenced blocks first, then lines that open with `[` or `{`.
fn candidates(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("```") {
        let after = &rest[at + 3..];
        // Skip the language tag line ("json").
        let body_start = after.find('\n').map_or(after.len(), |n| n + 1);
        let body = &after[body_start..];
        let end = body.find("```").unwrap_or(body.len());
        let block = body[..end].trim();
        if block.starts_with(['[', '{']) && out.len() < MAX_CANDIDATES {
            out.push(block);
        }
        rest = &body[(end + 3).min(body.len())..];
        if end == body.len() {
            break;
        }
    }
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if out.len() >= MAX_CANDIDATES {
            break;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with(['[', '{']) {
            let start = offset + (line.len() - trimmed.len());
            out.push(&text[start..]);
        }
        offset += line.len();
    }
    out
}

fn from_value(value: &Value) -> Vec<RawStep> {
    match value {
        Value::Array(items) => items.iter().filter_map(from_item).collect(),
        Value::Object(map) => {
            let lists = PLAN_KEYS.iter().filter_map(|k| get(map, k));
            if let Some(list) = lists.chain(map.values()).find(|v| v.is_array()) {
                return from_value(list);
            }
            if let Some(steps) = numbered_object(map) {
                return steps;
            }
            from_item(value).into_iter().collect()
        }
        _ => Vec::new(),
    }
}

/// `{"step1": "...", "step2": "..."}` or `{"1": "...", "2": "..."}`, ordered by number.
fn numbered_object(map: &Map<String, Value>) -> Option<Vec<RawStep>> {
    let mut steps = Vec::new();
    for (k, v) in map {
        let n = DIGITS.find(k)?.as_str().parse::<usize>().ok()?;
        steps.push((n, v.as_str()?.to_string()));
    }
    steps.sort_by_key(|(n, _)| *n);
    Some(
        steps
            .into_iter()
            .map(|(n, text)| RawStep {
                label: Some(n),
                text,
                json_deps: Vec::new(),
            })
            .collect(),
    )
}

/// Case-insensitive key lookup.
fn get<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn from_item(item: &Value) -> Option<RawStep> {
    match item {
        Value::String(s) => Some(RawStep {
            label: None,
            text: s.clone(),
            json_deps: Vec::new(),
        }),
        Value::Object(map) => {
            let text = TEXT_KEYS.iter().find_map(|k| get(map, k)?.as_str())?;
            let label = ID_KEYS.iter().find_map(|k| match get(map, k)? {
                Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
                Value::String(s) => DIGITS.find(s)?.as_str().parse().ok(),
                _ => None,
            });
            let json_deps = DEP_KEYS
                .iter()
                .find_map(|k| get(map, k))
                .map(numbers)
                .unwrap_or_default();
            Some(RawStep {
                label,
                text: text.to_string(),
                json_deps,
            })
        }
        _ => None,
    }
}

/// Step numbers in a dependency field: `[1, "2", "step 3"]`, `4`, `"1, 2"`.
fn numbers(v: &Value) -> Vec<usize> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .into_iter()
            .collect(),
        Value::String(s) => DIGITS
            .find_iter(s)
            .filter_map(|m| m.as_str().parse().ok())
            .collect(),
        Value::Array(items) => items.iter().flat_map(numbers).collect(),
        _ => Vec::new(),
    }
}

fn unescape(s: &str) -> String {
    serde_json::from_str::<String>(&format!("\"{s}\"")).unwrap_or_else(|_| s.to_string())
}

/// JSON that does not parse (cut off, trailing commas, comments): pick the fields out.
fn lenient(cand: &str) -> Vec<RawStep> {
    let body = cand.trim_start();
    if let Some(after) = body.strip_prefix('[') {
        if after.trim_start().starts_with('"') {
            return STRING
                .captures_iter(after)
                .map(|c| RawStep {
                    label: None,
                    text: unescape(&c[1]),
                    json_deps: Vec::new(),
                })
                .collect();
        }
    }
    body.split('{')
        .filter_map(|chunk| {
            let text = unescape(&FIELD_TEXT.captures(chunk)?[1]);
            let label = FIELD_ID.captures(chunk).and_then(|c| c[1].parse().ok());
            let json_deps = FIELD_DEPS
                .captures(chunk)
                .map(|c| {
                    DIGITS
                        .find_iter(&c[1])
                        .filter_map(|m| m.as_str().parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            Some(RawStep {
                label,
                text,
                json_deps,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<(Option<usize>, String, Vec<usize>)> {
        json_steps(text)
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.label, s.text, s.json_deps))
            .collect()
    }

    #[test]
    fn shapes() {
        let expect = vec![
            (Some(1), "a b".to_string(), vec![]),
            (Some(2), "c d".to_string(), vec![1]),
        ];
        assert_eq!(
            texts(
                r#"[{"id":1,"text":"a b","depends_on":[]},{"id":2,"text":"c d","depends_on":[1]}]"#
            ),
            expect
        );
        assert_eq!(
            texts(r#"{"subtasks":[{"id":1,"text":"a b"},{"id":"2","task":"c d","deps":"1"}]}"#),
            expect
        );
        assert_eq!(texts("Sure!\n```json\n[{\"step\":1,\"description\":\"a b\"},{\"step\":2,\"description\":\"c d\",\"dependencies\":[\"step 1\"]}]\n```\nDone."), expect);
        assert_eq!(
            texts(r#"{"step1": "a b", "step2": "c d"}"#),
            vec![
                (Some(1), "a b".to_string(), vec![]),
                (Some(2), "c d".to_string(), vec![])
            ]
        );
        assert_eq!(
            texts(r#"["a b", "c d"]"#),
            vec![
                (None, "a b".to_string(), vec![]),
                (None, "c d".to_string(), vec![])
            ]
        );
    }

    #[test]
    fn cut_off_json_is_read_field_by_field() {
        assert_eq!(
            texts("[{\"id\": 1, \"text\": \"a \\\"b\\\"\"}, {\"id\": 2, \"text\": \"c d\", \"depends_on\": [1, 2"),
            vec![(Some(1), "a \"b\"".to_string(), vec![]), (Some(2), "c d".to_string(), vec![1, 2])]
        );
        assert_eq!(
            texts("[\"a b\", \"c d\", \"e"),
            vec![
                (None, "a b".to_string(), vec![]),
                (None, "c d".to_string(), vec![])
            ]
        );
    }

    #[test]
    fn not_json() {
        assert!(json_steps("1. Sort [3, 1, 2]\n2. Return it").is_none());
        assert!(json_steps("[1, 2, 3]").is_none());
        assert!(json_steps("{}").is_none());
        assert!(json_steps("```\nno json here\n```").is_none());
        assert!(json_steps("").is_none());
    }
}
