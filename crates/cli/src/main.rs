//! The `r2reasoner` binary. Exit codes: 0 success, 1 runtime failure, 2 bad input
//! (arguments, config, question, model files).

mod args;
mod ask;
mod bench;
mod models;
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

fn main() -> ExitCode {
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
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            if e.chain().any(|c| c.downcast_ref::<InputError>().is_some()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
