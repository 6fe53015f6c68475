//! The `openai` backend against an OpenAI-compatible server nobody here wrote:
//! llama-cpp-python's (`python -m llama_cpp.server`) on loopback, serving the SmolLM2 GGUF
//! the project fetches. Checks streaming, token counts, log-probabilities (the step
//! confidence), and that its error bodies (a prompt over the context, a wrong API key)
//! become clean `BackendError`s.
//!
//! The server lives in a virtualenv that `scripts/llama-cpp-server-venv` creates in the
//! cache directory (pip builds llama.cpp from source: minutes the first time, nothing
//! after). The test is skipped, saying so, only when that script fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use r2_pool::{BackendError, ChatMessage, FinishReason, GenRequest, Pool, PoolConfig};
use r2_runtime::{build_pool, RuntimeOptions};
use r2_test_support::http::request;
use r2_test_support::{bin, smol};
use serde_json::{json, Value};

/// The server's context; small, so a long prompt overflows it.
const N_CTX: u32 = 512;
const KEY: &str = "sk-llama-cpp-python-test";
const KEY_VAR: &str = "R2_LLAMA_CPP_PYTHON_TEST_KEY";
const WRONG_KEY_VAR: &str = "R2_LLAMA_CPP_PYTHON_TEST_WRONG_KEY";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, creating the venv if needed; `None` (with the reason printed) when
/// it cannot be created here.
fn venv_python() -> Option<PathBuf> {
    let script = repo_root().join("scripts/llama-cpp-server-venv");
    let start = Instant::now();
    let o = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    if !o.status.success() {
        eprintln!(
            "SKIPPED: llama-cpp-python test: {} failed ({}), so there is no llama-cpp-python server to test against",
            script.display(),
            o.status
        );
        return None;
    }
    if start.elapsed() > Duration::from_secs(5) {
        eprintln!("created the llama-cpp-python venv in {:?}", start.elapsed());
    }
    let py = String::from_utf8(o.stdout).unwrap();
    Some(PathBuf::from(py.trim()))
}

