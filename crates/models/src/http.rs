//! HTTP plumbing shared by the hub and PyPI sources: where they are (`Endpoints`), the
//! client, checked GETs, and streaming a body into a writer (`Fetcher` carries it all).

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use crate::error::{Ctx, ModelError};
use crate::progress::bytes_bar;

pub const DEFAULT_PYPI_INDEX: &str = "https://pypi.org/simple";
pub const DEFAULT_HUB_ENDPOINT: &str = "https://huggingface.co";

/// Generous, because a slow mirror is better than no model; but a dead connection must
/// not hang a run forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Applies to waiting for the response headers and to each read of the body, not to the
/// whole transfer (reqwest's blocking client semantics), so big files are fine.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Where remote sources are fetched from. Kept on the cache rather than read from the
/// environment at each call so that tests (and embedders) can point at their own servers
/// without touching process-global state.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// PEP 691 simple index, e.g. `https://pypi.org/simple`.
    pub pypi_index: String,
    pub hub_endpoint: String,
    /// Sent as a bearer token to the hub only.
    pub hub_token: Option<String>,
}

impl Endpoints {
    /// `R2REASONER_PYPI_INDEX`, `HF_ENDPOINT` and `HF_TOKEN`, each with its default.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Endpoints {
            pypi_index: var("R2REASONER_PYPI_INDEX").unwrap_or_else(|| DEFAULT_PYPI_INDEX.into()),
            hub_endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_HUB_ENDPOINT.into()),
            hub_token: var("HF_TOKEN"),
        }
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            pypi_index: DEFAULT_PYPI_INDEX.into(),
            hub_endpoint: DEFAULT_HUB_ENDPOINT.into(),
            hub_token: None,
        }
    }
}

/// Hand-written so that a token never ends up in a log through `{:?}`.
impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("pypi_index", &self.pypi_index)
            .field("hub_endpoint", &self.hub_endpoint)
            .field("hub_token", &self.hub_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

pub(crate) fn client(ctx: &Ctx) -> Result<Client, ModelError> {
    Client::builder()
        .user_agent(concat!("r2reasoner/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(READ_TIMEOUT)
        .build()
        .map_err(|e| ctx.http("(client setup)", error_chain(&e)))
}

/// GET with the status checked; `hint` is appended to 401/403/404 errors, where the user
/// can usually do something about it.
pub(crate) fn get(
    client: &Client,
    ctx: &Ctx,
    url: &str,
    headers: HeaderMap,
    hint: &str,
) -> Result<Response, ModelError> {
    let resp = client
        .get(url)
        .headers(headers)
        .send()
        .map_err(|e| ctx.http(url, error_chain(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let reason = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
            if !hint.is_empty() =>
        {
            format!("HTTP {status} ({hint})")
        }
        _ => format!("HTTP {status}"),
    };
    Err(ctx.http(url, reason))
}

/// Streams a response body into `out`, with a progress bar labelled `label`.
pub(crate) fn copy_body(
    ctx: &Ctx,
    url: &str,
    mut resp: Response,
    out: &mut dyn Write,
    label: String,
    progress: bool,
) -> Result<u64, ModelError> {
    let expected = resp.content_length();
    let bar = bytes_bar(progress, expected, label);
    let n = copy_with(&mut resp, out, |n| bar.inc(n)).map_err(|e| match e {
        CopyError::Read(e) => ctx.http(url, format!("reading the body: {}", error_chain(&e))),
        CopyError::Write(e) => ctx.io("(temp file)", "write", e),
    })?;
    bar.finish_and_clear();
    if let Some(len) = expected {
        if n != len {
            return Err(ctx.http(
                url,
                format!("body ended after {n} of {len} bytes (connection dropped?)"),
            ));
        }
    }
    Ok(n)
}

pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Like `io::copy`, but keeps read and write failures apart (they need different messages)
/// and reports progress.
pub(crate) fn copy_with(
    r: &mut dyn Read,
    w: &mut dyn Write,
    mut on_chunk: impl FnMut(u64),
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
        on_chunk(n as u64);
    }
}

/// reqwest's top-level message ("error sending request") hides the cause; show the chain.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Everything a download needs besides the part itself.
pub(crate) struct Fetcher<'a> {
    pub client: Client,
    pub endpoints: &'a Endpoints,
    /// Where wheels are downloaded to: the cache directory, so they share its file system
    /// and its clean-up of stale temp files.
    pub scratch: &'a Path,
    /// Every temp file of this model starts with this, so a later fetch can remove the
    /// leftovers of a killed one.
    pub temp_prefix: String,
    pub progress: bool,
}
