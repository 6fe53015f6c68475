//! The cache directory and the fetch / ensure / verify life cycle of one model file.
//!
//! Invariant: a file under its final name in `{root}/models/` has matched its pinned sha256
//! when it was written. Downloads go to a temp file in the same directory and are renamed
//! only after the hash matched, and a per-model lock file serialises processes that fetch
//! the same model, so a second one waits and then finds the file ready.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use r2_pool::ModelSpec;

use crate::download::assemble;
use crate::error::{Ctx, ModelError};
use crate::http::{self, Endpoints, Fetcher};
use crate::layout::{lock, remove_stale_temps, root_from, safe, stem};
use crate::local::ensure_local;
use crate::progress::{bytes_bar, note};
use crate::verify::{
    hash_file, is_gguf, not_gguf, read_head, remove_marker, Format, Marker, VerifyOutcome,
    VerifyReport,
};

/// Cheap status for listings: no hashing, at most a stat and a marker read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    /// Not fetched yet.
    Missing { path: PathBuf },
    /// In the cache; `verified` says whether the marker still vouches for it.
    Cached {
        path: PathBuf,
        size: u64,
        verified: bool,
    },
    /// A local file used in place; `size` is `None` when it does not exist. `verified` is
    /// true when a pin exists and a marker vouches for the file, or when there is no pin.
    Local {
        path: PathBuf,
        size: Option<u64>,
        verified: bool,
    },
}

#[derive(Debug, Clone)]
pub struct ModelCache {
    root: PathBuf,
    endpoints: Endpoints,
}

impl ModelCache {
    /// root = `$R2REASONER_HOME` if set, else `$XDG_CACHE_HOME/r2reasoner`, else
    /// `~/.cache/r2reasoner`. Endpoints come from the environment too (see `Endpoints`).
    pub fn from_env() -> Result<Self, ModelError> {
        let root = root_from(
            std::env::var_os("R2REASONER_HOME"),
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        )?;
        Ok(Self::at(root))
    }

    /// A cache at `root`, with endpoints from the environment.
    pub fn at(root: PathBuf) -> Self {
        ModelCache {
            root,
            endpoints: Endpoints::from_env(),
        }
    }

