//! The local embedder as the service runs it, against the real all-MiniLM-L6-v2 folder (`make
//! setup` fetches it): concurrent callers share forward passes and get the vectors they would
//! get alone, and a missing model stops the service with a clear message. The model's own
//! numbers are tested in `lib/encoder`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod batching;
mod helpers;
mod start;
