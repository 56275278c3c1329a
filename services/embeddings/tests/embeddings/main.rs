//! The local embedding model against the real all-MiniLM-L6-v2 folder (`make setup` fetches it):
//! vectors match sentence-transformers on PyTorch, batching leaves them unchanged, concurrent
//! callers share forward passes, and a bad model folder stops the service with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod batching;
mod helpers;
mod model;
