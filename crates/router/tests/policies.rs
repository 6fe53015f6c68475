//! Loading routers and parsing policy names against the embedded pool: a router loads only
//! for the pool it was trained for, the shipped router is the default policy, and bad
//! names are input errors. Models never run here (their backends answer nothing).

use std::collections::HashMap;
use std::sync::Arc;

use r2_decomposer::TaskFamily;
use r2_pool::{Backend, Pool, PoolConfig, ScriptedBackend};
use r2_router::features::{Featurizer, HashEncoder};
use r2_router::net::RouterNet;
use r2_router::{parse_learned, LearnedName, SHIPPED_NAME};

fn pool() -> Pool {
    pool_from(PoolConfig::embedded())
}

/// `cfg`'s models, none of which is ever called.
fn pool_from(cfg: PoolConfig) -> Pool {
    let map: HashMap<String, Arc<dyn Backend>> = cfg
        .models
        .iter()
        .map(|m| {
            let silent: Arc<dyn Backend> = ScriptedBackend::new(|_| Ok(String::new()));
            (m.id.clone(), silent)
        })
        .collect();
    Pool::new(cfg, map).unwrap()
}

fn ids(pool: &Pool) -> Vec<String> {
    (0..pool.len()).map(|m| pool.id(m).to_string()).collect()
}

#[test]
fn a_router_for_another_pool_refuses_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let features = Featurizer::new(Arc::new(HashEncoder::new(16)));
    let net = RouterNet::new(vec!["a".into(), "b".into()], features.layout(), 8, 0).unwrap();
    let path = dir.path().join("r.safetensors");
    net.save(&path).unwrap();
    let env = r2_router::RouterEnv::new(None, false);
    let pool = pool();
    let err = env
        .load_router(path.to_str().unwrap(), &pool)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("[a, b]") && err.contains("qwen2.5-coder-1.5b"),
        "{err}"
    );

    // A manifest that lies about the shapes: the error names both shapes.
    let mpath = RouterNet::manifest_path(&path);
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    m["pool"] = serde_json::json!(["a", "b", "c"]);
    std::fs::write(&mpath, m.to_string()).unwrap();
    let err = RouterNet::load(&path).unwrap_err().to_string();
    assert!(err.contains("[3, 8]") && err.contains("[2, 8]"), "{err}");
}

#[test]
fn unknown_policies_and_bad_thresholds_are_input_errors() {
    let pool = pool();
    let env = r2_router::RouterEnv::new(None, false);
    for bad in [
        "learned:/nonexistent/x.safetensors",
        "learned:x@1.5",
        "learned+agree:0",
        "learned+agree:2@0",
        "fixed:qwen2.5-coder-0.5b+agree:x",
        "bogus",
    ] {
        let e = r2_router::parse_policy(bad, &pool, &env).err().unwrap();
        assert!(e.is_input_error(), "{bad}: {e}");
    }
    assert!(r2_router::parse_policy("fixed:qwen2.5-coder-0.5b", &pool, &env).is_ok());
}

#[test]
fn learned_names_read_the_same_for_calibration_and_policies() {
    let learned = |path: &str, threshold| LearnedName {
        query_level: false,
        path: path.to_string(),
        threshold,
    };
    let read = |name: &str| parse_learned(name).map(|r| r.map_err(|e| e.to_string()));
    assert_eq!(read("learned"), Some(Ok(learned(SHIPPED_NAME, None))));
    assert_eq!(read("learned:"), Some(Ok(learned(SHIPPED_NAME, None))));
    assert_eq!(
        read("learned@0.7"),
        Some(Ok(learned(SHIPPED_NAME, Some(0.7))))
    );
    // The last `@` starts the threshold, so a path containing one needs a threshold.
    assert!(matches!(read("learned:r@x.st"), Some(Err(_))));
    assert_eq!(
        read("learned:r@x.st@0.5"),
        Some(Ok(learned("r@x.st", Some(0.5))))
    );
    assert_eq!(
        read("learned:a/r.st@0.25"),
        Some(Ok(learned("a/r.st", Some(0.25))))
    );
    let q = read("query-level:r.st").unwrap().unwrap();
    assert!(q.query_level && q.path == "r.st" && q.threshold.is_none());
    assert!(
        matches!(read("learned:r.st@1"), Some(Err(e)) if e.contains("strictly between 0 and 1"))
    );
    for other in ["oracle:l.jsonl", "fixed:m", "learned@0.5:r.st", "direct"] {
        assert_eq!(read(other), None, "{other}");
    }
}

