//! Pool configuration: raw TOML structs (unknown keys rejected), then `load` turns them into
//! validated types. Every error names the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::remote::{RawRemote, RawServer, RemoteSpec, ServerConfig};
use crate::source::{ModelSource, SourcePart};

/// The pool shipped inside the binary: the three local models of the design brief.
pub const DEFAULT_POOL_TOML: &str = include_str!("default_pool.toml");
/// How the embedded default is named in messages.
pub const DEFAULT_POOL_NAME: &str = "<embedded default pool>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    LlamaCpp,
    /// Chat completions over HTTP(S) from any OpenAI-compatible server.
    OpenAi,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::LlamaCpp => "llama_cpp",
            BackendKind::OpenAi => "openai",
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
    /// The model file (`llama_cpp`); empty for `openai` models.
    pub source: ModelSource,
    /// Pinned sha256 of the assembled file, lowercase hex.
    pub sha256: Option<String>,
    pub parameters: u64,
    pub context_length: u32,
    pub max_concurrency: u32,
    /// `llama_cpp` only: keep finished calls' tokens in the KV cache and evaluate only the
    /// part of the next prompt that differs (faster; greedy outputs are no longer
    /// bit-reproducible). Off unless set.
    pub reuse_prefix: bool,
    /// Prices by profile name.
    pub prices: BTreeMap<String, Price>,
    /// How to reach an `openai` model; `None` for local ones.
    pub remote: Option<RemoteSpec>,
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
    /// The optional `[server]` table (defaults when absent).
    pub server: ServerConfig,
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
    server: Option<RawServer>,
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
    source: Option<OneOrMany>,
    sha256: Option<String>,
    parameters: u64,
    context_length: u32,
    max_concurrency: Option<u32>,
    reuse_prefix: Option<bool>,
    prices: BTreeMap<String, Price>,
    // `openai` models only (see `remote.rs`).
    base_url: Option<String>,
    api_model: Option<String>,
    api_key_env: Option<String>,
    connect_timeout_s: Option<f64>,
    read_timeout_s: Option<f64>,
    max_retries: Option<u32>,
}

impl PoolConfig {
    /// The policy used when none is named: the config's `policy`, else every step on the
    /// most expensive model.
    pub fn policy_or_default(&self) -> String {
        self.default_policy.clone().unwrap_or_else(|| {
            format!("fixed:{}", self.models.last().map_or("", |m| m.id.as_str()))
        })
    }

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
        let text = r2_files::read_to_string(path, r2_files::limits::CONFIG).map_err(|e| {
            ConfigError::Read {
                file: file.clone(),
                reason: e.to_string(),
            }
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
                "openai" => BackendKind::OpenAi,
                other => {
                    return Err(invalid(
                        key("backend"),
                        format!("unknown backend '{other}' (supported: llama_cpp, openai)"),
                    ))
                }
            };
            let raw_remote = RawRemote {
                base_url: m.base_url,
                api_model: m.api_model,
                api_key_env: m.api_key_env,
                connect_timeout_s: m.connect_timeout_s,
                read_timeout_s: m.read_timeout_s,
                max_retries: m.max_retries,
            };
            let (parts, sha256, remote) = match backend {
                BackendKind::LlamaCpp => {
                    if !raw_remote.is_empty() {
                        return Err(invalid(
                            key(raw_remote.first_key()),
                            "is only valid with backend = \"openai\"".into(),
                        ));
                    }
                    let Some(source) = m.source else {
                        return Err(invalid(
                            key("source"),
                            "is required for backend = \"llama_cpp\"".into(),
                        ));
                    };
                    let (parts, sha256) = local_source(source, m.sha256, base)
                        .map_err(|(k, r)| invalid(key(k), r))?;
                    (parts, sha256, None)
                }
                BackendKind::OpenAi => {
                    if m.reuse_prefix.is_some() {
                        return Err(invalid(
                            key("reuse_prefix"),
                            "is only valid with backend = \"llama_cpp\" (the server manages its own cache)"
                                .into(),
                        ));
                    }
                    for (set, k) in [
                        (m.source.is_some(), "source"),
                        (m.sha256.is_some(), "sha256"),
                    ] {
                        if set {
                            return Err(invalid(
                                key(k),
                                "is not used by backend = \"openai\" (set base_url and api_model)"
                                    .into(),
                            ));
                        }
                    }
                    let remote = raw_remote
                        .validate(&m.id)
                        .map_err(|(k, r)| invalid(key(k), r))?;
                    (Vec::new(), None, Some(remote))
                }
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
                reuse_prefix: m.reuse_prefix.unwrap_or(false),
                prices: m.prices,
                remote,
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
            server: match raw.server {
                Some(s) => s.validate().map_err(|(k, r)| invalid(k, r))?,
                None => ServerConfig::default(),
            },
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

    /// The models that are local files (`llama_cpp`): what `models fetch/verify` handle.
    pub fn local_models(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models
            .iter()
            .filter(|m| m.backend == BackendKind::LlamaCpp)
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

type SourceResult = Result<(Vec<SourcePart>, Option<String>), (&'static str, String)>;

/// Parse a local model's `source` and `sha256` (required unless the source is one local path).
fn local_source(source: OneOrMany, sha256: Option<String>, base: Option<&Path>) -> SourceResult {
    let sources = match source {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    if sources.is_empty() {
        return Err(("source", "needs at least one part".into()));
    }
    let parts = sources
        .iter()
        .map(|s| SourcePart::parse(s, base))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("source", e))?;
    let sha256 = match sha256 {
        Some(h) => {
            let h = h.to_ascii_lowercase();
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(("sha256", "must be 64 hexadecimal characters".into()));
            }
            Some(h)
        }
        None if parts.len() > 1 || !matches!(parts[0], SourcePart::Path(_)) => {
            return Err((
                "sha256",
                "is required for downloaded or assembled models".into(),
            ))
        }
        None => None,
    };
    Ok((parts, sha256))
}

#[cfg(test)]
mod tests;
