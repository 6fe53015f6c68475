//! `r2reasoner bench`: run a dataset under one or more policies and write per-item JSONL,
//! a summary (JSON + Markdown) and the cost–accuracy plot.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use r2_allocator::parse_policy;
use r2_bench::run::{items_path, read_results, run_policy, RunSettings};
use r2_bench::summary::{compare_to_baseline, markdown, summarise, Summary};
use r2_bench::{datasets, plot};
use r2_callcache::CallCache;
use r2_executor::ExecOptions;
use r2_models::ModelCache;
use r2_runtime::{build_pool, RuntimeOptions};

use crate::args::BenchArgs;
use crate::ask::load_config;
use crate::input_error;

pub async fn run(config_path: Option<&Path>, args: BenchArgs) -> Result<()> {
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
    let dataset_label = args
        .dataset
        .clone()
        .unwrap_or_else(|| report.path.display().to_string());
    for (line, why) in &report.malformed {
        eprintln!("warning: {}: line {line}: {why}", report.path.display());
    }
    let items = datasets::select(report.items.clone(), args.offset, args.limit, args.shuffle);
    if items.is_empty() {
        return Err(input_error(format!(
            "no items selected from {dataset_label}"
        )));
    }

    let config = load_config(config_path, args.price_profile.as_deref())?;
    let models = Arc::new(ModelCache::from_env().map_err(|e| input_error(e.to_string()))?);
    let calls = if args.no_cache {
        None
    } else {
        let path = models.root().join("calls.sqlite");
        Some(Arc::new(
            CallCache::open(&path).map_err(|e| anyhow::anyhow!(e.to_string()))?,
        ))
    };
    let (pool, _) = build_pool(
        config,
        models,
        RuntimeOptions {
            threads: args.threads,
            progress: true,
        },
        calls.clone(),
    );

    // Every name is checked before any model runs.
    let policies = args
        .policy
        .iter()
        .map(|p| parse_policy(p, &pool).map_err(|e| input_error(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let decomposer = pool
        .config
        .require(
            args.decomposer
                .as_deref()
                .unwrap_or(&pool.config.decomposer),
        )
        .map_err(input_error)?;
    let largest = pool.len() - 1;
    let judge = match &args.judge {
        Some(j) => pool.config.require(j).map_err(input_error)?,
        None => largest,
    };
    let baseline = args
        .baseline
        .clone()
        .unwrap_or_else(|| format!("direct:{}", pool.id(largest)));
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let settings = RunSettings {
        out_dir: args.out.clone(),
        concurrency: args.concurrency,
        exec: ExecOptions {
            max_subtasks: args.max_subtasks,
            step_timeout: Some(Duration::from_secs(args.timeout.max(1))),
            ..ExecOptions::default()
        },
        decomposer,
        judge,
        limits: Default::default(),
    };

    let mut results = BTreeMap::new();
    for policy in &policies {
        let bar = ProgressBar::new(items.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>28} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(policy.name());
        let progress = |done: usize, _total: usize, correct: usize, cost: f64| {
            bar.set_position(done as u64);
            let acc = if done == 0 {
                0.0
            } else {
                100.0 * correct as f64 / done as f64
            };
            bar.set_message(format!("acc {acc:.1}% cost ${cost:.6}"));
        };
        let r = run_policy(&pool, policy.as_ref(), &items, &settings, &progress)
            .await
            .context("cannot write results")?;
        bar.finish();
        results.insert(policy.name(), r);
    }

    // Policies run earlier into the same directory join the table, on the same items.
    if let Ok(entries) = std::fs::read_dir(&args.out) {
        for e in entries.flatten() {
            let path = e.path().join("items.jsonl");
            let Some(first) = read_results(&path).into_iter().next() else {
                continue;
            };
            if results.contains_key(&first.policy) || items_path(&args.out, &first.policy) != path {
                continue;
            }
            let ids: std::collections::HashSet<&str> =
                items.iter().map(|i| i.id.as_str()).collect();
            let old: Vec<_> = read_results(&path)
                .into_iter()
                .filter(|r| ids.contains(r.id.as_str()))
                .collect();
            if !old.is_empty() {
                results.insert(first.policy.clone(), old);
            }
        }
    }

    let mut summaries: Vec<_> = results
        .iter()
        .map(|(name, r)| summarise(name, r, &pool.config))
        .collect();
    compare_to_baseline(&mut summaries, &baseline);
    let stats = calls.as_ref().map(|c| c.stats()).unwrap_or_default();
    let summary = Summary {
        dataset: dataset_label.clone(),
        baseline,
        price_profile: pool.config.price_profile.clone(),
        policies: summaries,
        cache_hits: stats.hits,
        cache_misses: stats.misses,
        malformed: report.malformed.clone(),
    };
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let md = markdown(&summary);
    std::fs::write(args.out.join("summary.md"), &md)?;
    let points: Vec<plot::Point> = summary
        .policies
        .iter()
        .map(|p| {
            (
                p.policy.clone(),
                p.cost_per_item
                    .get(&summary.price_profile)
                    .copied()
                    .unwrap_or(0.0),
                p.accuracy,
            )
        })
        .collect();
    let title = format!(
        "{dataset_label}: cost vs accuracy ({} prices)",
        summary.price_profile
    );
    if let Err(e) = plot::cost_accuracy(&args.out, "cost_accuracy", &title, &points) {
        eprintln!("warning: plot not written: {e}");
    }
    print!("{md}");
    Ok(())
}
