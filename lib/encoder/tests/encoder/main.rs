//! The sentence encoder against the real all-MiniLM-L6-v2 folder (`make setup` fetches it):
//! vectors match sentence-transformers on PyTorch, batching leaves them unchanged, and a bad
//! model folder fails with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;
mod model;