struct LlamaServer {
    child: Child,
    addr: String,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server(python: &Path, gguf: &Path, log: &Path) -> LlamaServer {
    let port = free_port();
    let log_file = std::fs::File::create(log).unwrap();
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(gguf)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_ctx", &N_CTX.to_string(), "--n_threads", "2"])
        .args([
            "--model_alias",
            "smol",
            "--api_key",
            KEY,
            "--verbose",
            "False",
        ])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut server = LlamaServer {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!(
                "llama_cpp.server exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if post(&server.addr, "/v1/models", None).is_some_and(|(s, _)| s == 200) {
            return server;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "llama_cpp.server did not answer within 180 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A plain HTTP/1.1 request with the key (GET without a body); `None` if nothing listens
/// or the response did not arrive whole.
fn post(addr: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    let (method, body) = match body {
        Some(b) => ("POST", b.to_string()),
        None => ("GET", String::new()),
    };
    let reply = request(
        addr,
        method,
        path,
        Some(KEY),
        &body,
        Duration::from_secs(120),
    )
    .ok()?;
    let json = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    Some((reply.status, json))
}

fn pool(addr: &str) -> Pool {
    let model = |id: &str, key_var: &str| {
        format!("[[models]]\nid = \"{id}\"\nbackend = \"openai\"\nbase_url = \"http://{addr}/v1\"\napi_model = \"smol\"\napi_key_env = \"{key_var}\"\nread_timeout_s = 120\nmax_retries = 1\nparameters = 135_000_000\ncontext_length = {N_CTX}\nprices.compute = {{ input = 0.0135, output = 0.027 }}\n\n")
    };
    let text = format!(
        "decomposer = \"smol\"\n{}{}",
        model("smol", KEY_VAR),
        model("smol-wrong-key", WRONG_KEY_VAR)
    );
    let config = PoolConfig::parse(&text, "llama-cpp-python.toml", None).unwrap();
    let cache = Arc::new(r2_models::ModelCache::from_env().unwrap());
    let options = RuntimeOptions {
        threads: 0,
        progress: false,
    };
    build_pool(config, cache, options, None).0
}

fn ask(content: &str, max_tokens: u32) -> GenRequest {
    GenRequest::new(vec![ChatMessage::user(content)], max_tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_backend_against_llama_cpp_python() {
    let Some(python) = venv_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gguf = smol::fetch(bin!());
    let log = dir.path().join("llama_cpp_server.log");
    let server = start_server(&python, &gguf, &log);
    std::env::set_var(KEY_VAR, KEY);
    std::env::set_var(WRONG_KEY_VAR, "sk-not-the-key");
    let pool = pool(&server.addr);
    let (smol, wrong_key) = (
        pool.config.index_of("smol").unwrap(),
        pool.config.index_of("smol-wrong-key").unwrap(),
    );
    let timeout = Some(Duration::from_secs(300));
    let question = "What is 2 + 3? Answer with one number.";

    // Streaming, greedy: the same text and token count the server gives without streaming.
    let call = pool.call(smol, &ask(question, 24), timeout).await.unwrap();
    let r = &call.response;
    let (status, plain) = post(
        &server.addr,
        "/v1/chat/completions",
        Some(
            &json!({"model": "smol", "max_tokens": 24, "temperature": 0.0,
            "messages": [{"role": "user", "content": question}]}),
        ),
    )
    .unwrap();
    assert_eq!(status, 200, "{plain}");
    assert!(!r.text.trim().is_empty(), "{r:?}");
    assert_eq!(
        r.text, plain["choices"][0]["message"]["content"],
        "streamed and plain greedy answers agree"
    );
    // llama-cpp-python sends no usage in streams: output tokens are counted from the
    // log-probabilities (one per token), and equal the server's own count.
    let lps = r
        .token_logprobs
        .as_ref()
        .expect("log-probabilities are asked for and returned");
    assert_eq!(
        lps.len() as u64,
        plain["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(r.output_tokens as usize, lps.len());
    assert!(r.input_tokens > 0, "the prompt is estimated: {r:?}");
    assert!(lps.iter().all(|l| l.is_finite() && *l <= 0.0), "{lps:?}");
    let confidence = r.confidence().expect("a step confidence");
    assert!(confidence > 0.0 && confidence <= 1.0, "{confidence}");
    assert!(call.cost_usd > 0.0);

    // max_tokens ends the answer with finish reason `length`.
    let r = pool
        .call(smol, &ask("Count from one to twenty in words.", 3), timeout)
        .await
        .unwrap()
        .response;
    assert_eq!(r.finish, FinishReason::Length, "{r:?}");
    assert_eq!(r.output_tokens, 3, "{r:?}");

    // A prompt over the server's context: a ContextOverflow with its numbers, at once
    // (llama-cpp-python streams it as an empty 200; the backend asks again without
    // streaming and reads the 400).
    let long = "word ".repeat(700);
    let start = Instant::now();
    let e = pool.call(smol, &ask(&long, 8), timeout).await.unwrap_err();
    match &e {
        BackendError::ContextOverflow {
            model,
            needed,
            limit,
        } => {
            assert_eq!((model.as_str(), *limit), ("smol", N_CTX), "{e}");
            assert!(*needed > N_CTX, "{e}");
        }
        other => panic!("expected a context overflow, got: {other}"),
    }
    assert!(e.is_input_error());
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "not retried with backoff: {:?}",
        start.elapsed()
    );

    // A wrong key: the server's 401, not retried, with its message and without the key.
    let e = pool
        .call(wrong_key, &ask(question, 8), timeout)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, BackendError::Inference { .. }) && msg.contains("HTTP 401"),
        "{msg}"
    );
    assert!(msg.contains("after 1 attempt)"), "a 401 is final: {msg}");
    assert!(
        !msg.contains("sk-not-the-key") && !msg.contains(KEY),
        "{msg}"
    );

    // The server is still well after all of it.
    let again = pool.call(smol, &ask(question, 24), timeout).await.unwrap();
    assert_eq!(again.response.text, call.response.text);
}
