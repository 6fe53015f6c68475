//! What the commands share: the pool config (every command reads it through
//! [`load_config`]), and for `bench`, `route`, `train` and `calibrate` selecting dataset
//! items, building the pool with the call cache, and the run settings.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use r2_allocator::Policy;
use r2_bench::run::RunSettings;
use r2_bench::{datasets, Item};
use r2_callcache::CallCache;
use r2_executor::ExecOptions;
use r2_models::ModelCache;
use r2_pool::{Pool, PoolConfig};
use r2_router::RouterEnv;
use r2_runtime::{build_pool, RuntimeOptions};
use r2_training::parse_policy;

use crate::args::{DataArgs, RunArgs};
use crate::input_error;

/// The pool config: the file named, else `./r2reasoner.toml` if present, else the embedded
/// one ([`PoolConfig::discover`]); with `price_profile` made the active price profile.
pub fn load_config(explicit: Option<&Path>, price_profile: Option<&str>) -> Result<PoolConfig> {
    let mut config = PoolConfig::discover(explicit).map_err(|e| input_error(e.to_string()))?;
    if let Some(p) = price_profile {
        config.set_price_profile(p).map_err(input_error)?;
    }
    Ok(config)
}

pub struct Selection {
    pub items: Vec<Item>,
    /// The dataset name, or the file's path.
    pub label: String,
    pub malformed: r2_files::Malformed,
}

/// Load and select items; malformed lines are reported on stderr and skipped.
pub fn select_items(args: &DataArgs) -> Result<Selection> {
    let report = match (&args.dataset, &args.data) {
        (Some(name), None) => datasets::load(name, args.split.as_deref()),
        (None, Some(path)) => datasets::load_path(path, args.format.as_deref()),
        _ => {
            return Err(input_error(
                "give exactly one of --dataset NAME or --data PATH",
            ))
        }
    }
    .map_err(|e| input_error(e.to_string()))?;
    let label = args
        .dataset
        .clone()
        .unwrap_or_else(|| report.path.display().to_string());
    warn_malformed(&report.path, &report.malformed);
    let mut all = report.items.clone();
    for name in &args.exclude {
        let other = datasets::load(name, None).map_err(|e| input_error(e.to_string()))?;
        let seen: HashSet<String> = other
            .items
            .iter()
            .map(|i| i.question.trim().to_string())
            .collect();
        all.retain(|i| !seen.contains(i.question.trim()));
    }
    let items = datasets::select(all, args.offset, args.limit, args.shuffle);
    if items.is_empty() {
        return Err(input_error(format!("no items selected from {label}")));
    }
    Ok(Selection {
        items,
        label,
        malformed: report.malformed,
    })
}

/// Malformed lines of a file on stderr: the first few, and how many more.
pub fn warn_malformed(path: &std::path::Path, malformed: &r2_files::Malformed) {
    for (line, why) in malformed.kept() {
        eprintln!("warning: {}: line {line}: {why} (skipped)", path.display());
    }
    if malformed.total() > malformed.kept().len() {
        eprintln!(
            "warning: {}: {} more malformed lines skipped",
            path.display(),
            malformed.total() - malformed.kept().len()
        );
    }
}

/// The pool, its call cache and what routed runs need.
pub struct Session {
    pub pool: Pool,
    pub calls: Option<Arc<CallCache>>,
    pub env: RouterEnv,
    decomposer: usize,
    judge: usize,
    exec: ExecOptions,
    concurrency: usize,
}

impl Session {
    pub fn open(config_path: Option<&Path>, run: &RunArgs) -> Result<Self> {
        if run.max_subtasks == 0 {
            return Err(input_error("--max-subtasks must be at least 1"));
        }
        let config = load_config(config_path, run.price_profile.as_deref())?;
        let models = Arc::new(ModelCache::from_env().map_err(|e| input_error(e.to_string()))?);
        let calls = if run.no_cache {
            None
        } else {
            let path = models.root().join("calls.sqlite");
            Some(Arc::new(
                CallCache::open(&path).map_err(|e| anyhow::anyhow!(e.to_string()))?,
            ))
        };
        let env = RouterEnv::new(Some(models.clone()), true);
        let (pool, _) = build_pool(
            config,
            models,
            RuntimeOptions {
                threads: run.threads,
                progress: true,
            },
            calls.clone(),
        );
        let decomposer = pool
            .config
            .require(run.decomposer.as_deref().unwrap_or(&pool.config.decomposer))
            .map_err(input_error)?;
        let judge = match &run.judge {
            Some(j) => pool.config.require(j).map_err(input_error)?,
            None => pool.len() - 1,
        };
        Ok(Self {
            pool,
            calls,
            env,
            decomposer,
            judge,
            exec: ExecOptions {
                max_subtasks: run.max_subtasks,
                step_timeout: Some(Duration::from_secs(run.timeout)),
                ..ExecOptions::default()
            },
            concurrency: run.concurrency,
        })
    }

    /// The named policies, every name checked before any model runs; none named: the
    /// config's `policy`.
    pub fn policies(&self, names: &[String]) -> Result<Vec<Box<dyn Policy>>> {
        let default = [self.pool.config.policy_or_default()];
        let names = if names.is_empty() {
            &default[..]
        } else {
            names
        };
        names
            .iter()
            .map(|p| parse_policy(p, &self.pool, &self.env).map_err(|e| input_error(e.to_string())))
            .collect()
    }

    pub fn settings(&self, out_dir: PathBuf) -> RunSettings {
        RunSettings {
            out_dir,
            concurrency: self.concurrency,
            exec: self.exec.clone(),
            decomposer: self.decomposer,
            judge: self.judge,
            limits: Default::default(),
        }
    }

    pub fn pool_ids(&self) -> Vec<String> {
        (0..self.pool.len())
            .map(|m| self.pool.id(m).to_string())
            .collect()
    }

    /// Calls served from the cache and made, so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.calls
            .as_ref()
            .map(|c| {
                let s = c.stats();
                (s.hits, s.misses)
            })
            .unwrap_or_default()
    }
}
