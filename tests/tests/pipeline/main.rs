//! End-to-end tests of the whole pipeline, each on its own stack of real processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod chunks;
mod cli;
mod content;
mod crash;
mod dead_letters;
mod events;
mod flow;
mod formats;
mod isolation;
mod limits;
mod observability;
mod ops;
mod races;
mod rerank;
mod runs;
mod search;
mod sync;
mod tls;
mod tracing;
