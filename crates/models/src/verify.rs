//! Hashing, the verification marker and the GGUF magic check.
//!
//! A full sha256 of a 1 GB model takes seconds, too slow for every start. After a full hash
//! we record (sha256, size, mtime) in a marker; while size and mtime are unchanged we trust
//! it. Anything that rewrites the file (truncation, corruption, a copy) moves the mtime or
//! the size, which makes the marker stale and forces a full hash again.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Ctx, ModelError};

/// llama.cpp refuses anything else; checking up front gives a clearer error than its own.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";

const CHUNK: usize = 1 << 20;

/// What a cached file must contain besides bytes that match its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// A model for llama.cpp: it must start with the GGUF magic.
    Gguf,
    /// Any other file (tokenizer, safetensors weights, a config): no content check, and the
    /// cached copy keeps the extension of its source's file name.
    Any,
}

/// What `ModelCache::verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The sha256 matches the pin and the file is GGUF.
    Verified,
    /// A local file without a pin: hashed and GGUF-checked, but nothing to compare against.
    Unpinned,
    /// Nothing on disk (never fetched, or a local path that does not exist).
    Missing,
    Mismatch {
        expected: String,
    },
    /// The hash is fine (or unpinned) but the content is not GGUF.
    NotGguf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub model: String,
    pub path: PathBuf,
    /// Size on disk, when the file exists.
    pub size: Option<u64>,
    /// Full sha256 of what is on disk, when the file exists.
    pub sha256: Option<String>,
    pub outcome: VerifyOutcome,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        matches!(
            self.outcome,
            VerifyOutcome::Verified | VerifyOutcome::Unpinned
        )
    }
}

