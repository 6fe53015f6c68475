//! The gateway's HTTP surface, called without a socket (`oneshot`) on scripted backends.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use serde_json::json;

fn chat(model: &str, content: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": content}]}).to_string()
}

#[tokio::test]
async fn routed_request_answers_with_usage_trace_and_headers() {
    let g = gateway("");
    let (status, headers, body) = send(&g, post(chat("r2reasoner", "What is 6 * 7?"))).await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "r2reasoner");
    assert_eq!(v["choices"][0]["message"]["content"], "42");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let ext = &v["r2reasoner"];
    assert_eq!(ext["policy"], "fixed:a");
    let steps = ext["steps"].as_array().unwrap();
    assert!(
        !steps.is_empty() && steps.iter().all(|s| s["model"] == "a"),
        "{ext}"
    );
    let (i, o): (u64, u64) = steps.iter().fold((0, 0), |(i, o), s| {
        (
            i + s["input_tokens"].as_u64().unwrap(),
            o + s["output_tokens"].as_u64().unwrap(),
        )
    });
    assert_eq!(v["usage"]["prompt_tokens"], i);
    assert_eq!(v["usage"]["completion_tokens"], o);
    assert_eq!(v["usage"]["total_tokens"], i + o);
    assert_eq!(
        headers["x-r2reasoner-steps"],
        steps.len().to_string().as_str()
    );
    let cost: f64 = headers["x-r2reasoner-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((cost - ext["total_cost_usd"].as_f64().unwrap()).abs() < 1e-9);

    // The trace is stored and served.
    let id = headers["x-r2reasoner-trace-id"].to_str().unwrap();
    assert_eq!(ext["trace_id"], id);
    let (status, _, stored) = send(&g, get(&format!("/v1/traces/{id}"))).await;
    assert_eq!(status, 200);
    assert_eq!(json(&stored), *ext);
    let (status, _, body) = send(&g, get("/v1/traces/nope")).await;
    assert_eq!(error_code(status, &body), (404, "trace_not_found".into()));

    // Without max_tokens the executor's limits apply; with it, every call of the run is
    // capped by it.
    assert!(g.seen.lock().unwrap().iter().all(|r| r.max_tokens > 7));
    g.seen.lock().unwrap().clear();
    let capped = json!({"model": "r2reasoner", "max_tokens": 7,
        "messages": [{"role": "user", "content": "What is 6 * 7?"}]});
    let (status, _, body) = send(&g, post(capped.to_string())).await;
    assert_eq!(status, 200, "{body}");
    let seen = g.seen.lock().unwrap();
    assert!(seen.len() >= 2, "a plan and at least one answer call");
    assert!(
        seen.iter().all(|r| r.max_tokens == 7),
        "{:?}",
        seen.iter().map(|r| r.max_tokens).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn policies_pass_through_and_multi_turn_context() {
    let g = gateway("");
    let (status, _, body) = send(&g, post(chat("r2reasoner/direct:a", "What is 6 * 7?"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["r2reasoner"]["policy"], "direct:a");

    // Pass-through: the messages reach the model as given; the raw text comes back.
    g.seen.lock().unwrap().clear();
    let req = json!({"model": "a", "max_tokens": 3, "logprobs": true,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
    let (status, _, body) = send(&g, post(req.to_string())).await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["choices"][0]["message"]["content"], "Six times seven.");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let seen = g.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].messages.len(), 2);
    assert_eq!(seen[0].max_tokens, 3);

    // Multi-turn: earlier turns reach the pipeline as context before the last question.
    g.seen.lock().unwrap().clear();
    let req = json!({"model": "r2reasoner/direct:a", "messages": [
        {"role": "user", "content": "I have 6 boxes."},
        {"role": "assistant", "content": "Noted: 6 boxes."},
        {"role": "user", "content": "Each holds 7 apples. How many apples?"}]});
    let (status, _, body) = send(&g, post(req.to_string())).await;
    assert_eq!(status, 200, "{body}");
    let prompt = g.seen.lock().unwrap()[0]
        .messages
        .last()
        .unwrap()
        .content
        .clone();
    assert!(
        prompt.contains("User: I have 6 boxes.") && prompt.contains("Assistant: Noted: 6 boxes."),
        "{prompt}"
    );
    assert!(
        prompt.ends_with("Question: Each holds 7 apples. How many apples?"),
        "{prompt}"
    );
}

#[tokio::test]
async fn bad_input_gets_openai_shaped_errors() {
    let g = gateway("[server]\nmax_body_bytes = 2048\n");
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid_json"),
        ("".into(), 400, "invalid_json"),
        (json!({"model": 5, "messages": []}).to_string(), 400, "invalid_request"),
        (json!({"model": "a", "messages": "hi"}).to_string(), 400, "invalid_request"),
        (json!({"model": "a"}).to_string(), 400, "missing_messages"),
        (json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(), 400, "missing_model"),
        (json!({"model": "a", "messages": []}).to_string(), 400, "missing_messages"),
        (chat("a", "   "), 400, "empty_content"),
        (json!({"model": "a", "messages": [{"role": "wizard", "content": "hi"}]}).to_string(), 400, "invalid_role"),
        (json!({"model": "a", "messages": [{"role": "system", "content": "hi"}]}).to_string(), 400, "missing_messages"),
        (json!({"model": "a", "temperature": 9, "messages": [{"role": "user", "content": "hi"}]}).to_string(), 400, "invalid_temperature"),
        (json!({"model": "a", "n": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string(), 400, "invalid_n"),
        (json!({"model": "a", "n": 0, "messages": [{"role": "user", "content": "hi"}]}).to_string(), 400, "invalid_n"),
        (json!({"model": "a", "max_tokens": -1, "messages": [{"role": "user", "content": "hi"}]}).to_string(), 400, "invalid_request"),
        (json!({"model": "a", "max_tokens": 1e12, "messages": [{"role": "user", "content": "hi"}]}).to_string(), 400, "invalid_request"),
        (json!({"model": "a", "seed": -3, "messages": [{"role": "user", "content": "hi"}]}).to_string(), 400, "invalid_request"),
        (json!({"model": "a", "temperature": "hot", "messages": [{"role": "user", "content": "hi"}]}).to_string(), 400, "invalid_request"),
        (chat("r2reasoner/learned:/etc/passwd", "hi"), 404, "model_not_found"),
        (chat("r2reasoner/oracle:/dev/zero", "hi"), 404, "model_not_found"),
        (chat("gpt-9", "hi"), 404, "model_not_found"),
        (chat("r2reasoner/teleport", "hi"), 404, "model_not_found"),
        (chat("r2reasoner/fixed:gpt-9", "hi"), 404, "model_not_found"),
        (chat("a", &"x".repeat(4000)), 413, "body_too_large"),
        (chat("bad", "hi"), 502, "upstream_error"),
        (chat("r2reasoner/direct:bad", "hi"), 502, "upstream_error"),
    ];
    for (body, want_status, want_code) in cases {
        let (status, _, resp) = send(&g, post(body.clone())).await;
        assert_eq!(
            error_code(status, &resp),
            (want_status, want_code.to_string()),
            "body: {body}"
        );
    }
    let (_, _, metrics) = send(&g, get("/metrics")).await;
    assert!(
        metrics.contains("r2_errors_total{kind=\"invalid_json\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("r2_errors_total{kind=\"upstream_error\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn timeouts_are_504() {
    let g = gateway("[server]\nrequest_timeout_s = 0.2\n");
    let (status, _, body) = send(&g, post(chat("slow", "hi"))).await;
    assert_eq!(error_code(status, &body).0, 504, "{body}");
    let (status, _, body) = send(&g, post(chat("r2reasoner/direct:slow", "hi"))).await;
    assert_eq!(error_code(status, &body).0, 504, "{body}");
}

#[tokio::test]
async fn auth_is_required_everywhere_but_health() {
    let g = gateway("");
    for path in ["/v1/models", "/metrics", "/v1/traces/x", "/nowhere"] {
        let req = Request::get(path).body(Body::empty()).unwrap();
        let (status, _, body) = send(&g, req).await;
        assert_eq!(
            error_code(status, &body),
            (401, "invalid_api_key".into()),
            "{path}"
        );
        let req = Request::get(path)
            .header("authorization", "Bearer wrong")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&g, req).await.0, 401, "{path}");
    }
    let req = Request::post("/v1/chat/completions")
        .body(Body::from(chat("a", "hi")))
        .unwrap();
    assert_eq!(send(&g, req).await.0, 401);
    let (status, _, body) = send(&g, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!((status, json(&body)["status"].clone()), (200, json!("ok")));
    let (status, _, body) = send(&g, get("/nowhere")).await;
    assert_eq!(error_code(status, &body).0, 404);
}

#[tokio::test]
async fn models_and_metrics() {
    let g = gateway("");
    let (status, _, body) = send(&g, get("/v1/models")).await;
    assert_eq!(status, 200);
    let ids: Vec<String> = json(&body)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    for id in ["r2reasoner", "r2reasoner/fixed:a", "a", "bad", "slow"] {
        assert!(ids.contains(&id.to_string()), "{id} in {ids:?}");
    }
    send(&g, post(chat("a", "hi"))).await;
    let (_, headers, m) = send(&g, get("/metrics")).await;
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for needle in [
        "r2_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1",
        "r2_requests_total{route=\"/v1/models\",status=\"200\"} 1",
        "r2_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"+Inf\"} 1",
        "r2_tokens_total{model=\"a\",direction=\"input\"} 1",
        "r2_routing_decisions_total{model=\"a\"} 1",
        "r2_cost_usd_total{model=\"a\"}",
    ] {
        assert!(m.contains(needle), "{needle} not in\n{m}");
    }
}

#[tokio::test]
async fn streaming_sends_progress_then_answer_then_done() {
    let g = gateway("");
    let req = json!({"model": "r2reasoner", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "What is 6 * 7?"}]});
    let (status, headers, body) = send(&g, post(req.to_string())).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<serde_json::Value> =
        events[..events.len() - 1].iter().map(|e| json(e)).collect();
    let progress = chunks
        .iter()
        .position(|c| c["r2reasoner"]["step"].is_object())
        .expect("a progress chunk");
    let answer = chunks
        .iter()
        .position(|c| c["choices"][0]["delta"]["content"] == "42")
        .expect("the answer");
    assert!(progress < answer);
    let last = &chunks[chunks.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last["r2reasoner"]["steps"].is_array());
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);

    // A failure mid-stream is an OpenAI-shaped error event, then [DONE].
    let req =
        json!({"model": "bad", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = send(&g, post(req.to_string())).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"code\":\"upstream_error\"") && body.trim_end().ends_with("data: [DONE]"),
        "{body}"
    );
}

#[tokio::test]
async fn every_error_is_openai_shaped_methods_media_types_and_paths() {
    let g = gateway("");
    let req = |method: &str, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {KEY}"))
            .body(Body::empty())
            .unwrap()
    };
    for (method, path) in [
        ("GET", "/v1/chat/completions"),
        ("OPTIONS", "/v1/chat/completions"),
        ("DELETE", "/v1/models"),
        ("POST", "/health"),
    ] {
        let (status, headers, body) = send(&g, req(method, path)).await;
        assert_eq!(
            error_code(status, &body),
            (405, "method_not_allowed".into()),
            "{method} {path}"
        );
        assert!(headers.contains_key("allow"), "{method} {path}");
    }
    // Without a key, a protected route's wrong method is still 401 first.
    let anon = Request::get("/v1/chat/completions")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&g, anon).await.0, 401);
    // Not UTF-8 in the trace id.
    let (status, headers, body) = send(&g, get("/v1/traces/%FF%FE")).await;
    assert_eq!(error_code(status, &body), (400, "invalid_trace_id".into()));
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    // The body must be declared JSON: a form post or no content type runs nothing.
    for ct in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        None,
    ] {
        let mut b =
            Request::post("/v1/chat/completions").header("authorization", format!("Bearer {KEY}"));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let (status, _, body) = send(&g, b.body(Body::from(chat("a", "hi"))).unwrap()).await;
        assert_eq!(
            error_code(status, &body),
            (415, "unsupported_media_type".into()),
            "{ct:?}"
        );
    }
    assert!(g.seen.lock().unwrap().is_empty(), "no model was called");
    let with_charset = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(Body::from(chat("a", "hi")))
        .unwrap();
    assert_eq!(send(&g, with_charset).await.0, 200);
}

