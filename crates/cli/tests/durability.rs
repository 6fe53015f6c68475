//! Durability (issue #27 item 6): `bench`, `train label`, `train grpo` and `serve` on the
//! real SmolLM2 model, killed with SIGKILL mid-run. A rerun loses nothing that was finished
//! before the kill, and every file the run writes (JSONL, router checkpoints, the call
//! cache's and the trace store's SQLite) is readable afterwards.
//!
//! Each test has its own `R2REASONER_HOME` (so its call cache starts empty and the run
//! really computes), with the model named by its path in the shared cache (fetched once).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use r2_test_support::bin;
use r2_test_support::cli::{self, text};
use r2_test_support::http::request;
use r2_test_support::smol::{self, SmolConfig};
use serde_json::{json, Value};

/// How long a condition may take before the test gives up: a guard against hangs, far
/// above what any step needs.
const PATIENCE: Duration = Duration::from_secs(900);

/// The cached SmolLM2 file, fetched into the default cache once per test binary.
fn smol_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| smol::fetch(bin!()))
}

/// A temporary directory with its own cache home and a one-model SmolLM2 config.
struct Env {
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SmolConfig::new()
            .source(smol_path().display().to_string())
            .server(format!(
                "traces_db = \"{}\"",
                dir.path().join("traces.sqlite").display()
            ))
            .write(dir.path());
        Env { dir, cfg }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// The binary with this config and home.
    fn cmd(&self) -> Command {
        let mut c = bin!();
        c.arg("--config")
            .arg(&self.cfg)
            .env("R2REASONER_HOME", self.home());
        c
    }

