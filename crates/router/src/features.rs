//! Features of a routing decision: sentence embeddings of the subtask and of the question,
//! plus structural features (position, plan length, dependencies, lengths, task family).
//!
//! The layout is recorded in every router's manifest; a router refuses features of
//! another layout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use r2_decomposer::TaskFamily;
use serde::{Deserialize, Serialize};

use crate::RouterError;

/// Turns text into fixed-size vectors.
pub trait Encoder: Send + Sync {
    /// Recorded in the manifest, e.g. `all-minilm-l6-v2` or `hash-256`.
    fn name(&self) -> String;
    fn dim(&self) -> usize;
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RouterError>;
}

/// Signed feature hashing of lower-cased word unigrams and bigrams, L2-normalised. No
/// model to load: for tests and for pools too small to justify an embedding model.
pub struct HashEncoder {
    dim: usize,
}

impl HashEncoder {
    pub fn new(dim: usize) -> Self {
        Self { dim: dim.max(8) }
    }
}

impl Encoder for HashEncoder {
    fn name(&self) -> String {
        format!("hash-{}", self.dim)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RouterError> {
        Ok(texts
            .iter()
            .map(|t| {
                let words: Vec<String> = t
                    .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
                    .filter(|w| !w.is_empty())
                    .map(|w| w.to_lowercase())
                    .collect();
                let mut v = vec![0f32; self.dim];
                let mut add = |key: &str| {
                    let h = crate::rng::fnv1a(key);
                    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
                    v[(h % self.dim as u64) as usize] += sign;
                };
                for (i, w) in words.iter().enumerate() {
                    add(w);
                    if let Some(next) = words.get(i + 1) {
                        add(&format!("{w} {next}"));
                    }
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
                v
            })
            .collect())
    }
}

/// `r2-embed`'s fixed-size embeddings as feature rows.
fn rows(
    embedded: Result<Vec<r2_embed::Embedding>, r2_embed::EmbedError>,
) -> Result<Vec<Vec<f32>>, RouterError> {
    embedded
        .map(|v| v.into_iter().map(|e| e.to_vec()).collect())
        .map_err(|e| RouterError::Encoder(e.to_string()))
}

/// all-MiniLM-L6-v2 through candle (crate `r2-embed`).
pub struct MiniLm(pub Arc<r2_embed::Embedder>);

impl Encoder for MiniLm {
    fn name(&self) -> String {
        "all-minilm-l6-v2".to_string()
    }

    fn dim(&self) -> usize {
        r2_embed::DIM
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RouterError> {
        rows(self.0.embed(texts))
    }
}

/// The static table distilled from all-MiniLM-L6-v2 (`r2_embed::DistilledEmbedder`): the
/// same 384 dimensions, no attention at query time, so a decision costs microseconds.
pub struct MiniLmDistilled(pub Arc<r2_embed::DistilledEmbedder>);

/// How [`MiniLmDistilled`] is named in manifests and `--encoder`.
pub const MINILM_DISTILLED: &str = "all-minilm-l6-v2-distilled";

impl Encoder for MiniLmDistilled {
    fn name(&self) -> String {
        MINILM_DISTILLED.to_string()
    }

    fn dim(&self) -> usize {
        r2_embed::DIM
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RouterError> {
        rows(self.0.embed(texts))
    }
}

/// The shape of the feature vectors a router was trained on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureLayout {
    pub encoder: String,
    pub embed_dim: usize,
    pub step_dim: usize,
    pub route_dim: usize,
}

/// Structural step features: position/len, len/8, deps/4, ln chars (step), ln chars
/// (question), synthesis flag, then the family one-hot.
const STEP_STRUCT: usize = 6 + TaskFamily::ALL.len();
/// Structural question features: ln chars, then the family one-hot.
const ROUTE_STRUCT: usize = 1 + TaskFamily::ALL.len();

/// What is known about one step when it is allocated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    pub text: String,
    /// 0-based position in the plan; the synthesis step comes after the last subtask.
    pub position: usize,
    /// Subtasks in the plan (the synthesis step not counted).
    pub plan_len: usize,
    pub depends_on: usize,
    pub synthesis: bool,
}

/// Distinct texts whose embeddings a featurizer keeps (then it starts over).
const EMBED_CACHE_CAP: usize = 50_000;

pub struct Featurizer {
    encoder: Arc<dyn Encoder>,
    cache: Mutex<HashMap<String, Arc<Vec<f32>>>>,
}

impl Featurizer {
    pub fn new(encoder: Arc<dyn Encoder>) -> Self {
        Self {
            encoder,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn layout(&self) -> FeatureLayout {
        let e = self.encoder.dim();
        FeatureLayout {
            encoder: self.encoder.name(),
            embed_dim: e,
            step_dim: 2 * e + STEP_STRUCT,
            route_dim: e + ROUTE_STRUCT,
        }
    }

    /// Embeddings of `texts`, computed once per distinct text (questions recur for every
    /// step of their plan and every rollout).
    fn embed(&self, texts: &[&str]) -> Result<Vec<Arc<Vec<f32>>>, RouterError> {
        // Hits are taken out under the lock at once, so a concurrent clear (the cache is
        // bounded) cannot lose them between lookup and use.
        let mut found: HashMap<&str, Arc<Vec<f32>>> = HashMap::with_capacity(texts.len());
        let mut missing: Vec<&str> = Vec::new();
        {
            let cache = self.cache.lock().map_err(|_| RouterError::Poisoned)?;
            for &t in texts {
                match cache.get(t) {
                    Some(v) => {
                        found.insert(t, v.clone());
                    }
                    None => missing.push(t),
                }
            }
        }
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let vectors = self.encoder.encode(&missing)?;
            if vectors.len() != missing.len() {
                return Err(RouterError::Encoder(format!(
                    "{} texts gave {} embeddings",
                    missing.len(),
                    vectors.len()
                )));
            }
            let mut cache = self.cache.lock().map_err(|_| RouterError::Poisoned)?;
            if cache.len() + missing.len() > EMBED_CACHE_CAP {
                cache.clear();
            }
            for (t, v) in missing.iter().zip(vectors) {
                let v = Arc::new(v);
                cache.insert((*t).to_string(), v.clone());
                found.insert(t, v);
            }
        }
        texts
            .iter()
            .map(|t| {
                found
                    .get(t)
                    .cloned()
                    .ok_or_else(|| RouterError::Encoder("an embedding went missing".into()))
            })
            .collect()
    }

    pub fn route_features(
        &self,
        question: &str,
        family: TaskFamily,
    ) -> Result<Vec<f32>, RouterError> {
        let q = self.embed(&[question])?;
        let mut v = Vec::with_capacity(self.layout().route_dim);
        v.extend_from_slice(&q[0]);
        v.push(ln_chars(question));
        v.extend(one_hot(family));
        Ok(v)
    }

    pub fn step_features(
        &self,
        question: &str,
        family: TaskFamily,
        step: &StepInfo,
    ) -> Result<Vec<f32>, RouterError> {
        let e = self.embed(&[step.text.as_str(), question])?;
        let mut v = Vec::with_capacity(self.layout().step_dim);
        v.extend_from_slice(&e[0]);
        v.extend_from_slice(&e[1]);
        let len = step.plan_len.max(1) as f32;
        v.push(step.position as f32 / len);
        v.push(len / 8.0);
        v.push(step.depends_on as f32 / 4.0);
        v.push(ln_chars(&step.text));
        v.push(ln_chars(question));
        v.push(f32::from(u8::from(step.synthesis)));
        v.extend(one_hot(family));
        Ok(v)
    }
}

fn ln_chars(s: &str) -> f32 {
    ((s.chars().count() as f32) + 1.0).ln() / 8.0
}

fn one_hot(family: TaskFamily) -> impl Iterator<Item = f32> {
    TaskFamily::ALL
        .iter()
        .map(move |f| f32::from(u8::from(*f == family)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_encoder_is_deterministic_and_normalised() {
        let e = HashEncoder::new(64);
        let a = e.encode(&["Add 3 and 4", "add 3 and 4", ""]).unwrap();
        assert_eq!(a[0], a[1]);
        let n: f32 = a[0].iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
        assert!(a[2].iter().all(|x| *x == 0.0));
    }

    #[test]
    fn features_have_the_layout_dimensions() {
        let f = Featurizer::new(Arc::new(HashEncoder::new(32)));
        let l = f.layout();
        let step = StepInfo {
            text: "Compute 3 * 4".into(),
            position: 1,
            plan_len: 3,
            depends_on: 1,
            synthesis: false,
        };
        assert_eq!(
            f.step_features("Q?", TaskFamily::Math, &step)
                .unwrap()
                .len(),
            l.step_dim
        );
        assert_eq!(
            f.route_features("Q?", TaskFamily::Math).unwrap().len(),
            l.route_dim
        );
    }

    #[test]
    fn a_full_embedding_cache_starts_over_without_losing_what_is_asked() {
        let f = Featurizer::new(Arc::new(HashEncoder::new(16)));
        let q = "The question, embedded once";
        let first = f.route_features(q, TaskFamily::Math).unwrap();
        // Fill the cache to its bound with distinct step texts; each call also needs the
        // (cached) question, which a clear must not lose.
        for i in 0..EMBED_CACHE_CAP + 10 {
            let step = StepInfo {
                text: format!("step {i}"),
                position: 0,
                plan_len: 1,
                depends_on: 0,
                synthesis: false,
            };
            f.step_features(q, TaskFamily::Math, &step).unwrap();
        }
        assert!(f.cache.lock().unwrap().len() <= EMBED_CACHE_CAP);
        assert_eq!(f.route_features(q, TaskFamily::Math).unwrap(), first);
    }
}
