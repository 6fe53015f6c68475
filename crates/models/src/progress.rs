//! Progress bars on stderr. Model files are hundreds of megabytes, so a silent wait would
//! look like a hang; but bars must never reach a pipe or a log, hence the terminal check.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar, or a hidden one when progress is off or stderr is not a terminal.
pub(crate) fn bytes_bar(enabled: bool, len: Option<u64>, msg: String) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(n) if n > 0 => (
            ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        _ => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} {msg} {bytes} {bytes_per_sec}",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(msg);
    bar
}

/// A one-line notice (e.g. "cached file is corrupt, fetching again"): shown whenever the
/// caller asked for progress, even off a terminal, because it explains extra work.
pub(crate) fn note(enabled: bool, msg: &str) {
    if enabled {
        eprintln!("{msg}");
    }
}