#[tokio::test]
async fn trace_ids_are_random_and_unique() {
    let g = gateway("");
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let (status, headers, _) = send(&g, post(chat("a", "hi"))).await;
        assert_eq!(status, 200);
        let id = headers["x-r2reasoner-trace-id"]
            .to_str()
            .unwrap()
            .to_string();
        let hex = id.strip_prefix("chatcmpl-").unwrap();
        assert!(
            hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        assert!(ids.insert(id));
    }
    // Two ids differ in many bits, not in a counter's last digits.
    let v: Vec<u128> = ids
        .iter()
        .map(|i| u128::from_str_radix(&i[9..], 16).unwrap())
        .collect();
    assert!(
        v.windows(2).all(|w| (w[0] ^ w[1]).count_ones() > 20),
        "{ids:?}"
    );
}

#[tokio::test]
async fn clients_name_exposed_policies_and_baselines_and_the_parser_never_sees_them() {
    use std::sync::{Arc, Mutex};
    let cfg =
        config("[server]\npolicies = { two = \"direct:a+agree:2\", broken-path = \"fixed:a\" }\n");
    let parsed: Arc<Mutex<Vec<String>>> = Arc::default();
    let p = parsed.clone();
    // Stands in for the CLI's file-reading parser: it records every name it is given.
    let parser: r2_server::PolicyParser = Arc::new(move |name: &str, pool: &r2_pool::Pool| {
        p.lock().unwrap().push(name.to_string());
        r2_allocator::parse_policy(name, pool)
    });
    let g = gateway_parsed(cfg, &parser);
    let mut at_startup = parsed.lock().unwrap().clone();
    at_startup.sort();
    assert_eq!(at_startup, ["direct:a+agree:2", "fixed:a", "fixed:a"]);
    let (status, _, body) = send(&g, post(chat("r2reasoner/two", "What is 6 * 7?"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["r2reasoner"]["policy"], "direct:a+agree:2");
    let (status, _, body) = send(&g, post(chat("r2reasoner/fixed:a", "What is 6 * 7?"))).await;
    assert_eq!(status, 200, "{body}");
    for model in [
        "r2reasoner/learned:/tmp/x",
        "r2reasoner/oracle:x.jsonl",
        "r2reasoner/two+agree",
    ] {
        let (status, _, body) = send(&g, post(chat(model, "hi"))).await;
        assert_eq!(
            error_code(status, &body),
            (404, "model_not_found".into()),
            "{model}"
        );
        assert!(
            body.contains("r2reasoner/two"),
            "the error lists what exists: {body}"
        );
    }
    assert_eq!(
        parsed.lock().unwrap().len(),
        3,
        "requests never reach the parser"
    );
    let (_, _, models) = send(&g, get("/v1/models")).await;
    assert!(models.contains("\"r2reasoner/two\"") && models.contains("\"r2reasoner/broken-path\""));
    // A policy that does not load stops the state from being built, naming it.
    let cfg = config("[server]\npolicies = { nope = \"teleport\" }\n");
    let err = try_gateway_parsed(cfg, &parser).err().unwrap().to_string();
    assert!(err.contains("server.policies.nope"), "{err}");
}

#[tokio::test]
async fn a_failed_request_names_and_stores_its_partial_trace() {
    let g = gateway("[server]\nrequest_timeout_s = 0.3\n");
    for (model, code) in [
        ("bad", "upstream_error"),
        ("r2reasoner/direct:bad", "upstream_error"),
        ("slow", "upstream_timeout"),
    ] {
        let (status, headers, body) = send(&g, post(chat(model, "hi"))).await;
        assert_eq!(error_code(status, &body).1, code, "{model}: {body}");
        let id = headers["x-r2reasoner-trace-id"].to_str().unwrap();
        let (status, _, stored) = send(&g, get(&format!("/v1/traces/{id}"))).await;
        assert_eq!(status, 200, "{model}");
        let t = json(&stored);
        assert_eq!(t["status"], "error", "{t}");
        assert_eq!(t["error"]["code"], code, "{t}");
        assert_eq!(t["trace_id"], id);
    }
}