    /// Start `cmd` with stdout and stderr going to `<name>.out` / `<name>.err`.
    fn spawn(&self, mut cmd: Command, name: &str) -> Child {
        let out = std::fs::File::create(self.path(&format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(self.path(&format!("{name}.err"))).unwrap();
        cmd.stdout(out).stderr(err).spawn().unwrap()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// GSM8K-format questions the model answers in a few seconds each.
    fn easy_data(&self, n: usize) -> PathBuf {
        let path = self.path("easy.jsonl");
        let lines: String = (0..n)
            .map(|i| {
                let (a, b) = (3 + i, 4 + 2 * i);
                format!(
                    "{}\n",
                    json!({
                        "question": format!("Tom has {a} apples and buys {b} more. How many apples does he have?"),
                        "answer": format!("{a} + {b} = {}\n#### {}", a + b, a + b),
                    })
                )
            })
            .collect();
        std::fs::write(&path, lines).unwrap();
        path
    }
}

/// Poll until `ready` holds; the child must still be running (it is about to be killed).
fn wait_for(child: &mut Child, what: &str, env: &Env, name: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before {what}; stderr:\n{}",
                env.log(&format!("{name}.err"))
            );
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no {what}; stderr:\n{}",
            env.log(&format!("{name}.err"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL (`Child::kill` sends SIGKILL on Unix), checking the process was still running.
fn kill9(child: &mut Child) {
    use std::os::unix::process::ExitStatusExt;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run finished before the kill"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
}

/// The complete (newline-terminated) lines of a file.
fn complete_lines(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    text(&bytes[..end]).lines().map(str::to_string).collect()
}

/// `PRAGMA integrity_check` of an SQLite file (opening it recovers its WAL, as the next
/// run would).
fn integrity(path: &Path) -> String {
    assert!(path.is_file(), "{} was not written", path.display());
    let c = rusqlite::Connection::open(path).unwrap();
    let rows: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join("; ")
}

fn id_of(line: &str) -> Option<String> {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
}

#[test]
fn a_killed_bench_keeps_every_finished_item_and_resumes() {
    let env = Env::new();
    let data = env.easy_data(8);
    let out = env.path("out");
    let items = out.join("direct_smollm2-135m").join("items.jsonl");
    let bench = || {
        let mut c = env.cmd();
        c.args(["bench", "--data"])
            .arg(&data)
            .args([
                "--policy",
                "direct:smollm2-135m",
                "--concurrency",
                "2",
                "--out",
            ])
            .arg(&out);
        c
    };
    let mut child = env.spawn(bench(), "bench1");
    wait_for(&mut child, "a finished item", &env, "bench1", || {
        !complete_lines(&items).is_empty()
    });
    kill9(&mut child);

    let finished = complete_lines(&items);
    assert!(
        (1..8).contains(&finished.len()),
        "the kill landed mid-run: {} items were finished",
        finished.len()
    );
    for l in &finished {
        assert!(id_of(l).is_some(), "a finished line does not parse: {l}");
    }
    // A kill inside a write leaves part of a line (a large write(2) stops at a fatal
    // signal). The kill above rarely lands there, so leave that state ourselves: the head
    // of a record, no newline.
    let mut bytes = std::fs::read(&items).unwrap();
    if bytes.last() == Some(&b'\n') {
        let torn = &finished[0].as_bytes()[..finished[0].len() / 2];
        std::fs::OpenOptions::new()
            .append(true)
            .open(&items)
            .unwrap()
            .write_all(torn)
            .unwrap();
        bytes.extend_from_slice(torn);
    }

    let o = bench().output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let after = std::fs::read(&items).unwrap();
    assert!(
        after.starts_with(&bytes),
        "what was on disk before the rerun was changed"
    );
    let lines = complete_lines(&items);
    assert_eq!(
        lines.len(),
        text(&after).lines().count(),
        "the last line is complete"
    );
    let mut ids: Vec<String> = lines.iter().filter_map(|l| id_of(l)).collect();
    // The torn record is the one line that does not parse; the rerun ended it.
    assert_eq!(lines.len() - ids.len(), 1, "{}", text(&after));
    for l in &finished {
        assert_eq!(
            lines.iter().filter(|x| *x == l).count(),
            1,
            "a finished item is not there exactly once: {l}"
        );
    }
    ids.sort();
    let expected: Vec<String> = (0..8).map(|i| format!("easy-{i}")).collect();
    assert_eq!(ids, expected, "every item exactly once");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["policies"][0]["items"], 8, "{summary}");
    assert_eq!(integrity(&env.home().join("calls.sqlite")), "ok");
}

#[test]
fn a_killed_label_run_keeps_its_labels_and_resumes() {
    let env = Env::new();
    let labels = env.path("labels.jsonl");
    let label = || {
        let mut c = env.cmd();
        c.args(["train", "label", "--dataset", "gsm8k", "--split", "train"])
            .args([
                "--limit",
                "4",
                "--budget",
                "0",
                "--concurrency",
                "2",
                "--out",
            ])
            .arg(&labels);
        c
    };
    let mut child = env.spawn(label(), "label1");
    wait_for(&mut child, "a label", &env, "label1", || {
        !complete_lines(&labels).is_empty()
    });
    kill9(&mut child);
    let before = std::fs::read(&labels).unwrap();
    let finished = complete_lines(&labels);
    assert!(
        (1..4).contains(&finished.len()),
        "the kill landed mid-run: {} labels",
        finished.len()
    );

    let o = label().output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("({} already in", finished.len())),
        "{}",
        text(&o.stdout)
    );
    let after = std::fs::read(&labels).unwrap();
    assert!(
        after.starts_with(&before),
        "the labels written before the kill changed"
    );
    let lines = complete_lines(&labels);
    assert_eq!(lines.len(), text(&after).lines().count());
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| id_of(l).unwrap_or_else(|| panic!("a label line does not parse: {l}")))
        .collect();
    ids.sort();
    let expected: Vec<String> = (0..4).map(|i| format!("gsm8k-train-{i}")).collect();
    assert_eq!(ids, expected, "every question exactly once");
    assert_eq!(integrity(&env.home().join("calls.sqlite")), "ok");
}

/// A label left without its newline (a kill mid-write, or a file edited by hand) stays
/// readable: the rerun ends that line before appending the next label.
#[test]
fn a_label_left_without_its_newline_is_kept_by_the_rerun() {
    let env = Env::new();
    let data = env.easy_data(2);
    let labels = env.path("labels.jsonl");
    // A finished label for easy-0 as the kill leaves it: no newline.
    let first = json!({"id": "easy-0", "question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
        "family": "math", "pool": ["smollm2-135m"], "steps": [],
        "tried": [{"route": {"kind": "direct", "model": "smollm2-135m"}, "correct": true, "usage": {}, "error": null}],
        "executions": 0})
    .to_string();
    std::fs::write(&labels, &first).unwrap();
    let o = env
        .cmd()
        .args(["train", "label", "--data"])
        .arg(&data)
        .args(["--budget", "0", "--out"])
        .arg(&labels)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("(1 already in"),
        "{}",
        text(&o.stdout)
    );
    let after = std::fs::read_to_string(&labels).unwrap();
    let ids: Vec<Option<String>> = after.lines().map(id_of).collect();
    assert_eq!(
        ids,
        vec![Some("easy-0".to_string()), Some("easy-1".to_string())],
        "{after}"
    );
    assert!(after.starts_with(&first));
}

