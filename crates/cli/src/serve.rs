//! `r2reasoner serve`: the OpenAI-compatible gateway on the configured pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use r2_models::ModelCache;
use r2_runtime::{build_pool, RuntimeOptions};
use r2_server::{AppState, Keys, StartError, TraceStore, DEFAULT_LISTEN};

use crate::args::ServeArgs;
use crate::input_error;
use crate::setup::load_config;

pub async fn run(config_path: Option<&Path>, args: ServeArgs) -> Result<()> {
    let config = load_config(config_path, args.price_profile.as_deref())?;
    let server = config.server.clone();
    let listen = args
        .listen
        .clone()
        .or_else(|| server.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let keys = Keys::from_config(&server.api_keys).map_err(input_error)?;
    let cache = Arc::new(ModelCache::from_env().map_err(|e| input_error(e.to_string()))?);
    let traces_path = match &server.traces_db {
        Some(p) => PathBuf::from(p),
        None => cache.root().join("traces.sqlite"),
    };
    let traces = TraceStore::open(Some(&traces_path))
        .with_context(|| format!("cannot open {}", traces_path.display()))?;
    let env = Arc::new(r2_router::RouterEnv::new(Some(cache.clone()), false));
    let (pool, _) = build_pool(
        config,
        cache,
        RuntimeOptions {
            threads: args.threads,
            progress: false,
        },
        None,
    );
    // Every policy a client may name (the default and `[server] policies`) is loaded now,
    // routers and label files included; requests never name a file.
    let parser: r2_server::PolicyParser = Arc::new(move |name: &str, pool: &r2_pool::Pool| {
        r2_training::parse_policy(name, pool, &env)
    });
    let pool = Arc::new(pool);
    let state =
        AppState::new(pool, keys, &server, traces.clone(), &parser).map_err(|e| match e {
            StartError::Policy(e) => input_error(e.to_string()),
            e @ StartError::Spend(_) => {
                anyhow::Error::new(e).context(format!("cannot read {}", traces_path.display()))
            }
        })?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| input_error(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    if !state.keys.is_enabled() {
        tracing::warn!("no [server] api_keys configured: every client is accepted");
    }
    // The one line tests and scripts wait for.
    eprintln!("r2reasoner serve: listening on http://{addr}");
    r2_server::serve(listener, Arc::new(state), shutdown_signal()).await?;
    // Traces are written behind the responses; commit the last ones before exiting.
    if let Err(e) = traces.flush().await {
        tracing::warn!(error = %e, "the last traces may not be stored");
    }
    eprintln!("r2reasoner serve: stopped");
    Ok(())
}

/// SIGTERM or Ctrl-C: stop accepting, finish in-flight requests, exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
