//! Settings of models served over HTTP (`backend = "openai"`) and of the gateway's
//! optional `[server]` table. Parsed from raw TOML structs (unknown keys rejected) into
//! validated types; errors name the key.

use serde::Deserialize;

/// How an `openai` model is reached. The API key itself is never stored here: only the
/// name of the environment variable that holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSpec {
    /// Base URL up to and including the version prefix, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The model name sent upstream (default: the pool id).
    pub api_model: String,
    pub api_key_env: Option<String>,
    pub connect_timeout_s: f64,
    /// Bound on each whole HTTP attempt (headers and body).
    pub read_timeout_s: f64,
    /// Retries after the first attempt on 429, 5xx, timeouts and broken bodies.
    pub max_retries: u32,
}

/// The keys of a `[[models]]` entry that only `openai` models use.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRemote {
    pub base_url: Option<String>,
    pub api_model: Option<String>,
    pub api_key_env: Option<String>,
    pub connect_timeout_s: Option<f64>,
    pub read_timeout_s: Option<f64>,
    pub max_retries: Option<u32>,
}

impl RawRemote {
    pub(crate) fn is_empty(&self) -> bool {
        self.base_url.is_none()
            && self.api_model.is_none()
            && self.api_key_env.is_none()
            && self.connect_timeout_s.is_none()
            && self.read_timeout_s.is_none()
            && self.max_retries.is_none()
    }

    /// The first key set, for "only valid with backend = openai" messages.
    pub(crate) fn first_key(&self) -> &'static str {
        [
            (self.base_url.is_some(), "base_url"),
            (self.api_model.is_some(), "api_model"),
            (self.api_key_env.is_some(), "api_key_env"),
            (self.connect_timeout_s.is_some(), "connect_timeout_s"),
            (self.read_timeout_s.is_some(), "read_timeout_s"),
            (self.max_retries.is_some(), "max_retries"),
        ]
        .into_iter()
        .find(|(set, _)| *set)
        .map(|(_, k)| k)
        .unwrap_or("base_url")
    }

    /// Validate; errors are `(key, reason)`.
    pub(crate) fn validate(self, id: &str) -> Result<RemoteSpec, (&'static str, String)> {
        let base_url = self.base_url.ok_or((
            "base_url",
            "is required for backend = \"openai\"".to_string(),
        ))?;
        let trimmed = base_url.trim_end_matches('/').to_string();
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://"))
            || trimmed.len() <= "https://".len()
        {
            return Err((
                "base_url",
                format!("'{base_url}' must be an http:// or https:// URL"),
            ));
        }
        let api_model = self.api_model.unwrap_or_else(|| id.to_string());
        if api_model.trim().is_empty() {
            return Err(("api_model", "must not be empty".into()));
        }
        if let Some(v) = &self.api_key_env {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err((
                    "api_key_env",
                    format!("'{v}' is not an environment variable name (the key itself never goes in the config)"),
                ));
            }
        }
        let positive = |key: &'static str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(x) => Err((key, format!("{x} must be a number of seconds > 0"))),
        };
        Ok(RemoteSpec {
            base_url: trimmed,
            api_model,
            api_key_env: self.api_key_env,
            connect_timeout_s: positive("connect_timeout_s", self.connect_timeout_s, 10.0)?,
            read_timeout_s: positive("read_timeout_s", self.read_timeout_s, 600.0)?,
            max_retries: self.max_retries.unwrap_or(3).min(10),
        })
    }
}

/// Where a gateway API key comes from: its sha256 (hex) in the config, or an environment
/// variable holding the key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    Sha256(String),
    Env(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeySpec {
    /// Shown in logs and metrics instead of the key. Several entries may share a name
    /// (e.g. an old and a new key while rotating): they share one budget.
    pub name: String,
    pub source: KeySource,
    /// `admin = true`: `GET /v1/spend` shows this key every key's spend, not only its own.
    pub admin: bool,
    /// `budget_usd` per `period`; `None`: the key may spend without limit.
    pub budget: Option<KeyBudget>,
}

/// What a key may spend per period, under the active price profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyBudget {
    /// More than 0.
    pub usd: f64,
    pub period: BudgetPeriod,
}

