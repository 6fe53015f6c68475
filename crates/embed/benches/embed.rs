//! Latency of embedding routing-sized texts: one subtask sentence (~15 words), and a batch
//! of eight (a plan's subtasks at once). The model is fetched through the cache on first
//! run. Run with `cargo bench -p r2-embed`; RAYON_NUM_THREADS sets the threads.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use r2_embed::Embedder;
use r2_models::ModelCache;

const SUBTASK: &str =
    "Compute the total cost of three apples and two pears using the prices from step 1.";

const PLAN: [&str; 8] = [
    "Find the number of students who passed both the math and the science exams.",
    "Convert the remaining distance from miles to kilometres and round to one decimal.",
    "List every prime factor of the product obtained in the previous step, in order.",
    "Write a Python function that returns the longest increasing subsequence of a list.",
    "Check whether the proposed schedule leaves each worker at least two free evenings.",
    "Compute the total cost of three apples and two pears using the prices from step 1.",
    "Decide which of the four answer options is consistent with both given statements.",
    "Summarise the results of steps 2 to 5 into a single final numeric answer.",
];

fn bench(c: &mut Criterion) {
    let cache = ModelCache::from_env().expect("a cache directory");
    let e = Embedder::default_model(&cache, true).unwrap_or_else(|err| panic!("{err}"));
    let words = SUBTASK.split_whitespace().count();
    let tokens = e.token_ids(SUBTASK).unwrap().len();
    eprintln!("subtask: {words} words, {tokens} word pieces");

    let mut g = c.benchmark_group("embed");
    g.bench_function("one subtask", |b| {
        b.iter(|| e.embed(black_box(&[SUBTASK])).unwrap())
    });
    g.bench_function("batch of 8 subtasks", |b| {
        b.iter(|| e.embed(black_box(&PLAN)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
