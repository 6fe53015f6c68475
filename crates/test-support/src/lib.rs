//! Fixtures shared by the workspace's tests (a dev-dependency only, never published).
//!
//! - `http`: a raw HTTP/1.1 client whose replies are whole or an error.
//! - `upstream`: a fault-injecting OpenAI-compatible server on loopback.
//! - `smol`: the real model of the end-to-end tests and its one-model pool configs.
//! - `cli` and [`bin!`]: running the `r2reasoner` binary, its input errors, `serve`.
//!
//! Plain `std` (threads, blocking sockets) and no workspace crate, so any crate's tests can
//! use it beside any async runtime or none.

pub mod cli;
pub mod http;
pub mod smol;
pub mod upstream;
