//! The policies that need no model: one model for everything, or a seeded random choice.

use async_trait::async_trait;
use r2_decomposer::TaskFamily;
use r2_pool::Pool;

use crate::{Allocation, Policy, PolicyError, Route, StepContext};

/// Chain of thought on one model, no decomposition (the CoT baseline).
pub struct DirectPolicy {
    model: usize,
}

impl DirectPolicy {
    pub fn new(model: usize) -> Self {
        Self { model }
    }
}

#[async_trait]
impl Policy for DirectPolicy {
    fn name(&self) -> String {
        format!("direct:{}", self.model)
    }

    async fn route(&self, _q: &str, _f: TaskFamily, _pool: &Pool) -> Result<Route, PolicyError> {
        Ok(Route::Direct {
            model: self.model,
            score: 1.0,
        })
    }

    async fn allocate(&self, _step: StepContext<'_>) -> Result<Allocation, PolicyError> {
        Ok(Allocation::plain(self.model, 1.0))
    }
}

/// Decompose, then run every step on one model.
pub struct FixedPolicy {
    model: usize,
}

impl FixedPolicy {
    pub fn new(model: usize) -> Self {
        Self { model }
    }
}

#[async_trait]
impl Policy for FixedPolicy {
    fn name(&self) -> String {
        format!("fixed:{}", self.model)
    }

    async fn allocate(&self, _step: StepContext<'_>) -> Result<Allocation, PolicyError> {
        Ok(Allocation::plain(self.model, 1.0))
    }
}

/// Decompose, then pick a model uniformly at random for each step. The choice is a pure
/// function of (seed, question, step), so it does not depend on the order in which
/// concurrent steps are allocated and reruns are reproducible.
pub struct RandomPolicy {
    seed: u64,
}

impl RandomPolicy {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }
}

/// FNV-1a then splitmix64: stable across platforms and Rust versions, unlike `DefaultHasher`.
pub(crate) fn stable_hash(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[async_trait]
impl Policy for RandomPolicy {
    fn name(&self) -> String {
        format!("random:{}", self.seed)
    }

    async fn allocate(&self, step: StepContext<'_>) -> Result<Allocation, PolicyError> {
        let id = step.subtask.id.to_le_bytes();
        let kind = [matches!(step.kind, crate::StepKind::Synthesis) as u8];
        let h = stable_hash(self.seed, &[step.question.as_bytes(), &id, &kind]);
        let n = step.pool.len() as u64;
        Ok(Allocation::plain((h % n) as usize, 1.0 / n as f64))
    }
}
