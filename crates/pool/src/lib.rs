//! The model pool: configuration (TOML), prices, the `Backend` trait every model implements,
//! and `Pool`, which pairs each configured model with a backend and bounds its concurrency.
//!
//! This crate does no network or FFI; backends live in their own crates (`r2-llama`,
//! `r2-openai`).

mod backend;
mod config;
mod pool;
mod remote;
pub mod repetition;
mod scripted;
mod source;

pub use backend::{
    Backend, BackendError, ChatMessage, FinishReason, GenRequest, GenResponse, Role, Sampling,
};
pub use config::{
    BackendKind, ConfigError, ModelSpec, PoolConfig, Price, DEFAULT_POOL_NAME, DEFAULT_POOL_TOML,
};
pub use pool::{Pool, PoolCall};
pub use remote::{ApiKeySpec, BudgetPeriod, KeyBudget, KeySource, RemoteSpec, ServerConfig};
pub use scripted::ScriptedBackend;
pub use source::{ModelSource, SourcePart};
