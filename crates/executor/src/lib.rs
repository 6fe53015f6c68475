//! Runs a question through the pipeline: decomposition (when the policy wants it),
//! allocation, execution of the plan in dependency order with independent steps in
//! parallel, and a final synthesis step; returns the answer with a trace of every call.

pub mod answer;
mod escalate;
pub mod numeric;
pub mod program;
pub mod prompts;
mod run;
mod trace;

pub use run::{ExecError, ExecOptions, Executor};
pub use trace::{Answer, StepTrace};
