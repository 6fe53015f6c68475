//! `oracle:<labels>`: the post-hoc oracle as a policy, replaying each question's cheapest
//! correct labelled route (evaluation only).
//!
//! Invariants: the route replayed is [`QuestionLabel::cheapest_correct`] under the pool's
//! active price profile, so the oracle agrees with the labels' own accounting; it never
//! calls a model to decide; a model id the pool lacks goes to the largest model.

use std::collections::HashMap;

use async_trait::async_trait;
use r2_allocator::{Allocation, Policy, PolicyError, Route, StepContext};
use r2_decomposer::TaskFamily;
use r2_pool::Pool;

use crate::labels::{QuestionLabel, RouteLabel};
use crate::pinned::{PinnedPolicy, PinnedRoute};

/// `oracle:<labels>`: replays each question's cheapest correct labelled route (evaluation
/// only). A question without a correct route goes direct to the largest model; a question
/// missing from the labels is an error for that item.
pub struct OraclePolicy {
    by_question: HashMap<String, QuestionLabel>,
    pool_config: r2_pool::PoolConfig,
    source: String,
}

impl OraclePolicy {
    pub fn new(
        labels: Vec<QuestionLabel>,
        pool_config: r2_pool::PoolConfig,
        source: String,
    ) -> Self {
        let by_question = labels
            .into_iter()
            .map(|q| (q.question.trim().to_string(), q))
            .collect();
        Self {
            by_question,
            pool_config,
            source,
        }
    }

    fn pinned(&self, question: &str) -> Result<PinnedRoute, PolicyError> {
        let q = self
            .by_question
            .get(question.trim())
            .ok_or_else(|| PolicyError::Invalid {
                policy: format!("oracle:{}", self.source),
                reason: "this question is not in the labels".into(),
            })?;
        let index = |id: &str| self.pool_config.models.iter().position(|m| m.id == id);
        let largest = self.pool_config.models.len() - 1;
        Ok(
            match q.cheapest_correct(&self.pool_config).map(|t| &t.route) {
                Some(RouteLabel::Direct { model }) => {
                    PinnedRoute::Direct(index(model).unwrap_or(largest))
                }
                Some(RouteLabel::Decompose { allocation }) => PinnedRoute::Decompose(
                    allocation
                        .iter()
                        .map(|m| index(m).unwrap_or(largest))
                        .collect(),
                ),
                None => PinnedRoute::Direct(largest),
            },
        )
    }
}

#[async_trait]
impl Policy for OraclePolicy {
    fn name(&self) -> String {
        format!("oracle:{}", self.source)
    }

    async fn route(
        &self,
        question: &str,
        family: TaskFamily,
        pool: &Pool,
    ) -> Result<Route, PolicyError> {
        PinnedPolicy::new(self.pinned(question)?)
            .route(question, family, pool)
            .await
    }

    async fn allocate(&self, step: StepContext<'_>) -> Result<Allocation, PolicyError> {
        let pinned = PinnedPolicy::new(self.pinned(step.question)?);
        pinned.allocate(step).await
    }
}
