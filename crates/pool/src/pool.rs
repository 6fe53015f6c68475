//! `Pool`: each configured model paired with its backend, a concurrency bound and a price.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::backend::{Backend, BackendError, GenRequest, GenResponse};
use crate::config::PoolConfig;

struct Slot {
    backend: Arc<dyn Backend>,
    permits: Arc<Semaphore>,
}

pub struct Pool {
    pub config: PoolConfig,
    slots: Vec<Slot>,
}

/// One finished model call, priced under the pool's active profile.
#[derive(Debug, Clone)]
pub struct PoolCall {
    pub model: usize,
    pub response: GenResponse,
    pub cost_usd: f64,
    pub latency: Duration,
}

impl Pool {
    /// Pair every model in `config` with a backend. Fails if any model has none.
    pub fn new(
        config: PoolConfig,
        mut backends: HashMap<String, Arc<dyn Backend>>,
    ) -> Result<Self, String> {
        let mut slots = Vec::with_capacity(config.models.len());
        for m in &config.models {
            let backend = backends
                .remove(&m.id)
                .ok_or_else(|| format!("no backend was provided for model '{}'", m.id))?;
            slots.push(Slot {
                backend,
                permits: Arc::new(Semaphore::new(m.max_concurrency as usize)),
            });
        }
        Ok(Self { config, slots })
    }

    /// The same backend for every model: for tests with a scripted backend.
    pub fn uniform(config: PoolConfig, backend: Arc<dyn Backend>) -> Self {
        let map = config
            .models
            .iter()
            .map(|m| (m.id.clone(), backend.clone()))
            .collect();
        Self::new(config, map).expect("every model has the backend")
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn id(&self, model: usize) -> &str {
        &self.config.models[model].id
    }

    /// Run one request on one model, waiting for a free slot of that model first.
    /// `timeout` covers the wait and the generation.
    pub async fn call(
        &self,
        model: usize,
        request: &GenRequest,
        timeout: Option<Duration>,
    ) -> Result<PoolCall, BackendError> {
        let slot = &self.slots[model];
        let start = Instant::now();
        let work = async {
            let _permit = slot
                .permits
                .acquire()
                .await
                .map_err(|_| BackendError::Inference {
                    model: self.id(model).to_string(),
                    reason: "pool is shutting down".into(),
                })?;
            slot.backend.generate(request).await
        };
        let response = match timeout {
            Some(t) => {
                tokio::time::timeout(t, work)
                    .await
                    .map_err(|_| BackendError::Timeout {
                        model: self.id(model).to_string(),
                        seconds: t.as_secs_f64(),
                    })??
            }
            None => work.await?,
        };
        let cost_usd = self
            .config
            .price(model)
            .cost(response.input_tokens, response.output_tokens);
        Ok(PoolCall {
            model,
            response,
            cost_usd,
            latency: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatMessage, PoolConfig, ScriptedBackend};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn calls_to_one_model_respect_max_concurrency() {
        let mut cfg = PoolConfig::embedded();
        cfg.models[0].max_concurrency = 2;
        let backend = ScriptedBackend::with_delay(Duration::from_millis(20), |_| Ok("ok".into()));
        let pool = Arc::new(Pool::uniform(cfg, backend.clone()));
        let req = GenRequest::new(vec![ChatMessage::user("hi")], 8);
        let mut handles = Vec::new();
        for _ in 0..6 {
            let (pool, req) = (pool.clone(), req.clone());
            handles.push(tokio::spawn(async move {
                pool.call(0, &req, None).await.unwrap()
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(backend.max_in_flight(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn different_models_run_concurrently() {
        let cfg = PoolConfig::embedded();
        let backend = ScriptedBackend::with_delay(Duration::from_millis(50), |_| Ok("ok".into()));
        let pool = Arc::new(Pool::uniform(cfg, backend.clone()));
        let req = GenRequest::new(vec![ChatMessage::user("hi")], 8);
        let mut handles = Vec::new();
        for m in 0..3 {
            let (pool, req) = (pool.clone(), req.clone());
            handles.push(tokio::spawn(async move {
                pool.call(m, &req, None).await.unwrap()
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(backend.max_in_flight(), 3);
    }

    #[tokio::test]
    async fn cost_uses_the_active_profile_and_timeouts_fire() {
        let mut cfg = PoolConfig::embedded();
        cfg.set_price_profile("api").unwrap();
        let pool = Pool::uniform(
            cfg,
            ScriptedBackend::new(|_| Ok("one two three four".into())),
        );
        let req = GenRequest::new(vec![ChatMessage::user("a b")], 100);
        let call = pool.call(2, &req, None).await.unwrap();
        assert_eq!(
            (call.response.input_tokens, call.response.output_tokens),
            (2, 4)
        );
        assert!((call.cost_usd - (2.0 * 2.5 + 4.0 * 10.0) / 1e6).abs() < 1e-15);
        assert_eq!(pool.call(0, &req, None).await.unwrap().cost_usd, 0.0);

        let slow = Pool::uniform(
            PoolConfig::embedded(),
            ScriptedBackend::with_delay(Duration::from_secs(5), |_| Ok("x".into())),
        );
        let err = slow
            .call(0, &req, Some(Duration::from_millis(10)))
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Timeout { .. }), "{err}");
    }
}
