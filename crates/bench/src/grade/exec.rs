//! Running untrusted code (MBPP candidates, P3 answers) in a `python3` subprocess:
//! a fresh temp dir, a cleared environment, a wall-clock timeout (the whole process group
//! is killed), `RLIMIT_AS`/`RLIMIT_CPU`/`RLIMIT_FSIZE`, sockets and process spawning
//! disabled inside the interpreter, and a nonce-tagged report line so that a candidate
//! that exits early or prints cannot fake a pass. P3 answers are parsed with
//! `ast.literal_eval` only, never evaluated.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WRAPPER: &str = include_str!("sandbox.py");

/// Limits for one code execution.
#[derive(Debug, Clone)]
pub struct ExecLimits {
    /// Wall-clock limit; the process group is killed when it passes.
    pub timeout: Duration,
    /// Address-space limit for the interpreter (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// The interpreter: `R2REASONER_PYTHON` or `python3`.
    pub python: String,
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits {
            timeout: Duration::from_secs(10),
            memory_bytes: 1 << 30,
            python: std::env::var("R2REASONER_PYTHON").unwrap_or_else(|_| "python3".into()),
        }
    }
}

/// How one execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecStatus {
    /// Passed; for `solve` jobs the payload is `repr(sol())`.
    Pass(String),
    /// Ran and failed (assertion, exception, wrong answer, not a literal, memory).
    Fail(String),
    /// Killed at the wall-clock limit.
    Timeout,
    /// The sandbox itself failed (no python3, crashed interpreter, no report).
    Error(String),
}

impl ExecStatus {
    pub fn passed(&self) -> bool {
        matches!(self, ExecStatus::Pass(_))
    }
    /// A short human-readable description ("pass", "timeout", the failure message).
    pub fn describe(&self) -> String {
        match self {
            ExecStatus::Pass(_) => "pass".into(),
            ExecStatus::Fail(m) => m.clone(),
            ExecStatus::Timeout => "timeout".into(),
            ExecStatus::Error(m) => format!("sandbox error: {m}"),
        }
    }
}

/// MBPP: candidate code, then the setup code, then each assert; pass iff all run cleanly.
pub fn run_mbpp(code: &str, setup: &str, tests: &[String], limits: &ExecLimits) -> ExecStatus {
    let job = serde_json::json!({"mode": "mbpp", "code": code, "setup": setup, "tests": tests});
    run_job(job, limits)
}

/// P3: `answer` must be a Python literal of type `ans_type` with `sat(answer) is True`.
pub fn run_p3(sat: &str, ans_type: &str, answer: &str, limits: &ExecLimits) -> ExecStatus {
    let job = serde_json::json!({"mode": "p3", "sat": sat, "ans_type": ans_type, "answer": answer});
    run_job(job, limits)
}

/// Run trusted solution code defining `sol()` and return `repr(sol())` (for checking
/// the dataset's reference solutions).
pub fn run_p3_solution(sol_code: &str, limits: &ExecLimits) -> ExecStatus {
    run_job(
        serde_json::json!({"mode": "solve", "code": sol_code}),
        limits,
    )
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "r2-bench-{}-{n}-{:x}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn reader<R: Read + Send + 'static>(mut r: R, cap: usize) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = cap.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        kept
    })
}

fn run_job(mut job: serde_json::Value, limits: &ExecLimits) -> ExecStatus {
    let nonce = format!("{:016x}{:016x}", unique(), unique().rotate_left(17));
    let cpu = limits.timeout.as_secs() + 2;
    job["nonce"] = nonce.clone().into();
    job["mem"] = limits.memory_bytes.into();
    job["cpu"] = cpu.into();
    let dir = match TempDir::new() {
        Ok(d) => d,
        Err(e) => return ExecStatus::Error(format!("cannot create a temp dir: {e}")),
    };
    let mut cmd = Command::new(&limits.python);
    cmd.arg("-I")
        .arg("-c")
        .arg(WRAPPER)
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &dir.0)
        .env("TMPDIR", &dir.0)
        .env("LANG", "C.UTF-8")
        .env("no_proxy", "*")
        .env("NO_PROXY", "*")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ExecStatus::Error(format!("cannot run {}: {e}", limits.python)),
    };
    let input = job.to_string();
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(input.as_bytes());
        }
    });
    let out = child.stdout.take().map(|s| reader(s, 64 << 20));
    let err = child.stderr.take().map(|s| reader(s, 4096));
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() >= limits.timeout => {
                timed_out = true;
                kill_group(child.id());
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let _ = writer.join();
    let out = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let err = err.and_then(|h| h.join().ok()).unwrap_or_default();
    if timed_out {
        return ExecStatus::Timeout;
    }
    let out = String::from_utf8_lossy(&out);
    let report = out.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["nonce"] == nonce.as_str()).then_some(v)
    });
    let Some(report) = report else {
        let err = String::from_utf8_lossy(&err);
        let tail = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let how = status.map_or("unknown status".to_string(), |s| s.to_string());
        let hint = if tail.contains("MemoryError") || how.contains("signal") {
            " (memory or CPU limit?)"
        } else {
            ""
        };
        return ExecStatus::Fail(format!("no result: python {how}{hint}: {tail}"));
    };
    let msg = report["msg"].as_str().unwrap_or("").to_string();
    match report["status"].as_str() {
        Some("pass") => ExecStatus::Pass(msg),
        Some("fail") => ExecStatus::Fail(msg),
        _ => ExecStatus::Error(msg),
    }
}

/// Kill the child's process group (it leads one: `process_group(0)`). Only called before
/// the child is reaped, so the group id cannot have been reused.
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
