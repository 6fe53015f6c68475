//! `r2reasoner serve` end to end with a pool of two `openai` models (`small`, `big`) whose
//! upstreams inject faults (the fault-injecting server of crates/openai/tests/common):
//! 429 with and without Retry-After, 500, a connection reset, a stall before the headers
//! and one mid-stream (each longer than the read timeout), a truncated stream, a malformed
//! chunk, and a slow but steady trickle. For each fault, a pass-through request
//! (`model = "small"`) and a routed one (`r2reasoner/direct:small+agree:1`, where `small`
//! disagrees with itself so the answer climbs to `big`) end with an answer through retry
//! or escalation when the fault passes, and with an OpenAI-shaped error when it persists;
//! always within the request deadline. Answers' traces (GET /v1/traces/{id}) are checked
//! against what happened, and the gateway's log names every retry under the request id.
//!
//! No model runs here: the upstreams are loopback test servers, so this needs only the
//! binary.

use std::time::{Duration, Instant};

use r2_test_support::bin;
use r2_test_support::cli::{serve, stop, Served};
use r2_test_support::http::{request, Reply};
use r2_test_support::upstream::{Fault, Upstream};
use serde_json::{json, Value};

const KEY_VAR: &str = "R2_FAULTS_UPSTREAM_KEY";
const KEY: &str = "sk-upstream-faults-test";
/// Each upstream attempt may be silent this long (the models' `read_timeout_s`).
const READ_TIMEOUT_S: f64 = 1.0;
/// The gateway's `request_timeout_s` in most tests.
const DEADLINE_S: f64 = 30.0;
/// Slack on top of a deadline before a request counts as hung (a loaded 2-core machine).
const SLACK: Duration = Duration::from_secs(15);
const QUESTION: &str = "What is 6 * 7?";
const ROUTED: &str = "r2reasoner/direct:small+agree:1";

/// Field order is drop order: the server is killed first.
struct Gateway {
    served: Served,
    small: Upstream,
    big: Upstream,
    deadline: Duration,
    _dir: tempfile::TempDir,
}

fn model_toml(id: &str, url: &str, parameters: u64, price: f64) -> String {
    format!(
        "[[models]]\nid = \"{id}\"\nbackend = \"openai\"\nbase_url = \"{url}\"\napi_model = \"upstream-{id}\"\napi_key_env = \"{KEY_VAR}\"\nconnect_timeout_s = 2\nread_timeout_s = {READ_TIMEOUT_S}\nmax_retries = 3\nparameters = {parameters}\ncontext_length = 4096\nprices.compute = {{ input = {price}, output = {price} }}\n\n"
    )
}

impl Gateway {
    /// `serve` on a free port with both upstreams answering; `small` greedy says 42 and
    /// sampled says 41 (so `+agree:1` escalates), `big` always says 42.
    fn start(deadline_s: f64) -> Self {
        let small = Upstream::start(vec![Fault::Ok])
            .with_texts("6 * 7 = 42.\nANSWER: 42", "6 * 7 = 41.\nANSWER: 41");
        let big = Upstream::start(vec![Fault::Ok]);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pool.toml");
        let text = format!(
            "decomposer = \"big\"\npolicy = \"fixed:big\"\n\n[server]\nrequest_timeout_s = {deadline_s}\ntraces_db = \"{}\"\n\n{}{}",
            dir.path().join("traces.sqlite").display(),
            model_toml("small", &small.url, 100_000_000, 0.1),
            model_toml("big", &big.url, 1_000_000_000, 1.0),
        );
        std::fs::write(&config, text).unwrap();
        let mut cmd = bin!();
        cmd.arg("--config")
            .arg(&config)
            .env(KEY_VAR, KEY)
            .env("R2REASONER_HOME", dir.path())
            .env("R2REASONER_LOG", "r2_openai=info,r2_server=info");
        // Keeps every log line (and never lets the server block on a full pipe).
        let served = serve(cmd);
        Gateway {
            served,
            small,
            big,
            deadline: Duration::from_secs_f64(deadline_s),
            _dir: dir,
        }
    }

    fn chat(&self, model: &str, stream: bool) -> (Reply, Duration) {
        let body = json!({"model": model, "stream": stream, "max_tokens": 64,
            "messages": [{"role": "user", "content": QUESTION}]});
        let start = Instant::now();
        let reply = http(
            self.served.addr(),
            "POST",
            "/v1/chat/completions",
            Some(&body),
        );
        let took = start.elapsed();
        assert!(
            took < self.deadline + SLACK,
            "{model}: took {took:?}, past the {:?} deadline",
            self.deadline
        );
        (reply, took)
    }

