use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use millrace_resilience::{LimiterConfig, Quota, RateLimiter};

/// A short window, so a test sees it slide within a second or two.
pub const WINDOW: Duration = Duration::from_millis(1000);
pub const MARGIN: Duration = Duration::from_millis(100);

pub fn connection(url: &str) -> redis::aio::ConnectionManager {
    millrace_common::redis_conn::shared(url).unwrap()
}

/// A key prefix of its own for each limiter a test makes (tests share one redis-server).
pub fn unique_key(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("test:{}:{test}:{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn config(replicas: u32) -> LimiterConfig {
    LimiterConfig { window: WINDOW, margin: MARGIN, replicas }
}

/// One replica's limiter: its own connection, as a separate process would have.
pub fn replica(url: &str, key: &str, quota: Quota, replicas: u32) -> RateLimiter {
    RateLimiter::shared("upstream", quota, config(replicas), connection(url), key.to_owned())
}
