//! Models whose source is a file on this machine. They are used in place and never copied
//! or replaced, so every fault (missing, changed, not GGUF) is an input error for the user
//! to fix, not something to repair by fetching.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Ctx, ModelError};
use crate::progress::bytes_bar;
use crate::verify::{hash_file, is_gguf, not_gguf, read_head, remove_marker, Format, Marker};

/// A local file is never copied or replaced: it is checked, and any fault is the user's to
/// fix. With a `pin`, `marker` (kept in the cache: the user's model directory is not ours
/// to write into) spares re-hashing a file that has not changed since it matched.
pub(crate) fn ensure_local(
    ctx: &Ctx,
    path: &Path,
    pin: Option<&str>,
    marker: &Path,
    format: Format,
    progress: bool,
) -> Result<PathBuf, ModelError> {
    drop(open_local(ctx, path)?);
    if let Some(pin) = pin {
        let vouched = Marker::read(marker).is_some_and(|m| m.vouches_for(path, pin));
        if !vouched {
            let len = fs::metadata(path).ok().map(|m| m.len());
            let bar = bytes_bar(progress, len, format!("{} (verify)", ctx.model));
            let (sha, _, _) = hash_file(path, &bar).map_err(|e| local_err(ctx, path, e))?;
            bar.finish_and_clear();
            if !sha.eq_ignore_ascii_case(pin) {
                let _ = remove_marker(marker);
                return Err(ctx.mismatch(
                    format!("local file {}", path.display()),
                    pin,
                    &sha,
                    false,
                ));
            }
            let _ = Marker::of(path, &sha).and_then(|m| m.write(marker));
        }
    }
    if format == Format::Any {
        return Ok(path.to_path_buf());
    }
    let head = read_head(path).map_err(|e| local_err(ctx, path, e))?;
    if !is_gguf(&head) {
        return Err(not_gguf(
            ctx,
            format!("local file {}", path.display()),
            &head,
        ));
    }
    Ok(path.to_path_buf())
}

/// Opens a local model file, mapping failures to input errors.
pub(crate) fn open_local(ctx: &Ctx, path: &Path) -> Result<File, ModelError> {
    // Only a regular file: a FIFO or device named in a config is refused, not opened.
    r2_files::open(path, u64::MAX).map_err(|e| match e {
        r2_files::FileError::Open { source, .. } => local_err(ctx, path, source),
        other => local_err(ctx, path, io::Error::other(other.to_string())),
    })
}

fn local_err(ctx: &Ctx, path: &Path, e: io::Error) -> ModelError {
    if e.kind() == io::ErrorKind::NotFound {
        ModelError::LocalMissing {
            model: ctx.model.clone(),
            path: path.to_path_buf(),
        }
    } else {
        ModelError::LocalUnreadable {
            model: ctx.model.clone(),
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}
