//! One record of each format → an [`Item`] (or the reason it is malformed).

use std::collections::BTreeMap;

use r2_executor::answer::last_boxed;
use serde_json::Value;

use super::{Format, Gold, Item};

type R = Result<Item, String>;

fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing text field `{key}`"))
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .ok_or_else(|| format!("missing list field `{key}`"))
}

fn id_of(v: &Value, key: &str, prefix: &str, index: usize) -> String {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => format!("{prefix}-{n}"),
        _ => format!("{prefix}-{index}"),
    }
}

fn meta_from(v: &Value, keys: &[&str]) -> BTreeMap<String, Value> {
    keys.iter()
        .filter_map(|k| {
            v.get(*k)
                .filter(|x| !x.is_null())
                .map(|x| (k.to_string(), x.clone()))
        })
        .collect()
}

fn item(id: String, question: String, format: Format, gold: Gold) -> Item {
    Item {
        id,
        question,
        family: format.family(),
        gold,
        reference: None,
        meta: BTreeMap::new(),
    }
}

/// Parse one JSON record of `format` (`index`: 0-based record number, for generated ids).
pub(super) fn record(format: Format, v: &Value, index: usize, prefix: &str) -> R {
    if !v.is_object() {
        return Err("record is not a JSON object".into());
    }
    match format {
        Format::Gsm8k => gsm8k(v, index, prefix),
        Format::Math | Format::Math500 | Format::PaperMath => math(format, v, index, prefix),
        Format::Csqa | Format::PaperCsqa => csqa(format, v, index, prefix),
        Format::Mbpp | Format::MbppSanitized => mbpp(format, v),
        Format::StrategyQa => strategyqa(v, index, prefix),
        Format::P3 | Format::PaperP3 => p3(format, v, index, prefix),
        Format::PaperChamp => {
            let mut it = item(
                id_of(v, "dot_id", prefix, index),
                text(v, "problem_text")?.to_string(),
                format,
                Gold::Champ(text(v, "problem_answer")?.trim().to_string()),
            );
            it.meta = meta_from(v, &["dot_id", "problem_identifier"]);
            Ok(it)
        }
        Format::PaperScan => {
            let actions = strings(v, "gold_actions")?;
            if actions.is_empty() {
                return Err("empty `gold_actions`".into());
            }
            let mut it = item(
                id_of(v, "dot_id", prefix, index),
                scan_question(text(v, "command")?),
                format,
                Gold::Actions(actions),
            );
            it.meta = meta_from(v, &["dot_id", "tasks_txt_line", "command"]);
            Ok(it)
        }
        Format::Champ | Format::Scan => {
            Err(format!("{} records are not JSON lines", format.name()))
        }
    }
}

fn gsm8k(v: &Value, index: usize, prefix: &str) -> R {
    let question = text(v, "question")?;
    let answer = text(v, "answer")?;
    let (rationale, gold) = match answer.rsplit_once("####") {
        Some((r, g)) => (Some(r.trim().to_string()), g),
        None => (None, answer),
    };
    let gold = gold.trim().replace(',', "");
    if gold.parse::<f64>().is_err() {
        return Err(format!("gold answer {gold:?} is not a number"));
    }
    let mut it = item(
        id_of(v, "id", prefix, index),
        question.to_string(),
        Format::Gsm8k,
        Gold::Number(gold),
    );
    it.reference = rationale.filter(|r| !r.is_empty());
    Ok(it)
}

fn math(format: Format, v: &Value, index: usize, prefix: &str) -> R {
    let problem = text(v, "problem")?;
    let solution = v.get("solution").and_then(Value::as_str);
    let gold = match format {
        Format::Math500 => text(v, "answer")?.to_string(),
        Format::PaperMath => text(v, "gold_boxed")?.to_string(),
        _ => last_boxed(solution.unwrap_or("")).ok_or("no \\boxed{} answer in `solution`")?,
    };
    if gold.trim().is_empty() {
        return Err("empty gold answer".into());
    }
    let id = match format {
        Format::Math500 => id_of(v, "unique_id", prefix, index),
        Format::PaperMath => id_of(v, "dot_id", prefix, index),
        _ => id_of(v, "idx", prefix, index),
    };
    let mut it = item(id, problem.to_string(), format, Gold::MathExpr(gold));
    it.reference = solution.map(str::to_string);
    it.meta = meta_from(v, &["level", "type", "subject", "math_test_idx", "dot_id"]);
    Ok(it)
}

fn csqa(format: Format, v: &Value, index: usize, prefix: &str) -> R {
    let q = if format == Format::Csqa {
        v.get("question").ok_or("missing field `question`")?
    } else {
        v
    };
    let stem = text(q, "stem")?;
    let choices = q
        .get("choices")
        .and_then(Value::as_array)
        .ok_or("missing list field `choices`")?;
    let mut question = format!("{}\nAnswer Choices:", stem.trim());
    for c in choices {
        question.push_str(&format!(" ({}) {}", text(c, "label")?, text(c, "text")?));
    }
    let key = text(v, "answerKey")?.trim();
    let letter = match key.chars().collect::<Vec<_>>().as_slice() {
        [c @ 'A'..='E'] => *c,
        _ => return Err(format!("answerKey {key:?} is not a letter A-E")),
    };
    let mut it = item(
        id_of(v, "id", prefix, index),
        question,
        format,
        Gold::Choice(letter),
    );
    it.meta = meta_from(v, &["dot_id", "question_concept"]);
    Ok(it)
}

