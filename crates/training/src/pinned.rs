//! The pinned route: a policy that executes a chosen route (label search, the oracle) and
//! collects the plan the executor ran.
//!
//! Invariants: a pinned route never asks a model to decide (no rating calls); a step the
//! allocation does not cover goes to the largest model, and no index leaves the pool; the
//! plan kept is the one of the first step allocated (every step of a run sees the same).

use std::sync::Mutex;

use async_trait::async_trait;
use r2_allocator::{Allocation, Policy, PolicyError, Route, StepContext};
use r2_decomposer::{Plan, TaskFamily};
use r2_pool::Pool;
use r2_router::policy::step_info;

/// A fixed route, for executing a chosen allocation (label search, the oracle). Steps the
/// allocation does not cover (a plan longer than expected) go to the largest model. The
/// plan the executor used is recorded.
pub struct PinnedPolicy {
    pub route: PinnedRoute,
    plan: Mutex<Option<Plan>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinnedRoute {
    Direct(usize),
    /// Model per plan position, synthesis last.
    Decompose(Vec<usize>),
}

impl PinnedPolicy {
    pub fn new(route: PinnedRoute) -> Self {
        Self {
            route,
            plan: Mutex::new(None),
        }
    }

    /// The plan seen while allocating (None for direct routes).
    pub fn plan(&self) -> Option<Plan> {
        self.plan.lock().ok().and_then(|p| p.clone())
    }
}

#[async_trait]
impl Policy for PinnedPolicy {
    fn name(&self) -> String {
        match &self.route {
            PinnedRoute::Direct(m) => format!("pinned:direct:{m}"),
            PinnedRoute::Decompose(a) => format!("pinned:{a:?}"),
        }
    }

    async fn route(&self, _q: &str, _f: TaskFamily, _pool: &Pool) -> Result<Route, PolicyError> {
        Ok(match self.route {
            PinnedRoute::Direct(model) => Route::Direct { model, score: 1.0 },
            PinnedRoute::Decompose(_) => Route::Decompose,
        })
    }

    async fn allocate(&self, step: StepContext<'_>) -> Result<Allocation, PolicyError> {
        if let Ok(mut p) = self.plan.lock() {
            if p.is_none() {
                *p = Some(step.plan.clone());
            }
        }
        let largest = step.pool.len() - 1;
        let model = match &self.route {
            PinnedRoute::Direct(m) => *m,
            PinnedRoute::Decompose(a) => {
                a.get(step_info(&step).position).copied().unwrap_or(largest)
            }
        };
        Ok(Allocation::plain(model.min(largest), 1.0))
    }
}
