//! A deterministic backend for tests and benchmarks: a function maps each request to text.
//! Token counts are whitespace-separated words, so cost arithmetic can be checked by hand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{Backend, BackendError, FinishReason, GenRequest, GenResponse};

type Script = dyn Fn(&GenRequest) -> Result<String, BackendError> + Send + Sync;

pub struct ScriptedBackend {
    script: Box<Script>,
    delay: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: AtomicUsize,
}

impl ScriptedBackend {
    pub fn new(
        script: impl Fn(&GenRequest) -> Result<String, BackendError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self::build(Box::new(script), Duration::ZERO))
    }

    /// Every call sleeps `delay` (asynchronously) before answering: lets tests observe concurrency.
    pub fn with_delay(
        delay: Duration,
        script: impl Fn(&GenRequest) -> Result<String, BackendError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self::build(Box::new(script), delay))
    }

    fn build(script: Box<Script>, delay: Duration) -> Self {
        Self {
            script,
            delay,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
        }
    }

    /// The most calls that were ever running at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Token count used by this backend: whitespace-separated words.
    pub fn count(text: &str) -> u32 {
        text.split_whitespace().count() as u32
    }
}

#[async_trait]
impl Backend for ScriptedBackend {
    async fn generate(&self, request: &GenRequest) -> Result<GenResponse, BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let result = (self.script)(request);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut text = result?;
        let mut finish = FinishReason::Stop;
        if let Some(cut) = request
            .stop
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(cut);
            finish = FinishReason::StopString;
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.len() > request.max_tokens as usize {
            text = words[..request.max_tokens as usize].join(" ");
            finish = FinishReason::Length;
        }
        let input_tokens = request
            .messages
            .iter()
            .map(|m| Self::count(&m.content))
            .sum();
        let output_tokens = Self::count(&text);
        Ok(GenResponse {
            token_logprobs: Some(vec![-0.1; output_tokens as usize]),
            text,
            input_tokens,
            output_tokens,
            finish,
        })
    }
}
