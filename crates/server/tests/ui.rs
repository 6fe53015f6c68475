//! The trace viewer and the JSON it reads: `GET /v1/traces` (listing) and `GET /v1/spend`
//! called without a socket, then the page itself in headless Chromium against a gateway on
//! a loopback socket: its DOM must show the steps of a known trace, escape model output,
//! and a screenshot lands in `target/tmp/ui/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use r2_pool::{Backend, GenRequest, Pool, PoolConfig, Sampling, ScriptedBackend};
use r2_server::{app, AppState, Keys, TraceStore};
use serde_json::{json, Value};
use tower::ServiceExt;

const PLAN: &str = "1. Find the cost of the pens.\n2. Find the cost of the books.\n3. Add the two costs. (depends on 1, 2)";
/// What model `a` answers to a question containing "xss": markup that must stay text.
const PAYLOAD: &str = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">ANSWER: 1";

/// A scripted model: plans `PLAN`, answers each step, synthesises `answer`; samples taken
/// at a temperature answer by their seed, so they disagree with the greedy answer.
fn model(answer: &'static str) -> Arc<dyn Backend> {
    ScriptedBackend::new(move |r: &GenRequest| {
        let system = r.messages[0].content.as_str();
        let last = r.messages.last().map_or("", |m| m.content.as_str());
        Ok(if system.starts_with("You break a question") {
            PLAN.into()
        } else if system.starts_with("You are working on one step") {
            "working\nRESULT: done".into()
        } else if last.contains("xss") {
            PAYLOAD.into()
        } else if let Sampling::Temperature { seed, .. } = r.sampling {
            format!("ANSWER: {}", 100 + seed)
        } else {
            format!("adding up\nANSWER: {answer}")
        })
    })
}

/// Models `a` (small) and `b` (largest), default policy `fixed:a+agree:1`: the plan runs
/// on `a`, its synthesis disagrees with its sample and escalates to `b`.
fn gateway(keys: Keys) -> Arc<AppState> {
    let entry = |id: &str, params: u32| {
        format!("[[models]]\nid = \"{id}\"\nbackend = \"llama_cpp\"\nsource = \"{id}.gguf\"\nparameters = {params}\ncontext_length = 2048\nmax_concurrency = 4\nprices.compute = {{ input = 1.0, output = 2.0 }}\n")
    };
    let text = format!(
        "policy = \"fixed:a+agree:1\"\ndecomposer = \"a\"\n{}{}",
        entry("a", 1),
        entry("b", 2)
    );
    let cfg = PoolConfig::parse(&text, "ui-test.toml", None).unwrap();
    let backends = HashMap::from([
        ("a".to_string(), model("41")),
        ("b".to_string(), model("42")),
    ]);
    let pool = Pool::new(cfg.clone(), backends).unwrap();
    Arc::new(
        AppState::new(
            Arc::new(pool),
            keys,
            &cfg.server,
            TraceStore::open(None).unwrap(),
            &AppState::baseline_parser(),
        )
        .unwrap(),
    )
}

fn chat(model: &str, content: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": content}]}).to_string()
}

