//! Benchmark datasets: loaders by name for everything in the shared data directory (see
//! its `DATA.md`), a loader for any file in one of those formats (`--data PATH`), and a
//! deterministic selection (offset / limit / seeded shuffle).
//!
//! Loading never aborts on one bad record: malformed lines are skipped and reported with
//! their line number (1-based; for JSON arrays and CHAMP's object, the 1-based entry index).

mod detect;
mod parse;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use r2_decomposer::TaskFamily;
use serde::{Deserialize, Serialize};

pub use detect::Format;

/// One benchmark question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    /// The full prompt text shown to the model (CSQA with its answer choices, MBPP with
    /// its asserts, P3 with the `sat` function and the answer format, ...).
    pub question: String,
    pub family: TaskFamily,
    pub gold: Gold,
    /// A reference solution where the dataset has one: MBPP code, P3 `sol()` source, MATH
    /// and GSM8K worked solutions.
    pub reference: Option<String>,
    /// Everything else worth keeping (MATH level/subject, StrategyQA decomposition, MBPP
    /// task id, P3 upstream split, the source line).
    pub meta: BTreeMap<String, serde_json::Value>,
}

/// The gold answer and, by its kind, how it is graded (see [`crate::grade`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gold {
    /// GSM8K: a number (thousands separators removed).
    Number(String),
    /// MATH: a LaTeX answer.
    MathExpr(String),
    /// CSQA: the option letter A–E.
    Choice(char),
    /// StrategyQA.
    YesNo(bool),
    /// SCAN: action tokens without the `I_` prefix (`TURN_LEFT`, `JUMP`, ...).
    Actions(Vec<String>),
    /// CHAMP: the free-form answer.
    Champ(String),
    /// MBPP: the asserts and the setup code run after the candidate's code.
    Mbpp { tests: Vec<String>, setup: String },
    /// P3: the puzzle and the answer's declared type.
    P3 { sat: String, ans_type: String },
}

/// The items of one file plus the records that could not be read.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub items: Vec<Item>,
    /// (line number, reason) of each skipped record.
    pub malformed: r2_files::Malformed,
    pub path: PathBuf,
    pub format: Format,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("unknown dataset {name:?}; known datasets: {}", NAMES.join(", "))]
    UnknownDataset { name: String },
    #[error("dataset {name} has no split {split:?}; its splits: {}", available.join(", "))]
    UnknownSplit {
        name: String,
        split: String,
        available: Vec<&'static str>,
    },
    #[error(
        "benchmark data directory not found: set R2REASONER_DATA to the directory holding \
         gsm8k/, math/, csqa/, ... or put it at shared/data beside the repository (../shared/data \
         from the repository root); tried: {}",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoDataRoot { tried: Vec<PathBuf> },
    #[error(transparent)]
    File(#[from] r2_files::FileError),
    #[error("cannot parse {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("unknown format {format:?}; known formats: {}", Format::names().join(", "))]
    UnknownFormat { format: String },
    #[error(
        "cannot tell the format of {}; pass one of: {}",
        path.display(),
        Format::names().join(", ")
    )]
    Undetected { path: PathBuf },
}

/// Dataset names accepted by [`load`].
pub const NAMES: &[&str] = &[
    "gsm8k",
    "math",
    "math500",
    "csqa",
    "mbpp",
    "champ",
    "strategyqa",
    "p3",
    "scan",
    "paper-math",
    "paper-csqa",
    "paper-champ",
    "paper-p3",
    "paper-scan",
];

/// MBPP's documented task-id ranges.
pub const MBPP_TEST_IDS: std::ops::RangeInclusive<u64> = 11..=510;
const MBPP_SPLITS: &[(&str, u64, u64)] = &[
    ("test", 11, 510),
    ("train", 601, 974),
    ("validation", 511, 600),
    ("prompt", 1, 10),
    ("all", 1, u64::MAX),
    ("sanitized", 11, 510),
];

fn canonical_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', ' '], "-")
}

/// The splits of a dataset; the first is the default.
pub fn splits(name: &str) -> Result<&'static [&'static str], DatasetError> {
    Ok(match canonical_name(name).as_str() {
        "gsm8k" => &["test", "train"],
        "math" | "math500" => &["test"],
        "csqa" | "strategyqa" => &["dev", "train"],
        "mbpp" => &["test", "train", "validation", "prompt", "all", "sanitized"],
        "champ" => &["all"],
        "p3" => &["test", "train", "all"],
        "scan" => &[
            "simple-test",
            "simple-train",
            "length-test",
            "length-train",
            "all",
        ],
        n if NAMES.contains(&n) => &["test"],
        _ => {
            return Err(DatasetError::UnknownDataset {
                name: name.to_string(),
            })
        }
    })
}

fn canonical_split(name: &str, split: &str) -> String {
    let s = split
        .trim()
        .to_ascii_lowercase()
        .replace(['_', '/', ' '], "-");
    let alias = match (name, s.as_str()) {
        ("csqa" | "strategyqa", "test" | "validation" | "val") => "dev",
        ("scan", "test" | "simple") => "simple-test",
        ("scan", "train") => "simple-train",
        ("scan", "length") => "length-test",
        ("scan", "test-simple" | "train-simple" | "test-length" | "train-length") => {
            let (a, b) = s.split_once('-').unwrap_or_default();
            return format!("{b}-{a}");
        }
        ("mbpp", "valid" | "dev" | "val") => "validation",
        ("champ", "test") => "all",
        (n, "all") if n.starts_with("paper-") => "test",
        _ => return s,
    };
    alias.to_string()
}