    /// Replaces the PyPI index, hub endpoint and token (tests, mirrors).
    pub fn with_endpoints(mut self, endpoints: Endpoints) -> Self {
        self.endpoints = endpoints;
        self
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// Where the assembled file for this model lives (for a single local path: that path).
    pub fn path_for(&self, spec: &ModelSpec) -> PathBuf {
        self.path_in(spec, Format::Gguf)
    }

    fn path_in(&self, spec: &ModelSpec, format: Format) -> PathBuf {
        match spec.source.local_file() {
            Some(p) => p.to_path_buf(),
            None => self.models_dir().join(cached_name(spec, format)),
        }
    }

    /// Markers of local files live in the cache: the user's model directory is not ours
    /// to write into.
    pub(crate) fn marker_for(&self, spec: &ModelSpec) -> PathBuf {
        self.marker_in(spec, Format::Gguf)
    }

    fn marker_in(&self, spec: &ModelSpec, format: Format) -> PathBuf {
        match spec.source.local_file() {
            Some(_) => self
                .models_dir()
                .join(format!("{}-local.verified", safe(&spec.id))),
            None => self
                .models_dir()
                .join(format!("{}.verified", cached_name(spec, format))),
        }
    }

    pub fn status(&self, spec: &ModelSpec) -> ModelStatus {
        let path = self.path_for(spec);
        let size = fs::metadata(&path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let vouched = || match (&spec.sha256, Marker::read(&self.marker_for(spec))) {
            (Some(pin), Some(m)) => m.vouches_for(&path, pin),
            _ => false,
        };
        if spec.source.local_file().is_some() {
            let verified = size.is_some() && (spec.sha256.is_none() || vouched());
            return ModelStatus::Local {
                path,
                size,
                verified,
            };
        }
        match size {
            None => ModelStatus::Missing { path },
            Some(size) => ModelStatus::Cached {
                verified: vouched(),
                path,
                size,
            },
        }
    }

    /// A path that is safe to hand to llama.cpp; fetches only when needed.
    pub fn ensure(&self, spec: &ModelSpec, progress: bool) -> Result<PathBuf, ModelError> {
        self.obtain(spec, Format::Gguf, false, progress)
    }

    /// [`ensure`](Self::ensure) for a file that is not a GGUF model (a tokenizer, safetensors
    /// weights, a config): the same pin, lock, marker and atomic rename, without the GGUF
    /// check. The cached copy keeps its source's extension (`{id}-{sha prefix}.{ext}`).
    pub fn ensure_file(&self, spec: &ModelSpec, progress: bool) -> Result<PathBuf, ModelError> {
        self.obtain(spec, Format::Any, false, progress)
    }

    /// Downloads (again when `force`) and assembles. A local single-file source has nothing
    /// to download and is only checked.
    pub fn fetch(
        &self,
        spec: &ModelSpec,
        force: bool,
        progress: bool,
    ) -> Result<PathBuf, ModelError> {
        self.obtain(spec, Format::Gguf, force, progress)
    }

    fn obtain(
        &self,
        spec: &ModelSpec,
        format: Format,
        force: bool,
        progress: bool,
    ) -> Result<PathBuf, ModelError> {
        let ctx = ctx(spec);
        if let Some(local) = spec.source.local_file() {
            return ensure_local(
                &ctx,
                local,
                spec.sha256.as_deref(),
                &self.marker_for(spec),
                format,
                progress,
            );
        }
        let pin = spec.sha256.as_deref().ok_or_else(|| ModelError::Unpinned {
            model: ctx.model.clone(),
            src: ctx.src.clone(),
        })?;
        let path = self.path_in(spec, format);
        let marker = self.marker_in(spec, format);
        // Fast path without the lock (so a read-only cache works): files under the final
        // name are only ever replaced by an atomic rename, never rewritten in place.
        if !force && Marker::read(&marker).is_some_and(|m| m.vouches_for(&path, pin)) {
            check_cached_magic(&ctx, &path, format)?;
            return Ok(path);
        }
        let _lock = lock(&self.models_dir(), &ctx, spec, progress)?;
        if path.exists() && !force {
            if self.cached_is_intact(&ctx, &path, &marker, pin, progress)? {
                check_cached_magic(&ctx, &path, format)?;
                return Ok(path);
            }
            note(
                progress,
                &format!(
                    "{}: cached file {} does not match its sha256; fetching again",
                    ctx.model,
                    path.display()
                ),
            );
            remove_marker(&marker).map_err(|e| ctx.io(&marker, "remove", e))?;
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(ctx.io(&path, "remove", e));
                }
                _ => {}
            }
        }
        // A forced re-fetch keeps the old copy until the new one has been verified: the
        // rename replaces it atomically, and a failed download leaves it usable.
        self.download(&ctx, spec, format, pin, &path, &marker, progress)?;
        Ok(path)
    }

    /// Marker first; if it is missing or stale, a full hash (which refreshes the marker).
    fn cached_is_intact(
        &self,
        ctx: &Ctx,
        path: &Path,
        marker: &Path,
        pin: &str,
        progress: bool,
    ) -> Result<bool, ModelError> {
        if Marker::read(marker).is_some_and(|m| m.vouches_for(path, pin)) {
            return Ok(true);
        }
        let len = fs::metadata(path).ok().map(|m| m.len());
        let bar = bytes_bar(progress, len, format!("{} (verify)", ctx.model));
        let (sha, _, _) = hash_file(path, &bar).map_err(|e| ctx.io(path, "read", e))?;
        bar.finish_and_clear();
        if !sha.eq_ignore_ascii_case(pin) {
            return Ok(false);
        }
        // A marker that cannot be written only costs a re-hash next time.
        let _ = Marker::of(path, &sha).and_then(|m| m.write(marker));
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    fn download(
        &self,
        ctx: &Ctx,
        spec: &ModelSpec,
        format: Format,
        pin: &str,
        path: &Path,
        marker: &Path,
        progress: bool,
    ) -> Result<(), ModelError> {
        let dir = self.models_dir();
        let temp_prefix = format!(".{}+", stem(spec));
        remove_stale_temps(&dir, &temp_prefix);
        let fetcher = Fetcher {
            client: http::client(ctx)?,
            endpoints: &self.endpoints,
            scratch: &dir,
            temp_prefix: temp_prefix.clone(),
            progress,
        };
        // Dropping `tmp` on any error below deletes it: nothing partial survives.
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix)
            .suffix(".gguf.part")
            .tempfile_in(&dir)
            .map_err(|e| ctx.io(&dir, "create a temp file in", e))?;
        let got = assemble(&fetcher, ctx, &spec.source.parts, tmp.as_file())?;
        if !got.sha256.eq_ignore_ascii_case(pin) {
            return Err(ctx.mismatch(
                format!("the assembled file ({} bytes)", got.size),
                pin,
                &got.sha256,
                true,
            ));
        }
        if format == Format::Gguf && !is_gguf(&got.head) {
            return Err(not_gguf(ctx, "the assembled file".into(), &got.head));
        }
        crate::verify::readable_by_all(tmp.as_file());
        remove_marker(marker).map_err(|e| ctx.io(marker, "remove", e))?;
        tmp.persist(path)
            .map_err(|e| ctx.io(path, "rename into place", e.error))?;
        let _ = Marker::of(path, &got.sha256).and_then(|m| m.write(marker));
        Ok(())
    }

