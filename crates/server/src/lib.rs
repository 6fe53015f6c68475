//! The OpenAI-compatible gateway behind `r2reasoner serve`.
//!
//! `app(state)` is the whole HTTP surface as an axum `Router` (tests call it without a
//! socket); `serve` runs it on a listener until a shutdown signal, finishing in-flight
//! requests first. Handlers are thin: parsing and shapes live in `wire`, the one error type
//! in `error`. Nothing here logs request bodies, headers or keys.

mod auth;
mod chat;
mod error;
mod metrics;
mod traces;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use r2_executor::ExecOptions;
use r2_pool::{Pool, ServerConfig};
use serde_json::json;
use tokio::sync::Semaphore;

pub use auth::{digest, Keys};
pub use error::{ApiError, ErrorKind};
pub use metrics::Metrics;
pub use traces::{TraceError, TraceStore};

/// The listen address when neither `--listen` nor `[server] listen` gives one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Turns a policy name into a policy (the CLI passes one that knows learned routers).
pub type PolicyParser = Arc<
    dyn Fn(&str, &Pool) -> Result<Box<dyn r2_allocator::Policy>, r2_allocator::PolicyError>
        + Send
        + Sync,
>;

pub struct AppState {
    pub pool: Arc<Pool>,
    /// Parses `r2reasoner/<policy>` names; each name is parsed once and then reused.
    pub parser: PolicyParser,
    pub(crate) policies:
        std::sync::Mutex<std::collections::HashMap<String, Arc<dyn r2_allocator::Policy>>>,
    pub keys: Keys,
    /// The policy `model = "r2reasoner"` routes with.
    pub default_policy: String,
    pub exec: ExecOptions,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub metrics: Metrics,
    pub traces: TraceStore,
    slots: Arc<Semaphore>,
}

impl AppState {
    pub fn new(pool: Arc<Pool>, keys: Keys, server: &ServerConfig, traces: TraceStore) -> Self {
        let default_policy = pool.config.policy_or_default();
        let request_timeout = Duration::from_secs_f64(server.request_timeout_s);
        Self {
            exec: ExecOptions {
                step_timeout: Some(request_timeout),
                ..ExecOptions::default()
            },
            pool,
            parser: Arc::new(|name: &str, pool: &Pool| r2_allocator::parse_policy(name, pool)),
            policies: Default::default(),
            keys,
            default_policy,
            max_body_bytes: server.max_body_bytes,
            request_timeout,
            metrics: Metrics::default(),
            traces,
            slots: Arc::new(Semaphore::new(server.max_concurrency)),
        }
    }
}

impl AppState {
    /// Use `parser` for policy names (e.g. one that also loads learned routers).
    pub fn with_parser(mut self, parser: PolicyParser) -> Self {
        self.parser = parser;
        self
    }

    /// The policy named `name`, parsed on first use.
    pub fn policy(
        &self,
        name: &str,
    ) -> Result<Arc<dyn r2_allocator::Policy>, r2_allocator::PolicyError> {
        if let Some(p) = self.policies.lock().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(p);
        }
        let p: Arc<dyn r2_allocator::Policy> = Arc::from((self.parser)(name, &self.pool)?);
        if let Ok(mut m) = self.policies.lock() {
            // Client-chosen names: keep the cache bounded.
            if m.len() >= 256 {
                m.clear();
            }
            m.insert(name.to_string(), p.clone());
        }
        Ok(p)
    }
}

pub fn app(state: Arc<AppState>) -> Router {
    // `record` is a route layer so it sees the matched route; it wraps `require_key`, so
    // rejected requests are counted too.
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(models))
        .route("/v1/traces/{id}", get(trace))
        .route("/metrics", get(prometheus))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), record));
    Router::new()
        .route("/health", get(health))
        .route_layer(middleware::from_fn_with_state(state.clone(), record))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
}

/// Serve `app` on `listener` until `shutdown` resolves; in-flight requests (streams
/// included) are finished before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn require_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if state.keys.is_enabled() {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match state.keys.check(header) {
            Some(name) => tracing::debug!(key = name, "authorised"),
            None => return ApiError::unauthorized().into_response(),
        }
    }
    next.run(request).await
}

/// Counts every request by route and status, its latency, and errors by kind.
async fn record(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state
        .metrics
        .request(&route, status, start.elapsed().as_secs_f64());
    if let Some(ErrorKind(kind)) = response.extensions().get::<ErrorKind>() {
        state.metrics.error(kind);
    }
    response
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Unknown routes: 401 without a valid key (only /health is open), else 404.
async fn not_found(State(state): State<Arc<AppState>>, request: Request) -> ApiError {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.keys.is_enabled() && state.keys.check(header).is_none() {
        return ApiError::unauthorized();
    }
    ApiError::not_found("not_found", "no such route")
}

async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let model =
        |id: String| json!({"id": id, "object": "model", "created": 0, "owned_by": "r2reasoner"});
    let mut data = vec![model("r2reasoner".into())];
    for id in state.pool.config.ids() {
        data.push(model(format!("r2reasoner/fixed:{id}")));
    }
    data.push(model("r2reasoner/random".into()));
    for id in state.pool.config.ids() {
        data.push(model(id.to_string()));
    }
    Json(json!({"object": "list", "data": data}))
}

async fn trace(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state.traces.get(&id).await {
        Ok(Some(v)) => Ok(Json(v)),
        Ok(None) => Err(ApiError::not_found(
            "trace_not_found",
            format!("no trace '{id}'"),
        )),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
