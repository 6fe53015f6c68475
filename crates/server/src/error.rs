//! The one error type of the gateway: OpenAI-shaped JSON (`{"error": {"message", "type",
//! "code"}}`) with the right HTTP status.
//!
//! Invariant: every failure, unknown routes, wrong methods and extractor failures included,
//! answers in this shape with the status that matches its cause (400, 401, 404, 405, 413,
//! 415, 429, 502, 504; 500 only for the gateway's own faults); handlers never panic on input.
//! Some errors carry more fields in the `error` object (`budget_exceeded`: the budget, the
//! spend and when it resets).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use r2_executor::ExecError;
use r2_pool::BackendError;
use serde_json::json;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// OpenAI's `code`, e.g. `model_not_found`; also the `kind` label of the error metric.
    pub code: &'static str,
    pub message: String,
    pub retry_after_s: Option<u64>,
    /// More fields of the `error` object.
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code,
            message,
            retry_after_s: None,
            details: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "a valid API key is required: send `Authorization: Bearer <key>`".into(),
        )
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            "the request body must be JSON, sent with `Content-Type: application/json`".into(),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    pub fn overloaded() -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "too_many_requests",
            "the server is at its concurrency limit; retry shortly".into(),
        );
        e.retry_after_s = Some(1);
        e
    }

    /// A budgeted key that may not run this request (see `budget`): over its budget until
    /// the period resets (`budget_exceeded`, `Retry-After` = seconds until then), or with
    /// what is left reserved by its requests in flight (`too_many_requests`, retry in 1 s).
    pub fn budget(key: &str, refusal: &crate::budget::Refusal, now: i64) -> Self {
        use crate::budget::{utc, Refusal};
        match refusal {
            Refusal::Exceeded {
                budget,
                spent,
                resets_at,
            } => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "insufficient_quota",
                    "budget_exceeded",
                    format!(
                        "key '{key}' has spent ${spent:.6} of its {} budget of ${}; it resets at {}",
                        budget.period.as_str(),
                        budget.usd,
                        utc(*resets_at)
                    ),
                );
                e.retry_after_s = Some((resets_at - now).max(1) as u64);
                let details = json!({
                    "budget_usd": budget.usd,
                    "period": budget.period.as_str(),
                    "spent_usd": spent,
                    "resets_at": resets_at,
                });
                e.details = details.as_object().cloned();
                e
            }
            Refusal::Reserved {
                budget,
                spent,
                reserved,
                in_flight,
            } => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "too_many_requests",
                    format!(
                        "key '{key}' has spent ${spent:.6} of its {} budget of ${}, and its \
                         {in_flight} requests in flight reserve the rest (${reserved:.6}); \
                         retry when they finish",
                        budget.period.as_str(),
                        budget.usd
                    ),
                );
                e.retry_after_s = Some(1);
                e
            }
        }
    }

    pub fn timeout(seconds: f64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            "timeout",
            format!("the request did not finish within {seconds:.0}s"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            message.into(),
        )
    }

    pub fn from_backend(e: &BackendError) -> Self {
        match e {
            BackendError::Timeout { .. } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                "upstream_timeout",
                e.to_string(),
            ),
            BackendError::ContextOverflow { .. } => {
                Self::bad_request("context_length_exceeded", e.to_string())
            }
            BackendError::Load { .. } | BackendError::Inference { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_error",
                e.to_string(),
            ),
        }
    }

    pub fn from_exec(e: &ExecError) -> Self {
        match e {
            ExecError::EmptyQuestion => Self::bad_request("empty_content", e.to_string()),
            ExecError::Backend { source, .. } => {
                let mut api = Self::from_backend(source);
                api.message = e.to_string();
                api
            }
            ExecError::Policy(p) if p.is_input_error() => {
                Self::bad_request("invalid_policy", e.to_string())
            }
            ExecError::Policy(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_error",
                e.to_string(),
            ),
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body =
            json!({"error": {"message": self.message, "type": self.kind, "code": self.code}});
        if let (Some(details), Some(error)) = (&self.details, body["error"].as_object_mut()) {
            for (k, v) in details {
                error.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // Lets the metrics layer count errors by kind.
        resp.extensions_mut().insert(ErrorKind(self.code));
        resp
    }
}

/// Attached to error responses for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);
