//! Gateway overhead under load: the latency `r2reasoner serve` adds to a pass-through
//! request, measured with an open-loop load generator on loopback.
//!
//! The bench starts
//! 1. a fixed-latency fake upstream (axum on 127.0.0.1) that answers every
//!    `POST /v1/chat/completions` with a valid `chat.completion` body (with `usage`) after a
//!    fixed sleep;
//! 2. the real gateway, `r2reasoner --config <tmp>/pool.toml serve --listen 127.0.0.1:0`, as a
//!    subprocess whose pool has one `backend = "openai"` model pointing at the upstream;
//! 3. an open-loop load generator: request `i` is due at `start + i / rate` and is sent then
//!    whatever earlier requests are doing, and its latency counts from that due time, so a
//!    slow target cannot hide queueing by slowing the sender (no coordinated omission).
//!
//! For each rate it runs the same schedule against the upstream directly (A) and through the
//! gateway by pool model id (B), alternating A/B and B/A over several rounds, and reports the
//! median over rounds of p50/p90/p99 for both, their per-round difference (the overhead),
//! errors, achieved rate, the gateway's CPU time per request and its memory (VmRSS/VmHWM).
//!
//! Run: `cargo build --release -p r2reasoner && cargo bench -p r2-server --bench gateway_load`.
//! Options after `--` (defaults shown): `--rates 500,1000 --duration 10 --warmup 2
//! --rounds 5 --upstream-ms 5`, `--bin PATH` (the gateway binary; else `$R2REASONER_BIN`,
//! else `r2reasoner` in this bench's own target directory, i.e. the release build) and
//! `--traces-dir DIR` (where the gateway's SQLite trace store goes; default a temporary
//! directory). Loopback only; every phase is bounded in requests and time; exits non-zero
//! with a message on failure. Without `--bench` (e.g. `cargo test --benches`) it only prints
//! how to run it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

/// The pool id (and upstream model name) every request uses.
const MODEL: &str = "fixed-latency";
const ANSWER: &str = "5";
/// A bound on every single request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After the last scheduled send, how long stragglers may take before they count as errors.
const DRAIN: Duration = Duration::from_secs(15);
/// A phase with more failed requests than this fraction fails the run.
const MAX_ERROR_FRACTION: f64 = 0.01;

type Fail = String;

struct Opts {
    rates: Vec<u32>,
    duration: Duration,
    warmup: Duration,
    rounds: usize,
    upstream_delay: Duration,
    bin: Option<PathBuf>,
    /// Where the gateway's trace store goes (default: the run's temporary directory).
    traces_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Option<Opts>, Fail> {
    let mut opts = Opts {
        rates: vec![500, 1000],
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        rounds: 5,
        upstream_delay: Duration::from_millis(5),
        bin: std::env::var_os("R2REASONER_BIN").map(PathBuf::from),
        traces_dir: None,
    };
    let mut bench = false;
    let mut unknown = Vec::new();
    let mut args = std::env::args().skip(1);
    let num = |flag: &str, v: Option<String>| -> Result<f64, Fail> {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or(format!("{flag}: '{v}' is not a positive number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => bench = true,
            "--rates" => {
                let v = args.next().ok_or("--rates needs a value")?;
                opts.rates = v
                    .split(',')
                    .map(|r| {
                        r.trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|r| (1..=20_000).contains(r))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or(format!(
                        "--rates: '{v}' is not a list of rates in 1..=20000"
                    ))?;
            }
            "--duration" => {
                opts.duration = Duration::from_secs_f64(num(&a, args.next())?.min(120.0))
            }
            "--warmup" => opts.warmup = Duration::from_secs_f64(num(&a, args.next())?.min(30.0)),
            "--rounds" => opts.rounds = num(&a, args.next())?.clamp(1.0, 20.0) as usize,
            "--upstream-ms" => {
                opts.upstream_delay =
                    Duration::from_secs_f64(num(&a, args.next())?.min(1000.0) / 1e3)
            }
            "--bin" => opts.bin = Some(PathBuf::from(args.next().ok_or("--bin needs a path")?)),
            "--traces-dir" => {
                opts.traces_dir = Some(PathBuf::from(
                    args.next().ok_or("--traces-dir needs a path")?,
                ))
            }
            s if s.starts_with('-') => unknown.push(a),
            // A name filter from `cargo bench <filter>`: there is only one benchmark.
            _ => {}
        }
    }
    if bench && !unknown.is_empty() {
        return Err(format!(
            "unknown option {} (options: --rates --duration --warmup --rounds --upstream-ms --bin --traces-dir)",
            unknown.join(" ")
        ));
    }
    Ok(bench.then_some(opts))
}

/// A 2-worker tokio runtime whose threads are named `name`.
fn runtime(name: &str) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))
}

