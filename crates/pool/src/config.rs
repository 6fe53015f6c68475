//! Pool configuration: raw TOML structs (unknown keys rejected), then `load` turns them into
//! validated types. Every error names the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::source::{ModelSource, SourcePart};

/// The pool shipped inside the binary: the three local models of the design brief.
pub const DEFAULT_POOL_TOML: &str = include_str!("default_pool.toml");
/// How the embedded default is named in messages.
pub const DEFAULT_POOL_NAME: &str = "<embedded default pool>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    LlamaCpp,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::LlamaCpp => "llama_cpp",
        }
    }
}

/// USD per one million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    pub fn cost(&self, input_tokens: u32, output_tokens: u32) -> f64 {
        (input_tokens as f64 * self.input + output_tokens as f64 * self.output) / 1e6
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub id: String,
    pub backend: BackendKind,
    pub source: ModelSource,
    /// Pinned sha256 of the assembled file, lowercase hex.
    pub sha256: Option<String>,
    pub parameters: u64,
    pub context_length: u32,
    pub max_concurrency: u32,
    /// Prices by profile name.
    pub prices: BTreeMap<String, Price>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Models ordered from cheapest to most expensive under the active price profile.
    pub models: Vec<ModelSpec>,
    pub price_profile: String,
    pub decomposer: String,
    pub default_policy: Option<String>,
    /// llama.cpp threads per call; 0 means all cores.
    pub threads: u32,
    /// The file this came from, or the embedded default's name.
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("invalid TOML in {file}: {reason}")]
    Toml { file: String, reason: String },
    #[error("{file}: `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    price_profile: Option<String>,
    decomposer: Option<String>,
    policy: Option<String>,
    threads: Option<u32>,
    #[serde(default)]
    models: Vec<RawModel>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: String,
    backend: String,
    source: OneOrMany,
    sha256: Option<String>,
    parameters: u64,
    context_length: u32,
    max_concurrency: Option<u32>,
    prices: BTreeMap<String, Price>,
}

impl PoolConfig {
    /// The embedded default pool.
    pub fn embedded() -> Self {
        Self::parse(DEFAULT_POOL_TOML, DEFAULT_POOL_NAME, None)
            .expect("the embedded default pool is valid (checked by a unit test)")
    }

