//! The Redis-shared rate limiter against a real redis-server: replicas sharing one quota,
//! settlement, and the local fallback while Redis is unreachable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;
mod shared_limiter;
