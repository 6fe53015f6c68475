//! A static embedding table distilled from the encoder (the Model2Vec recipe without its
//! PCA and frequency weighting): row `t` is the encoder's sentence embedding of the single
//! word piece `t` (`[CLS] t [SEP]`), and a text embeds as the normalised mean of its pieces'
//! rows. No attention at query time: a text costs a tokenisation and a few hundred
//! additions (microseconds) instead of a BERT forward pass (milliseconds), at the price of
//! word order and context. Used where a routing decision must take well under a millisecond.
//!
//! Distilling runs the encoder once per vocabulary entry (about 30k tiny batches' worth, a
//! minute or two on one core); [`DistilledEmbedder::load_or_distil`] keeps the table in the
//! model cache next to the weights it came from, keyed by their sha256.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{EmbedError, Embedder, Embedding, DIM};

/// Word pieces distilled per forward pass.
const DISTIL_BATCH: usize = 512;
/// First bytes of a table file, then the vocabulary size (u32 LE), then `vocab × DIM` f32 LE.
const MAGIC: &[u8; 8] = b"R2STAT01";

pub struct DistilledEmbedder {
    encoder: std::sync::Arc<Embedder>,
    table: Vec<f32>,
    vocab: usize,
}

impl std::fmt::Debug for DistilledEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistilledEmbedder")
            .field("vocab", &self.vocab)
            .finish_non_exhaustive()
    }
}

impl DistilledEmbedder {
    /// Runs the encoder over every word piece of its vocabulary. `progress` is called with
    /// (pieces done, vocabulary size) after each batch.
    pub fn distil(
        encoder: std::sync::Arc<Embedder>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self, EmbedError> {
        let vocab = encoder.vocab_size();
        let (cls, sep) = encoder.cls_sep()?;
        let mut table = vec![0f32; vocab * DIM];
        let ids: Vec<u32> = (0..vocab as u32).collect();
        for (b, chunk) in ids.chunks(DISTIL_BATCH).enumerate() {
            let seqs: Vec<[u32; 3]> = chunk.iter().map(|&t| [cls, t, sep]).collect();
            let batch: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
            for (i, row) in encoder.forward_ids(&batch)?.iter().enumerate() {
                let t = b * DISTIL_BATCH + i;
                table[t * DIM..(t + 1) * DIM].copy_from_slice(row);
            }
            progress((b * DISTIL_BATCH + chunk.len()).min(vocab), vocab);
        }
        Ok(Self {
            encoder,
            table,
            vocab,
        })
    }

    /// The table for `encoder`, read from `path` when it is there and intact, otherwise
    /// distilled and written to `path` (atomically: a partial file is never left under the
    /// final name). A table whose size does not match the encoder's vocabulary is rebuilt.
    pub fn load_or_distil(
        encoder: std::sync::Arc<Embedder>,
        path: &Path,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self, EmbedError> {
        let vocab = encoder.vocab_size();
        if let Some(table) = read_table(path, vocab) {
            return Ok(Self {
                encoder,
                table,
                vocab,
            });
        }
        let me = Self::distil(encoder, progress)?;
        write_table(path, &me.table, vocab)?;
        Ok(me)
    }

    /// Where [`load_or_distil`](Self::load_or_distil) keeps the table for weights whose
    /// sha256 starts with `weights_sha` in a cache's models directory.
    pub fn table_path(models_dir: &Path, weights_sha: &str) -> PathBuf {
        let prefix: String = weights_sha.chars().take(12).collect();
        models_dir.join(format!("all-minilm-l6-v2-{prefix}.distilled.f32"))
    }

    /// One unit-length embedding per text: the mean of its word pieces' rows ([CLS] and
    /// [SEP] excluded), normalised. A text without word pieces embeds as zeros.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, EmbedError> {
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let ids = self.encoder.piece_ids(i, text)?;
                let mut sum = [0f32; DIM];
                let mut n = 0usize;
                for &t in &ids {
                    let t = t as usize;
                    if t < self.vocab {
                        let row = &self.table[t * DIM..(t + 1) * DIM];
                        sum.iter_mut().zip(row).for_each(|(s, r)| *s += r);
                        n += 1;
                    }
                }
                let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
                if n > 0 && norm > 1e-12 {
                    sum.iter_mut().for_each(|x| *x /= norm);
                } else {
                    sum = [0f32; DIM];
                }
                Ok(sum)
            })
            .collect()
    }
}

fn read_table(path: &Path, vocab: usize) -> Option<Vec<f32>> {
    let bytes = r2_files::read(path, r2_files::limits::WEIGHTS).ok()?;
    let body = bytes.strip_prefix(MAGIC.as_slice())?;
    let (n, body) = body.split_at_checked(4)?;
    let n = u32::from_le_bytes(n.try_into().ok()?) as usize;
    if n != vocab || body.len() != vocab * DIM * 4 {
        return None;
    }
    let table: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    table.iter().all(|x| x.is_finite()).then_some(table)
}

fn write_table(path: &Path, table: &[f32], vocab: usize) -> Result<(), EmbedError> {
    let err = |e: std::io::Error| EmbedError::Unreadable {
        path: path.to_path_buf(),
        reason: format!("cannot write the distilled table: {e}"),
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(err)?;
    let mut buf = Vec::with_capacity(12 + table.len() * 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(vocab as u32).to_le_bytes());
    for x in table {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    f.write_all(&buf).and_then(|_| f.sync_all()).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip_and_bad_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.f32");
        let table: Vec<f32> = (0..2 * DIM).map(|i| i as f32 * 0.5).collect();
        write_table(&p, &table, 2).unwrap();
        assert_eq!(read_table(&p, 2).unwrap(), table);
        // The wrong vocabulary size, a truncated file and a foreign file are all misses.
        assert!(read_table(&p, 3).is_none());
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read_table(&p, 2).is_none());
        fs::write(&p, b"not a table").unwrap();
        assert!(read_table(&p, 2).is_none());
        assert!(read_table(&dir.path().join("missing"), 2).is_none());
    }
}
