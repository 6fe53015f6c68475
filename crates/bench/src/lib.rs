//! Benchmarks for r2reasoner: loaders for the shared benchmark datasets ([`datasets`]) and
//! graders for model answers ([`grade`]), the runner that executes a policy over
//! items with resumable per-item results ([`run`]), summaries ([`summary`]) and the
//! cost–accuracy plot ([`plot`]).
//!
//! Data lives outside the repository (`../shared/data` from the repository root, or
//! `R2REASONER_DATA`); see `datasets::data_root`.

pub mod datasets;
pub mod grade;
pub mod plot;
pub mod run;
pub mod summary;

pub use datasets::{load, load_path, select, DatasetError, Gold, Item, LoadReport};
pub use grade::{grade, Grade};
