//! Command-line arguments, kept apart from the handlers.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "r2reasoner",
    version,
    about = "Route each step of a reasoning task to the cheapest model that can do it"
)]
pub struct Cli {
    /// Pool config (TOML). Default: ./r2reasoner.toml if present, else the embedded default pool.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Answer a question (decomposed and routed, or directly with --direct).
    Ask(AskArgs),
    /// List, fetch or verify the pool's model files.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
}

#[derive(Args, Debug)]
pub struct AskArgs {
    /// The question; `-` reads it from standard input.
    pub question: String,
    /// Allocation policy: fixed:<model>, random[:seed], llm-rated:<model>, direct:<model>.
    /// Default: the config's `policy`.
    #[arg(long, value_name = "P")]
    pub policy: Option<String>,
    /// Model that writes the plan. Default: the config's `decomposer` (the largest model).
    #[arg(long, value_name = "MODEL")]
    pub decomposer: Option<String>,
    /// Answer with chain of thought on one model, without decomposition (the baseline).
    #[arg(long, value_name = "MODEL", conflicts_with = "policy")]
    pub direct: Option<String>,
    /// Task family: math, multiple_choice, code, puzzle, command, general. Default: guessed.
    #[arg(long)]
    pub family: Option<String>,
    /// Price profile to account cost under (e.g. compute, api). Default: the config's.
    #[arg(long, value_name = "NAME")]
    pub price_profile: Option<String>,
    /// Most subtasks a plan may have.
    #[arg(long, default_value_t = 5)]
    pub max_subtasks: usize,
    /// Per-step timeout in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// llama.cpp threads per call (0 = the config's setting, which defaults to all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Print exactly one JSON object: answer, total cost, steps, warnings.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ModelsAction {
    /// Show each pool model, its source, prices and whether its file is cached.
    List,
    /// Download and assemble model files (all, or the ids given).
    Fetch {
        ids: Vec<String>,
        /// Download again even when a verified copy exists.
        #[arg(long)]
        force: bool,
    },
    /// Re-hash cached files against their pinned sha256 (all, or the ids given).
    Verify { ids: Vec<String> },
}
