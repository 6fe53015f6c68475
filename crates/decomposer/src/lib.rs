//! The decomposer: prompt templates that ask a (small) pool model to split a question into
//! subtasks, and a tolerant parser that turns whatever the model wrote into a valid `Plan`.
//!
//! Invariants and boundaries:
//! - Pure logic: no IO, no async, no model calls. The caller sends `decompose_prompt(..)`
//!   to a `r2_pool::Backend` and hands the text back to `parse_plan`.
//! - `parse_plan` never fails and never panics: model output is untrusted input. Unusable
//!   output becomes a one-step plan (`Plan::direct`) with a warning, which the trace shows.
//! - Every plan has 1..=max_subtasks subtasks with ids 1..=n and only backward
//!   dependencies, so it is always a DAG and `1..=n` is a valid execution order.
//! - A one-step plan ("answer directly") is a first-class plan, not an error: the pilot on
//!   this machine found that decomposition often does not pay for small models.

mod collect;
mod deps;
mod family;
mod json;
mod lines;
mod marker;
mod parse;
mod plan;
mod prompts;
mod text;

pub use family::{TaskFamily, UnknownFamily};
pub use parse::parse_plan;
pub use plan::{Plan, PlanError, Subtask};
pub use prompts::{decompose_prompt, examples, system_prompt, Example, DIRECT_STEP};
pub use text::{MAX_OUTPUT_BYTES, MAX_STEP_CHARS};
