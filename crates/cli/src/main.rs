//! The `r2reasoner` binary. Exit codes: 0 success, 1 runtime failure, 2 bad input
//! (arguments, config, question, model files).

mod args;
mod ask;
mod bench;
mod models;
mod route;
mod serve;
mod setup;
mod speed;
mod train;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// An error caused by the user's input rather than by the machine: exit code 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

pub fn input_error(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(msg.into()))
}

/// libgomp's spin count at barriers when the user has not chosen one.
const GOMP_SPINCOUNT: &str = "1000";

/// llama.cpp runs each call's threads as an OpenMP team, and libgomp lets a thread that
/// reaches a barrier spin 300,000 times before it sleeps. When two teams share the cores —
/// two models decoding at once in this process (a routed question, `bench`, `serve`), or
/// another busy process — the spinning threads take the CPU from the ones doing the work and
/// generation slows down by an order of magnitude. With 1,000 spins, tokens/s under such
/// contention rose ~8× and fell ~7% on an otherwise idle machine (docs/benchmarks.md §1).
/// libgomp reads its settings once, when it is loaded, before `main`; so unless the user set
/// `GOMP_SPINCOUNT` or `OMP_WAIT_POLICY`, the binary re-executes itself once with the
/// setting in its environment. If that fails it carries on with libgomp's defaults.
#[cfg(unix)]
fn tune_openmp() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GOMP_SPINCOUNT").is_some() || std::env::var_os("OMP_WAIT_POLICY").is_some()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // `exec` returns only when it failed.
    let _ = command
        .args(args)
        .env("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
        .exec();
}

#[cfg(not(unix))]
fn tune_openmp() {}

fn main() -> ExitCode {
    tune_openmp();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("R2REASONER_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ask(a) => ask::run(cli.config.as_deref(), a).await,
            Command::Bench(a) => bench::run(cli.config.as_deref(), a).await,
            Command::Models { action } => models::run(cli.config.as_deref(), action).await,
            Command::BenchSpeed(a) => speed::run(cli.config.as_deref(), a).await,
            Command::Serve(a) => serve::run(cli.config.as_deref(), a).await,
            Command::Train { action } => train::run(cli.config.as_deref(), action).await,
            Command::Calibrate(a) => train::calibrate(cli.config.as_deref(), a).await,
            Command::Route(a) => route::run(cli.config.as_deref(), a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`r2reasoner ... | head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            let _ = std::io::stdout().flush();
            // The chain of causes, each once: an error that already shows its cause's
            // message (e.g. "step 1: model 'm' timed out after 1.0s") does not repeat it.
            let mut msg = String::new();
            for cause in e.chain() {
                let text = cause.to_string();
                if !msg.contains(&text) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&text);
                }
            }
            let msg = msg.replace('\n', " ");
            eprintln!("error: {msg}");
            if e.chain().any(|c| c.downcast_ref::<InputError>().is_some()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
