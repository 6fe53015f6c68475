//! Names and locks inside the cache directory, and where that directory is.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use r2_pool::ModelSpec;

use crate::error::{Ctx, ModelError};
use crate::progress::note;

/// An exclusive lock on `{models}/.{stem}.lock`, released when the returned file drops.
pub(crate) fn lock(
    models_dir: &Path,
    ctx: &Ctx,
    spec: &ModelSpec,
    progress: bool,
) -> Result<File, ModelError> {
    fs::create_dir_all(models_dir).map_err(|e| ctx.io(models_dir, "create", e))?;
    let path = models_dir.join(format!(".{}.lock", stem(spec)));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| ctx.io(&path, "open", e))?;
    if fs4::FileExt::try_lock(&file).is_err() {
        note(
            progress,
            &format!(
                "{}: waiting for another process fetching the same model",
                ctx.model
            ),
        );
        fs4::FileExt::lock(&file).map_err(|e| ctx.io(&path, "lock", e))?;
    }
    Ok(file)
}

/// `{id}-{first 12 hex of sha256}`: the hash in the name means a changed pin gets a new
/// file instead of fighting over the old one.
pub(crate) fn stem(spec: &ModelSpec) -> String {
    let tag = match &spec.sha256 {
        Some(h) => safe(h.get(..12).unwrap_or(h)),
        None => "unpinned".to_string(),
    };
    format!("{}-{tag}", safe(&spec.id))
}

/// Config validation already restricts ids; this keeps a hand-built spec from escaping
/// the cache directory.
pub(crate) fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

/// Temp files left by a killed fetch of this model. Called under the model's lock, so
/// nobody else is writing them. The `+` cannot occur in an id, so another model's
/// files never match.
pub(crate) fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(".part") {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The root-directory rule of `from_env`, apart from the environment for testing.
/// Per the XDG spec a relative `XDG_CACHE_HOME` is ignored.
pub(crate) fn root_from(
    r2_home: Option<OsString>,
    xdg_cache: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, ModelError> {
    let set = |v: Option<OsString>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(p) = set(r2_home) {
        return Ok(p);
    }
    if let Some(p) = set(xdg_cache).filter(|p| p.is_absolute()) {
        return Ok(p.join("r2reasoner"));
    }
    if let Some(h) = set(home) {
        return Ok(h.join(".cache").join("r2reasoner"));
    }
    Err(ModelError::CacheDir(
        "none of R2REASONER_HOME, XDG_CACHE_HOME or HOME is set".into(),
    ))
}
