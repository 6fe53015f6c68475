//! `GET /v1/traces` (recent traces, newest first, a page at a time) and `GET /v1/spend`
//! (cost per time bucket, key and model, and the budgets): what the trace viewer reads,
//! behind the same key as every other JSON route. With `[server] api_keys` set, a key sees
//! only its own traces, spend and budget, an admin key everyone's. Query parameters are validated
//! here; bad ones are 400s.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::auth::KeyName;
use crate::error::ApiError;
use crate::AppState;

/// Traces per page when the client names no `limit`, and the most it may ask for.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;
/// The most buckets a spend summary covers.
pub const MAX_BUCKETS: i64 = 1000;

/// The key whose records the caller may see: its own, unless it is an admin key or keys
/// are off (`None`: every key's).
pub(crate) fn own_only(caller: Option<Extension<KeyName>>) -> Option<String> {
    caller.and_then(|Extension(k)| (!k.admin).then_some(k.name))
}

type Params = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// The query's parameters, each named at most once and only from `known`.
fn params(query: Params, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let Query(pairs) = query.map_err(|e| {
        ApiError::bad_request("invalid_query", format!("invalid query: {}", e.body_text()))
    })?;
    for (i, (name, _)) in pairs.iter().enumerate() {
        if !known.contains(&name.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "unknown query parameter '{name}'; known: {}",
                    known.join(", ")
                ),
            ));
        }
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("query parameter '{name}' given twice"),
            ));
        }
    }
    Ok(pairs)
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// An integer parameter in `min..=max`, or `default` when absent.
fn bounded(
    pairs: &[(String, String)],
    name: &str,
    code: &'static str,
    (min, max, default): (i64, i64, i64),
) -> Result<i64, ApiError> {
    let Some(v) = param(pairs, name) else {
        return Ok(default);
    };
    v.parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                code,
                format!("{name} must be an integer from {min} to {max}"),
            )
        })
}

/// `GET /v1/traces?limit=N&before=<trace id>`: `{"object": "list", "data": [...],
/// "has_more", "next"}`; pass `next` as `before` for the following page.
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<KeyName>>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let only = own_only(caller);
    let pairs = params(query, &["limit", "before"])?;
    let limit = bounded(
        &pairs,
        "limit",
        "invalid_limit",
        (1, MAX_LIMIT as i64, DEFAULT_LIMIT as i64),
    )? as usize;
    let before = param(&pairs, "before");
    if before.is_some_and(|b| b.is_empty() || b.len() > 200) {
        return Err(ApiError::bad_request(
            "invalid_cursor",
            "before must be the id of a listed trace",
        ));
    }
    let page = state
        .traces
        .list(limit, before, only.as_deref())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "before names no stored trace of this key; pass the `next` of a previous page",
            )
        })?;
    Ok(Json(json!({
        "object": "list",
        "data": page.data,
        "has_more": page.next.is_some(),
        "next": page.next,
    })))
}

/// `GET /v1/spend?bucket=day|hour&buckets=N`: the last N buckets (UTC, the current one
/// included; default 30 days or 48 hours), one row per bucket, key and model, and each
/// budgeted key's standing (`budgets`); only the caller's own unless it is an admin key.
pub async fn spend(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<KeyName>>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let only = own_only(caller);
    let pairs = params(query, &["bucket", "buckets"])?;
    let (bucket, seconds, default) = match param(&pairs, "bucket").unwrap_or("day") {
        "day" => ("day", 86_400, 30),
        "hour" => ("hour", 3_600, 48),
        other => {
            return Err(ApiError::bad_request(
                "invalid_bucket",
                format!("bucket must be 'day' or 'hour', not '{other}'"),
            ))
        }
    };
    let buckets = bounded(
        &pairs,
        "buckets",
        "invalid_buckets",
        (1, MAX_BUCKETS, default),
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let since = (now / seconds - (buckets - 1)) * seconds;
    let data = state
        .traces
        .spend(since, seconds, only.as_deref())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let budgets: Vec<Value> = state
        .budgets
        .status()
        .into_iter()
        .filter(|s| only.as_ref().is_none_or(|k| *k == s.key))
        .map(|s| {
            json!({
                "key": s.key,
                "budget_usd": s.budget.usd,
                "period": s.budget.period.as_str(),
                "period_start": s.period_start,
                "resets_at": s.resets_at,
                "spent_usd": s.spent,
                "reserved_usd": s.reserved,
                "in_flight": s.in_flight,
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "spend",
        "scope": if only.is_some() { "own" } else { "all" },
        "bucket": bucket,
        "bucket_seconds": seconds,
        "since": since,
        "data": data,
        "budgets": budgets,
    })))
}