    fn trace(&self, id: &str) -> Reply {
        http(self.served.addr(), "GET", &format!("/v1/traces/{id}"), None)
    }

    /// Log lines of request `id` (the gateway's `chat` span carries it) containing `what`.
    fn logged(&self, id: &str, what: &str) -> Vec<String> {
        let needle = format!("request_id={id}");
        self.served
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&needle) && l.contains(what))
            .cloned()
            .collect()
    }

    fn set(&self, small: Vec<Fault>, big: Vec<Fault>) {
        self.small.set_script(small);
        self.big.set_script(big);
    }
}

/// One request; a response that does not arrive whole fails the test. A socket timeout
/// far beyond any deadline keeps a hung server from hanging the test.
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    request(addr, method, path, None, &body, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{method} {path}: no complete response ({e})"))
}

/// An OpenAI-shaped error body: `{"error": {"message", "type", "code"}}` with non-empty
/// strings; returns the code.
fn error_code(v: &Value) -> String {
    let e = &v["error"];
    for field in ["message", "type", "code"] {
        assert!(
            e[field].as_str().is_some_and(|s| !s.is_empty()),
            "error.{field} missing: {v}"
        );
    }
    e["code"].as_str().unwrap().to_string()
}

/// A 200 answer whose extension field equals the stored trace; returns the trace.
fn answered(g: &Gateway, reply: &Reply, what: &str) -> Value {
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    let v = reply.json();
    let id = reply
        .header("x-r2reasoner-trace-id")
        .unwrap_or_else(|| panic!("{what}: no trace id header"));
    let trace = g.trace(id);
    assert_eq!(trace.status, 200, "{what}: trace {id}: {}", trace.text());
    let trace = trace.json();
    assert_eq!(
        trace, v["r2reasoner"],
        "{what}: the stored trace is the response's"
    );
    assert_eq!(trace["trace_id"], id, "{what}");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("42")),
        "{what}: {v}"
    );
    trace
}

/// How a fault is expected to end when it persists.
#[derive(Clone, Copy)]
enum Persistent {
    /// 502 `upstream_error` after every retry.
    BadGateway,
    /// 504 `upstream_timeout` after every retry.
    Timeout,
}

