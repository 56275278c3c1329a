//! The gateway over real gRPC and HTTP, in front of the fake upstream, both in-process on port 0.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers: a failed step should fail the test")]

mod chat;
mod config;
mod embed;
mod errors;
mod helpers;
mod keys;
mod limits;
mod openai_http;
mod ops;