/// `learned:<path>` loads: `route` reads the router (weights checked against the manifest)
/// and routes two questions without running a model.
fn assert_loadable(env: &Env, router: &Path, data: &Path) {
    let o = env
        .cmd()
        .args(["route", "--limit", "2", "--data"])
        .arg(data)
        .arg("--policy")
        .arg(format!("learned:{}", router.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} does not load: {}",
        router.display(),
        text(&o.stderr)
    );
}

#[test]
fn a_killed_grpo_run_leaves_a_loadable_router_and_reruns() {
    let env = Env::new();
    let data = env.easy_data(8);
    // An SFT router from hand-made labels (every question answered directly), so GRPO's
    // rollouts answer directly: one short call each.
    let labels = env.path("sft-labels.jsonl");
    let line = |i: usize| {
        json!({"id": format!("q{i}"), "question": format!("What is {i} + {i}?"), "family": "math",
            "pool": ["smollm2-135m"],
            "steps": [{"text": format!("Add {i} and {i}."), "position": 0, "plan_len": 1, "depends_on": 0,
                "synthesis": false, "label": "smollm2-135m", "success": true}],
            "tried": [{"route": {"kind": "direct", "model": "smollm2-135m"}, "correct": true, "usage": {}, "error": null}],
            "executions": 1})
        .to_string()
            + "\n"
    };
    std::fs::write(&labels, (0..6).map(line).collect::<String>()).unwrap();
    let sft = env.path("sft.safetensors");
    let o = env
        .cmd()
        .args([
            "train",
            "sft",
            "--encoder",
            "hash-64",
            "--holdout",
            "0",
            "--epochs",
            "50",
        ])
        .arg("--labels")
        .arg(&labels)
        .arg("--out")
        .arg(&sft)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));

    let router = env.path("grpo/router.safetensors");
    // A tie keeps the latest checkpoint: every iteration that ties the best dev reward is
    // saved to --out again, so the kill may land on or near a save.
    let grpo = || {
        let mut c = env.cmd();
        c.args(["train", "grpo", "--init"])
            .arg(&sft)
            .arg("--data")
            .arg(&data)
            .args([
                "--dev",
                "2",
                "--group",
                "2",
                "--batch",
                "2",
                "--iterations",
                "3",
            ])
            .args(["--normalise", "direct", "--out"])
            .arg(&router);
        c
    };
    let mut child = env.spawn(grpo(), "grpo1");
    wait_for(&mut child, "the first iteration", &env, "grpo1", || {
        env.log("grpo1.out").contains("iter   1:")
    });
    kill9(&mut child);
    // The router at --out (written at the start and at each best iteration) and every
    // checkpoint are complete routers.
    assert_loadable(&env, &router, &data);
    let checkpoints: Vec<PathBuf> = std::fs::read_dir(env.path("grpo/router.checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    assert!(!checkpoints.is_empty(), "iteration 1 was checkpointed");
    for c in &checkpoints {
        assert_loadable(&env, c, &data);
    }

    let o = grpo().output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("wrote"), "{}", text(&o.stdout));
    assert_loadable(&env, &router, &data);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(env.path("grpo/router.manifest.json")).unwrap(),
    )
    .unwrap();
    assert!(manifest["notes"]["grpo"].is_object(), "{manifest}");
    assert_eq!(integrity(&env.home().join("calls.sqlite")), "ok");
}

// ---- serve ----

/// One request on a fresh connection: status and body, or an error when the response did
/// not arrive whole (a chunked body without its last chunk, a body shorter than its
/// Content-Length, a reset).
fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let reply = request(addr, method, path, None, body, Duration::from_secs(300))?;
    Ok((reply.status, reply.text()))
}

/// A pass-through chat completion of at most 4 tokens, streamed or not. Returns the
/// response's id and its `r2reasoner` field (the trace), if the whole response arrived.
fn chat(addr: &str, n: usize, stream: bool) -> Option<(String, Value)> {
    let body = json!({"model": "smollm2-135m", "max_tokens": 4, "stream": stream,
        "messages": [{"role": "user", "content": format!("Name a number above {n}.")}]})
    .to_string();
    let (status, body) = http(addr, "POST", "/v1/chat/completions", &body).ok()?;
    assert_eq!(status, 200, "{body}");
    if !stream {
        let v: Value = serde_json::from_str(&body).unwrap();
        return Some((v["id"].as_str()?.to_string(), v["r2reasoner"].clone()));
    }
    let events: Vec<&str> = body
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .collect();
    if events.last() != Some(&"[DONE]") {
        return None;
    }
    // The final chunk (with `finish_reason`) carries the whole trace; progress chunks
    // carry one step each.
    let last = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|v| v["choices"][0]["finish_reason"].is_string())?;
    Some((last["id"].as_str()?.to_string(), last["r2reasoner"].clone()))
}

