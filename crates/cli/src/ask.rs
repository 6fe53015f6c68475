//! `r2reasoner ask`: answer one question and show the per-step trace.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use r2_decomposer::TaskFamily;
use r2_executor::{Answer, ExecOptions, Executor};
use r2_models::ModelCache;
use r2_pool::Sampling;
use r2_router::RouterEnv;
use r2_runtime::{build_pool, RuntimeOptions};
use r2_training::parse_policy;

use crate::args::AskArgs;
use crate::input_error;
use crate::setup::load_config;

pub fn read_question(arg: &str) -> Result<String> {
    let q = if arg == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the question from standard input")?;
        String::from_utf8(bytes)
            .map_err(|_| input_error("the question on standard input is not valid UTF-8"))?
    } else {
        arg.to_string()
    };
    if q.trim().is_empty() {
        return Err(input_error("the question is empty"));
    }
    Ok(q)
}

pub async fn run(config_path: Option<&Path>, args: AskArgs) -> Result<()> {
    let question = read_question(&args.question)?;
    let config = load_config(config_path, args.price_profile.as_deref())?;
    let family = match &args.family {
        Some(f) => TaskFamily::parse(f).ok_or_else(|| {
            input_error(format!(
                "unknown family '{f}' (math, multiple_choice, code, puzzle, command, general)"
            ))
        })?,
        None => TaskFamily::guess(&question),
    };
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        return Err(input_error(format!(
            "--temperature {} must be a number ≥ 0",
            args.temperature
        )));
    }
    let sampling = if args.temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Temperature {
            temperature: args.temperature,
            seed: args.seed,
        }
    };
    if args.max_subtasks == 0 {
        return Err(input_error("--max-subtasks must be at least 1"));
    }
    let cache = Arc::new(ModelCache::from_env().map_err(|e| input_error(e.to_string()))?);
    let progress = !args.json;
    let env = RouterEnv::new(Some(cache.clone()), progress);
    let (pool, _) = build_pool(
        config,
        cache,
        RuntimeOptions {
            threads: args.threads,
            progress,
        },
        None,
    );
    let options = ExecOptions {
        max_subtasks: args.max_subtasks,
        step_timeout: Some(Duration::from_secs(args.timeout)),
        sampling,
        ..ExecOptions::default()
    };
    let executor = Executor::new(&pool, options);

    let result = if let Some(model) = &args.direct {
        let m = pool.config.require(model).map_err(input_error)?;
        executor.direct(&question, family, m).await
    } else {
        // Names are checked before a learned policy loads its embedding model.
        let decomposer_id = args
            .decomposer
            .as_deref()
            .unwrap_or(&pool.config.decomposer);
        let decomposer = pool.config.require(decomposer_id).map_err(input_error)?;
        let name = args
            .policy
            .clone()
            .unwrap_or_else(|| pool.config.policy_or_default());
        let policy = parse_policy(&name, &pool, &env).map_err(|e| input_error(e.to_string()))?;
        executor
            .run(&question, family, policy.as_ref(), decomposer)
            .await
    };
    let answer = result.map_err(|e| {
        if e.is_input_error() {
            input_error(e.to_string())
        } else {
            anyhow::Error::new(e)
        }
    })?;

    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &answer)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &answer)?;
    }
    Ok(())
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    }
}

pub fn write_table(out: &mut impl Write, answer: &Answer) -> std::io::Result<()> {
    writeln!(out, "Answer: {}\n", answer.answer)?;
    writeln!(
        out,
        "{:<10} {:<20} {:>6} {:>6} {:>12} {:>9} {:>5}  text",
        "step", "model", "in", "out", "cost (USD)", "latency", "conf"
    )?;
    for s in &answer.steps {
        let conf = s
            .confidence
            .map(|c| format!("{c:.2}"))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<10} {:<20} {:>6} {:>6} {:>12.8} {:>8.1}s {:>5}  {}",
            s.id,
            s.model,
            s.input_tokens,
            s.output_tokens,
            s.cost_usd,
            s.latency_ms / 1000.0,
            conf,
            one_line(&s.text, 60)
        )?;
    }
    let (i, o) = answer.total_tokens();
    writeln!(
        out,
        "{:<10} {:<20} {:>6} {:>6} {:>12.8}",
        "total", "", i, o, answer.total_cost_usd
    )?;
    for w in &answer.warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}
