//! Per-key budgets through the real gateway: three keys (`tiny` with a daily budget,
//! `big` without one, `boss` an admin key) on a pool whose backend reports fixed usage, so
//! every pass-through call with `max_tokens = 100` costs exactly
//! (50 × $1 + 100 × $2) / 1e6 = $0.00025 against `tiny`'s budget of $0.00045.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use common::{config, error_code, json};
use r2_pool::{Backend, BackendError, FinishReason, GenRequest, GenResponse, Pool};
use r2_server::{app, AppState, Keys, TraceStore};
use serde_json::Value;
use tower::ServiceExt;

const TINY: &str = "sk-tiny-budget";
const BIG: &str = "sk-no-budget";
const BOSS: &str = "sk-admin";
const CALL_COST: f64 = 0.00025;
const BUDGET: f64 = 0.00045;

fn hex(key: &str) -> String {
    r2_server::digest(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn server_table() -> String {
    format!(
        "[server]\napi_keys = [\
         {{ name = \"tiny\", sha256 = \"{}\", budget_usd = {BUDGET}, period = \"daily\" }}, \
         {{ name = \"big\", sha256 = \"{}\" }}, \
         {{ name = \"boss\", sha256 = \"{}\", admin = true }}]\n",
        hex(TINY),
        hex(BIG),
        hex(BOSS)
    )
}

/// Answers after `delay`, reporting 50 tokens in and `max_tokens` out; calls after the
/// first `answered` never finish.
struct Priced {
    delay: Duration,
    calls: AtomicUsize,
    answered: usize,
}

#[async_trait]
impl Backend for Priced {
    async fn generate(&self, r: &GenRequest) -> Result<GenResponse, BackendError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = if n < self.answered {
            self.delay
        } else {
            Duration::from_secs(3600)
        };
        tokio::time::sleep(delay).await;
        Ok(GenResponse {
            text: "ANSWER: 42".into(),
            input_tokens: 50,
            output_tokens: r.max_tokens,
            token_logprobs: None,
            finish: FinishReason::Length,
        })
    }
}

fn state(traces: TraceStore, backend: Arc<Priced>) -> Arc<AppState> {
    let cfg = config(&server_table());
    let pool = Pool::uniform(cfg.clone(), backend);
    let keys = Keys::from_config(&cfg.server.api_keys).unwrap();
    let parser = AppState::baseline_parser();
    Arc::new(AppState::new(Arc::new(pool), keys, &cfg.server, traces, &parser).unwrap())
}

fn priced(delay_ms: u64) -> Arc<Priced> {
    Arc::new(Priced {
        delay: Duration::from_millis(delay_ms),
        calls: AtomicUsize::new(0),
        answered: usize::MAX,
    })
}

const CHAT: &str =
    r#"{"model": "a", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}"#;

async fn call(
    state: &Arc<AppState>,
    key: &str,
    req: axum::http::request::Builder,
    body: Body,
) -> (u16, axum::http::HeaderMap, String) {
    let req = req
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&bytes).to_string())
}

async fn chat(state: &Arc<AppState>, key: &str) -> (u16, axum::http::HeaderMap, String) {
    let req = Request::post("/v1/chat/completions");
    call(state, key, req, Body::from(CHAT)).await
}

async fn spend(state: &Arc<AppState>, key: &str) -> Value {
    let (status, _, body) = call(state, key, Request::get("/v1/spend"), Body::empty()).await;
    assert_eq!(status, 200, "{body}");
    json(&body)
}

