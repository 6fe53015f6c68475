//! Latency of one allocation decision: step features (embeddings of the subtask and the
//! question plus structure) and the step head's forward pass, on one core.
//! - `network only`: the hash encoder, so the figure is the featurizer and the MLP.
//! - `distilled minilm, new subtask`: the static table distilled from the same model.
//! - `minilm, new subtask`: all-MiniLM-L6-v2 embeds a subtask never seen before (the
//!   question's embedding is cached, as it is for every step after the first).
//! - `minilm, cached`: the same subtask again (GRPO rollouts, repeated plans).
//!
//! Run with `cargo bench -p r2-router --bench decision`; RAYON_NUM_THREADS sets the threads.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use r2_decomposer::TaskFamily;
use r2_models::ModelCache;
use r2_router::features::{Encoder, Featurizer, HashEncoder, MiniLm, MiniLmDistilled, StepInfo};
use r2_router::net::RouterNet;

const QUESTION: &str =
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many \
clips in May. How many clips did Natalia sell altogether in April and May?";
const SUBTASK: &str = "Compute how many clips Natalia sold in May, half of the 48 sold in April";

fn decide(net: &RouterNet, f: &Featurizer, text: String) -> Vec<f64> {
    let step = StepInfo {
        text,
        position: 0,
        plan_len: 3,
        depends_on: 0,
        synthesis: false,
    };
    let x = f.step_features(QUESTION, TaskFamily::Math, &step).unwrap();
    net.step_logits(&[x]).unwrap().pop().unwrap()
}

fn router_for(f: &Featurizer) -> RouterNet {
    let pool = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"];
    RouterNet::new(
        pool.iter().map(|s| s.to_string()).collect(),
        f.layout(),
        64,
        0,
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decision");
    let hash = Featurizer::new(Arc::new(HashEncoder::new(384)));
    let net = router_for(&hash);
    let mut n = 0u64;
    g.bench_function("network only (hash-384)", |b| {
        b.iter(|| {
            n += 1;
            decide(&net, &hash, black_box(format!("{SUBTASK} #{n}")))
        })
    });

    let cache = ModelCache::from_env().expect("a cache directory");
    let emb =
        Arc::new(r2_embed::Embedder::default_model(&cache, true).unwrap_or_else(|e| panic!("{e}")));
    let pin = r2_embed::FilePins::all_minilm_l6_v2().weights;
    let path = r2_embed::DistilledEmbedder::table_path(&cache.models_dir(), &pin);
    let table = r2_embed::DistilledEmbedder::load_or_distil(emb.clone(), &path, |_, _| {}).unwrap();
    let distilled = Featurizer::new(Arc::new(MiniLmDistilled(Arc::new(table))));
    let net = router_for(&distilled);
    g.bench_function("distilled minilm, new subtask", |b| {
        b.iter(|| {
            n += 1;
            decide(&net, &distilled, black_box(format!("{SUBTASK} #{n}")))
        })
    });

    let enc: Arc<dyn Encoder> = Arc::new(MiniLm(emb));
    let mini = Featurizer::new(enc);
    let net = router_for(&mini);
    g.bench_function("minilm, new subtask", |b| {
        b.iter(|| {
            n += 1;
            decide(&net, &mini, black_box(format!("{SUBTASK} #{n}")))
        })
    });
    g.bench_function("minilm, cached", |b| {
        b.iter(|| decide(&net, &mini, black_box(SUBTASK.to_string())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