/// Passes writes through while hashing them and keeping the first bytes, so assembling a
/// model needs no second pass to hash it or to check its magic.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
    head: Vec<u8>,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
            head: Vec::with_capacity(4),
        }
    }

    /// (inner writer, lowercase hex sha256, bytes written, first bytes).
    pub fn finish(self) -> (W, String, u64, Vec<u8>) {
        (
            self.inner,
            hex(&self.hasher.finalize()),
            self.len,
            self.head,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = &buf[..n];
        self.hasher.update(done);
        self.len += n as u64;
        if self.head.len() < 4 {
            let take = (4 - self.head.len()).min(done.len());
            self.head.extend_from_slice(&done[..take]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Full hash of a file: (sha256, size, first bytes).
pub(crate) fn hash_file(path: &Path, bar: &ProgressBar) -> io::Result<(String, u64, Vec<u8>)> {
    let mut f = File::open(path)?;
    let mut w = HashingWriter::new(io::sink());
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    let (_, sha, len, head) = w.finish();
    Ok((sha, len, head))
}

/// Reads just the magic of a file on disk.
pub(crate) fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(4);
    File::open(path)?.take(4).read_to_end(&mut head)?;
    Ok(head)
}

pub(crate) fn is_gguf(head: &[u8]) -> bool {
    head == GGUF_MAGIC
}

/// The error for a file whose first bytes are `head`; `what` names the file for the message.
pub(crate) fn not_gguf(ctx: &Ctx, what: String, head: &[u8]) -> ModelError {
    let magic = if head.is_empty() {
        "none: the file is empty".to_string()
    } else {
        format!("{:?}", String::from_utf8_lossy(head))
    };
    ModelError::NotGguf {
        model: ctx.model.clone(),
        src: ctx.src.clone(),
        what,
        magic,
    }
}

/// The record of the last full hash. `file` guards against a marker outliving a change of
/// the configured local path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub sha256: String,
    pub size: u64,
    pub mtime_secs: u64,
    pub mtime_nanos: u32,
    pub file: String,
}

impl Marker {
    /// A marker for `path` as it is now on disk, carrying a hash just computed.
    pub fn of(path: &Path, sha256: &str) -> io::Result<Marker> {
        let meta = fs::metadata(path)?;
        let (mtime_secs, mtime_nanos) = mtime(&meta)?;
        Ok(Marker {
            sha256: sha256.to_string(),
            size: meta.len(),
            mtime_secs,
            mtime_nanos,
            file: path.display().to_string(),
        })
    }

    /// A missing or unreadable marker just means "hash again", so errors become `None`.
    pub fn read(marker: &Path) -> Option<Marker> {
        let bytes = fs::read(marker).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Written through a temp file and a rename so a reader never sees half a marker.
    pub fn write(&self, marker: &Path) -> io::Result<()> {
        let dir = marker.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".marker+")
            .suffix(".part")
            .tempfile_in(dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        tmp.write_all(&json)?;
        readable_by_all(tmp.as_file());
        tmp.persist(marker).map_err(|e| e.error)?;
        Ok(())
    }

    /// Does this marker vouch for `path` having hash `expected` right now?
    pub fn vouches_for(&self, path: &Path, expected: &str) -> bool {
        if !self.sha256.eq_ignore_ascii_case(expected) || self.file != path.display().to_string() {
            return false;
        }
        match fs::metadata(path) {
            Ok(meta) => {
                meta.len() == self.size
                    && mtime(&meta).ok() == Some((self.mtime_secs, self.mtime_nanos))
            }
            Err(_) => false,
        }
    }
}

fn mtime(meta: &fs::Metadata) -> io::Result<(u64, u32)> {
    let d = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_err(io::Error::other)?;
    Ok((d.as_secs(), d.subsec_nanos()))
}

/// Temp files are created private (0600); once complete, a cached model is as readable as
/// any other cache file, so a cache shared through `R2REASONER_HOME` works for everyone.
/// Best effort: a failure only keeps the file private.
pub(crate) fn readable_by_all(file: &File) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(fs::Permissions::from_mode(0o644));
    }
    #[cfg(not(unix))]
    let _ = file;
}

/// Removes a marker; a marker that is already gone is fine.
pub(crate) fn remove_marker(marker: &Path) -> io::Result<()> {
    match fs::remove_file(marker) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = self
            .size
            .map(|s| format!(", {:.1} MB", s as f64 / 1e6))
            .unwrap_or_default();
        match &self.outcome {
            VerifyOutcome::Verified => {
                write!(f, "ok (sha256 matches{size}) {}", self.path.display())
            }
            VerifyOutcome::Unpinned => {
                write!(f, "ok (no pinned sha256{size}) {}", self.path.display())
            }
            VerifyOutcome::Missing => write!(f, "missing: {}", self.path.display()),
            VerifyOutcome::Mismatch { expected } => write!(
                f,
                "CORRUPT: sha256 {} does not match the pinned {expected}{size} {}",
                self.sha256.as_deref().unwrap_or("?"),
                self.path.display()
            ),
            VerifyOutcome::NotGguf => {
                write!(f, "CORRUPT: not a GGUF file{size} {}", self.path.display())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_writer_matches_known_digest_and_keeps_head() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"GG").unwrap();
        w.write_all(b"UF and more").unwrap();
        let (inner, sha, len, head) = w.finish();
        assert_eq!(inner, b"GGUF and more");
        assert_eq!(len, 13);
        assert_eq!(head, b"GGUF");
        let mut h = Sha256::new();
        h.update(b"GGUF and more");
        assert_eq!(sha, hex(&h.finalize()));
        // sha256("") is a well-known constant
        let (_, empty, _, _) = HashingWriter::new(io::sink()).finish();
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn marker_goes_stale_when_size_or_mtime_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.gguf");
        fs::write(&f, b"GGUF1234").unwrap();
        let (sha, _, _) = hash_file(&f, &ProgressBar::hidden()).unwrap();
        let m = Marker::of(&f, &sha).unwrap();
        let mp = dir.path().join("m.gguf.verified");
        m.write(&mp).unwrap();
        let back = Marker::read(&mp).unwrap();
        assert!(back.vouches_for(&f, &sha));
        assert!(!back.vouches_for(&f, &"0".repeat(64)), "other pin");
        assert!(!back.vouches_for(&dir.path().join("other"), &sha));

        let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
        file.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(12345))
            .unwrap();
        assert!(!back.vouches_for(&f, &sha), "mtime changed");
        let m = Marker::of(&f, &sha).unwrap();
        assert!(m.vouches_for(&f, &sha));
        file.set_len(4).unwrap();
        file.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(12345))
            .unwrap();
        assert!(!m.vouches_for(&f, &sha), "size changed, same mtime");

        fs::write(&mp, b"{not json").unwrap();
        assert!(Marker::read(&mp).is_none());
    }
}
