//! The `openai` backend: chat completions over HTTP(S) against any OpenAI-compatible
//! server (OpenAI, vLLM, llama.cpp's server, r2reasoner's own gateway...).
//!
//! Each call streams (`stream: true`, usage requested in the last chunk) so the read
//! timeout bounds the silence between chunks rather than the whole generation; a server
//! that answers with a plain JSON body is accepted too. 429, 408, 5xx, timeouts, connection
//! failures, truncated streams and malformed bodies are retried with exponential backoff and
//! jitter (honouring Retry-After) up to `max_retries`, then end in a clean `BackendError`.
//! A prompt the server says does not fit its context is a `ContextOverflow`, not retried; a
//! 200 stream that ends before any data is asked again at once without streaming, since
//! some servers (llama-cpp-python) report errors found after the headers that way.
//!
//! The API key is read once from the environment variable named in the config; it is sent
//! only in the Authorization header (the backend's `Debug` redacts it) and never appears in
//! logs, traces or errors. Request bodies and headers are never logged.

mod retry;
mod sse;
mod wire;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use r2_pool::{Backend, BackendError, GenRequest, GenResponse, RemoteSpec};

pub use retry::{is_retryable_status, parse_retry_after, parse_retry_after_at, RetryPolicy};
pub use sse::SseParser;
use wire::{Attempt, StreamBody};

pub struct OpenAiBackend {
    id: String,
    url: String,
    api_model: String,
    api_key: Option<String>,
    client: reqwest::Client,
    /// Keeps no idle connections: for the request after an empty stream, since the server
    /// may close the connection that stream came on (uvicorn does, after the error), and a
    /// pooled connection closing under a request fails it.
    fresh: reqwest::Client,
    retry: RetryPolicy,
    read_timeout: Duration,
}

// Hand-written so the key can never be printed by `{:?}`.
impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("api_model", &self.api_model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OpenAiBackend {
    /// Build the backend of pool model `id`. Fails (as a load error) when the config names
    /// an API-key variable that is not set.
    pub fn new(id: &str, spec: &RemoteSpec) -> Result<Self, BackendError> {
        let load = |reason: String| BackendError::Load {
            model: id.to_string(),
            reason,
        };
        let api_key = match &spec.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                _ => {
                    return Err(load(format!(
                        "the API key variable {var} (api_key_env) is not set"
                    )))
                }
            },
            None => None,
        };
        let read_timeout = Duration::from_secs_f64(spec.read_timeout_s);
        let client = |idle: usize| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs_f64(spec.connect_timeout_s))
                .read_timeout(read_timeout)
                .pool_max_idle_per_host(idle)
                .build()
                .map_err(|e| load(format!("cannot build the HTTP client: {e}")))
        };
        Ok(Self {
            id: id.to_string(),
            url: format!("{}/chat/completions", spec.base_url),
            api_model: spec.api_model.clone(),
            api_key,
            client: client(usize::MAX)?,
            fresh: client(0)?,
            retry: RetryPolicy::new(spec.max_retries),
            read_timeout,
        })
    }

    /// Replace the retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn err(&self, reason: impl Into<String>) -> BackendError {
        BackendError::Inference {
            model: self.id.clone(),
            reason: reason.into(),
        }
    }

    /// One HTTP attempt. `Err` carries whether retrying may help and the server's Retry-After.
    /// `stream: false` is the retry of an empty stream, sent over a new connection.
    async fn attempt(&self, request: &GenRequest, stream: bool) -> Result<GenResponse, Attempt> {
        let body = wire::request_body(&self.api_model, request, stream);
        let client = if stream { &self.client } else { &self.fresh };
        let mut http = client.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        let response = http.send().await.map_err(Attempt::from_reqwest)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let text = response.text().await.unwrap_or_default();
            if let Some((needed, limit)) = wire::context_overflow(status, &text) {
                return Err(Attempt::ContextOverflow { needed, limit });
            }
            return Err(Attempt::Status {
                status,
                message: wire::error_message(&text),
                retry_after,
            });
        }
        let is_sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            let bytes = response.bytes().await.map_err(Attempt::from_reqwest)?;
            return wire::parse_json_response(&bytes, request);
        }
        let mut body = StreamBody::default();
        let mut stream = response.bytes_stream();
        let mut received = false;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Attempt::from_reqwest)?;
            received |= !chunk.is_empty();
            if let Some(r) = body.push(&chunk, request)? {
                return Ok(r);
            }
        }
        Err(if received {
            StreamBody::truncated()
        } else {
            Attempt::EmptyStream
        })
    }
}

/// What an attempt makes of a response body, without a network: the entry points of the
/// fuzz targets (`crates/fuzz-targets`), which feed them arbitrary bytes. Not a stable API;
/// failures come back as text.
#[doc(hidden)]
pub mod body {
    use r2_pool::{GenRequest, GenResponse};

    use crate::wire::{self, StreamBody};

    /// A `text/event-stream` body arriving in `chunks`; one that ends before
    /// `data: [DONE]` is truncated.
    pub fn read_stream<'c>(
        chunks: impl IntoIterator<Item = &'c [u8]>,
        request: &GenRequest,
    ) -> Result<GenResponse, String> {
        let mut body = StreamBody::default();
        for chunk in chunks {
            if let Some(r) = body.push(chunk, request).map_err(|e| e.to_string())? {
                return Ok(r);
            }
        }
        Err(StreamBody::truncated().to_string())
    }

    /// A plain JSON (`chat.completion`) body.
    pub fn read_json(bytes: &[u8], request: &GenRequest) -> Result<GenResponse, String> {
        wire::parse_json_response(bytes, request).map_err(|e| e.to_string())
    }

    /// The message reported for a non-2xx body.
    pub fn error_message(body: &str) -> String {
        wire::error_message(body)
    }
}

#[async_trait]
impl Backend for OpenAiBackend {
    async fn generate(&self, request: &GenRequest) -> Result<GenResponse, BackendError> {
        let start = Instant::now();
        let mut retry = 0;
        loop {
            let mut outcome = self.attempt(request, true).await;
            if matches!(outcome, Err(Attempt::EmptyStream)) {
                // Some servers (llama-cpp-python) report an error found after the headers,
                // such as a prompt over the context, as an empty 200 stream. Asked again
                // without streaming, they answer it with a status and a message.
                outcome = self.attempt(request, false).await;
            }
            let failure = match outcome {
                Ok(r) => return Ok(r),
                Err(f) => f,
            };
            if !failure.retryable() || retry >= self.retry.max_retries {
                tracing::warn!(model = %self.id, attempts = retry + 1, error = %failure, "upstream call failed");
                return Err(match failure {
                    Attempt::ContextOverflow { needed, limit } => BackendError::ContextOverflow {
                        model: self.id.clone(),
                        needed,
                        limit,
                    },
                    Attempt::Timeout => BackendError::Timeout {
                        model: self.id.clone(),
                        seconds: start
                            .elapsed()
                            .as_secs_f64()
                            .max(self.read_timeout.as_secs_f64()),
                    },
                    other => self.err(format!(
                        "{other} (after {} attempt{})",
                        retry + 1,
                        if retry == 0 { "" } else { "s" }
                    )),
                });
            }
            let delay = self.retry.delay(retry, failure.retry_after());
            tracing::info!(model = %self.id, retry = retry + 1, delay_ms = delay.as_millis() as u64, error = %failure, "retrying upstream call");
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }
}
