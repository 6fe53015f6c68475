//! The OpenAI-compatible gateway behind `r2reasoner serve`.
//!
//! `app(state)` is the whole HTTP surface as an axum `Router` (tests call it without a
//! socket); `serve` runs it on a listener until a shutdown signal, finishing in-flight
//! requests first. Handlers are thin: parsing and shapes live in `wire`, the one error type
//! in `error`. Nothing here logs request bodies, headers or keys. Per-key budgets and their
//! reservations are in `budget`.

mod auth;
pub mod budget;
mod chat;
mod error;
mod history;
mod metrics;
mod traces;
mod ui;
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
pub use budget::Budgets;
pub use error::{ApiError, ErrorKind};
pub use history::{DEFAULT_LIMIT, MAX_BUCKETS, MAX_LIMIT};
pub use metrics::Metrics;
pub use traces::{Page, TraceError, TraceMeta, TraceStore};

/// The listen address when neither `--listen` nor `[server] listen` gives one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Turns a policy name into a policy. The CLI passes one that also loads learned routers
/// and label files; it runs only at startup, on names from the operator's config.
pub type PolicyParser = Arc<
    dyn Fn(&str, &Pool) -> Result<Box<dyn r2_allocator::Policy>, r2_allocator::PolicyError>
        + Send
        + Sync,
>;

/// Why the gateway's state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Policy(#[from] PolicyLoadError),
    /// The keys' spend so far this period could not be read from the trace store.
    #[error("reading the API keys' spend for their budgets: {0}")]
    Spend(#[from] TraceError),
}

/// A policy of the config that could not be loaded at startup.
#[derive(Debug, thiserror::Error)]
#[error("policy {name} (\"{spec}\"): {source}")]
pub struct PolicyLoadError {
    /// `policy` for the default, else `server.policies.<name>`.
    pub name: String,
    pub spec: String,
    #[source]
    pub source: r2_allocator::PolicyError,
}

pub struct AppState {
    pub pool: Arc<Pool>,
    /// The policy `model = "r2reasoner"` routes with.
    pub default_policy: Arc<dyn r2_allocator::Policy>,
    /// `[server] policies`, loaded at startup: what `r2reasoner/<name>` may name besides
    /// the baselines that need no file.
    pub exposed: std::collections::BTreeMap<String, Arc<dyn r2_allocator::Policy>>,
    pub keys: Keys,
    pub exec: ExecOptions,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub metrics: Metrics,
    pub traces: TraceStore,
    /// `budget_usd` per `period` of the `[server] api_keys` entries that set one.
    pub budgets: Arc<Budgets>,
    slots: Arc<Semaphore>,
}

impl AppState {
    /// Loads the default policy and every policy `[server] policies` exposes with `parser`
    /// (which may read files; requests never reach `parser`), and the budgets of
    /// `server.api_keys` with what each key spent so far this period (from `traces`).
    pub fn new(
        pool: Arc<Pool>,
        keys: Keys,
        server: &ServerConfig,
        traces: TraceStore,
        parser: &PolicyParser,
    ) -> Result<Self, StartError> {
        let load = |name: String, spec: &str| {
            parser(spec, &pool)
                .map(Arc::from)
                .map_err(|source| PolicyLoadError {
                    name,
                    spec: spec.to_string(),
                    source,
                })
        };
        let default_policy = load("policy".into(), &pool.config.policy_or_default())?;
        let mut exposed = std::collections::BTreeMap::new();
        for (name, spec) in &server.policies {
            exposed.insert(name.clone(), load(format!("server.policies.{name}"), spec)?);
        }
        let request_timeout = Duration::from_secs_f64(server.request_timeout_s);
        let budgets = Arc::new(Budgets::load(&server.api_keys, &traces)?);
        Ok(Self {
            exec: ExecOptions {
                step_timeout: Some(request_timeout),
                ..ExecOptions::default()
            },
            pool,
            default_policy,
            exposed,
            keys,
            max_body_bytes: server.max_body_bytes,
            request_timeout,
            metrics: Metrics::default(),
            traces,
            budgets,
            slots: Arc::new(Semaphore::new(server.max_concurrency)),
        })
    }