    /// Full sha256 of what is on disk; never downloads and never deletes. It does refresh
    /// the marker (removing it on a mismatch) so that `status` agrees with what it found.
    pub fn verify(&self, spec: &ModelSpec, progress: bool) -> Result<VerifyReport, ModelError> {
        let ctx = ctx(spec);
        let path = self.path_for(spec);
        let marker = self.marker_for(spec);
        let mut report = VerifyReport {
            model: spec.id.clone(),
            path: path.clone(),
            size: None,
            sha256: None,
            outcome: VerifyOutcome::Missing,
        };
        if !path.is_file() {
            return Ok(report);
        }
        // Hold the lock for cached files so a concurrent re-fetch cannot swap the file
        // between hashing and writing the marker.
        let _lock = match spec.source.local_file() {
            None => Some(lock(&self.models_dir(), &ctx, spec, progress)?),
            Some(_) => None,
        };
        let len = fs::metadata(&path).ok().map(|m| m.len());
        let bar = bytes_bar(progress, len, format!("{} (verify)", ctx.model));
        let (sha, size, head) = match hash_file(&path, &bar) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(ctx.io(&path, "read", e)),
        };
        bar.finish_and_clear();
        report.outcome = match &spec.sha256 {
            Some(pin) if !pin.eq_ignore_ascii_case(&sha) => VerifyOutcome::Mismatch {
                expected: pin.clone(),
            },
            _ if !is_gguf(&head) => VerifyOutcome::NotGguf,
            Some(_) => VerifyOutcome::Verified,
            None => VerifyOutcome::Unpinned,
        };
        match report.outcome {
            VerifyOutcome::Verified => {
                let _ = Marker::of(&path, &sha).and_then(|m| m.write(&marker));
            }
            VerifyOutcome::Mismatch { .. } => {
                remove_marker(&marker).map_err(|e| ctx.io(&marker, "remove", e))?;
            }
            _ => {}
        }
        report.size = Some(size);
        report.sha256 = Some(sha);
        Ok(report)
    }
}

/// A cached file matched its pin, so a wrong magic means the pin itself names a non-GGUF
/// file: a config error, not something a re-fetch would fix.
fn check_cached_magic(ctx: &Ctx, path: &Path, format: Format) -> Result<(), ModelError> {
    if format == Format::Any {
        return Ok(());
    }
    let head = read_head(path).map_err(|e| ctx.io(path, "read", e))?;
    if is_gguf(&head) {
        Ok(())
    } else {
        Err(not_gguf(
            ctx,
            format!("cached file {}", path.display()),
            &head,
        ))
    }
}

/// `{stem}.gguf`, or for other files `{stem}.{extension of the source's file name}`.
fn cached_name(spec: &ModelSpec, format: Format) -> String {
    let ext = match format {
        Format::Gguf => "gguf".to_string(),
        Format::Any => spec
            .source
            .parts
            .last()
            .and_then(|p| {
                let name = p.to_string();
                let file = name.rsplit('/').next()?.to_string();
                let (_, ext) = file.rsplit_once('.')?;
                Some(safe(ext)).filter(|e| !e.is_empty())
            })
            .unwrap_or_else(|| "bin".to_string()),
    };
    format!("{}.{ext}", stem(spec))
}

fn ctx(spec: &ModelSpec) -> Ctx {
    Ctx {
        model: spec.id.clone(),
        src: spec.source.to_string(),
    }
}

impl std::fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelStatus::Missing { .. } => f.write_str("missing"),
            ModelStatus::Cached { verified: true, .. } => f.write_str("cached"),
            ModelStatus::Cached {
                verified: false, ..
            } => f.write_str("unverified"),
            ModelStatus::Local { size: None, .. } => f.write_str("local:gone"),
            ModelStatus::Local { verified: true, .. } => f.write_str("local"),
            ModelStatus::Local {
                verified: false, ..
            } => f.write_str("local:unverified"),
        }
    }
}
