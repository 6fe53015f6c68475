//! `r2reasoner bench`: run a dataset under one or more policies and write per-item JSONL,
//! a summary (JSON + Markdown) and the cost–accuracy plot.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use r2_bench::plot;
use r2_bench::run::{items_path, read_results, run_policy};
use r2_bench::summary::{best_of, compare_to_baseline, markdown, summarise, Summary};

use crate::args::BenchArgs;
use crate::setup::{select_items, Session};

pub async fn run(config_path: Option<&Path>, args: BenchArgs) -> Result<()> {
    let selection = select_items(&args.data)?;
    let (items, dataset_label) = (&selection.items, selection.label.clone());
    let session = Session::open(config_path, &args.run)?;
    let pool = &session.pool;
    let policies = session.policies(&args.policy)?;
    let largest = pool.len() - 1;
    let baseline = args
        .baseline
        .clone()
        .unwrap_or_else(|| format!("direct:{}", pool.id(largest)));
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let settings = session.settings(args.out.clone());

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
        let r = run_policy(pool, policy.as_ref(), items, &settings, &progress)
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
    let (cache_hits, cache_misses) = session.cache_stats();
    let best_of = best_of(&results, &pool.config, &baseline);
    let summary = Summary {
        dataset: dataset_label.clone(),
        baseline,
        price_profile: pool.config.price_profile.clone(),
        policies: summaries,
        cache_hits,
        cache_misses,
        malformed: selection.malformed.kept().to_vec(),
        malformed_total: selection.malformed.total(),
        best_of,
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
