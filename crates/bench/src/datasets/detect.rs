//! File formats: naming, detection from content (and file name), and splitting a file
//! into records with line numbers.

use std::path::Path;

use r2_decomposer::TaskFamily;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse, DatasetError, LoadReport};

/// The on-disk format of a dataset file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Format {
    Gsm8k,
    Math,
    Math500,
    Csqa,
    Mbpp,
    MbppSanitized,
    Champ,
    StrategyQa,
    P3,
    Scan,
    PaperMath,
    PaperCsqa,
    PaperChamp,
    PaperP3,
    PaperScan,
}

impl Format {
    pub const ALL: [Format; 15] = [
        Format::Gsm8k,
        Format::Math,
        Format::Math500,
        Format::Csqa,
        Format::Mbpp,
        Format::MbppSanitized,
        Format::Champ,
        Format::StrategyQa,
        Format::P3,
        Format::Scan,
        Format::PaperMath,
        Format::PaperCsqa,
        Format::PaperChamp,
        Format::PaperP3,
        Format::PaperScan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Gsm8k => "gsm8k",
            Format::Math => "math",
            Format::Math500 => "math500",
            Format::Csqa => "csqa",
            Format::Mbpp => "mbpp",
            Format::MbppSanitized => "mbpp-sanitized",
            Format::Champ => "champ",
            Format::StrategyQa => "strategyqa",
            Format::P3 => "p3",
            Format::Scan => "scan",
            Format::PaperMath => "paper-math",
            Format::PaperCsqa => "paper-csqa",
            Format::PaperChamp => "paper-champ",
            Format::PaperP3 => "paper-p3",
            Format::PaperScan => "paper-scan",
        }
    }

    pub fn names() -> Vec<&'static str> {
        Format::ALL.iter().map(|f| f.name()).collect()
    }

    /// By name, case-insensitive, `_` as `-`.
    pub fn parse(s: &str) -> Option<Format> {
        let key = s.trim().to_ascii_lowercase().replace('_', "-");
        Format::ALL.into_iter().find(|f| f.name() == key)
    }

    pub fn family(self) -> TaskFamily {
        match self {
            Format::Gsm8k | Format::Math | Format::Math500 | Format::PaperMath => TaskFamily::Math,
            Format::Champ | Format::PaperChamp => TaskFamily::Math,
            Format::Csqa | Format::PaperCsqa => TaskFamily::MultipleChoice,
            Format::Mbpp | Format::MbppSanitized => TaskFamily::Code,
            Format::P3 | Format::PaperP3 => TaskFamily::Puzzle,
            Format::Scan | Format::PaperScan => TaskFamily::Command,
            Format::StrategyQa => TaskFamily::General,
        }
    }
}

/// The format of one JSON record, judged by its keys.
fn format_of_record(v: &Value) -> Option<Format> {
    let has = |k: &str| v.get(k).is_some();
    Some(if has("gold_boxed") {
        Format::PaperMath
    } else if has("problem") && has("answer") {
        Format::Math500
    } else if has("problem") && has("solution") {
        Format::Math
    } else if has("answerKey") {
        if has("stem") {
            Format::PaperCsqa
        } else {
            Format::Csqa
        }
    } else if has("test_list") {
        if has("prompt") {
            Format::MbppSanitized
        } else {
            Format::Mbpp
        }
    } else if has("problem_answer") {
        Format::PaperChamp
    } else if has("sat") {
        if has("dot_id") {
            Format::PaperP3
        } else {
            Format::P3
        }
    } else if has("gold_actions") {
        Format::PaperScan
    } else if has("question") && v.get("answer").is_some_and(Value::is_boolean) {
        Format::StrategyQa
    } else if has("question") && has("answer") {
        Format::Gsm8k
    } else {
        return None;
    })
}

fn detect_text(text: &str) -> Option<Format> {
    let t = text.trim_start();
    if t.starts_with("IN:") {
        return Some(Format::Scan);
    }
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        if v.get("problems").is_some() {
            return Some(Format::Champ);
        }
        if let Some(first) = v.as_array().and_then(|a| a.first()) {
            return format_of_record(first);
        }
        return format_of_record(&v);
    }
    t.lines()
        .take(50)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| format_of_record(&v))
}

fn detect_name(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let mut hits: Vec<Format> = Format::ALL
        .into_iter()
        .filter(|f| name.contains(&f.name().replace("paper-", "")))
        .collect();
    if name.contains("tasks") && name.ends_with(".txt") {
        hits.push(Format::Scan);
    }
    hits.sort_by_key(|f| std::cmp::Reverse(f.name().len()));
    hits.first().copied()
}

/// Detect the format of a file from its content, else its name.
pub(super) fn detect(path: &Path) -> Result<Format, DatasetError> {
    let text = read_text(path)?;
    detect_text(&text)
        .or_else(|| detect_name(path))
        .ok_or_else(|| DatasetError::Undetected {
            path: path.to_path_buf(),
        })
}

fn read_text(path: &Path) -> Result<String, DatasetError> {
    Ok(r2_files::read_to_string(path, r2_files::limits::DATA)?)
}

/// A JSON object's entries in file order.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct ChampFile {
    problems: Ordered,
}

/// Read and parse a file in `format`. Record-level problems become `malformed` entries;
/// only an unreadable file or an unparseable JSON document is an error.
pub(super) fn read(path: &Path, format: Format, prefix: &str) -> Result<LoadReport, DatasetError> {
    let text = read_text(path)?;
    let parse_err = |message: String| DatasetError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let mut items = Vec::new();
    let mut malformed = r2_files::Malformed::new(r2_files::MALFORMED_KEPT);
    let mut push = |line: usize, r: Result<super::Item, String>| match r {
        Ok(it) => items.push(it),
        Err(e) => malformed.push(line, e),
    };
    let trimmed = text.trim_start();
    if format == Format::Champ {
        let file: ChampFile = serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
        for (i, (key, v)) in file.problems.0.iter().enumerate() {
            push(i + 1, parse::champ_core(key, v));
        }
    } else if trimmed.starts_with('[') && format != Format::Scan {
        let all: Vec<Value> = serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
        for (i, v) in all.iter().enumerate() {
            push(i + 1, parse::record(format, v, i, prefix));
        }
    } else {
        let mut index = 0;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r = if format == Format::Scan {
                parse::scan_line(line, index, prefix)
            } else {
                serde_json::from_str::<Value>(line)
                    .map_err(|e| format!("invalid JSON: {e}"))
                    .and_then(|v| parse::record(format, &v, index, prefix))
            };
            index += 1;
            push(n + 1, r);
        }
    }
    Ok(LoadReport {
        items,
        malformed,
        path: path.to_path_buf(),
        format,
    })
}
