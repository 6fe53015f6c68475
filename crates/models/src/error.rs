//! One error type for everything that can go wrong between a `ModelSpec` and a loadable file.
//!
//! Every message is a single line naming the model id and its source, because the caller
//! shows it to a person who has to decide whether to fix the config, the network or the disk.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No `R2REASONER_HOME`, `XDG_CACHE_HOME` or `HOME` to put the cache under.
    #[error("cannot locate the model cache: {0}")]
    CacheDir(String),

    #[error("model '{model}': local file {} does not exist", path.display())]
    LocalMissing { model: String, path: PathBuf },

    /// The local path exists but cannot be used (a directory, no permission, ...).
    #[error("model '{model}': local file {}: {reason}", path.display())]
    LocalUnreadable {
        model: String,
        path: PathBuf,
        reason: String,
    },

    /// A downloaded or assembled model without a pinned sha256 cannot be trusted, so it is
    /// never written under its final name.
    #[error("model '{model}' ({src}): a sha256 must be pinned for downloaded or assembled models")]
    Unpinned { model: String, src: String },

    /// `what` says which file disagreed: the assembled model, a wheel, a local file.
    #[error(
        "model '{model}' ({src}): sha256 mismatch for {what}: expected {expected}, got {actual}"
    )]
    HashMismatch {
        model: String,
        src: String,
        what: String,
        expected: String,
        actual: String,
        /// True when fetching again may help (a download); false for a file we must not replace.
        refetchable: bool,
    },

    /// `what` names the file: a local path, the cached copy, or the freshly assembled file.
    #[error("model '{model}' ({src}): {what} is not a GGUF file (first bytes: {magic}); llama.cpp cannot load it")]
    NotGguf {
        model: String,
        src: String,
        what: String,
        magic: String,
    },

    #[error("model '{model}' ({src}): GET {url} failed: {reason}")]
    Http {
        model: String,
        src: String,
        url: String,
        reason: String,
    },

    /// The package index answered, but not with a wheel we can use.
    #[error("model '{model}' ({src}): package index {url}: {reason}")]
    Index {
        model: String,
        src: String,
        url: String,
        reason: String,
    },

    /// The wheel downloaded fine but is unreadable or lacks the member.
    #[error("model '{model}' ({src}): wheel {wheel}: {reason}")]
    Wheel {
        model: String,
        src: String,
        wheel: String,
        reason: String,
    },

    #[error("model '{model}' ({src}): {} {op}: {reason}", path.display())]
    Io {
        model: String,
        src: String,
        path: PathBuf,
        op: &'static str,
        reason: String,
    },
}

impl ModelError {
    /// True when the fault lies with what the user supplied (config or local file), so
    /// retrying or fetching again cannot help and the CLI should report a usage error.
    pub fn is_input_error(&self) -> bool {
        match self {
            ModelError::LocalMissing { .. }
            | ModelError::LocalUnreadable { .. }
            | ModelError::Unpinned { .. }
            | ModelError::NotGguf { .. } => true,
            ModelError::HashMismatch { refetchable, .. } => !refetchable,
            ModelError::CacheDir(_)
            | ModelError::Http { .. }
            | ModelError::Index { .. }
            | ModelError::Wheel { .. }
            | ModelError::Io { .. } => false,
        }
    }

    /// The model id the error is about, if any.
    pub fn model(&self) -> Option<&str> {
        match self {
            ModelError::CacheDir(_) => None,
            ModelError::LocalMissing { model, .. }
            | ModelError::LocalUnreadable { model, .. }
            | ModelError::Unpinned { model, .. }
            | ModelError::HashMismatch { model, .. }
            | ModelError::NotGguf { model, .. }
            | ModelError::Http { model, .. }
            | ModelError::Index { model, .. }
            | ModelError::Wheel { model, .. }
            | ModelError::Io { model, .. } => Some(model),
        }
    }
}

/// The model and source an operation is for, so that lower layers can build errors
/// without threading two strings through every call.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub model: String,
    pub src: String,
}

impl Ctx {
    pub fn io(&self, path: impl Into<PathBuf>, op: &'static str, e: impl ToString) -> ModelError {
        ModelError::Io {
            model: self.model.clone(),
            src: self.src.clone(),
            path: path.into(),
            op,
            reason: e.to_string(),
        }
    }

    pub fn http(&self, url: &str, reason: impl ToString) -> ModelError {
        ModelError::Http {
            model: self.model.clone(),
            src: self.src.clone(),
            url: url.to_string(),
            reason: reason.to_string(),
        }
    }

    pub fn mismatch(
        &self,
        what: impl ToString,
        expected: &str,
        actual: &str,
        refetchable: bool,
    ) -> ModelError {
        ModelError::HashMismatch {
            model: self.model.clone(),
            src: self.src.clone(),
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
            refetchable,
        }
    }

    /// The same model with a narrower source (one part of a multi-part model).
    pub fn part(&self, src: impl ToString) -> Ctx {
        Ctx {
            model: self.model.clone(),
            src: src.to_string(),
        }
    }
}