fn main() {
    match parse_args() {
        Ok(Some(opts)) => {
            if let Err(e) = run(opts) {
                eprintln!("gateway_load: FAILED: {e}");
                std::process::exit(1);
            }
        }
        Ok(None) => println!(
            "gateway_load: a load benchmark (not a test); run it with \
             `cargo bench -p r2-server --bench gateway_load`"
        ),
        Err(e) => {
            eprintln!("gateway_load: {e}");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The fixed-latency upstream

fn completion_body() -> String {
    serde_json::json!({
        "id": "chatcmpl-fixed",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
    })
    .to_string()
}

struct Upstream {
    delay: Duration,
    body: Bytes,
    timer: PreciseTimer,
}

async fn upstream_chat(State(u): State<Arc<Upstream>>, body: Bytes) -> Response {
    let arrived = Instant::now();
    // Parse the request as a real server would; reject anything that is not a chat request.
    let ok = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v.get("messages").is_some_and(|m| m.is_array()));
    if !ok {
        return (StatusCode::BAD_REQUEST, "not a chat completion request").into_response();
    }
    u.timer.sleep_until(arrived + u.delay).await;
    ([(header::CONTENT_TYPE, "application/json")], u.body.clone()).into_response()
}

/// Wakes tasks at precise instants. tokio's timer works in whole milliseconds, so a 5 ms
/// sleep lasts anywhere from 5 to 6 ms depending on where a request lands between two ticks,
/// and direct and proxied requests land differently. This thread waits with futex timeouts
/// (tens of microseconds of slack) instead, so the upstream's latency is the same for every
/// request.
struct PreciseTimer {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<Wake>>,
}

struct Wake {
    at: Instant,
    seq: u64,
    tx: tokio::sync::oneshot::Sender<()>,
}

impl PartialEq for Wake {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Wake {}
impl PartialOrd for Wake {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Wake {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

impl PreciseTimer {
    fn start() -> Self {
        use std::cmp::Reverse;
        use std::sync::mpsc::RecvTimeoutError;
        let (tx, rx) = std::sync::mpsc::channel::<Wake>();
        std::thread::Builder::new()
            .name("upstream-timer".into())
            .spawn(move || {
                let mut heap = std::collections::BinaryHeap::<Reverse<Wake>>::new();
                loop {
                    let now = Instant::now();
                    while heap.peek().is_some_and(|w| w.0.at <= now) {
                        if let Some(Reverse(w)) = heap.pop() {
                            let _ = w.tx.send(());
                        }
                    }
                    let next = match heap.peek() {
                        Some(w) => rx.recv_timeout(w.0.at.saturating_duration_since(now)),
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    };
                    match next {
                        Ok(w) => heap.push(Reverse(w)),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .expect("spawn the upstream timer thread");
        Self {
            tx: std::sync::Mutex::new(tx),
        }
    }

    async fn sleep_until(&self, at: Instant) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let wake = Wake {
            at,
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            tx,
        };
        let sent = self
            .tx
            .lock()
            .map(|s| s.send(wake).is_ok())
            .unwrap_or(false);
        if sent {
            let _ = rx.await;
        } else {
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The gateway subprocess

struct Gateway {
    child: Child,
    url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn alive(&mut self) -> Result<(), Fail> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the gateway exited during the run ({status})")),
            Err(e) => Err(format!("cannot check the gateway process: {e}")),
        }
    }

    fn status_kb(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// User + system CPU time of the gateway so far.
    fn cpu(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &text[text.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
        Some(Duration::from_millis(ticks * 10))
    }
}

fn gateway_binary(opts: &Opts) -> Result<PathBuf, Fail> {
    let path = match &opts.bin {
        Some(p) => p.clone(),
        None => {
            // target/<profile>/deps/gateway_load-<hash> → target/<profile>/r2reasoner
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            exe.parent()
                .and_then(Path::parent)
                .map(|d| d.join("r2reasoner"))
                .ok_or("cannot locate the target directory")?
        }
    };
    if !path.is_file() {
        return Err(format!(
            "the gateway binary {} does not exist: run `cargo build --release -p r2reasoner` \
             first (same CARGO_TARGET_DIR), or pass --bin PATH / set R2REASONER_BIN",
            path.display()
        ));
    }
    Ok(path)
}

fn start_gateway(bin: &Path, dir: &Path, traces: &Path, upstream: &str) -> Result<Gateway, Fail> {
    let config = format!(
        r#"# Written by the gateway_load bench.
[server]
max_concurrency = 100000
request_timeout_s = 30
traces_db = "{traces}"

[[models]]
id = "{MODEL}"
backend = "openai"
base_url = "{upstream}/v1"
connect_timeout_s = 5
read_timeout_s = 30
max_retries = 0
max_concurrency = 100000
parameters = 1_000_000_000
context_length = 4096
prices.compute = {{ input = 0.1, output = 0.2 }}
"#,
        traces = traces.display(),
    );
    let path = dir.join("pool.toml");
    std::fs::write(&path, config).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&path)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("R2REASONER_HOME", dir.join("home"))
        .env_remove("R2REASONER_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(u) = line.strip_prefix("r2reasoner serve: listening on ") {
                    let _ = tx.send(Ok(u.trim().to_string()));
                    sent = true;
                } else {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            }
            // Keep draining so the gateway never blocks on a full pipe.
        }
        if !sent {
            let _ = tx.send(Err(seen));
        }
    });
    let mut gateway = Gateway {
        child,
        url: String::new(),
    };
    gateway.url = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(url)) => url,
        Ok(Err(stderr)) => {
            let status = gateway
                .child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_default();
            return Err(format!("the gateway did not start ({status}):\n{stderr}"));
        }
        Err(_) => return Err("the gateway printed no address within 30 s".into()),
    };
    Ok(gateway)
}

// ---------------------------------------------------------------------------------------
// The open-loop load generator

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Direct,
    Gateway,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Gateway => "gateway",
        }
    }
}

struct Phase {
    /// Latencies of the successful requests, from their due time to the last body byte; sorted.
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    /// Successful responses per second over the phase (first due time to last completion).
    achieved: f64,
    /// How late the sender was against the schedule (p99), a check on the generator itself.
    send_lag_p99: Duration,
    sent: usize,
}

impl Phase {
    fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Send `rate × duration` requests on a fixed schedule from the calling thread, which does
/// nothing else meanwhile; each request runs as its own task on `rt`, so a slow response
/// never delays the next send.
fn run_phase(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    url: &str,
    body: &Bytes,
    rate: u32,
    duration: Duration,
) -> Phase {
    let n = ((rate as f64) * duration.as_secs_f64()).round().max(1.0) as usize;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now() + Duration::from_millis(20);
    let mut handles = Vec::with_capacity(n);
    let mut lags = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + period * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        lags.push(Instant::now().saturating_duration_since(due));
        let request = client
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .timeout(REQUEST_TIMEOUT);
        handles.push(rt.spawn(async move {
            let result = async {
                let resp = request.send().await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&bytes)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ));
                }
                Ok(())
            }
            .await;
            let done = Instant::now();
            result.map(|()| (done - due, done))
        }));
    }
    let outcomes = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + DRAIN;
        let mut out = Vec::with_capacity(n);
        for h in handles {
            match tokio::time::timeout_at(deadline, h).await {
                Ok(Ok(r)) => out.push(r),
                Ok(Err(e)) => out.push(Err(format!("request task failed: {e}"))),
                Err(_) => out.push(Err("not finished when the phase ended".into())),
            }
        }
        out
    });
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0;
    let mut first_error = None;
    let mut last = start;
    for o in outcomes {
        match o {
            Ok((lat, done)) => {
                latencies.push(lat);
                last = last.max(done);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    latencies.sort();
    lags.sort();
    let span = last.saturating_duration_since(start).as_secs_f64();
    Phase {
        achieved: if span > 0.0 {
            latencies.len() as f64 / span
        } else {
            0.0
        },
        latencies,
        errors,
        first_error,
        send_lag_p99: quantile(&lags, 0.99),
        sent: n,
    }
}

// ---------------------------------------------------------------------------------------
// The run

const QS: [(f64, &str); 3] = [(0.50, "p50"), (0.90, "p90"), (0.99, "p99")];

struct Round {
    direct: Phase,
    gateway: Phase,
    /// Gateway CPU time per request during its measured phase.
    cpu_per_request: Option<Duration>,
}

struct RateResult {
    rate: u32,
    rounds: Vec<Round>,
    rss_before_kb: Option<u64>,
    hwm_kb: Option<u64>,
    rss_after_kb: Option<u64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn mib(kb: Option<u64>) -> String {
    kb.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn run(opts: Opts) -> Result<(), Fail> {
    let bin = gateway_binary(&opts)?;
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let per_phase = opts.warmup + opts.duration;
    let planned = per_phase * (2 * opts.rounds * opts.rates.len()) as u32;
    println!(
        "gateway_load: binary {}\n  rates {:?}/s, {} s measured after {} s warm-up per phase, {} rounds (A/B alternating), upstream latency {} ms\n  about {} s of load; {} logical CPUs; load average {}",
        bin.display(),
        opts.rates,
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.rounds,
        ms(opts.upstream_delay),
        planned.as_secs(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        loadavg(),
    );

    // The upstream on its own runtime, so client work does not share its workers.
    let upstream_rt = runtime("upstream")?;
    let listener = upstream_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("cannot bind the upstream on loopback: {e}"))?;
    let upstream_url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let app = Router::new()
        .route("/v1/chat/completions", post(upstream_chat))
        .with_state(Arc::new(Upstream {
            delay: opts.upstream_delay,
            body: Bytes::from(completion_body()),
            timer: PreciseTimer::start(),
        }));
    upstream_rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // A fresh store per run, removed at the end, wherever it lives.
    let traces_dir = match &opts.traces_dir {
        Some(d) => Some(
            tempfile::Builder::new()
                .prefix("gateway_load")
                .tempdir_in(d)
                .map_err(|e| format!("cannot create a directory in {}: {e}", d.display()))?,
        ),
        None => None,
    };
    let traces = traces_dir
        .as_ref()
        .map_or(dir.path(), |d| d.path())
        .join("traces.sqlite");
    let mut gateway = start_gateway(&bin, dir.path(), &traces, &upstream_url)?;
    println!(
        "  upstream {upstream_url}, gateway {}, trace store {}",
        gateway.url,
        traces.display()
    );

    let client_rt = runtime("client")?;
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| format!("reqwest: {e}"))?;
    let body = Bytes::from(
        serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "What is 2 + 3? Answer with the number only."}],
            "max_tokens": 16,
            "temperature": 0
        })
        .to_string(),
    );
    let direct_url = format!("{upstream_url}/v1/chat/completions");
    let gateway_url = format!("{}/v1/chat/completions", gateway.url);

    // One checked request through the gateway: the pass-through really reaches the upstream.
    let check: serde_json::Value = client_rt.block_on(async {
        let r = client
            .post(&gateway_url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("the first request through the gateway failed: {e}"))?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("the gateway answered HTTP {status}: {text}"));
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("the gateway's answer is not JSON ({e}): {text}"))
    })?;
    let content = check
        .pointer("/choices/0/message/content")
        .and_then(|v| v.as_str());
    let completion_tokens = check
        .pointer("/usage/completion_tokens")
        .and_then(|v| v.as_u64());
    if content != Some(ANSWER) || completion_tokens != Some(1) {
        return Err(format!(
            "the gateway did not pass the upstream's answer through: {check}"
        ));
    }

    let mut results = Vec::new();
    // A phase over the error threshold stops the run; the rounds finished so far are reported.
    let mut failure = None;
    for &rate in &opts.rates {
        let mut rounds = Vec::new();
        let rss_before_kb = gateway.status_kb("VmRSS");
        'rounds: for round in 0..opts.rounds {
            let order = if round % 2 == 0 {
                [Target::Direct, Target::Gateway]
            } else {
                [Target::Gateway, Target::Direct]
            };
            let mut direct = None;
            let mut via = None;
            let mut cpu_per_request = None;
            for target in order {
                let url = match target {
                    Target::Direct => &direct_url,
                    Target::Gateway => &gateway_url,
                };
                // Warm-up at the same rate (connections, caches); discarded.
                run_phase(&client_rt, &client, url, &body, rate, opts.warmup);
                let cpu0 = gateway.cpu();
                let phase = run_phase(&client_rt, &client, url, &body, rate, opts.duration);
                let cpu1 = gateway.cpu();
                gateway.alive()?;
                println!(
                    "  {rate}/s round {} {:<7}: p50 {:.3} p90 {:.3} p99 {:.3} max {:.3} ms, {} errors, {:.0}/s, sender lag p99 {:.3} ms, gateway threads {}, load {}",
                    round + 1,
                    target.name(),
                    ms(phase.quantile(0.5)),
                    ms(phase.quantile(0.9)),
                    ms(phase.quantile(0.99)),
                    ms(phase.quantile(1.0)),
                    phase.errors,
                    phase.achieved,
                    ms(phase.send_lag_p99),
                    gateway.status_kb("Threads").map_or("?".into(), |n| n.to_string()),
                    loadavg(),
                );
                if phase.errors as f64 > MAX_ERROR_FRACTION * phase.sent as f64 {
                    failure = Some(format!(
                        "{} of {} requests to the {} failed at {rate}/s in round {} (first: {})",
                        phase.errors,
                        phase.sent,
                        target.name(),
                        round + 1,
                        phase.first_error.as_deref().unwrap_or("?")
                    ));
                    break 'rounds;
                }
                match target {
                    Target::Direct => direct = Some(phase),
                    Target::Gateway => {
                        if let (Some(a), Some(b)) = (cpu0, cpu1) {
                            cpu_per_request = Some((b - a) / phase.sent as u32);
                        }
                        via = Some(phase)
                    }
                }
            }
            rounds.push(Round {
                direct: direct.ok_or("no direct phase")?,
                gateway: via.ok_or("no gateway phase")?,
                cpu_per_request,
            });
        }
        results.push(RateResult {
            rate,
            rounds,
            rss_before_kb,
            hwm_kb: gateway.status_kb("VmHWM"),
            rss_after_kb: gateway.status_kb("VmRSS"),
        });
        if failure.is_some() {
            break;
        }
    }

    println!(
        "\nMedian over the rounds (latency in ms from the scheduled send; overhead = gateway − direct per round, then the median):\n"
    );
    println!("| rate | rounds | direct p50 / p90 / p99 | via gateway p50 / p90 / p99 | overhead p50 / p90 / p99 | errors | achieved rate | gateway CPU per request | gateway RSS before → peak (VmHWM) → after, MiB |");
    println!("|---:|---:|---|---|---|---:|---:|---:|---|");
    for r in &results {
        if r.rounds.is_empty() {
            println!("| {}/s | 0 | no complete round | | | | | | |", r.rate);
            continue;
        }
        let med = |f: &dyn Fn(&Round) -> f64| median(r.rounds.iter().map(f).collect());
        let triple = |f: &dyn Fn(&Round, f64) -> f64| {
            QS.iter()
                .map(|(q, _)| format!("{:.3}", med(&|x| f(x, *q))))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let direct = triple(&|x, q| ms(x.direct.quantile(q)));
        let via = triple(&|x, q| ms(x.gateway.quantile(q)));
        let over = triple(&|x, q| ms(x.gateway.quantile(q)) - ms(x.direct.quantile(q)));
        let errors: usize = r
            .rounds
            .iter()
            .map(|x| x.direct.errors + x.gateway.errors)
            .sum();
        let sent: usize = r
            .rounds
            .iter()
            .map(|x| x.direct.sent + x.gateway.sent)
            .sum();
        let achieved_d = med(&|x| x.direct.achieved);
        let achieved_g = med(&|x| x.gateway.achieved);
        let cpu = med(&|x| {
            x.cpu_per_request
                .map(|d| d.as_secs_f64() * 1e6)
                .unwrap_or(f64::NAN)
        });
        println!(
            "| {}/s | {} | {direct} | {via} | **{over}** | {errors} of {sent} | {achieved_d:.0} / {achieved_g:.0} /s | {cpu:.0} µs | {} → {} → {} |",
            r.rate,
            r.rounds.len(),
            mib(r.rss_before_kb),
            mib(r.hwm_kb),
            mib(r.rss_after_kb),
        );
    }
    println!("\nload average at the end: {}", loadavg());
    drop(gateway);
    upstream_rt.shutdown_timeout(Duration::from_secs(1));
    client_rt.shutdown_timeout(Duration::from_secs(1));
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}
