//! `hf://owner/repo[@revision]/file`: one GET on the hub's `resolve` endpoint, which
//! redirects to a CDN. reqwest follows the redirect and drops the Authorization header when
//! the host changes, so the token only goes to the configured endpoint.

use std::io::Write;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Url;

use crate::error::{Ctx, ModelError};
use crate::http::{copy_body, get, Fetcher};

/// `{endpoint}/{repo}/resolve/{revision}/{file}`, with each path segment percent-encoded
/// (a revision like `refs/pr/1` must stay one segment).
pub(crate) fn resolve_url(
    endpoint: &str,
    repo: &str,
    revision: &str,
    file: &str,
) -> Result<Url, String> {
    let mut url =
        Url::parse(endpoint).map_err(|e| format!("bad hub endpoint '{endpoint}': {e}"))?;
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|_| format!("bad hub endpoint '{endpoint}': cannot take a path"))?;
        segs.pop_if_empty();
        segs.extend(repo.split('/'));
        segs.push("resolve");
        segs.push(revision);
        segs.extend(file.split('/'));
    }
    Ok(url)
}

pub(crate) fn download(
    f: &Fetcher<'_>,
    ctx: &Ctx,
    repo: &str,
    revision: &str,
    file: &str,
    out: &mut dyn Write,
    label: String,
) -> Result<u64, ModelError> {
    let url = resolve_url(&f.endpoints.hub_endpoint, repo, revision, file)
        .map_err(|reason| ctx.http(&f.endpoints.hub_endpoint, reason))?;
    let url = url.as_str();
    let mut headers = HeaderMap::new();
    let hint = match &f.endpoints.hub_token {
        Some(token) => {
            let mut v =
                HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                    ctx.http(url, "HF_TOKEN contains characters not allowed in a header")
                })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
            "check the repo, revision and file, and that HF_TOKEN grants access"
        }
        None => "check the repo, revision and file; gated or private repos need HF_TOKEN",
    };
    let resp = get(&f.client, ctx, url, headers, hint)?;
    copy_body(ctx, url, resp, out, label, f.progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_url_keeps_file_path_and_encodes_revision() {
        let u = resolve_url("https://hub.example/", "o/r", "main", "dir/m.gguf").unwrap();
        assert_eq!(
            u.as_str(),
            "https://hub.example/o/r/resolve/main/dir/m.gguf"
        );
        let u = resolve_url("http://127.0.0.1:9/mirror", "o/r", "refs/pr/1", "m.gguf").unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/mirror/o/r/resolve/refs%2Fpr%2F1/m.gguf"
        );
        assert!(resolve_url("not a url", "o/r", "main", "m").is_err());
    }
}
