//! A gateway over scripted backends: model `a` answers, `bad` fails, `slow` takes 5 s.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use r2_pool::{Backend, BackendError, GenRequest, Pool, PoolConfig, ScriptedBackend};
use r2_server::{app, AppState, Keys, TraceStore};
use serde_json::Value;
use tower::ServiceExt;

pub const KEY: &str = "sk-gateway-test-key";

pub fn config(server: &str) -> PoolConfig {
    let model = |id: &str, params: u32| {
        format!("[[models]]\nid = \"{id}\"\nbackend = \"llama_cpp\"\nsource = \"{id}.gguf\"\nparameters = {params}\ncontext_length = 2048\nmax_concurrency = 4\nprices.compute = {{ input = 1.0, output = 2.0 }}\n")
    };
    let text = format!(
        "policy = \"fixed:a\"\ndecomposer = \"a\"\n{server}\n{}{}{}",
        model("a", 1),
        model("bad", 2),
        model("slow", 3)
    );
    PoolConfig::parse(&text, "test.toml", None).unwrap()
}

pub struct Gateway {
    pub state: Arc<AppState>,
    /// Every request model `a` received.
    pub seen: Arc<Mutex<Vec<GenRequest>>>,
}

pub fn gateway_with(server: &str, keys: Keys, slow: Arc<dyn Backend>) -> Gateway {
    let cfg = config(server);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let a: Arc<dyn Backend> = ScriptedBackend::new(move |r| {
        s.lock().unwrap().push(r.clone());
        Ok("Six times seven.\nANSWER: 42".into())
    });
    let bad: Arc<dyn Backend> = ScriptedBackend::new(|_| {
        Err(BackendError::Inference {
            model: "bad".into(),
            reason: "upstream exploded".into(),
        })
    });
    let backends = HashMap::from([
        ("a".to_string(), a),
        ("bad".to_string(), bad),
        ("slow".to_string(), slow),
    ]);
    let pool = Pool::new(cfg.clone(), backends).unwrap();
    let state = Arc::new(
        AppState::new(
            Arc::new(pool),
            keys,
            &cfg.server,
            TraceStore::open(None).unwrap(),
            &AppState::baseline_parser(),
        )
        .unwrap(),
    );
    Gateway { state, seen }
}

/// The scripted gateway on `cfg` (key [`KEY`]), its policies loaded by `parser`.
pub fn try_gateway_parsed(
    cfg: PoolConfig,
    parser: &r2_server::PolicyParser,
) -> Result<Gateway, r2_server::StartError> {
    let seen: Arc<Mutex<Vec<GenRequest>>> = Arc::default();
    let s = seen.clone();
    let a: Arc<dyn Backend> = ScriptedBackend::new(move |r| {
        s.lock().unwrap().push(r.clone());
        Ok("Six times seven.\nANSWER: 42".into())
    });
    let backends: HashMap<String, Arc<dyn Backend>> = cfg
        .ids()
        .into_iter()
        .map(|id| (id.to_string(), a.clone()))
        .collect();
    let pool = Pool::new(cfg.clone(), backends).unwrap();
    let state = AppState::new(
        Arc::new(pool),
        Keys::from_plain(&[("test", KEY)]),
        &cfg.server,
        TraceStore::open(None).unwrap(),
        parser,
    )?;
    Ok(Gateway {
        state: Arc::new(state),
        seen,
    })
}

pub fn gateway_parsed(cfg: PoolConfig, parser: &r2_server::PolicyParser) -> Gateway {
    try_gateway_parsed(cfg, parser).unwrap()
}

pub fn gateway(server: &str) -> Gateway {
    gateway_with(
        server,
        Keys::from_plain(&[("test", KEY)]),
        ScriptedBackend::with_delay(Duration::from_secs(5), |_| Ok("late".into())),
    )
}

pub async fn send(g: &Gateway, req: Request<Body>) -> (u16, axum::http::HeaderMap, String) {
    let resp: Response<Body> = app(g.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&bytes).to_string())
}

pub fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::empty())
        .unwrap()
}

pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Status and OpenAI-shaped error code.
pub fn error_code(status: u16, body: &str) -> (u16, String) {
    let v = json(body);
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{body}");
    (status, e["code"].as_str().unwrap_or("").to_string())
}