fn mbpp(format: Format, v: &Value) -> R {
    let task_id = v
        .get("task_id")
        .and_then(Value::as_u64)
        .ok_or("missing numeric field `task_id`")?;
    let prompt = text(
        v,
        if format == Format::Mbpp {
            "text"
        } else {
            "prompt"
        },
    )?;
    let tests = strings(v, "test_list")?;
    if tests.is_empty() {
        return Err("empty `test_list`".into());
    }
    let setup = if format == Format::Mbpp {
        v.get("test_setup_code")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    } else {
        strings(v, "test_imports").unwrap_or_default().join("\n")
    };
    let question = format!(
        "{}\nYour code should pass these tests:\n{}",
        prompt.trim(),
        tests.join("\n")
    );
    let mut it = item(
        format!("mbpp-{task_id}"),
        question,
        format,
        Gold::Mbpp {
            tests,
            setup: setup.replace("\r\n", "\n"),
        },
    );
    it.reference = v
        .get("code")
        .and_then(Value::as_str)
        .map(|c| c.replace("\r\n", "\n"));
    it.meta.insert("task_id".into(), task_id.into());
    Ok(it)
}

fn strategyqa(v: &Value, index: usize, prefix: &str) -> R {
    let question = text(v, "question")?;
    let answer = v
        .get("answer")
        .and_then(Value::as_bool)
        .ok_or("missing boolean field `answer`")?;
    let mut it = item(
        id_of(v, "qid", prefix, index),
        format!("{}\nAnswer yes or no.", question.trim()),
        Format::StrategyQa,
        Gold::YesNo(answer),
    );
    it.meta = meta_from(v, &["term", "description", "facts", "decomposition"]);
    Ok(it)
}

/// The P3 prompt: the puzzle, the answer's type, and the literal-only answer format.
pub fn p3_question(sat: &str, ans_type: &str) -> String {
    format!(
        "Find an input x that makes this Python function return True:\n\n```python\n{}\n```\n\n\
         x must be of type {ans_type}. Give x itself as a Python literal (no code and no \
         expressions that compute it), on the last line as: ANSWER: <literal>",
        sat.trim_end()
    )
}

fn p3(format: Format, v: &Value, index: usize, prefix: &str) -> R {
    let sat = text(v, "sat")?;
    let ans_type = text(v, "ans_type")?;
    if !sat.contains("def sat") {
        return Err("`sat` does not define a function `sat`".into());
    }
    let mut it = item(
        id_of(v, "name", prefix, index),
        p3_question(sat, ans_type),
        format,
        Gold::P3 {
            sat: sat.to_string(),
            ans_type: ans_type.to_string(),
        },
    );
    let bodies = strings(v, "sol_bodies").unwrap_or_default();
    if let (Ok(header), Some(body)) = (text(v, "sol_header"), bodies.first()) {
        let doc = v.get("sol_docstring").and_then(Value::as_str).unwrap_or("");
        let doc = if doc.trim().is_empty() {
            String::new()
        } else {
            format!("{doc}\n")
        };
        it.reference = Some(format!("{header}\n{doc}{body}\n"));
    }
    it.meta = meta_from(
        v,
        &["dot_id", "module", "upstream_split", "puzzles_json_index"],
    );
    Ok(it)
}

/// CHAMP's `champ_core.json`: one entry of `problems`.
pub(super) fn champ_core(key: &str, v: &Value) -> R {
    let question = text(v, "_text").or_else(|_| text(v, "_raw_text"))?;
    let answer = text(v, "_answer").or_else(|_| text(v, "_raw_answer"))?;
    let mut it = item(
        key.to_string(),
        question.to_string(),
        Format::Champ,
        Gold::Champ(answer.trim().to_string()),
    );
    it.meta = meta_from(v, &["category"]);
    Ok(it)
}

/// The SCAN prompt for one command.
pub fn scan_question(command: &str) -> String {
    format!(
        "Command: {}\nTranslate the command into the sequence of primitive actions it \
         denotes, using only WALK, RUN, JUMP, LOOK, TURN_LEFT and TURN_RIGHT, separated by spaces.",
        command.trim()
    )
}

/// `IN: <command> OUT: <actions>`.
pub(super) fn scan_line(line: &str, index: usize, prefix: &str) -> R {
    let rest = line
        .trim()
        .strip_prefix("IN:")
        .ok_or("line does not start with `IN:`")?;
    let (command, out) = rest.split_once(" OUT:").ok_or("no ` OUT:` in line")?;
    let actions: Vec<String> = out
        .split_whitespace()
        .map(|a| a.strip_prefix("I_").unwrap_or(a).to_string())
        .collect();
    if command.trim().is_empty() || actions.is_empty() {
        return Err("empty command or action sequence".into());
    }
    let mut it = item(
        format!("{prefix}-{index}"),
        scan_question(command),
        Format::Scan,
        Gold::Actions(actions),
    );
    it.meta.insert("command".into(), command.trim().into());
    Ok(it)
}