/// Send one request without a socket: status, headers, body.
async fn send(
    state: &Arc<AppState>,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<String>,
) -> (u16, axum::http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(body.map_or(Body::empty(), Body::from)).unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn code(status: u16, body: &str) -> (u16, String) {
    let e = &json(body)["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{body}");
    (status, e["code"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn listing_and_spend_record_the_key_name_and_need_a_key() {
    // alice is an admin key: she sees every key's spend, bob only his own.
    let keys = Keys::from_plain(&[("alice", "sk-alice-secret"), ("bob", "sk-bob-secret")])
        .with_admins(&["alice"]);
    let g = gateway(keys);
    let mut ids = Vec::new();
    for (key, model) in [
        ("sk-alice-secret", "r2reasoner"),
        ("sk-bob-secret", "a"),
        ("sk-alice-secret", "b"),
    ] {
        let (status, headers, body) = send(
            &g,
            "POST",
            "/v1/chat/completions",
            Some(key),
            Some(chat(model, "What is 6 * 7?")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        ids.push(
            headers["x-r2reasoner-trace-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }

    // Newest first, with key name, latency, policy, answer, cost and the escalation (as
    // the admin key sees them: every key's).
    let (status, _, body) = send(&g, "GET", "/v1/traces", Some("sk-alice-secret"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("sk-alice-secret") && !body.contains("sk-bob-secret"));
    let list = json(&body);
    let listed: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [&ids[2], &ids[1], &ids[0]].map(String::as_str));
    assert_eq!(list["has_more"], false);
    let routed = &list["data"][2];
    assert_eq!(routed["key"], "alice");
    assert_eq!(routed["policy"], "fixed:a+agree:1");
    assert_eq!(routed["answer"], "42");
    assert_eq!(routed["escalations"], 1, "{routed}");
    assert_eq!(routed["models"], json!(["a", "b"]));
    assert!(routed["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(routed["total_cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(list["data"][1]["key"], "bob");
    assert_eq!(list["data"][1]["policy"], "pass-through");

    // Any other key sees only its own traces, and no other key's by id.
    let (_, _, body) = send(&g, "GET", "/v1/traces", Some("sk-bob-secret"), None).await;
    let own: Vec<Value> = json(&body)["data"].as_array().unwrap().clone();
    assert_eq!(own.len(), 1, "{body}");
    assert_eq!(
        (&own[0]["id"], &own[0]["key"]),
        (&json!(ids[1]), &json!("bob"))
    );
    let path = format!("/v1/traces/{}", ids[0]);
    let (status, _, body) = send(&g, "GET", &path, Some("sk-bob-secret"), None).await;
    assert_eq!(code(status, &body), (404, "trace_not_found".into()));
    let (status, _, _) = send(&g, "GET", &path, Some("sk-alice-secret"), None).await;
    assert_eq!(status, 200);
    let path = format!("/v1/traces?before={}", ids[2]);
    let (status, _, body) = send(&g, "GET", &path, Some("sk-bob-secret"), None).await;
    assert_eq!(code(status, &body), (400, "invalid_cursor".into()));

    // Paging: one at a time, following `next`.
    let (_, _, body) = send(
        &g,
        "GET",
        "/v1/traces?limit=1",
        Some("sk-alice-secret"),
        None,
    )
    .await;
    let page = json(&body);
    assert_eq!(
        (page["has_more"].clone(), page["next"].clone()),
        (json!(true), json!(ids[2]))
    );
    let (_, _, body) = send(
        &g,
        "GET",
        &format!("/v1/traces?limit=2&before={}", ids[2]),
        Some("sk-alice-secret"),
        None,
    )
    .await;
    let page = json(&body);
    assert_eq!(page["data"][0]["id"], ids[1].as_str());
    assert_eq!(page["data"][1]["id"], ids[0].as_str());
    assert_eq!(page["next"], Value::Null);

    // Spend per key and model: alice's routed request called a and b, her pass-through b;
    // bob's pass-through a.
    let (status, _, body) = send(
        &g,
        "GET",
        "/v1/spend?bucket=hour&buckets=2",
        Some("sk-alice-secret"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let spend = json(&body);
    assert_eq!(
        (spend["bucket"].clone(), spend["bucket_seconds"].clone()),
        (json!("hour"), json!(3600))
    );
    let rows: Vec<(String, String, u64)> = spend["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["model"].as_str().unwrap().to_string(),
                r["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    let requests = |k: &str, m: &str| {
        rows.iter()
            .filter(|r| r.0 == k && r.1 == m)
            .map(|r| r.2)
            .sum::<u64>()
    };
    assert_eq!(
        (
            requests("alice", "a"),
            requests("alice", "b"),
            requests("bob", "a"),
            requests("bob", "b")
        ),
        (1, 2, 1, 0),
        "{rows:?}"
    );
    let total: f64 = spend["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    let listed_total: f64 = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["total_cost_usd"].as_f64().unwrap())
        .sum();
    assert!(
        (total - listed_total).abs() < 1e-9,
        "{total} != {listed_total}"
    );
    let (_, _, body) = send(
        &g,
        "GET",
        "/v1/spend?bucket=hour&buckets=2",
        Some("sk-bob-secret"),
        None,
    )
    .await;
    let own = json(&body);
    assert_eq!(own["scope"], "own");
    let keys: Vec<&Value> = own["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["key"])
        .collect();
    assert_eq!(keys, [&json!("bob")], "{own}");

    // The JSON needs a key; the page does not, and carries a strict CSP.
    for path in ["/v1/traces", "/v1/spend", "/v1/traces?limit=1"] {
        let (status, _, body) = send(&g, "GET", path, None, None).await;
        assert_eq!(
            code(status, &body),
            (401, "invalid_api_key".into()),
            "{path}"
        );
        let (status, _, _) = send(&g, "GET", path, Some("sk-wrong"), None).await;
        assert_eq!(status, 401, "{path}");
    }
    for (path, ty) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let (status, headers, body) = send(&g, "GET", path, None, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(ty),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(!body.is_empty());
    }
    let (status, headers, _) = send(&g, "POST", "/ui", None, None).await;
    assert_eq!((status, headers["allow"].to_str().unwrap()), (405, "GET"));
    // Elsewhere under /ui/ is an unknown route, behind the key like any other.
    assert_eq!(send(&g, "GET", "/ui/nope", None, None).await.0, 401);
}

#[tokio::test]
async fn bad_listing_and_spend_queries_are_openai_shaped_400s() {
    let g = gateway(Keys::default());
    let cases = [
        ("/v1/traces?limit=0", "invalid_limit"),
        ("/v1/traces?limit=201", "invalid_limit"),
        ("/v1/traces?limit=ten", "invalid_limit"),
        ("/v1/traces?limit=-1", "invalid_limit"),
        ("/v1/traces?before=chatcmpl-unknown", "invalid_cursor"),
        ("/v1/traces?before=", "invalid_cursor"),
        ("/v1/traces?limit=1&limit=2", "invalid_query"),
        ("/v1/traces?offset=3", "invalid_query"),
        ("/v1/spend?bucket=week", "invalid_bucket"),
        ("/v1/spend?buckets=0", "invalid_buckets"),
        ("/v1/spend?buckets=1001", "invalid_buckets"),
        ("/v1/spend?since=0", "invalid_query"),
    ];
    for (path, expected) in cases {
        let (status, _, body) = send(&g, "GET", path, None, None).await;
        assert_eq!(
            code(status, &body),
            (400, expected.to_string()),
            "{path}: {body}"
        );
    }
    // Without keys every request is accepted, and traces carry no key name.
    let (status, _, _) = send(
        &g,
        "POST",
        "/v1/chat/completions",
        None,
        Some(chat("a", "hi")),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = send(&g, "GET", "/v1/traces?limit=200", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["data"][0]["key"], Value::Null);
    let (status, _, body) = send(&g, "GET", "/v1/spend", None, None).await;
    assert_eq!((status, json(&body)["bucket"].clone()), (200, json!("day")));
}

// ---- the page in headless Chromium ----

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Run headless Chromium on `url` with `args` and a fresh profile; its standard output.
/// Chromium is killed if it has not finished within two minutes.
fn run_chromium(bin: &Path, url: &str, args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args([
            "--headless",
            // Root (as in CI) cannot use Chromium's sandbox; the page is our own, on loopback.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            "--window-size=1280,1500",
            // Lets the page's fetches finish before the DOM is dumped or the shot taken.
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).ok();
        out
    });
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish on {url} within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

async fn dump_dom(bin: &Path, url: String) -> String {
    let bin = bin.to_path_buf();
    tokio::task::spawn_blocking(move || run_chromium(&bin, &url, &["--dump-dom".to_string()]))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_known_trace_in_headless_chromium() {
    let Some(bin) = chromium() else {
        println!(
            "SKIPPED the_page_shows_a_known_trace_in_headless_chromium: no `chromium` on PATH \
             (scripts/setup installs Debian's chromium package)"
        );
        return;
    };
    let started = Instant::now();
    let state = gateway(Keys::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(r2_server::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for (model, question) in [("r2reasoner", "What is 6 * 7?"), ("a", "say xss")] {
        let resp = client
            .post(format!("{url}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat(model, question))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        ids.push(
            resp.headers()["x-r2reasoner-trace-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    let (routed, xss) = (&ids[0], &ids[1]);
    let trace: Value = client
        .get(format!("{url}/v1/traces/{routed}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let steps: Vec<(String, String)> = trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["model"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let step_ids: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        step_ids,
        [
            "decompose",
            "1",
            "2",
            "3",
            "synthesis",
            "synthesis:agree1",
            "synthesis:up1"
        ]
    );

    // The known trace: every step in the table with its model, in the plan's DAG, its text
    // in and out, and the escalation; the recent requests list both traces.
    let dom = dump_dom(&bin, format!("{url}/ui#trace={routed}")).await;
    assert!(dom.contains("<title>r2reasoner traces</title>"), "{dom}");
    for (id, model) in &steps {
        let row = format!("<tr class=\"step\" data-step=\"{id}\" data-model=\"{model}\">");
        assert!(
            dom.contains(&row),
            "no row for step {id} on {model}:\n{dom}"
        );
        let node = format!("<g class=\"node\" data-step=\"{id}\"");
        assert!(dom.contains(&node), "step {id} is not in the DAG:\n{dom}");
    }
    let named: usize = trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["depends_on"].as_array().unwrap().len())
        .sum();
    assert!(named >= 5, "3 <- 1, 2 and synthesis <- 1, 2, 3: {trace}");
    assert_eq!(
        dom.matches("class=\"edge named\"").count(),
        named,
        "one arrow per dependency"
    );
    assert_eq!(
        dom.matches("class=\"edge implied\"").count(),
        2,
        "1 and 2 hang off the plan"
    );
    assert!(dom.contains("Add the two costs."), "step text in");
    assert!(dom.contains("working\nRESULT: done"), "step text out");
    assert!(
        dom.contains("<li class=\"escalation\">synthesis: a "),
        "{dom}"
    );
    assert!(dom.contains(&format!("<tr class=\"request\" data-trace=\"{routed}\">")));
    assert!(dom.contains(&format!("<tr class=\"request\" data-trace=\"{xss}\">")));
    assert!(
        dom.contains("<tr class=\"spend\" data-key=\"\" data-model=\"b\">"),
        "spend rows"
    );

    // Model output with markup is shown as text, in the list and in the trace.
    let dom = dump_dom(&bin, format!("{url}/ui#trace={xss}")).await;
    assert!(dom.contains("<pre class=\"text-out\">&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x"), "{dom}");
    assert!(dom.contains("<td class=\"answer\">&lt;script&gt;"), "{dom}");
    assert!(
        !dom.contains("<img") && !dom.contains("<script>document"),
        "{dom}"
    );
    assert!(dom.contains("<title>r2reasoner traces</title>") && !dom.contains("pwned</title>"));

    // A screenshot of the known trace, kept under target/ for a human to look at.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("trace.png");
    let _ = std::fs::remove_file(&shot);
    let (bin2, page, arg) = (
        bin.clone(),
        format!("{url}/ui#trace={routed}"),
        format!("--screenshot={}", shot.display()),
    );
    tokio::task::spawn_blocking(move || run_chromium(&bin2, &page, &[arg]))
        .await
        .unwrap();
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!(
        "screenshot: {} ({} bytes); chromium test took {:.1} s",
        shot.display(),
        png.len(),
        started.elapsed().as_secs_f64()
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
