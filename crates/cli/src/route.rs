//! `r2reasoner route`: the route each policy picks for each question (a direct answer on
//! which model, or a decomposed plan), without answering. A policy that asks a model to
//! choose (`llm-rated`) still makes that call; a learned router only runs its network.
//! With a check suffix (`+program`, `+retry`, …) the route shown is the first try: the
//! check may send the answer up after it is written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use r2_allocator::Route;

use crate::args::RouteArgs;
use crate::setup::{select_items, Session};

pub async fn run(config_path: Option<&Path>, args: RouteArgs) -> Result<()> {
    let selection = select_items(&args.data)?;
    let items = &selection.items;
    let session = Session::open(config_path, &args.run)?;
    let pool = &session.pool;
    let policies = session.policies(&args.policy)?;
    let mut out = match &args.out {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => None,
    };
    // Columns: a direct answer on each pool model, then decomposing, then errors.
    let mut columns: Vec<String> = (0..pool.len()).map(|m| pool.id(m).to_string()).collect();
    columns.push("decompose".into());
    columns.push("error".into());
    let mut table: Vec<(String, Vec<usize>)> = Vec::new();
    for policy in &policies {
        let mut counts = vec![0usize; columns.len()];
        let mut errors = BTreeMap::new();
        for item in items {
            let (column, route) = match policy.route(&item.question, item.family, pool).await {
                Ok(Route::Direct { model, .. }) if model < pool.len() => {
                    (model, format!("direct:{}", pool.id(model)))
                }
                Ok(Route::Direct { model, .. }) => {
                    let e = format!("model index {model} outside the pool");
                    *errors.entry(e.clone()).or_insert(0usize) += 1;
                    (pool.len() + 1, format!("error: {e}"))
                }
                Ok(Route::Decompose) => (pool.len(), "decompose".to_string()),
                Err(e) => {
                    *errors.entry(e.to_string()).or_insert(0usize) += 1;
                    (pool.len() + 1, format!("error: {e}"))
                }
            };
            counts[column] += 1;
            if let Some(w) = out.as_mut() {
                let line = serde_json::json!({
                    "policy": policy.name(),
                    "id": item.id,
                    "route": route,
                });
                writeln!(w, "{line}").context("cannot write routes")?;
            }
        }
        for (e, n) in errors {
            eprintln!("{}: {n} question(s) not routed: {e}", policy.name());
        }
        table.push((policy.name(), counts));
    }
    if let Some(mut w) = out {
        w.flush().context("cannot write routes")?;
    }
    println!(
        "routes on {} question(s) of {}",
        items.len(),
        selection.label
    );
    println!("| policy | {} |", columns.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    for (name, counts) in table {
        let cells: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    Ok(())
}