/// A budget's period: calendar periods in UTC. `weekly` starts on Monday 00:00 UTC,
/// `monthly` on the 1st at 00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl BudgetPeriod {
    pub const NAMES: [&'static str; 4] = ["hourly", "daily", "weekly", "monthly"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hourly" => Self::Hourly,
            "daily" => Self::Daily,
            "weekly" => Self::Weekly,
            "monthly" => Self::Monthly,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }
}

/// The optional `[server]` table: what `r2reasoner serve` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: Option<String>,
    /// Empty: no authentication (only sensible on loopback).
    pub api_keys: Vec<ApiKeySpec>,
    pub max_body_bytes: usize,
    /// Requests handled at once; more get 429 with Retry-After.
    pub max_concurrency: usize,
    /// Bound on one whole request (504 beyond it).
    pub request_timeout_s: f64,
    /// Where traces are stored; default `$R2REASONER_HOME/traces.sqlite`.
    pub traces_db: Option<String>,
    /// Policies clients may name as `r2reasoner/<name>` (name → policy, e.g.
    /// `fast = "learned:/srv/r/router.safetensors@0.6"`). Over HTTP a client names only
    /// these, the baselines that need no file and pool models; never a path.
    pub policies: std::collections::BTreeMap<String, String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: None,
            api_keys: Vec::new(),
            max_body_bytes: 1 << 20,
            max_concurrency: 64,
            request_timeout_s: 600.0,
            traces_db: None,
            policies: Default::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    listen: Option<String>,
    #[serde(default)]
    api_keys: Vec<RawKey>,
    max_body_bytes: Option<usize>,
    max_concurrency: Option<usize>,
    request_timeout_s: Option<f64>,
    traces_db: Option<String>,
    #[serde(default)]
    policies: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    sha256: Option<String>,
    env: Option<String>,
    #[serde(default)]
    admin: bool,
    budget_usd: Option<f64>,
    period: Option<String>,
}

impl RawKey {
    /// `budget_usd` and `period` together, or neither; errors are `(field, reason)`.
    fn budget(&self) -> Result<Option<KeyBudget>, (&'static str, String)> {
        let periods = BudgetPeriod::NAMES.join(", ");
        let period = match &self.period {
            None => None,
            Some(p) => Some(BudgetPeriod::parse(p.trim()).ok_or((
                "period",
                format!("'{p}' is not a budget period; use one of {periods} (UTC)"),
            ))?),
        };
        match (self.budget_usd, period) {
            (None, None) => Ok(None),
            (Some(usd), Some(period)) if usd.is_finite() && usd > 0.0 => {
                Ok(Some(KeyBudget { usd, period }))
            }
            (Some(usd), Some(_)) => Err((
                "budget_usd",
                format!("{usd} must be a number of US dollars > 0"),
            )),
            (Some(_), None) => Err((
                "period",
                format!("budget_usd needs a period: one of {periods} (UTC)"),
            )),
            (None, Some(_)) => Err(("budget_usd", "period needs a budget_usd".into())),
        }
    }
}