    /// The parser that knows only the policies that need no file (`fixed`, `direct`,
    /// `random`, `llm-rated`, with any check suffix).
    pub fn baseline_parser() -> PolicyParser {
        Arc::new(|name: &str, pool: &Pool| r2_allocator::parse_policy(name, pool))
    }

    /// The policy a client names as `r2reasoner/<name>`: one the config exposes, else a
    /// baseline that needs no file. Nothing here reads a file.
    pub fn client_policy(&self, name: &str) -> Option<Arc<dyn r2_allocator::Policy>> {
        if let Some(p) = self.exposed.get(name) {
            return Some(p.clone());
        }
        r2_allocator::parse_policy(name, &self.pool)
            .ok()
            .map(Arc::from)
    }
}

pub fn app(state: Arc<AppState>) -> Router {
    // `record` is a route layer so it sees the matched route; it wraps `require_key`, so
    // rejected requests are counted too.
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(models))
        .route("/v1/traces", get(history::list))
        .route("/v1/traces/{id}", get(trace))
        .route("/v1/spend", get(history::spend))
        .route("/metrics", get(prometheus))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), record));
    Router::new()
        .route("/health", get(health))
        .merge(ui::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), record))
        .merge(protected)
        .method_not_allowed_fallback(method_not_allowed)
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

async fn require_key(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.keys.is_enabled() {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match state.keys.caller(header) {
            Some((name, admin)) => {
                tracing::debug!(key = name, "authorised");
                let name = auth::KeyName {
                    name: name.to_string(),
                    admin,
                };
                request.extensions_mut().insert(name);
            }
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

fn authorised(state: &AppState, request: &Request) -> bool {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    !state.keys.is_enabled() || state.keys.check(header).is_some()
}

/// Unknown routes: 401 without a valid key (only /health is open), else 404.
async fn not_found(State(state): State<Arc<AppState>>, request: Request) -> ApiError {
    if !authorised(&state, &request) {
        return ApiError::unauthorized();
    }
    ApiError::not_found("not_found", "no such route")
}

/// A known route with another method (e.g. `GET /v1/chat/completions`): 401 without a
/// valid key on a protected route, else 405, both OpenAI-shaped.
async fn method_not_allowed(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let public = path == "/health" || ui::is_ui(&path);
    if !public && !authorised(&state, &request) {
        return ApiError::unauthorized().into_response();
    }
    let allow = if path == "/v1/chat/completions" {
        "POST"
    } else {
        "GET"
    };
    let mut resp = ApiError::method_not_allowed(request.method().as_str(), &path).into_response();
    resp.headers_mut()
        .insert(header::ALLOW, axum::http::HeaderValue::from_static(allow));
    resp
}

async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let model =
        |id: String| json!({"id": id, "object": "model", "created": 0, "owned_by": "r2reasoner"});
    let mut data = vec![model("r2reasoner".into())];
    for name in state.exposed.keys() {
        data.push(model(format!("r2reasoner/{name}")));
    }
    for id in state.pool.config.ids() {
        data.push(model(format!("r2reasoner/fixed:{id}")));
    }
    data.push(model("r2reasoner/random".into()));
    for id in state.pool.config.ids() {
        data.push(model(id.to_string()));
    }
    Json(json!({"object": "list", "data": data}))
}

/// `GET /v1/traces/{id}`: a key's own traces (any trace for an admin key, or without keys).
async fn trace(
    State(state): State<Arc<AppState>>,
    caller: Option<axum::Extension<auth::KeyName>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(id) = id.map_err(|e| {
        ApiError::bad_request(
            "invalid_trace_id",
            format!("invalid trace id: {}", e.body_text()),
        )
    })?;
    let only = history::own_only(caller);
    match state.traces.get(&id, only.as_deref()).await {
        Ok(Some(v)) => Ok(Json(v)),
        Ok(None) => Err(ApiError::not_found(
            "trace_not_found",
            format!("no trace '{id}'"),
        )),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

async fn prometheus(
    State(state): State<Arc<AppState>>,
    caller: Option<axum::Extension<auth::KeyName>>,
) -> Response {
    let only = history::own_only(caller);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state
            .metrics
            .render(&state.budgets.status(), only.as_deref()),
    )
        .into_response()
}
