//! `r2reasoner serve` end to end on the real SmolLM2 model: the official OpenAI Python
//! client against the gateway, the `openai` backend using the gateway as its upstream, and
//! graceful shutdown on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use r2_test_support::bin;
use r2_test_support::cli::{mkfifo, serve, stop, Served};
use r2_test_support::http::request;
use r2_test_support::smol::SmolConfig;

const KEY_VAR: &str = "R2_SERVE_TEST_KEY";
const KEY: &str = "sk-serve-test-0123456789";

/// The virtualenv `scripts/setup` creates, or `R2REASONER_PYTHON`.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("R2REASONER_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("R2REASONER_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("r2reasoner")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/r2reasoner")))
        .expect("HOME is set");
    let py = home.join("venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the OpenAI Python client is not installed in {}: run `bash scripts/setup` (or set R2REASONER_PYTHON)",
        py.display()
    );
    py
}

fn write_config(dir: &Path) -> PathBuf {
    write_config_with(dir, "")
}

/// The test config with `server` added to its `[server]` table.
fn write_config_with(dir: &Path, server: &str) -> PathBuf {
    SmolConfig::new()
        .server(format!(
            "{server}\nmax_body_bytes = 4096\ntraces_db = \"{}\"\napi_keys = [{{ name = \"test\", env = \"{KEY_VAR}\" }}]",
            dir.join("traces.sqlite").display()
        ))
        .write(dir)
}

fn start(config: &Path) -> Served {
    // Make sure the model is cached before the server needs it.
    let o = bin!()
        .arg("--config")
        .arg(config)
        .args(["models", "fetch"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut cmd = bin!();
    cmd.arg("--config").arg(config).env(KEY_VAR, KEY);
    serve(cmd)
}

#[test]
fn official_openai_client_against_the_gateway_on_smollm2() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let mut server = start(&cfg);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let o = Command::new(py)
        .arg(&script)
        .env("R2_BASE_URL", &server.url)
        .env("R2_API_KEY", KEY)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "stdout:\n{out}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("all checks passed"), "{out}");

    // SIGTERM: a clean exit.
    stop(&mut server.child, Duration::from_secs(120));
}

#[test]
fn openai_backend_uses_the_gateway_as_its_upstream_with_the_real_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let server = start(&cfg);
    let remote = dir.path().join("remote.toml");
    std::fs::write(
        &remote,
        format!(
            "[[models]]\nid = \"remote-smol\"\nbackend = \"openai\"\nbase_url = \"{}/v1\"\napi_model = \"smollm2-135m\"\napi_key_env = \"{KEY_VAR}\"\nread_timeout_s = 300\nparameters = 135_000_000\ncontext_length = 2048\nprices.compute = {{ input = 0.0135, output = 0.027 }}\n",
            server.url
        ),
    )
    .unwrap();
    let o = bin!()
        .arg("--config")
        .arg(&remote)
        .args(["ask", "--json", "--direct", "remote-smol", "What is 2 + 3?"])
        .env(KEY_VAR, KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains(KEY), "the key leaked: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let step = &v["steps"][0];
    assert_eq!(step["model"], "remote-smol");
    assert!(
        step["input_tokens"].as_u64().unwrap() > 0 && step["output_tokens"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(
        step["confidence"].as_f64().is_some(),
        "log-probabilities pass through: {v}"
    );

    // Without the key variable: a clean input error naming the variable, not a hang.
    let o = bin!()
        .arg("--config")
        .arg(&remote)
        .args(["ask", "--direct", "remote-smol", "hi"])
        .env_remove(KEY_VAR)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains(KEY_VAR));
}

/// One HTTP/1.1 request with the key on a fresh connection: (status, body).
fn http(url: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let reply = request(
        url,
        method,
        path,
        Some(KEY),
        body.unwrap_or(""),
        Duration::from_secs(60),
    );
    let reply = reply.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (reply.status, reply.text())
}

#[test]
fn clients_name_only_exposed_policies_never_server_files() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO: opening it for reading would release the writer blocked on it below.
    let fifo = dir.path().join("labels.fifo");
    mkfifo(&fifo);
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (f, o) = (fifo.clone(), opened.clone());
    let writer = std::thread::spawn(move || {
        let _w = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        o.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let cfg = write_config_with(dir.path(), "policies = { tiny = \"direct:smollm2-135m\" }");
    let server = start(&cfg);
    let d = dir.path().display().to_string();
    let f = fifo.display().to_string();
    for model in [
        format!("r2reasoner/oracle:{f}"),
        format!("r2reasoner/learned:{f}"),
        format!("r2reasoner/oracle:{d}"),
        format!("r2reasoner/query-level:{d}@0.5"),
        "r2reasoner/oracle:/dev/zero".to_string(),
        "r2reasoner/learned:/etc/passwd".to_string(),
        "r2reasoner/oracle:/nonexistent/labels.jsonl".to_string(),
    ] {
        let body = serde_json::json!({"model": model, "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
        let (status, resp) = http(&server.url, "POST", "/v1/chat/completions", Some(&body));
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap_or_default();
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (404, Some("model_not_found")),
            "{model}: {resp}"
        );
        // A missing file and an existing one get the same answer.
        assert!(
            !resp.contains("No such file") && !resp.contains("directory"),
            "{resp}"
        );
    }
    // The server is responsive and listed the exposed policy; the FIFO was never opened.
    let (status, _) = http(&server.url, "GET", "/health", None);
    assert_eq!(status, 200);
    let (_, models) = http(&server.url, "GET", "/v1/models", None);
    assert!(models.contains("\"r2reasoner/tiny\""), "{models}");
    let body = serde_json::json!({"model": "r2reasoner/tiny", "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let (status, resp) = http(&server.url, "POST", "/v1/chat/completions", Some(&body));
    assert_eq!(status, 200, "{resp}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !opened.load(std::sync::atomic::Ordering::SeqCst),
        "a client's model name opened a server file"
    );
    // Release the writer: open the read end ourselves, without blocking.
    use std::os::unix::fs::OpenOptionsExt;
    let _r = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    writer.join().unwrap();
    assert!(opened.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn an_exposed_policy_that_cannot_load_stops_serve_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with(
        dir.path(),
        "policies = { broken = \"oracle:/nonexistent/l.jsonl\" }",
    );
    let o = bin!()
        .arg("--config")
        .arg(&cfg)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(KEY_VAR, KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("server.policies.broken"), "{stderr}");
}