/// The refusal of a key over budget: 429 `budget_exceeded`, when it resets (the next UTC
/// midnight for a daily budget) in the body and as `Retry-After`.
fn assert_over_budget(status: u16, headers: &axum::http::HeaderMap, body: &str) {
    assert_eq!(
        error_code(status, body),
        (429, "budget_exceeded".into()),
        "{body}"
    );
    let e = &json(body)["error"];
    let resets_at = e["resets_at"].as_i64().unwrap();
    assert_eq!(
        resets_at % 86_400,
        0,
        "a daily budget resets at midnight UTC"
    );
    assert_eq!(
        (&e["period"], e["budget_usd"].as_f64()),
        (&Value::from("daily"), Some(BUDGET))
    );
    assert!(e["message"].as_str().unwrap().contains("tiny"), "{body}");
    let retry: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_overspend_by_at_most_one_and_an_exhausted_key_waits_for_its_reset() {
    let backend = priced(300);
    let state = state(TraceStore::open(None).unwrap(), backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(r2_server::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));

    // Eight requests at once on a budget that two calls exhaust.
    let client = reqwest::Client::new();
    let sends = (0..8).map(|_| {
        client
            .post(&url)
            .bearer_auth(TINY)
            .header("content-type", "application/json")
            .body(CHAT)
            .send()
    });
    let mut ok = 0;
    for resp in futures::future::join_all(sends).await {
        let resp = resp.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        if status == 200 {
            ok += 1;
        } else {
            // Over budget, or what is left reserved by the requests in flight.
            let code = error_code(status, &body);
            assert!(
                code == (429, "budget_exceeded".into())
                    || code == (429, "too_many_requests".into()),
                "{body}"
            );
        }
    }
    // Each admitted request started below the budget: whatever the interleaving, the
    // second is the last one (0.00025 settled or 0.000266 reserved, both under 0.00045).
    assert_eq!(ok, 2);
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        2,
        "refused requests run nothing"
    );

    let own = spend(&state, TINY).await;
    assert_eq!(own["scope"], "own");
    let b = &own["budgets"][0];
    assert_eq!(
        (&b["key"], &b["in_flight"], &b["reserved_usd"]),
        (&"tiny".into(), &0.into(), &0.0.into())
    );
    let spent = b["spent_usd"].as_f64().unwrap();
    assert!((spent - 2.0 * CALL_COST).abs() < 1e-12, "{own}");
    // Over by less than one request's reservation.
    let worst = (2.0 + 64.0 + 2.0 * 100.0) / 1e6;
    assert!(spent >= BUDGET && spent <= BUDGET + worst, "{spent}");
    let rows = own["data"].as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["key"] == "tiny"),
        "{own}"
    );
    let cost: f64 = rows.iter().map(|r| r["cost_usd"].as_f64().unwrap()).sum();
    assert!((cost - spent).abs() < 1e-12, "recorded per model: {own}");
    assert_eq!(rows[0]["model"], "a");
    assert_eq!(
        (&rows[0]["input_tokens"], &rows[0]["output_tokens"]),
        (&100.into(), &200.into())
    );

    // Now over budget: refused before running, until the period resets.
    let (status, headers, body) = chat(&state, TINY).await;
    assert_over_budget(status, &headers, &body);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2);

    // Other keys are not affected; one without a budget is never refused.
    for _ in 0..3 {
        let (status, _, body) = chat(&state, BIG).await;
        assert_eq!(status, 200, "{body}");
    }
    let theirs = spend(&state, BIG).await;
    assert!(theirs["budgets"].as_array().unwrap().is_empty(), "{theirs}");
    assert!(theirs["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["key"] == "big"));

    // The admin key sees every key.
    let all = spend(&state, BOSS).await;
    assert_eq!(all["scope"], "all");
    let mut keys: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    keys.dedup();
    assert_eq!(keys, ["big", "tiny"], "{all}");
    assert_eq!(all["budgets"][0]["key"], "tiny");

    let (_, _, metrics) = call(&state, BOSS, Request::get("/metrics"), Body::empty()).await;
    for needle in [
        format!("r2_key_budget_usd{{key=\"tiny\",period=\"daily\"}} {BUDGET}"),
        format!("r2_key_spend_usd{{key=\"tiny\",period=\"daily\"}} {spent}"),
        "r2_key_reserved_usd{key=\"tiny\",period=\"daily\"} 0".into(),
        "r2_key_budget_reset_timestamp_seconds{key=\"tiny\",period=\"daily\"}".into(),
        format!(
            "r2_key_cost_usd_total{{key=\"big\",model=\"a\"}} {}",
            3.0 * CALL_COST
        ),
        "r2_key_tokens_total{key=\"tiny\",model=\"a\",direction=\"output\"} 200".into(),
        "r2_errors_total{kind=\"budget_exceeded\"}".into(),
    ] {
        assert!(metrics.contains(&needle), "{needle} not in\n{metrics}");
    }
    // Any other key sees only its own per-key series.
    let (_, _, metrics) = call(&state, BIG, Request::get("/metrics"), Body::empty()).await;
    assert!(
        metrics.contains("r2_key_cost_usd_total{key=\"big\",model=\"a\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("key=\"tiny\""), "{metrics}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn spend_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.sqlite");
    {
        let traces = TraceStore::open(Some(&path)).unwrap();
        let state = state(traces.clone(), priced(0));
        // One streamed request and one not: both settle what they cost.
        let streamed = CHAT.replacen("{", "{\"stream\": true, ", 1);
        let req = Request::post("/v1/chat/completions");
        let (status, _, body) = call(&state, TINY, req, Body::from(streamed)).await;
        assert!(
            status == 200 && body.trim_end().ends_with("data: [DONE]"),
            "{body}"
        );
        let (status, _, body) = chat(&state, TINY).await;
        assert_eq!(status, 200, "{body}");
        let (status, headers, body) = chat(&state, TINY).await;
        assert_over_budget(status, &headers, &body);
        // What `serve` does on shutdown.
        traces.flush().await.unwrap();
    }
    // A new gateway on the same store starts from what the key spent this period.
    let backend = priced(0);
    let state = state(TraceStore::open(Some(&path)).unwrap(), backend.clone());
    let b = &spend(&state, TINY).await["budgets"][0];
    assert!(
        (b["spent_usd"].as_f64().unwrap() - 2.0 * CALL_COST).abs() < 1e-12,
        "{b}"
    );
    let (status, headers, body) = chat(&state, TINY).await;
    assert_over_budget(status, &headers, &body);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
    let (status, _, body) = chat(&state, BIG).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_request_reserves_its_worst_case_and_settles_what_it_cost() {
    // A routed request's worst case on this pool (14 calls of up to 2,048 tokens in and 100
    // out) is far above `tiny`'s budget: while one runs, it holds the rest of the budget.
    let backend = priced(300);
    let state = state(TraceStore::open(None).unwrap(), backend.clone());
    let routed = || {
        let body = r#"{"model": "r2reasoner/direct:a", "max_tokens": 100, "messages": [{"role": "user", "content": "What is 6 * 7?"}]}"#;
        let state = state.clone();
        async move {
            call(
                &state,
                TINY,
                Request::post("/v1/chat/completions"),
                Body::from(body),
            )
            .await
        }
    };
    let first = tokio::spawn(routed());
    while backend.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, headers, body) = routed().await;
    assert_eq!(
        error_code(status, &body),
        (429, "too_many_requests".into()),
        "{body}"
    );
    assert!(body.contains("in flight"), "{body}");
    assert_eq!(headers["retry-after"], "1");
    let (status, _, body) = first.await.unwrap();
    assert_eq!(status, 200, "{body}");
    // Settled with what it cost, not what it reserved.
    let cost = json(&body)["r2reasoner"]["total_cost_usd"]
        .as_f64()
        .unwrap();
    assert_eq!(cost, CALL_COST);
    let b = &spend(&state, TINY).await["budgets"][0];
    assert_eq!(
        (b["spent_usd"].as_f64(), &b["reserved_usd"]),
        (Some(cost), &0.0.into()),
        "{b}"
    );
    // Still below the budget: the next one runs, and then the key is over.
    assert_eq!(routed().await.0, 200);
    let (status, headers, body) = routed().await;
    assert_over_budget(status, &headers, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_non_streamed_request_still_pays_for_its_finished_calls() {
    // The plan call answers; the answer call never does. The client gives up meanwhile.
    let backend = Arc::new(Priced {
        delay: Duration::ZERO,
        calls: AtomicUsize::new(0),
        answered: 1,
    });
    let state = state(TraceStore::open(None).unwrap(), backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(r2_server::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    let body = r#"{"model": "r2reasoner/fixed:a", "max_tokens": 100, "messages": [{"role": "user", "content": "What is 6 * 7?"}]}"#;
    let request = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(TINY)
        .header("content-type", "application/json")
        .body(body)
        .send();
    let client = tokio::spawn(request);
    while backend.calls.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.abort();
    let _ = client.await;
    // The gateway notices the closed connection, cancels the run and settles.
    let mut budget = Value::Null;
    for _ in 0..1000 {
        budget = spend(&state, TINY).await["budgets"][0].clone();
        if budget["in_flight"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(budget["in_flight"], 0, "{budget}");
    assert_eq!(
        budget["spent_usd"].as_f64(),
        Some(CALL_COST),
        "the plan call: {budget}"
    );
    let (_, _, list) = call(&state, TINY, Request::get("/v1/traces"), Body::empty()).await;
    let t = &json(&list)["data"][0];
    assert_eq!(
        (&t["status"], &t["key"], &t["steps"]),
        (&"cancelled".into(), &"tiny".into(), &1.into()),
        "{t}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
