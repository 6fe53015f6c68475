//! The openai backend against a small local fault-injecting HTTP server: every request ends
//! in an answer (via retry) or a clean error, never a hang.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use r2_openai::{OpenAiBackend, RetryPolicy};
use r2_pool::{Backend, BackendError, ChatMessage, GenRequest, RemoteSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
enum Fault {
    Ok,
    /// A plain JSON (non-streamed) answer.
    OkJson,
    Status(u16, Option<u32>),
    Hang,
    Truncated,
    Malformed,
}

struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
    auth: Arc<Mutex<Vec<String>>>,
}

const SSE_OK: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"4\"},\"logprobs\":{\"content\":[{\"token\":\"4\",\"logprob\":-0.1}]}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"2\"},\"logprobs\":{\"content\":[{\"token\":\"2\",\"logprob\":-0.2}]},\"finish_reason\":\"stop\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\ndata: [DONE]\n\n";

async fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            return Some(head);
        }
    }
}

async fn respond(mut s: TcpStream, fault: Fault) {
    let write = |status: &str, ctype: &str, extra: &str, body: &str| {
        format!("HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}", body.len())
    };
    let out = match fault {
        Fault::Ok => write("200 OK", "text/event-stream", "", SSE_OK),
        Fault::OkJson => write(
            "200 OK",
            "application/json",
            "",
            r#"{"choices":[{"message":{"role":"assistant","content":"42"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1}}"#,
        ),
        Fault::Status(code, ra) => {
            let extra = ra
                .map(|r| format!("retry-after: {r}\r\n"))
                .unwrap_or_default();
            write(
                &format!("{code} Oops"),
                "application/json",
                &extra,
                r#"{"error":{"message":"injected failure","type":"x","code":"x"}}"#,
            )
        }
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        Fault::Truncated => {
            // Promise the whole stream, send half, close.
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                SSE_OK.len()
            );
            format!("{head}{}", &SSE_OK[..SSE_OK.len() / 2])
        }
        Fault::Malformed => write("200 OK", "application/json", "", "{\"choices\": [nope"),
    };
    let _ = s.write_all(out.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Serves `script[i]` to the i-th request (the last entry repeats).
async fn server(script: Vec<Fault>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (h, a) = (hits.clone(), auth.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (h, a, script) = (h.clone(), a.clone(), script.clone());
            tokio::spawn(async move {
                let Some(head) = read_request(&mut s).await else {
                    return;
                };
                if let Some(v) = head.lines().find_map(|l| l.strip_prefix("authorization: ")) {
                    a.lock().unwrap().push(v.to_string());
                }
                let i = h.fetch_add(1, Ordering::SeqCst);
                let fault = script[i.min(script.len() - 1)];
                respond(s, fault).await;
            });
        }
    });
    Server { url, hits, auth }
}

fn backend(url: &str, retries: u32, key_env: Option<&str>) -> OpenAiBackend {
    let spec = RemoteSpec {
        base_url: url.to_string(),
        api_model: "upstream-model".into(),
        api_key_env: key_env.map(str::to_string),
        connect_timeout_s: 1.0,
        read_timeout_s: 0.5,
        max_retries: retries,
    };
    OpenAiBackend::new("remote", &spec)
        .unwrap()
        .with_retry(RetryPolicy {
            max_retries: retries,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(2),
        })
}

fn req() -> GenRequest {
    GenRequest::new(vec![ChatMessage::user("What is 6 * 7?")], 16)
}

#[tokio::test]
async fn retries_429_and_500_then_answers_with_usage_and_logprobs() {
    let s = server(vec![
        Fault::Status(429, Some(0)),
        Fault::Status(500, None),
        Fault::Ok,
    ])
    .await;
    let r = backend(&s.url, 3, None).generate(&req()).await.unwrap();
    assert_eq!(r.text, "42");
    assert_eq!((r.input_tokens, r.output_tokens), (9, 2));
    assert_eq!(r.token_logprobs, Some(vec![-0.1, -0.2]));
    assert_eq!(s.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let s = server(vec![Fault::Status(429, Some(1)), Fault::OkJson]).await;
    let start = Instant::now();
    let r = backend(&s.url, 2, None).generate(&req()).await.unwrap();
    assert_eq!(r.text, "42");
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn hangs_truncations_and_malformed_bodies_are_retried() {
    for first in [
        Fault::Hang,
        Fault::Truncated,
        Fault::Malformed,
        Fault::Status(503, None),
    ] {
        let s = server(vec![first, Fault::Ok]).await;
        let r = backend(&s.url, 2, None).generate(&req()).await;
        assert_eq!(r.map(|r| r.text).unwrap(), "42", "after {first:?}");
        assert_eq!(s.hits.load(Ordering::SeqCst), 2, "{first:?}");
    }
}

#[tokio::test]
async fn persistent_faults_end_in_clean_errors_never_hangs() {
    let start = Instant::now();
    let s = server(vec![Fault::Hang]).await;
    let e = backend(&s.url, 1, None).generate(&req()).await.unwrap_err();
    assert!(matches!(e, BackendError::Timeout { .. }), "{e}");
    assert_eq!(s.hits.load(Ordering::SeqCst), 2);

    let s = server(vec![Fault::Malformed]).await;
    let e = backend(&s.url, 2, None).generate(&req()).await.unwrap_err();
    assert!(
        matches!(e, BackendError::Inference { .. }) && e.to_string().contains("malformed"),
        "{e}"
    );
    assert_eq!(s.hits.load(Ordering::SeqCst), 3);

    let s = server(vec![Fault::Truncated]).await;
    let e = backend(&s.url, 1, None).generate(&req()).await.unwrap_err();
    assert!(e.to_string().contains("after 2 attempts"), "{e}");

    // Nothing listening.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let e = backend(&dead, 1, None).generate(&req()).await.unwrap_err();
    assert!(e.to_string().contains("cannot reach"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn client_errors_are_not_retried_and_the_key_never_leaks() {
    std::env::set_var("R2_OPENAI_FAULTS_TEST_KEY", "sk-test-SECRET-123");
    let s = server(vec![Fault::Status(401, None)]).await;
    let b = backend(&s.url, 3, Some("R2_OPENAI_FAULTS_TEST_KEY"));
    assert!(!format!("{b:?}").contains("SECRET"));
    let e = b.generate(&req()).await.unwrap_err();
    assert_eq!(
        s.hits.load(Ordering::SeqCst),
        1,
        "4xx other than 429 is final"
    );
    assert!(
        e.to_string().contains("HTTP 401") && e.to_string().contains("injected failure"),
        "{e}"
    );
    assert!(!e.to_string().contains("SECRET") && !format!("{e:?}").contains("SECRET"));
    assert_eq!(
        s.auth.lock().unwrap().as_slice(),
        ["Bearer sk-test-SECRET-123"]
    );

    let spec = RemoteSpec {
        base_url: s.url.clone(),
        api_model: "m".into(),
        api_key_env: Some("R2_OPENAI_FAULTS_UNSET".into()),
        connect_timeout_s: 1.0,
        read_timeout_s: 1.0,
        max_retries: 0,
    };
    let e = OpenAiBackend::new("remote", &spec).unwrap_err();
    assert!(
        matches!(e, BackendError::Load { .. }) && e.to_string().contains("R2_OPENAI_FAULTS_UNSET"),
        "{e}"
    );
}
