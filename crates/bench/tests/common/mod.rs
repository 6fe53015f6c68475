//! Shared helpers for the data-driven tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use r2_bench::datasets::{self, Item};

/// Load a dataset that must be present and well-formed.
pub fn load(name: &str, split: Option<&str>) -> Vec<Item> {
    let report = datasets::load(name, split).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        report.malformed.is_empty(),
        "{name}/{split:?}: malformed records {:?}",
        report.malformed
    );
    report.items
}

/// `f` over `items` on at most `threads` threads; results in input order.
pub fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                out.lock().unwrap()[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// Worker threads for subprocess-heavy tests: the machine's parallelism, at most 4.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4)
}

/// A different answer of the same shape: the first number in `gold` plus one (`\frac{1}{2}`
/// → `\frac{2}{2}`, `(3, \pi)` → `(4, \pi)`), or `gold + 1` when it has no digits.
pub fn bump_first_number(gold: &str) -> String {
    let b = gold.as_bytes();
    let Some(start) = b.iter().position(u8::is_ascii_digit) else {
        return format!("{gold}+1");
    };
    let mut end = start;
    while end < b.len() && b[end].is_ascii_digit() {
        end += 1;
    }
    let n: u128 = gold[start..end].parse().unwrap_or(0);
    format!("{}{}{}", &gold[..start], n + 1, &gold[end..])
}

/// Every `n`-th item (a cheap deterministic sample).
pub fn select_every<T>(items: Vec<T>, n: usize) -> Vec<T> {
    items.into_iter().step_by(n.max(1)).collect()
}