/// Where the benchmark data lives: `R2REASONER_DATA`, else `shared/data` in the current
/// directory, this crate's directory or the executable's directory, or an ancestor of one.
pub fn data_root() -> Result<PathBuf, DatasetError> {
    if let Some(v) = std::env::var_os("R2REASONER_DATA") {
        let p = PathBuf::from(v);
        return if p.is_dir() {
            Ok(p)
        } else {
            Err(DatasetError::NoDataRoot { tried: vec![p] })
        };
    }
    let mut bases = Vec::new();
    bases.extend(std::env::current_dir().ok());
    bases.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    bases.extend(std::env::current_exe().ok());
    let mut tried = Vec::new();
    for base in &bases {
        for dir in base.ancestors().take(8) {
            let candidate = dir.join("shared").join("data");
            if candidate.join("gsm8k").is_dir() || candidate.join("DATA.md").is_file() {
                return Ok(candidate);
            }
            if !tried.contains(&candidate) {
                tried.push(candidate);
            }
        }
    }
    Err(DatasetError::NoDataRoot { tried })
}

/// Load a dataset by name from [`data_root`]; `split` defaults to the first of [`splits`].
pub fn load(name: &str, split: Option<&str>) -> Result<LoadReport, DatasetError> {
    splits(name)?;
    load_from(&data_root()?, name, split)
}

/// [`load`] from an explicit data directory.
pub fn load_from(root: &Path, name: &str, split: Option<&str>) -> Result<LoadReport, DatasetError> {
    let name = canonical_name(name);
    let available = splits(&name)?;
    let split = split.map_or_else(|| available[0].to_string(), |s| canonical_split(&name, s));
    if !available.contains(&split.as_str()) {
        return Err(DatasetError::UnknownSplit {
            name,
            split,
            available: available.to_vec(),
        });
    }
    let sp = split.as_str();
    let (rel, format): (String, Format) = match name.as_str() {
        "gsm8k" => (format!("gsm8k/{sp}.jsonl"), Format::Gsm8k),
        "math" => ("math/test.jsonl".into(), Format::Math),
        "math500" => ("math/math500_test.jsonl".into(), Format::Math500),
        "csqa" => (format!("csqa/{sp}_rand_split.jsonl"), Format::Csqa),
        "mbpp" if sp == "sanitized" => ("mbpp/sanitized-mbpp.json".into(), Format::MbppSanitized),
        "mbpp" => ("mbpp/mbpp.jsonl".into(), Format::Mbpp),
        "champ" => ("champ/champ_core.json".into(), Format::Champ),
        "strategyqa" => (format!("strategyqa/{sp}.json"), Format::StrategyQa),
        "p3" => ("p3/puzzles.json".into(), Format::P3),
        "scan" if sp == "all" => ("scan/tasks.txt".into(), Format::Scan),
        "scan" => {
            let (kind, part) = sp.split_once('-').unwrap_or(("simple", "test"));
            (
                format!("scan/{kind}_split/tasks_{part}_{kind}.txt"),
                Format::Scan,
            )
        }
        paper => {
            let base = paper.trim_start_matches("paper-");
            (
                format!("paper_subsets/{base}_dot_test200.jsonl"),
                Format::parse(paper).unwrap_or(Format::PaperMath),
            )
        }
    };
    let path = root.join(rel);
    let prefix = match name.as_str() {
        "math" | "math500" | "champ" | "strategyqa" | "p3" | "csqa" | "mbpp" => name.clone(),
        n if n.starts_with("paper-") => name.clone(),
        _ => format!("{name}-{sp}"),
    };
    let mut report = detect::read(&path, format, &prefix)?;
    match name.as_str() {
        "mbpp" => {
            let &(_, lo, hi) = MBPP_SPLITS
                .iter()
                .find(|s| s.0 == sp)
                .unwrap_or(&MBPP_SPLITS[0]);
            report.items.retain(|it| {
                let id = it.meta.get("task_id").and_then(|v| v.as_u64()).unwrap_or(0);
                (lo..=hi).contains(&id)
            });
        }
        "p3" if sp != "all" => {
            let split_path = root.join("p3/split.json");
            let text = r2_files::read_to_string(&split_path, r2_files::limits::CONFIG)?;
            let parse_err = |message: String| DatasetError::Parse {
                path: split_path.clone(),
                message,
            };
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
            let names: Vec<&str> = v[sp]
                .as_array()
                .ok_or_else(|| parse_err(format!("no {sp:?} list")))?
                .iter()
                .filter_map(|n| n.as_str())
                .collect();
            report
                .items
                .retain(|it| names.contains(&it.id.split(':').next().unwrap_or("")));
        }
        _ => {}
    }
    Ok(report)
}

/// Load a file in one of the dataset formats; `format` (a [`Format`] name) is detected
/// from the content and the file name when not given.
pub fn load_path(path: &Path, format: Option<&str>) -> Result<LoadReport, DatasetError> {
    let format = match format {
        Some(f) => Format::parse(f).ok_or_else(|| DatasetError::UnknownFormat {
            format: f.to_string(),
        })?,
        None => detect::detect(path)?,
    };
    let prefix = path
        .file_stem()
        .map_or("item".to_string(), |s| s.to_string_lossy().into_owned());
    detect::read(path, format, &prefix)
}

/// SplitMix64: a tiny PRNG with the same output on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// Deterministic selection: shuffle with `shuffle_seed` (Fisher–Yates over SplitMix64)
/// when given, then skip `offset` and take `limit`.
pub fn select<T>(
    mut items: Vec<T>,
    offset: usize,
    limit: Option<usize>,
    shuffle_seed: Option<u64>,
) -> Vec<T> {
    if let Some(seed) = shuffle_seed {
        let mut rng = SplitMix64(seed);
        for i in (1..items.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
    items
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}
