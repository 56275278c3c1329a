//! The fake's HTTP API, spawned in-process on port 0 and called over real HTTP.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers: a failed step should fail the test")]

mod chat;
mod embeddings;
mod faults;
mod helpers;
mod quota;
mod stats;
mod stream;