    /// Resolve the config the way the CLI does: an explicit file, else `./r2reasoner.toml`
    /// if present, else the embedded default.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        if let Some(p) = explicit {
            return Self::from_file(p);
        }
        let local = PathBuf::from("r2reasoner.toml");
        if local.is_file() {
            return Self::from_file(&local);
        }
        Ok(Self::embedded())
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ConfigError::Read {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Read {
            file: file.clone(),
            reason: "file is not valid UTF-8".into(),
        })?;
        Self::parse(&text, &file, path.parent())
    }

    /// Parse and validate TOML text. `base` resolves relative model paths.
    pub fn parse(text: &str, file: &str, base: Option<&Path>) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Toml {
            file: file.to_string(),
            reason: e.to_string().trim().replace('\n', " "),
        })?;
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key,
            reason,
        };
        if raw.models.is_empty() {
            return Err(invalid(
                "models".into(),
                "the pool needs at least one [[models]] entry".into(),
            ));
        }
        let mut models = Vec::with_capacity(raw.models.len());
        let mut profiles: Option<Vec<String>> = None;
        for (i, m) in raw.models.into_iter().enumerate() {
            let key = |k: &str| format!("models[{i}].{k}");
            if m.id.is_empty()
                || !m
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(
                    key("id"),
                    format!(
                        "'{}' must be non-empty and use only letters, digits, '-', '_' or '.'",
                        m.id
                    ),
                ));
            }
            if models.iter().any(|x: &ModelSpec| x.id == m.id) {
                return Err(invalid(key("id"), format!("duplicate model id '{}'", m.id)));
            }
            let backend = match m.backend.as_str() {
                "llama_cpp" => BackendKind::LlamaCpp,
                other => {
                    return Err(invalid(
                        key("backend"),
                        format!("unknown backend '{other}' (supported: llama_cpp)"),
                    ))
                }
            };
            let sources = match m.source {
                OneOrMany::One(s) => vec![s],
                OneOrMany::Many(v) => v,
            };
            if sources.is_empty() {
                return Err(invalid(key("source"), "needs at least one part".into()));
            }
            let parts = sources
                .iter()
                .map(|s| SourcePart::parse(s, base))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(key("source"), e))?;
            let sha256 = match m.sha256 {
                Some(h) => {
                    let h = h.to_ascii_lowercase();
                    if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(invalid(
                            key("sha256"),
                            "must be 64 hexadecimal characters".into(),
                        ));
                    }
                    Some(h)
                }
                None if parts.len() > 1 || !matches!(parts[0], SourcePart::Path(_)) => {
                    return Err(invalid(
                        key("sha256"),
                        "is required for downloaded or assembled models".into(),
                    ))
                }
                None => None,
            };
            if m.parameters == 0 {
                return Err(invalid(key("parameters"), "must be greater than 0".into()));
            }
            if m.context_length < 256 {
                return Err(invalid(
                    key("context_length"),
                    format!("{} is too small (minimum 256)", m.context_length),
                ));
            }
            let max_concurrency = m.max_concurrency.unwrap_or(1);
            if max_concurrency == 0 {
                return Err(invalid(key("max_concurrency"), "must be at least 1".into()));
            }
            if m.prices.is_empty() {
                return Err(invalid(
                    key("prices"),
                    "needs at least one price profile".into(),
                ));
            }
            for (name, p) in &m.prices {
                for (field, v) in [("input", p.input), ("output", p.output)] {
                    if !v.is_finite() || v < 0.0 {
                        return Err(invalid(
                            key(&format!("prices.{name}.{field}")),
                            format!("{v} must be a finite number ≥ 0"),
                        ));
                    }
                }
            }
            let names: Vec<String> = m.prices.keys().cloned().collect();
            match &profiles {
                None => profiles = Some(names),
                Some(first) if *first != names => {
                    return Err(invalid(key("prices"), format!("defines profiles {names:?} but the first model defines {first:?}; every model needs the same profiles")))
                }
                Some(_) => {}
            }
            models.push(ModelSpec {
                id: m.id,
                backend,
                source: ModelSource { parts },
                sha256,
                parameters: m.parameters,
                context_length: m.context_length,
                max_concurrency,
                prices: m.prices,
            });
        }
        let profiles = profiles.unwrap_or_default();
        // Without an explicit choice: `compute` (what a self-hoster pays) when defined.
        let price_profile = raw.price_profile.unwrap_or_else(|| {
            if profiles.iter().any(|p| p == "compute") {
                "compute".to_string()
            } else {
                profiles[0].clone()
            }
        });
        if !profiles.contains(&price_profile) {
            return Err(invalid(
                "price_profile".into(),
                format!(
                    "'{price_profile}' is not defined by the models (defined: {})",
                    profiles.join(", ")
                ),
            ));
        }
        let mut cfg = PoolConfig {
            models,
            price_profile,
            decomposer: String::new(),
            default_policy: raw.policy,
            threads: raw.threads.unwrap_or(0),
            origin: file.to_string(),
        };
        cfg.sort_by_cost();
        let decomposer = raw
            .decomposer
            .unwrap_or_else(|| cfg.models.last().map(|m| m.id.clone()).unwrap_or_default());
        if cfg.index_of(&decomposer).is_none() {
            return Err(invalid(
                "decomposer".into(),
                format!(
                    "unknown model id '{decomposer}' (pool: {})",
                    cfg.ids().join(", ")
                ),
            ));
        }
        cfg.decomposer = decomposer;
        Ok(cfg)
    }

    /// Switch the active price profile (and re-order the pool by cost under it).
    pub fn set_price_profile(&mut self, profile: &str) -> Result<(), String> {
        if !self.models[0].prices.contains_key(profile) {
            let known: Vec<_> = self.models[0].prices.keys().cloned().collect();
            return Err(format!(
                "unknown price profile '{profile}' (defined: {})",
                known.join(", ")
            ));
        }
        self.price_profile = profile.to_string();
        self.sort_by_cost();
        Ok(())
    }

    /// Cheapest first; ties (e.g. several free models) broken by parameter count, so the
    /// order is also "smallest to largest" whenever prices agree.
    fn sort_by_cost(&mut self) {
        let profile = self.price_profile.clone();
        self.models.sort_by(|a, b| {
            let (pa, pb) = (a.prices[&profile], b.prices[&profile]);
            (pa.input + pa.output)
                .total_cmp(&(pb.input + pb.output))
                .then(a.parameters.cmp(&b.parameters))
        });
    }

    pub fn price(&self, model_index: usize) -> Price {
        self.models[model_index].prices[&self.price_profile]
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.models.iter().position(|m| m.id == id)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.id.as_str()).collect()
    }

    /// Look up a model id, with an error message listing the pool.
    pub fn require(&self, id: &str) -> Result<usize, String> {
        self.index_of(id).ok_or_else(|| {
            format!(
                "unknown model id '{id}' in {} (pool: {})",
                self.origin,
                self.ids().join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(extra_model_lines: &str, top: &str) -> String {
        format!(
            "{top}\n[[models]]\nid = \"m\"\nbackend = \"llama_cpp\"\nsource = \"m.gguf\"\nparameters = 1\ncontext_length = 512\nprices.compute = {{ input = 1.0, output = 2.0 }}\n{extra_model_lines}\n"
        )
    }

    fn err(text: &str) -> String {
        PoolConfig::parse(text, "pool.toml", None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn embedded_default_is_valid_and_ordered() {
        let cfg = PoolConfig::parse(DEFAULT_POOL_TOML, DEFAULT_POOL_NAME, None).unwrap();
        assert_eq!(
            cfg.ids(),
            ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
        );
        assert_eq!(cfg.price_profile, "compute");
        assert_eq!(cfg.decomposer, "qwen2.5-coder-1.5b");
        let mut api = cfg.clone();
        api.set_price_profile("api").unwrap();
        assert_eq!(
            api.price(2),
            Price {
                input: 2.5,
                output: 10.0
            }
        );
        assert_eq!(api.ids(), cfg.ids(), "free models are ordered by size");
        // compute prices are proportional to parameters
        for m in &cfg.models {
            let p = m.prices["compute"];
            assert!(
                (p.input / (m.parameters as f64 / 1e9) - 0.1).abs() < 1e-9,
                "{}",
                m.id
            );
            assert!(
                (p.output / (m.parameters as f64 / 1e9) - 0.2).abs() < 1e-9,
                "{}",
                m.id
            );
        }
    }

    #[test]
    fn cost_is_per_million_tokens() {
        let p = Price {
            input: 2.5,
            output: 10.0,
        };
        assert!((p.cost(1_000_000, 0) - 2.5).abs() < 1e-12);
        assert!((p.cost(1000, 100) - (0.0025 + 0.001)).abs() < 1e-12);
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let cfg =
            PoolConfig::parse(&minimal("", ""), "pool.toml", Some(Path::new("/cfg"))).unwrap();
        assert_eq!(cfg.decomposer, "m");
        assert_eq!(cfg.models[0].max_concurrency, 1);
        assert_eq!(
            cfg.models[0].source.local_file(),
            Some(Path::new("/cfg/m.gguf"))
        );
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = err(&minimal("colour = \"red\"", ""));
        assert!(e.contains("pool.toml") && e.contains("colour"), "{e}");
        let e = err(&minimal("", "bogus = 1"));
        assert!(e.contains("pool.toml") && e.contains("bogus"), "{e}");
        let e = err(&minimal("max_concurrency = 0", ""));
        assert!(e.contains("models[0].max_concurrency"), "{e}");
        let e = err(&minimal("", "decomposer = \"nope\""));
        assert!(e.contains("`decomposer`") && e.contains("nope"), "{e}");
        let e = err(&minimal("", "price_profile = \"api\""));
        assert!(e.contains("price_profile") && e.contains("api"), "{e}");
        let e = err(&minimal("sha256 = \"abc\"", ""));
        assert!(e.contains("models[0].sha256"), "{e}");
        let e = err(&minimal("", "").replace("llama_cpp", "vllm"));
        assert!(e.contains("models[0].backend") && e.contains("vllm"), "{e}");
        let e = err(&minimal("", "").replace("input = 1.0", "input = -1.0"));
        assert!(e.contains("models[0].prices.compute.input"), "{e}");
        let e = err("models = [");
        assert!(e.starts_with("invalid TOML in pool.toml"), "{e}");
        let e = err("");
        assert!(e.contains("`models`"), "{e}");
    }

    #[test]
    fn duplicate_ids_and_mismatched_profiles_are_rejected() {
        let two = format!("{}{}", minimal("", ""), minimal("", ""));
        assert!(err(&two).contains("duplicate model id 'm'"));
        let other = minimal("", "")
            .replace("id = \"m\"", "id = \"n\"")
            .replace("compute", "api");
        let mixed = format!("{}{}", minimal("", ""), other);
        assert!(err(&mixed).contains("models[1].prices"));
    }

    #[test]
    fn downloaded_models_need_a_pinned_hash() {
        let t = minimal("", "").replace("\"m.gguf\"", "\"hf://a/b/m.gguf\"");
        assert!(err(&t).contains("models[0].sha256"));
    }
}