impl RawServer {
    pub(crate) fn validate(self) -> Result<ServerConfig, (String, String)> {
        let d = ServerConfig::default();
        let mut keys = Vec::new();
        for (i, k) in self.api_keys.into_iter().enumerate() {
            let key = |f: &str| format!("server.api_keys[{i}].{f}");
            if k.name.trim().is_empty() {
                return Err((key("name"), "must not be empty".into()));
            }
            let name = &k.name;
            let budget = k
                .budget()
                .map_err(|(f, reason)| (key(f), format!("key '{name}': {reason}")))?;
            // Entries that share a name share one budget, so they must agree on it.
            if let Some(other) = keys.iter().find(|o: &&ApiKeySpec| o.name == k.name) {
                if other.budget != budget || other.admin != k.admin {
                    return Err((
                        key("name"),
                        format!("key '{name}' is configured twice with different budget_usd, period or admin"),
                    ));
                }
            }
            let source =
                match (k.sha256, k.env) {
                    (Some(h), None) => {
                        let h = h.to_ascii_lowercase();
                        if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                            return Err((
                                key("sha256"),
                                "must be the 64-hex-digit sha256 of the key".into(),
                            ));
                        }
                        KeySource::Sha256(h)
                    }
                    (None, Some(e)) if !e.is_empty() => KeySource::Env(e),
                    _ => return Err((
                        key("sha256"),
                        "set exactly one of `sha256` (of the key) or `env` (a variable holding it)"
                            .into(),
                    )),
                };
            keys.push(ApiKeySpec {
                name: k.name,
                source,
                admin: k.admin,
                budget,
            });
        }
        let max_body_bytes = self.max_body_bytes.unwrap_or(d.max_body_bytes);
        if max_body_bytes < 1024 {
            return Err((
                "server.max_body_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        let max_concurrency = self.max_concurrency.unwrap_or(d.max_concurrency);
        if max_concurrency == 0 {
            return Err(("server.max_concurrency".into(), "must be at least 1".into()));
        }
        let request_timeout_s = self.request_timeout_s.unwrap_or(d.request_timeout_s);
        if !(request_timeout_s.is_finite() && request_timeout_s > 0.0) {
            return Err((
                "server.request_timeout_s".into(),
                "must be a number of seconds > 0".into(),
            ));
        }
        for (name, spec) in &self.policies {
            let key = format!("server.policies.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err((
                    key,
                    "a policy name may use only letters, digits, '-', '_' and '.'".into(),
                ));
            }
            if spec.trim().is_empty() {
                return Err((key, "must name a policy, e.g. \"learned@0.6\"".into()));
            }
        }
        Ok(ServerConfig {
            listen: self.listen,
            policies: self.policies,
            api_keys: keys,
            max_body_bytes,
            max_concurrency,
            request_timeout_s,
            traces_db: self.traces_db,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{BackendKind, KeySource, PoolConfig};

    const OPENAI: &str = "[[models]]\nid = \"gpt\"\nbackend = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1/\"\napi_key_env = \"MY_KEY\"\nparameters = 1\ncontext_length = 4096\nprices.compute = { input = 1.0, output = 2.0 }\n";

    fn err(text: &str) -> String {
        PoolConfig::parse(text, "pool.toml", None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn openai_models_parse_with_defaults() {
        let cfg = PoolConfig::parse(OPENAI, "pool.toml", None).unwrap();
        let m = &cfg.models[0];
        assert_eq!(m.backend, BackendKind::OpenAi);
        assert!(m.source.parts.is_empty());
        let r = m.remote.as_ref().unwrap();
        assert_eq!(r.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(r.api_model, "gpt", "defaults to the pool id");
        assert_eq!(r.api_key_env.as_deref(), Some("MY_KEY"));
        assert_eq!((r.max_retries, r.read_timeout_s), (3, 600.0));
        assert_eq!(cfg.local_models().count(), 0);
        assert_eq!(cfg.server.max_concurrency, 64);
    }

    #[test]
    fn openai_key_errors_name_the_key() {
        let e = err(&OPENAI.replace("base_url = \"http://127.0.0.1:9/v1/\"\n", ""));
        assert!(
            e.contains("models[0].base_url") && e.contains("pool.toml"),
            "{e}"
        );
        let e = err(&OPENAI.replace("http://127.0.0.1:9/v1/", "ftp://x"));
        assert!(e.contains("models[0].base_url"), "{e}");
        let e = err(&OPENAI.replace("MY_KEY", "sk-secret value"));
        assert!(e.contains("models[0].api_key_env"), "{e}");
        let e = err(&OPENAI.replace("parameters", "source = \"m.gguf\"\nparameters"));
        assert!(e.contains("models[0].source"), "{e}");
        let e = err(&OPENAI.replace("parameters", "read_timeout_s = 0\nparameters"));
        assert!(e.contains("models[0].read_timeout_s"), "{e}");
        let e = err(&OPENAI.replace("parameters", "api_base = \"x\"\nparameters"));
        assert!(e.contains("api_base"), "unknown keys are rejected: {e}");
        // Remote keys on a local model.
        let local = OPENAI.replace(
            "backend = \"openai\"",
            "backend = \"llama_cpp\"\nsource = \"m.gguf\"",
        );
        let e = err(&local);
        assert!(e.contains("models[0].base_url"), "{e}");
        let e = err(&OPENAI.replace("backend = \"openai\"", "backend = \"llama_cpp\""));
        assert!(e.contains("models[0]"), "{e}");
    }

    #[test]
    fn server_table_is_validated() {
        let hash = "a".repeat(64);
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\nmax_concurrency = 2\napi_keys = [{{ name = \"ci\", env = \"R2_KEY\" }}, {{ name = \"alice\", sha256 = \"{hash}\" }}]\n{OPENAI}");
        let cfg = PoolConfig::parse(&text, "pool.toml", None).unwrap();
        assert_eq!(cfg.server.max_concurrency, 2);
        assert_eq!(
            cfg.server.api_keys[0].source,
            KeySource::Env("R2_KEY".into())
        );
        assert_eq!(cfg.server.api_keys[1].source, KeySource::Sha256(hash));
        let e = err(&format!("[server]\nport = 1\n{OPENAI}"));
        assert!(e.contains("port") && e.contains("pool.toml"), "{e}");
        let e = err(&format!(
            "[server]\napi_keys = [{{ name = \"x\", sha256 = \"abc\" }}]\n{OPENAI}"
        ));
        assert!(e.contains("server.api_keys[0].sha256"), "{e}");
        let e = err(&format!(
            "[server]\napi_keys = [{{ name = \"x\" }}]\n{OPENAI}"
        ));
        assert!(e.contains("server.api_keys[0]"), "{e}");
        let e = err(&format!("[server]\nmax_concurrency = 0\n{OPENAI}"));
        assert!(e.contains("server.max_concurrency"), "{e}");
    }

    #[test]
    fn key_budgets_parse_and_a_bad_period_names_the_key() {
        use crate::{BudgetPeriod, KeyBudget};
        let text = format!("[server]\napi_keys = [{{ name = \"ci\", env = \"R2_KEY\", admin = true }}, {{ name = \"alice\", env = \"A\", budget_usd = 2.5, period = \"daily\" }}, {{ name = \"alice\", env = \"A2\", budget_usd = 2.5, period = \"daily\" }}]\n{OPENAI}");
        let cfg = PoolConfig::parse(&text, "pool.toml", None).unwrap();
        let k = &cfg.server.api_keys;
        assert_eq!((k[0].admin, k[0].budget), (true, None));
        let daily = Some(KeyBudget {
            usd: 2.5,
            period: BudgetPeriod::Daily,
        });
        assert_eq!(
            (k[1].admin, k[1].budget, k[2].budget),
            (false, daily, daily)
        );
        let with = |fields: &str| {
            err(&format!("[server]\napi_keys = [{{ name = \"ci\", env = \"R2_KEY\" }}, {{ name = \"alice\", env = \"A\", {fields} }}]\n{OPENAI}"))
        };
        let e = with("budget_usd = 1, period = \"fortnightly\"");
        assert!(
            e.contains("server.api_keys[1].period")
                && e.contains("key 'alice'")
                && e.contains("'fortnightly'")
                && e.contains("pool.toml"),
            "{e}"
        );
        for (fields, field) in [
            ("budget_usd = 1", "period"),
            ("period = \"daily\"", "budget_usd"),
            ("budget_usd = 0, period = \"daily\"", "budget_usd"),
            ("budget_usd = -1, period = \"monthly\"", "budget_usd"),
            ("budget_usd = nan, period = \"monthly\"", "budget_usd"),
            ("budget_usd = \"5\", period = \"monthly\"", "budget_usd"),
            ("budget = 1", "budget"),
        ] {
            let e = with(fields);
            assert!(e.contains(field), "{fields}: {e}");
            assert!(
                e.contains("alice") || e.contains("unknown field"),
                "{fields}: {e}"
            );
        }
        let e = err(&format!("[server]\napi_keys = [{{ name = \"a\", env = \"X\", budget_usd = 1, period = \"daily\" }}, {{ name = \"a\", env = \"Y\" }}]\n{OPENAI}"));
        assert!(
            e.contains("server.api_keys[1].name") && e.contains("key 'a'"),
            "{e}"
        );
    }

    #[test]
    fn exposed_policies_have_plain_names() {
        let text = format!("[server]\npolicies = {{ fast = \"learned:/srv/r.safetensors@0.6\", cheap-1 = \"direct:gpt\" }}\n{OPENAI}");
        let cfg = PoolConfig::parse(&text, "pool.toml", None).unwrap();
        assert_eq!(
            cfg.server.policies["fast"],
            "learned:/srv/r.safetensors@0.6"
        );
        assert_eq!(cfg.server.policies.len(), 2);
        let e = err(&format!(
            "[server]\npolicies = {{ \"a/b\" = \"random\" }}\n{OPENAI}"
        ));
        assert!(e.contains("server.policies.a/b"), "{e}");
        let e = err(&format!("[server]\npolicies = {{ x = \" \" }}\n{OPENAI}"));
        assert!(e.contains("server.policies.x"), "{e}");
    }
}
