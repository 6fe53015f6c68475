//! The code-execution sandbox: limits, isolation and answer parsing.

use std::time::{Duration, Instant};

use r2_bench::datasets::Gold;
use r2_bench::grade::{grade_with, ExecLimits};

fn limits(secs: u64) -> ExecLimits {
    ExecLimits {
        timeout: Duration::from_secs(secs),
        ..ExecLimits::default()
    }
}

fn mbpp_gold() -> Gold {
    Gold::Mbpp {
        tests: vec![
            "assert add(2, 3) == 5".into(),
            "assert add(-1, 1) == 0".into(),
        ],
        setup: String::new(),
    }
}

fn p3_gold() -> Gold {
    Gold::P3 {
        sat: "def sat(li: List[int], n=3):\n    return len(li) == n and sum(li) == 10".into(),
        ans_type: "List[int]".into(),
    }
}

fn code(body: &str) -> String {
    format!("Here you go:\n```python\n{body}\n```\nANSWER: done")
}

#[test]
fn mbpp_pass_and_fail() {
    let g = grade_with(
        &mbpp_gold(),
        &code("def add(a, b):\n    return a + b"),
        &limits(10),
    );
    assert!(g.correct && g.method == "code-exec", "{g:?}");
    assert_eq!(g.extracted, "def add(a, b):\n    return a + b");
    let g = grade_with(
        &mbpp_gold(),
        &code("def add(a, b):\n    return a - b"),
        &limits(10),
    );
    assert!(
        !g.correct && g.detail.contains("assert add(2, 3) == 5"),
        "{g:?}"
    );
    let g = grade_with(&mbpp_gold(), &code("def add(a, b) return"), &limits(10));
    assert!(!g.correct && g.detail.contains("SyntaxError"), "{g:?}");
}

#[test]
fn early_exit_and_printing_do_not_fake_a_pass() {
    for body in [
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "print('{\"status\": \"pass\"}')\ndef add(a, b):\n    return 0",
        "raise SystemExit(0)",
    ] {
        let g = grade_with(&mbpp_gold(), &code(body), &limits(10));
        assert!(!g.correct, "{body:?} passed: {g:?}");
    }
}

#[test]
fn infinite_loop_times_out_quickly() {
    let start = Instant::now();
    let g = grade_with(
        &mbpp_gold(),
        &code("def add(a, b):\n    while True:\n        pass"),
        &limits(1),
    );
    assert!(!g.correct && g.detail == "timeout", "{g:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    // A sleeping child is killed with its process group too.
    let start = Instant::now();
    let g = grade_with(
        &mbpp_gold(),
        &code("import time\ntime.sleep(60)"),
        &limits(1),
    );
    assert!(!g.correct && g.detail == "timeout", "{g:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn memory_hog_fails() {
    let start = Instant::now();
    for body in [
        "x = bytearray(4 * 1024 ** 3)",
        "x = [0] * (10 ** 10)",
        "s = 'a' * (3 * 1024 ** 3)",
    ] {
        let g = grade_with(&mbpp_gold(), &code(body), &limits(10));
        assert!(!g.correct && g.detail.contains("memory"), "{body}: {g:?}");
    }
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn network_and_processes_are_blocked() {
    for body in [
        "import socket\nsocket.create_connection(('example.com', 80))",
        "import socket\ns = socket.socket()",
        "import urllib.request\nurllib.request.urlopen('http://example.com')",
        "import subprocess\nsubprocess.run(['echo', 'hi'])",
        "import os\nos.system('echo hi')",
    ] {
        let src = format!("{body}\ndef add(a, b):\n    return a + b");
        let g = grade_with(&mbpp_gold(), &code(&src), &limits(10));
        assert!(!g.correct, "{body:?} was allowed: {g:?}");
    }
}

#[test]
fn runs_in_a_fresh_temp_dir() {
    let src = "import os\nassert not os.listdir('.'), os.listdir('.')\nopen('f.txt', 'w').write('x')\ndef add(a, b):\n    return a + b";
    for _ in 0..2 {
        let g = grade_with(&mbpp_gold(), &code(src), &limits(10));
        assert!(g.correct, "{g:?}");
    }
}

#[test]
fn p3_literals_only() {
    let g = grade_with(&p3_gold(), "sum to ten\nANSWER: [1, 2, 7]", &limits(10));
    assert!(g.correct && g.method == "code-exec", "{g:?}");
    let g = grade_with(&p3_gold(), "ANSWER: [1, 2, 8]", &limits(10));
    assert!(!g.correct && g.detail.contains("returned False"), "{g:?}");
    let g = grade_with(&p3_gold(), "ANSWER: [1, 2, 7.0]", &limits(10));
    assert!(
        !g.correct && g.detail.contains("expected List[int]"),
        "{g:?}"
    );
    let g = grade_with(&p3_gold(), "ANSWER: (1, 2, 7)", &limits(10));
    assert!(
        !g.correct && g.detail.contains("expected List[int]"),
        "{g:?}"
    );
    for evil in [
        "__import__('os').system('echo hi')",
        "[i for i in range(3)]",
        "[1, 2] + [7]",
        "open('/etc/passwd').read()",
    ] {
        let g = grade_with(&p3_gold(), &format!("ANSWER: {evil}"), &limits(10));
        assert!(
            !g.correct && g.detail.contains("not a Python literal"),
            "{evil}: {g:?}"
        );
    }
}

#[test]
fn missing_interpreter_is_reported() {
    let l = ExecLimits {
        python: "/nonexistent/python3".into(),
        ..limits(5)
    };
    let g = grade_with(&mbpp_gold(), &code("def add(a, b):\n    return a + b"), &l);
    assert!(!g.correct && g.detail.contains("sandbox error"), "{g:?}");
}