/// Every trace in the store: id → body.
fn stored_traces(db: &Path) -> std::collections::HashMap<String, String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut q = c.prepare("SELECT id, body FROM traces").unwrap();
    let rows = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows
}

fn start_server(env: &Env, name: &str) -> (Child, String) {
    let mut child = env.spawn(
        {
            let mut c = env.cmd();
            c.args(["serve", "--listen", "127.0.0.1:0"]);
            c
        },
        name,
    );
    let mut addr = None;
    wait_for(&mut child, "the listening line", env, name, || {
        addr = env
            .log(&format!("{name}.err"))
            .lines()
            .find_map(|l| l.strip_prefix("r2reasoner serve: listening on http://"))
            .map(|a| a.trim().to_string());
        addr.is_some()
    });
    (child, addr.unwrap())
}

/// What the trace store guarantees on SIGKILL: traces are committed by a writer thread
/// shortly *after* their responses are sent, so a trace whose response the client
/// received but that was not committed yet is lost. What is guaranteed is that the
/// database stays intact, that every committed trace survives whole (WAL: a commit is in
/// the log before the writer moves on), and that a trace committed while the server ran
/// is served again after a restart.
#[test]
fn a_killed_gateway_keeps_every_committed_trace_and_an_intact_store() {
    let env = Env::new();
    let db = env.path("traces.sqlite");
    let (mut server, addr) = start_server(&env, "serve1");

    // Phase 1: responses received, then committed (the client sees them in the database).
    let mut answered: Vec<(String, Value)> = (0..4)
        .map(|n| chat(&addr, n, n % 2 == 1).expect("a whole response"))
        .collect();
    wait_for(
        &mut server,
        "the first traces committed",
        &env,
        "serve1",
        || {
            db.is_file() && {
                let stored = stored_traces(&db);
                answered.iter().all(|(id, _)| stored.contains_key(id))
            }
        },
    );

    // Phase 2: four clients send requests (every third one streamed) until the server
    // dies; after a few more responses, note what is committed, then SIGKILL.
    let received = Arc::new(Mutex::new(Vec::<(String, Value)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (addr, received, stop) = (addr.clone(), received.clone(), stop.clone());
            std::thread::spawn(move || {
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match chat(&addr, 100 * t + n, n % 3 == 2) {
                        Some(r) => received.lock().unwrap().push(r),
                        None => {
                            // The server is gone (or cut this response): stop once it is.
                            if std::net::TcpStream::connect(&addr).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    wait_for(&mut server, "responses under load", &env, "serve1", || {
        received.lock().unwrap().len() >= 8
    });
    let committed = stored_traces(&db);
    kill9(&mut server);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }

    assert_eq!(integrity(&db), "ok");
    let stored = stored_traces(&db);
    for (id, body) in &stored {
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("trace {id} is not whole JSON ({e}): {body}"));
        assert_eq!(v["trace_id"], json!(id), "{body}");
    }
    for (id, ext) in &answered {
        let body = stored
            .get(id)
            .unwrap_or_else(|| panic!("committed trace {id} lost"));
        assert_eq!(&serde_json::from_str::<Value>(body).unwrap(), ext);
    }
    for (id, body) in &committed {
        assert_eq!(
            stored.get(id),
            Some(body),
            "committed trace {id} lost or changed"
        );
    }
    let received = received.lock().unwrap().clone();
    let lost = received
        .iter()
        .filter(|(id, _)| !stored.contains_key(id))
        .count();
    // Not asserted: responses received whose traces were still queued at the kill.
    eprintln!(
        "{} responses under load, {} traces committed at the snapshot, {} stored after the kill, {lost} received but not committed",
        received.len(),
        committed.len(),
        stored.len()
    );

    // A restarted server opens the store and serves the old traces; stopped gracefully,
    // it commits the trace of every response it sent.
    let (mut server, addr) = start_server(&env, "serve2");
    for (id, ext) in &answered {
        let (status, body) = http(&addr, "GET", &format!("/v1/traces/{id}"), "").unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(&serde_json::from_str::<Value>(&body).unwrap(), ext);
    }
    answered = (0..3)
        .map(|n| chat(&addr, 1000 + n, n == 1).expect("a whole response"))
        .collect();
    cli::stop(&mut server, PATIENCE);
    assert_eq!(integrity(&db), "ok");
    let stored = stored_traces(&db);
    for (id, ext) in &answered {
        let body = stored
            .get(id)
            .unwrap_or_else(|| panic!("trace {id} lost on SIGTERM"));
        assert_eq!(&serde_json::from_str::<Value>(body).unwrap(), ext);
    }
}