/// The router compiled into the binary loads for the embedded default pool (with the
/// encoder its manifest names, fetched/distilled into the user's cache on first use),
/// refuses a pool without the largest model, and decides with probabilities in (0, 1).
// A plain test: on a fresh cache, loading fetches the encoder through the model cache's
// blocking API, which must not run on an async runtime's thread.
#[test]
fn the_shipped_router_belongs_to_the_embedded_pool() {
    let pool = pool();
    let env = r2_router::RouterEnv::new(None, false);
    let (net, features) = env
        .load_router(r2_router::SHIPPED_NAME, &pool)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(net.manifest.pool, ids(&pool));
    let x = features
        .route_features("What is 17 * 23 + 5?", TaskFamily::Math)
        .unwrap();
    let z = net.route_logits(&[x]).unwrap();
    assert_eq!(z[0].len(), pool.len() + 1);
    assert!(z[0].iter().all(|v| v.is_finite()));

    // It is what `ask`, `bench` and `serve` use when no policy is named.
    let default = PoolConfig::embedded().policy_or_default();
    let policy = r2_router::parse_policy(&default, &pool, &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        policy.name().starts_with("learned:shipped@") && policy.name().ends_with("+keep"),
        "{}",
        policy.name()
    );
    // Its keep decisions cover the 0.5b's maths answers under both price profiles.
    let e = policy.escalation().unwrap();
    let keep = e.keep.expect("+keep");
    assert!(keep
        .set
        .for_answer("qwen2.5-coder-0.5b", TaskFamily::Math)
        .is_some());
    let (net, _) = env.load_router(r2_router::SHIPPED_NAME, &pool).unwrap();
    for profile in ["api", "compute"] {
        assert!(net.manifest.keep_for(profile).is_ok(), "{profile}");
    }
    let plain = r2_router::parse_policy("learned", &pool, &env).unwrap();
    assert!(plain.escalation().is_none());
    // With self-consistency escalation: the same router, the suffix kept in its name.
    let checked = r2_router::parse_policy("learned@0.7+agree:3", &pool, &env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(checked.name(), "learned:shipped@0.7+agree:3");
    assert_eq!(checked.escalation().map(|e| e.samples), Some(3));

    let mut cfg = PoolConfig::embedded();
    cfg.models.pop();
    let smaller = pool_from(cfg);
    let err = env
        .load_router(r2_router::SHIPPED_NAME, &smaller)
        .err()
        .expect("a pool mismatch");
    assert!(err.to_string().contains("trained for the pool"), "{err}");
}

#[test]
fn keep_reads_its_decisions_from_the_router_the_policy_names() {
    use r2_signals::{KeepFeature, KeepModel, Logistic};
    let dir = tempfile::tempdir().unwrap();
    let pool = pool();
    let env = r2_router::RouterEnv::new(None, false);
    let features = Featurizer::new(Arc::new(HashEncoder::new(16)));
    let mut net = RouterNet::new(ids(&pool), features.layout(), 8, 0).unwrap();
    let path = dir.path().join("r.safetensors");
    net.save(&path).unwrap();
    let name = format!("learned:{}+keep", path.display());

    // Without keep decisions in its manifest: an input error saying how to fit them.
    let err = r2_router::parse_policy(&name, &pool, &env).err().unwrap();
    assert!(err.is_input_error());
    assert!(err.to_string().contains("train signals --router"), "{err}");

    let keep = KeepModel {
        model: pool.id(1).to_string(),
        features: vec![KeepFeature::Confidence],
        logistic: Logistic {
            mean: vec![0.8],
            scale: vec![0.1],
            weights: vec![2.0],
            bias: 0.0,
        },
        threshold: 0.7,
    };
    net.manifest.keep = vec![r2_allocator::KeepSet {
        profile: pool.config.price_profile.clone(),
        try_at: 0.0,
        families: vec![TaskFamily::Math],
        models: vec![keep.clone()],
        calibrated_for: "a test".into(),
    }];
    net.save(&path).unwrap();
    let policy = r2_router::parse_policy(&name, &pool, &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(policy.name().ends_with("+keep"), "{}", policy.name());
    let set = policy.escalation().unwrap().keep.unwrap().set;
    assert_eq!(set.for_answer(pool.id(1), TaskFamily::Math), Some(&keep));
    assert_eq!(set.for_answer(pool.id(1), TaskFamily::MultipleChoice), None);
    assert_eq!(set.for_answer(pool.id(0), TaskFamily::Math), None);

    // Decisions calibrated under other prices only: an error naming the profiles it has.
    net.manifest.keep[0].profile = "other".into();
    net.save(&path).unwrap();
    let err = r2_router::parse_policy(&name, &pool, &env).err().unwrap();
    assert!(err.to_string().contains("'other'"), "{err}");
    net.manifest.keep[0].profile = pool.config.price_profile.clone();

    // A decision for a model outside its pool, or one whose parts do not fit, is refused.
    for broken in [
        KeepModel {
            model: "gpt-x".into(),
            ..keep.clone()
        },
        KeepModel {
            features: vec![KeepFeature::Confidence, KeepFeature::Program],
            ..keep.clone()
        },
    ] {
        net.manifest.keep[0].models = vec![broken];
        net.save(&path).unwrap();
        let err = r2_router::parse_policy(&name, &pool, &env).err().unwrap();
        assert!(err.is_input_error(), "{err}");
    }
}