/// Runs one fault through the gateway: once passing (the next attempt succeeds) on a
/// pass-through and a routed request, then persisting on a pass-through, a routed and a
/// streamed request. `min_wait` is what the fault costs at least before the answer (a
/// Retry-After, a read timeout, a slow stream): the trace's latency must show it.
fn check_fault(fault: Fault, persistent: Option<Persistent>, min_wait: Duration) {
    let g = Gateway::start(DEADLINE_S);
    // A fault that ends by itself (the trickle) answers on its first attempt.
    let retries = usize::from(persistent.is_some());
    let name = format!("{fault:?}");

    // Pass-through: the fault, then an answer.
    g.set(vec![fault, Fault::Ok], vec![Fault::Ok]);
    let (reply, took) = g.chat("small", false);
    let what = format!("{name} pass-through");
    let trace = answered(&g, &reply, &what);
    let steps = trace["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{what}: {trace}");
    assert_eq!(steps[0]["model"], "small", "{what}");
    assert_eq!(steps[0]["input_tokens"], 9, "{what}: upstream usage");
    assert!(
        steps[0]["confidence"].as_f64().is_some(),
        "{what}: log-probabilities"
    );
    assert!(
        steps[0]["latency_ms"].as_f64().unwrap() >= min_wait.as_secs_f64() * 1000.0
            && took >= min_wait,
        "{what}: the step's latency includes the fault's {min_wait:?}: {trace}"
    );
    assert_eq!(g.small.hits(), 1 + retries, "{what}");
    assert_eq!(g.big.hits(), 0, "{what}");
    let id = reply.header("x-r2reasoner-trace-id").unwrap();
    assert_eq!(
        g.logged(id, "retrying upstream call").len(),
        retries,
        "{what}: one logged retry per retry: {:?}",
        g.served.log.lock().unwrap()
    );
    for r in g.small.received().iter().filter(|r| !r.body.is_null()) {
        assert_eq!(r.authorization.as_deref(), Some(&*format!("Bearer {KEY}")));
        assert_eq!(r.body["model"], "upstream-small");
    }

    // Routed: the fault on `small` and on `big`; small disagrees with its sample, so the
    // answer climbs to big.
    g.set(vec![fault, Fault::Ok], vec![fault, Fault::Ok]);
    let (reply, _) = g.chat(ROUTED, false);
    let what = format!("{name} routed");
    let trace = answered(&g, &reply, &what);
    let models: Vec<&str> = trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["small", "small", "big"], "{what}: {trace}");
    assert_eq!(trace["answer"], "42", "{what}");
    assert_eq!(trace["policy"], "direct:small+agree:1", "{what}");
    assert_eq!(g.small.hits(), 2 + retries, "{what}");
    assert_eq!(g.big.hits(), 1 + retries, "{what}");
    let id = reply.header("x-r2reasoner-trace-id").unwrap();
    assert_eq!(
        g.logged(id, "retrying upstream call").len(),
        2 * retries,
        "{what}"
    );

    let Some(persistent) = persistent else {
        return;
    };
    let (status, code) = match persistent {
        Persistent::BadGateway => (502, "upstream_error"),
        Persistent::Timeout => (504, "upstream_timeout"),
    };
    // The fault persists: every attempt fails, and the client gets a clean error.
    for model in ["small", ROUTED] {
        g.set(vec![fault], vec![Fault::Ok]);
        let (reply, _) = g.chat(model, false);
        let what = format!("{name} persisting, {model}");
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert_eq!(error_code(&reply.json()), code, "{what}");
        assert_eq!(
            g.small.hits(),
            4,
            "{what}: the first attempt and max_retries = 3"
        );
        assert_eq!(g.big.hits(), 0, "{what}: a failed call is not escalated");
    }
    // Streamed: the error arrives as one event, then [DONE].
    g.set(vec![fault], vec![Fault::Ok]);
    let (reply, _) = g.chat("small", true);
    let what = format!("{name} persisting, streamed");
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    assert!(
        reply.header("x-r2reasoner-trace-id").is_some(),
        "{what}: streams carry the trace id"
    );
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{what}");
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error_code(&error), code, "{what}: {events:?}");
    assert_eq!(g.small.hits(), 4, "{what}");
    // A failed stream stores what it got to: no step finished, and the error.
    let id = reply.header("x-r2reasoner-trace-id").unwrap();
    let trace = g.trace(id);
    assert_eq!(trace.status, 200, "{what}: {}", trace.text());
    let trace = trace.json();
    assert_eq!(trace["status"], "error", "{what}: {trace}");
    assert_eq!(trace["error"]["code"], code, "{what}: {trace}");
    assert_eq!(trace["steps"], json!([]), "{what}: {trace}");
    // The gateway logged each failed attempt and the final failure.
    let log = g.served.log.lock().unwrap().join("\n");
    assert!(log.contains("upstream call failed"), "{what}: {log}");
}

#[test]
fn rate_limit_with_retry_after() {
    // Retry-After: 1 is honoured: the answer takes at least a second.
    check_fault(
        Fault::Status(429, Some("1")),
        Some(Persistent::BadGateway),
        Duration::from_secs(1),
    );
}

#[test]
fn rate_limit_without_retry_after() {
    // Backoff with jitter: the first retry waits 0.25-0.5 s.
    check_fault(
        Fault::Status(429, None),
        Some(Persistent::BadGateway),
        Duration::from_millis(250),
    );
}

#[test]
fn server_error() {
    check_fault(
        Fault::Status(500, None),
        Some(Persistent::BadGateway),
        Duration::from_millis(250),
    );
}

#[test]
fn connection_reset() {
    check_fault(
        Fault::Reset,
        Some(Persistent::BadGateway),
        Duration::from_millis(250),
    );
}

#[test]
fn stall_before_the_response_longer_than_the_read_timeout() {
    check_fault(
        Fault::Hang,
        Some(Persistent::Timeout),
        Duration::from_secs_f64(READ_TIMEOUT_S),
    );
}

#[test]
fn stall_mid_stream_longer_than_the_read_timeout() {
    check_fault(
        Fault::StallMidStream,
        Some(Persistent::Timeout),
        Duration::from_secs_f64(READ_TIMEOUT_S),
    );
}

#[test]
fn truncated_stream() {
    check_fault(
        Fault::Truncated,
        Some(Persistent::BadGateway),
        Duration::from_millis(250),
    );
}

#[test]
fn malformed_json_chunk() {
    check_fault(
        Fault::MalformedChunk,
        Some(Persistent::BadGateway),
        Duration::from_millis(250),
    );
}

