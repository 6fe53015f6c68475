//! `r2reasoner models list|fetch|verify`.

use std::path::Path;

use anyhow::Result;
use r2_models::ModelCache;
use r2_pool::ModelSpec;

use crate::args::ModelsAction;
use crate::input_error;
use crate::setup::load_config;

pub(crate) fn select<'a>(models: &'a [ModelSpec], ids: &[String]) -> Result<Vec<&'a ModelSpec>> {
    // Only local model files can be fetched, verified or measured; `openai` models are remote.
    if ids.is_empty() {
        return Ok(models.iter().filter(|m| m.remote.is_none()).collect());
    }
    ids.iter()
        .map(|id| {
            let m = models.iter().find(|m| &m.id == id).ok_or_else(|| {
                let known: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
                input_error(format!(
                    "unknown model id '{id}' (pool: {})",
                    known.join(", ")
                ))
            })?;
            if m.remote.is_some() {
                return Err(input_error(format!(
                    "model '{id}' is served over HTTP (backend = openai): it has no local file"
                )));
            }
            Ok(m)
        })
        .collect()
}

pub async fn run(config_path: Option<&Path>, action: ModelsAction) -> Result<()> {
    let config = load_config(config_path, None)?;
    let cache = ModelCache::from_env().map_err(|e| input_error(e.to_string()))?;
    // Fetching and hashing are blocking work.
    tokio::task::spawn_blocking(move || -> Result<()> {
        match action {
            ModelsAction::List => {
                println!(
                    "pool: {} (price profile: {})",
                    config.origin, config.price_profile
                );
                println!(
                    "{:<20} {:<10} {:>8} {:>7} {:>18}  {:<10}  source",
                    "id", "backend", "params", "ctx", "USD/1M in/out", "status"
                );
                for (i, m) in config.models.iter().enumerate() {
                    let p = config.price(i);
                    let (status, source) = match &m.remote {
                        Some(r) => (
                            "remote".to_string(),
                            format!("{} ({})", r.base_url, r.api_model),
                        ),
                        None => (cache.status(m).to_string(), m.source.to_string()),
                    };
                    println!(
                        "{:<20} {:<10} {:>7.2}B {:>7} {:>8.4}/{:<9.4}  {:<10}  {}",
                        m.id,
                        m.backend.as_str(),
                        m.parameters as f64 / 1e9,
                        m.context_length,
                        p.input,
                        p.output,
                        status,
                        source
                    );
                }
                println!("cache: {}", cache.root().display());
            }
            ModelsAction::Fetch { ids, force } => {
                for m in select(&config.models, &ids)? {
                    let path = cache.fetch(m, force, true).map_err(|e| {
                        if e.is_input_error() {
                            input_error(e.to_string())
                        } else {
                            anyhow::Error::new(e)
                        }
                    })?;
                    println!("{}: {}", m.id, path.display());
                }
            }
            ModelsAction::Verify { ids } => {
                let mut bad = Vec::new();
                for m in select(&config.models, &ids)? {
                    match cache.verify(m, true) {
                        Ok(report) => {
                            println!("{}: {report}", m.id);
                            if !report.is_ok() {
                                bad.push(m.id.clone());
                            }
                        }
                        Err(e) => {
                            println!("{}: {e}", m.id);
                            bad.push(m.id.clone());
                        }
                    }
                }
                if !bad.is_empty() {
                    return Err(input_error(format!(
                        "verification failed for {}",
                        bad.join(", ")
                    )));
                }
            }
        }
        Ok(())
    })
    .await?
}
