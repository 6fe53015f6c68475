//! The one error type of this crate. Every message is a single line naming the file or the
//! source at fault, because the person reading it has to fix a path, a pin or a download.

use std::path::PathBuf;

use r2_models::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A source string that is neither a directory nor a `pypi://` / `hf://` base.
    #[error("embedding model source '{src}': {reason}")]
    Source { src: String, reason: String },

    /// One of the three model files is not where the source says.
    #[error("embedding model file {} does not exist", path.display())]
    MissingFile { path: PathBuf },

    #[error("embedding model file {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },

    /// Fetching or verifying a file through the model cache failed (boxed: it is large).
    #[error(transparent)]
    Fetch(Box<ModelError>),

    #[error("embedding model config {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    #[error("embedding tokenizer {}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },

    /// The safetensors file lacks a tensor or has one of the wrong shape for the config.
    #[error("embedding weights {}: {reason}", path.display())]
    Weights { path: PathBuf, reason: String },

    /// The model is a BERT, but not one that produces `expected`-dimensional embeddings.
    #[error("embedding model {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },

    /// The tokenizer refused a text (it should not for BERT's WordPiece; kept as an error
    /// rather than a panic because the text is untrusted input).
    #[error("tokenizing text #{index} failed: {reason}")]
    Tokenize { index: usize, reason: String },

    /// A tensor operation of the forward pass failed.
    #[error("embedding forward pass failed: {0}")]
    Forward(String),
}

impl EmbedError {
    /// True when the fault lies with what the user supplied (a source, a directory, a
    /// file), so retrying cannot help.
    pub fn is_input_error(&self) -> bool {
        match self {
            EmbedError::Fetch(e) => e.is_input_error(),
            EmbedError::Source { .. }
            | EmbedError::MissingFile { .. }
            | EmbedError::Unreadable { .. }
            | EmbedError::Config { .. }
            | EmbedError::Tokenizer { .. }
            | EmbedError::Weights { .. }
            | EmbedError::ShapeMismatch { .. } => true,
            EmbedError::Tokenize { .. } | EmbedError::Forward(_) => false,
        }
    }
}

impl From<ModelError> for EmbedError {
    fn from(e: ModelError) -> Self {
        EmbedError::Fetch(Box::new(e))
    }
}

impl From<candle_core::Error> for EmbedError {
    fn from(e: candle_core::Error) -> Self {
        EmbedError::Forward(e.to_string())
    }
}