#[test]
fn slow_but_steady_trickle_is_answered_without_a_retry() {
    // Ten pieces 0.3 s apart: three times the read timeout in all, never silent that long.
    check_fault(
        Fault::Trickle {
            gap: Duration::from_millis(300),
            pieces: 10,
        },
        None,
        Duration::from_secs(3),
    );
}

#[test]
fn the_request_deadline_bounds_stalls_and_trickles_that_outlast_it() {
    const SHORT_S: f64 = 4.0;
    let g = Gateway::start(SHORT_S);
    let short = Duration::from_secs_f64(SHORT_S);
    // A stall retried forever would take 4 attempts x 1 s + backoff; a trickle of 40 pieces
    // 0.25 s apart would take 10 s. Both are cut at the deadline with a 504.
    for fault in [
        Fault::Hang,
        Fault::Trickle {
            gap: Duration::from_millis(250),
            pieces: 40,
        },
    ] {
        for (model, stream) in [("small", false), (ROUTED, false), ("small", true)] {
            g.set(vec![fault], vec![Fault::Ok]);
            let what = format!("{fault:?} on {model} (stream: {stream})");
            let (reply, took) = g.chat(model, stream);
            assert!(
                took >= short.mul_f64(0.9),
                "{what}: cut early, after {took:?}"
            );
            let error = if stream {
                assert_eq!(reply.status, 200, "{what}");
                let events = reply.events();
                assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{what}");
                serde_json::from_str(&events[events.len() - 2]).unwrap()
            } else {
                assert_eq!(reply.status, 504, "{what}: {}", reply.text());
                reply.json()
            };
            let code = error_code(&error);
            assert!(
                code == "timeout" || code == "upstream_timeout",
                "{what}: {error}"
            );
            assert_eq!(g.big.hits(), 0, "{what}");
        }
    }
    // Nothing was left hanging: the gateway answers at once and stops cleanly on SIGTERM.
    let health = http(g.served.addr(), "GET", "/health", None);
    assert_eq!(health.status, 200);
    let mut g = g;
    stop(&mut g.served.child, Duration::from_secs(30));
}

#[test]
fn upstream_client_errors_are_not_retried() {
    let g = Gateway::start(DEADLINE_S);
    // (script, status, code, attempts): a prompt over the upstream's context is the
    // client's 400, also when the upstream (llama-cpp-python) first streams an empty 200; a
    // 401 between the gateway and its upstream is a bad gateway. None is retried.
    let cases = [
        (
            vec![Fault::ContextOverflow],
            400,
            "context_length_exceeded",
            1,
        ),
        (
            vec![Fault::EmptyStream, Fault::ContextOverflow],
            400,
            "context_length_exceeded",
            2,
        ),
        (vec![Fault::Status(401, None)], 502, "upstream_error", 1),
    ];
    for (script, status, code, attempts) in cases {
        for model in ["small", ROUTED] {
            g.set(script.clone(), vec![Fault::Ok]);
            let what = format!("{script:?} on {model}");
            let (reply, _) = g.chat(model, false);
            assert_eq!(reply.status, status, "{what}: {}", reply.text());
            assert_eq!(error_code(&reply.json()), code, "{what}");
            assert_eq!(g.small.hits(), attempts, "{what}");
            assert_eq!(g.big.hits(), 0, "{what}");
        }
    }
    let log = g.served.log.lock().unwrap().join("\n");
    assert!(!log.contains("retrying upstream call"), "{log}");
}

/// A failed request leaves a trace too, streamed or not: what was tried, on which model,
/// and why it failed, under the id its `x-r2reasoner-trace-id` header names.
#[test]
fn a_failed_request_leaves_a_trace() {
    let g = Gateway::start(DEADLINE_S);
    g.set(vec![Fault::Status(500, None)], vec![Fault::Ok]);
    let mut missing = Vec::new();
    for stream in [false, true] {
        let (reply, _) = g.chat("small", stream);
        match reply.header("x-r2reasoner-trace-id") {
            None => missing.push(format!("stream: {stream}: no x-r2reasoner-trace-id header")),
            Some(id) => {
                let trace = g.trace(id);
                if trace.status != 200 {
                    missing.push(format!(
                        "stream: {stream}: GET /v1/traces/{id} answered {}",
                        trace.status
                    ));
                }
            }
        }
    }
    assert!(missing.is_empty(), "{missing:?}");
}
