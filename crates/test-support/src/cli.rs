//! Driving the `r2reasoner` binary from its integration tests: running it, checking its
//! input errors, starting `serve` and stopping it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `r2reasoner` binary with standard input closed. A macro because only the binary's
/// own integration tests know where Cargo built it (`CARGO_BIN_EXE_r2reasoner`).
#[macro_export]
macro_rules! bin {
    () => {{
        let mut c = ::std::process::Command::new(env!("CARGO_BIN_EXE_r2reasoner"));
        c.stdin(::std::process::Stdio::null());
        c
    }};
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the binary runs")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Exit code 2 with exactly one line on stderr, `error: ...`, that contains every `needle`.
pub fn assert_input_error(o: &Output, needles: &[&str]) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
}

/// Exit code 2 with exactly one `error: ...` line on stderr (warnings and progress may come
/// with it), the stderr containing every `needle`.
pub fn assert_one_input_error(o: &Output, needles: &[&str]) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(
        err.trim_end()
            .lines()
            .filter(|l| l.starts_with("error: "))
            .count(),
        1,
        "{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
}

/// A FIFO at `path`: opening it blocks until a writer (or reader) comes.
pub fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// SIGTERM, then a successful exit within `within`.
pub fn stop(child: &mut Child, within: Duration) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            return;
        }
        assert!(
            start.elapsed() < within,
            "the process did not stop within {within:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `serve`, killed when dropped.
pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Every line it wrote to stderr, without colour codes.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (the binary with its config and environment) as `serve` on a free loopback
/// port and waits for the line naming the address. Its stderr is drained into `log` from
/// then on, so the server never blocks on a full pipe.
pub fn serve(mut cmd: Command) -> Served {
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the server printed its address")
            .unwrap();
        if let Some(u) = line.strip_prefix("r2reasoner serve: listening on ") {
            break u.trim().to_string();
        }
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(strip_ansi(&line));
        }
    });
    Served { child, url, log }
}

/// The line without terminal colour codes (`ESC [ ... m`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
