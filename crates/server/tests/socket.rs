//! The gateway on a real loopback socket: the openai backend using it as its upstream,
//! client disconnects, the concurrency limit and graceful shutdown.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use r2_openai::OpenAiBackend;
use r2_pool::{Backend, BackendError, ChatMessage, GenRequest, GenResponse, RemoteSpec};
use r2_server::Keys;
use serde_json::json;

/// Never finishes on its own; records when it starts and when its call is dropped.
#[derive(Default)]
struct Stuck {
    started: AtomicUsize,
    cancelled: Arc<AtomicBool>,
}

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Backend for Stuck {
    async fn generate(&self, _r: &GenRequest) -> Result<GenResponse, BackendError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let _guard = SetOnDrop(self.cancelled.clone());
        tokio::time::sleep(Duration::from_secs(60)).await;
        Err(BackendError::Inference {
            model: "slow".into(),
            reason: "unreachable".into(),
        })
    }
}

/// Serve `g` on an ephemeral loopback port; returns the base URL and a shutdown trigger.
async fn start(
    g: &Gateway,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let state = g.state.clone();
    let handle = tokio::spawn(async move {
        r2_server::serve(listener, state, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (url, tx, handle)
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_backend_uses_the_gateway_as_its_upstream() {
    let g = gateway("");
    let (url, _stop, _h) = start(&g).await;
    std::env::set_var("R2_SOCKET_TEST_KEY", KEY);
    let spec = RemoteSpec {
        base_url: format!("{url}/v1"),
        api_model: "a".into(),
        api_key_env: Some("R2_SOCKET_TEST_KEY".into()),
        connect_timeout_s: 2.0,
        read_timeout_s: 10.0,
        max_retries: 1,
    };
    let backend = OpenAiBackend::new("remote-a", &spec).unwrap();
    let r = backend
        .generate(&GenRequest::new(
            vec![ChatMessage::user("What is 6 * 7?")],
            64,
        ))
        .await
        .unwrap();
    assert_eq!(r.text, "Six times seven.\nANSWER: 42");
    // ScriptedBackend counts words: 5 in, 5 out, logprob -0.1 each.
    assert_eq!((r.input_tokens, r.output_tokens), (5, 5));
    assert_eq!(r.token_logprobs.as_ref().map(Vec::len), Some(5));
    // Routed through a policy of the upstream.
    let routed = OpenAiBackend::new(
        "remote",
        &RemoteSpec {
            api_model: "r2reasoner/direct:a".into(),
            ..spec.clone()
        },
    )
    .unwrap();
    let r = routed
        .generate(&GenRequest::new(
            vec![ChatMessage::user("What is 6 * 7?")],
            64,
        ))
        .await
        .unwrap();
    assert_eq!(r.text, "42");
    // A wrong key is a clean, final error.
    std::env::set_var("R2_SOCKET_TEST_BAD_KEY", "nope");
    let bad = OpenAiBackend::new(
        "remote",
        &RemoteSpec {
            api_key_env: Some("R2_SOCKET_TEST_BAD_KEY".into()),
            ..spec
        },
    )
    .unwrap();
    let e = bad
        .generate(&GenRequest::new(vec![ChatMessage::user("hi")], 8))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_cancels_the_work() {
    let stuck = Arc::new(Stuck::default());
    let g = gateway_with(
        "[server]\nmax_concurrency = 1\n",
        Keys::from_plain(&[("t", KEY)]),
        stuck.clone(),
    );
    let (url, _stop, _h) = start(&g).await;
    let mut resp = client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let trace_id = resp.headers()["x-r2reasoner-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    let start_wait = Instant::now();
    while stuck.started.load(Ordering::SeqCst) == 0 && start_wait.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While it runs, the single slot is taken: 429 with Retry-After.
    let busy = client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "a", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 429);
    assert_eq!(busy.headers()["retry-after"], "1");
    let body: serde_json::Value = busy.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");

    drop(resp);
    let t = Instant::now();
    while !stuck.cancelled.load(Ordering::SeqCst) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the model call was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The abandoned run left its trace, marked as cancelled.
    let mut trace = serde_json::Value::Null;
    for _ in 0..100 {
        let r = client()
            .get(format!("{url}/v1/traces/{trace_id}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            trace = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(trace["status"], "cancelled", "{trace}");
    assert_eq!(trace["trace_id"], trace_id.as_str());
    // The slot is free again.
    let mut status = 0;
    for _ in 0..50 {
        let r = client()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"model": "a", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        status = r.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let slow =
        r2_pool::ScriptedBackend::with_delay(Duration::from_millis(800), |_| Ok("done".into()));
    let g = gateway_with("", Keys::from_plain(&[("t", KEY)]), slow);
    let (url, stop, handle) = start(&g).await;
    let req = tokio::spawn(async move {
        client()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    let resp = req.await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "done");
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
}
