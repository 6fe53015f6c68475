//! Unit tests of `PoolConfig` parsing and validation.
use super::*;

fn minimal(extra_model_lines: &str, top: &str) -> String {
    format!(
        "{top}\n[[models]]\nid = \"m\"\nbackend = \"llama_cpp\"\nsource = \"m.gguf\"\nparameters = 1\ncontext_length = 512\nprices.compute = {{ input = 1.0, output = 2.0 }}\n{extra_model_lines}\n"
    )
}

fn err(text: &str) -> String {
    PoolConfig::parse(text, "pool.toml", None)
        .unwrap_err()
        .to_string()
}

#[test]
fn embedded_default_is_valid_and_ordered() {
    let cfg = PoolConfig::parse(DEFAULT_POOL_TOML, DEFAULT_POOL_NAME, None).unwrap();
    assert_eq!(
        cfg.ids(),
        ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    );
    assert_eq!(cfg.price_profile, "compute");
    assert_eq!(cfg.decomposer, "qwen2.5-coder-1.5b");
    let mut api = cfg.clone();
    api.set_price_profile("api").unwrap();
    assert_eq!(
        api.price(2),
        Price {
            input: 2.5,
            output: 10.0
        }
    );
    assert_eq!(api.ids(), cfg.ids(), "free models are ordered by size");
    assert!(cfg
        .models
        .iter()
        .all(|m| m.max_concurrency == 4 && m.reuse_prefix));
    // compute prices are proportional to parameters
    for m in &cfg.models {
        let p = m.prices["compute"];
        assert!(
            (p.input / (m.parameters as f64 / 1e9) - 0.1).abs() < 1e-9,
            "{}",
            m.id
        );
        assert!(
            (p.output / (m.parameters as f64 / 1e9) - 0.2).abs() < 1e-9,
            "{}",
            m.id
        );
    }
}

#[test]
fn cost_is_per_million_tokens() {
    let p = Price {
        input: 2.5,
        output: 10.0,
    };
    assert!((p.cost(1_000_000, 0) - 2.5).abs() < 1e-12);
    assert!((p.cost(1000, 100) - (0.0025 + 0.001)).abs() < 1e-12);
}

#[test]
fn minimal_config_parses_with_defaults() {
    let cfg = PoolConfig::parse(&minimal("", ""), "pool.toml", Some(Path::new("/cfg"))).unwrap();
    assert_eq!(cfg.decomposer, "m");
    assert_eq!(cfg.models[0].max_concurrency, 1);
    assert!(!cfg.models[0].reuse_prefix, "prefix reuse is opt-in");
    assert_eq!(
        cfg.models[0].source.local_file(),
        Some(Path::new("/cfg/m.gguf"))
    );
}

#[test]
fn errors_name_file_and_key() {
    let e = err(&minimal("colour = \"red\"", ""));
    assert!(e.contains("pool.toml") && e.contains("colour"), "{e}");
    let e = err(&minimal("", "bogus = 1"));
    assert!(e.contains("pool.toml") && e.contains("bogus"), "{e}");
    let e = err(&minimal("max_concurrency = 0", ""));
    assert!(e.contains("models[0].max_concurrency"), "{e}");
    let e = err(&minimal("", "decomposer = \"nope\""));
    assert!(e.contains("`decomposer`") && e.contains("nope"), "{e}");
    let e = err(&minimal("", "price_profile = \"api\""));
    assert!(e.contains("price_profile") && e.contains("api"), "{e}");
    let e = err(&minimal("sha256 = \"abc\"", ""));
    assert!(e.contains("models[0].sha256"), "{e}");
    let e = err(&minimal("", "").replace("llama_cpp", "vllm"));
    assert!(e.contains("models[0].backend") && e.contains("vllm"), "{e}");
    let e = err(&minimal("", "").replace("input = 1.0", "input = -1.0"));
    assert!(e.contains("models[0].prices.compute.input"), "{e}");
    let e = err("models = [");
    assert!(e.starts_with("invalid TOML in pool.toml"), "{e}");
    let e = err("");
    assert!(e.contains("`models`"), "{e}");
}

#[test]
fn duplicate_ids_and_mismatched_profiles_are_rejected() {
    let two = format!("{}{}", minimal("", ""), minimal("", ""));
    assert!(err(&two).contains("duplicate model id 'm'"));
    let other = minimal("", "")
        .replace("id = \"m\"", "id = \"n\"")
        .replace("compute", "api");
    let mixed = format!("{}{}", minimal("", ""), other);
    assert!(err(&mixed).contains("models[1].prices"));
}

#[test]
fn downloaded_models_need_a_pinned_hash() {
    let t = minimal("", "").replace("\"m.gguf\"", "\"hf://a/b/m.gguf\"");
    assert!(err(&t).contains("models[0].sha256"));
}

#[test]
fn prefix_reuse_is_a_local_model_option() {
    let cfg = PoolConfig::parse(&minimal("reuse_prefix = true", ""), "pool.toml", None).unwrap();
    assert!(cfg.models[0].reuse_prefix);
    let remote = "[[models]]\nid = \"gpt\"\nbackend = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1/\"\nparameters = 1\ncontext_length = 4096\nreuse_prefix = true\nprices.compute = { input = 1.0, output = 2.0 }\n";
    let e = err(remote);
    assert!(
        e.contains("models[0].reuse_prefix") && e.contains("llama_cpp"),
        "{e}"
    );
}
