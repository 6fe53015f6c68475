//! The openai backend against a small local fault-injecting HTTP server
//! (`r2_test_support::upstream`, shared with the gateway's end-to-end fault tests): every request
//! ends in an answer (via retry) or a clean error, never a hang.

use std::time::{Duration, Instant};

use r2_openai::{OpenAiBackend, RetryPolicy};
use r2_pool::{Backend, BackendError, ChatMessage, GenRequest, RemoteSpec};
use r2_test_support::upstream::{Fault, Upstream};

/// Serves `script[i]` to the i-th request (the last entry repeats); answers say `42`.
fn server(script: Vec<Fault>) -> Upstream {
    Upstream::start(script).with_texts("42", "42")
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
        Fault::Status(429, Some("0")),
        Fault::Status(500, None),
        Fault::Ok,
    ]);
    let r = backend(&s.url, 3, None).generate(&req()).await.unwrap();
    assert_eq!(r.text, "42");
    assert_eq!((r.input_tokens, r.output_tokens), (9, 2));
    assert_eq!(r.token_logprobs, Some(vec![-0.1, -0.2]));
    assert_eq!(s.hits(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let s = server(vec![Fault::Status(429, Some("1")), Fault::OkJson]);
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
        Fault::MalformedBody,
        Fault::MalformedChunk,
        Fault::Reset,
        Fault::StallMidStream,
        Fault::Status(503, None),
    ] {
        let s = server(vec![first, Fault::Ok]);
        let r = backend(&s.url, 2, None).generate(&req()).await;
        assert_eq!(r.map(|r| r.text).unwrap(), "42", "after {first:?}");
        assert_eq!(s.hits(), 2, "{first:?}");
    }
}

#[tokio::test]
async fn an_empty_stream_is_asked_again_without_streaming() {
    // Not counted as a retry: it works with max_retries = 0.
    let s = server(vec![Fault::EmptyStream, Fault::OkJson]);
    let r = backend(&s.url, 0, None).generate(&req()).await.unwrap();
    assert_eq!(r.text, "42");
    let asked: Vec<_> = s.received().into_iter().map(|r| r.body).collect();
    assert_eq!(asked.len(), 2);
    assert_eq!(
        (&asked[0]["stream"], &asked[1]["stream"]),
        (&true.into(), &false.into())
    );
    assert!(asked[1].get("stream_options").is_none(), "{}", asked[1]);

    // The error the empty stream stood for comes out: a context overflow, not retried.
    let s = server(vec![Fault::EmptyStream, Fault::ContextOverflow]);
    let e = backend(&s.url, 3, None).generate(&req()).await.unwrap_err();
    assert!(
        matches!(
            e,
            BackendError::ContextOverflow {
                needed: 739,
                limit: 512,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_input_error());
    assert_eq!(s.hits(), 2);
}

#[tokio::test]
async fn a_slow_but_steady_stream_is_not_a_timeout() {
    // Every gap is under the 0.5 s read timeout; the whole answer takes about 1.2 s.
    let s = server(vec![Fault::Trickle {
        gap: Duration::from_millis(150),
        pieces: 8,
    }]);
    let start = Instant::now();
    let r = backend(&s.url, 0, None).generate(&req()).await.unwrap();
    assert_eq!(r.text, "42");
    assert_eq!(r.token_logprobs, Some(vec![-0.1, -0.2]));
    assert_eq!(s.hits(), 1);
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "the trickle outlasted the read timeout: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn persistent_faults_end_in_clean_errors_never_hangs() {
    let start = Instant::now();
    let s = server(vec![Fault::Hang]);
    let e = backend(&s.url, 1, None).generate(&req()).await.unwrap_err();
    assert!(matches!(e, BackendError::Timeout { .. }), "{e}");
    assert_eq!(s.hits(), 2);

    let s = server(vec![Fault::MalformedBody]);
    let e = backend(&s.url, 2, None).generate(&req()).await.unwrap_err();
    assert!(
        matches!(e, BackendError::Inference { .. }) && e.to_string().contains("malformed"),
        "{e}"
    );
    assert_eq!(s.hits(), 3);

    let s = server(vec![Fault::Truncated]);
    let e = backend(&s.url, 1, None).generate(&req()).await.unwrap_err();
    assert!(e.to_string().contains("after 2 attempts"), "{e}");

    // Silence after the first chunk is a timeout too, not a hang.
    let s = server(vec![Fault::StallMidStream]);
    let e = backend(&s.url, 1, None).generate(&req()).await.unwrap_err();
    assert!(matches!(e, BackendError::Timeout { .. }), "{e}");
    assert_eq!(s.hits(), 2);

    let s = server(vec![Fault::Reset]);
    let e = backend(&s.url, 1, None).generate(&req()).await.unwrap_err();
    assert!(
        matches!(e, BackendError::Inference { .. }) && e.to_string().contains("after 2 attempts"),
        "{e}"
    );
    assert_eq!(s.hits(), 2);

    // Nothing listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
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
    let s = server(vec![Fault::Status(401, None)]);
    let b = backend(&s.url, 3, Some("R2_OPENAI_FAULTS_TEST_KEY"));
    assert!(!format!("{b:?}").contains("SECRET"));
    let e = b.generate(&req()).await.unwrap_err();
    assert_eq!(s.hits(), 1, "4xx other than 429 is final");
    assert!(
        e.to_string().contains("HTTP 401") && e.to_string().contains("injected failure"),
        "{e}"
    );
    assert!(!e.to_string().contains("SECRET") && !format!("{e:?}").contains("SECRET"));
    assert_eq!(
        s.received()
            .iter()
            .map(|r| r.authorization.clone())
            .collect::<Vec<_>>(),
        [Some("Bearer sk-test-SECRET-123".to_string())]
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
