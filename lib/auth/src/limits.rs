//! Per-key request limits at the door: a key with `rpm` gets that many requests per minute,
//! counted across every replica on the shared Redis limiter of `millrace_resilience` (one
//! sliding-window log per key), answered 429 with `Retry-After` when used up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace_common::sync::lock;
use millrace_common::{ApiError, ErrorCode};
use millrace_resilience::{LimiterConfig, Quota, RateLimiter};
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use crate::Caller;

/// Limiters kept per replica at most; past it they are dropped and made again (the counts are
/// in Redis, so nothing is lost but a little memory churn).
const MAX_LIMITERS: usize = 10_000;

/// One shared limiter per key id. Cheap to clone.
#[derive(Clone)]
pub struct KeyLimits {
    inner: Arc<Inner>,
}

struct Inner {
    redis: ConnectionManager,
    /// Redis keys are `{prefix}:limits:key:{key_id}`.
    prefix: String,
    config: LimiterConfig,
    limiters: Mutex<HashMap<String, (Quota, RateLimiter)>>,
}

impl std::fmt::Debug for KeyLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLimits").field("prefix", &self.inner.prefix).finish_non_exhaustive()
    }
}

impl KeyLimits {
    /// Limits kept in `redis` under `prefix` (the service's `MILLRACE_KEY_PREFIX`).
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        let inner = Inner {
            redis,
            prefix: prefix.to_owned(),
            config: LimiterConfig::default(),
            limiters: Mutex::new(HashMap::new()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The shared limiter of `key_id` with `quota` (made on first use; remade if the quota
    /// differs, which a key's never does, but a test's may).
    pub fn limiter(&self, key_id: &str, quota: Quota) -> RateLimiter {
        let mut limiters = lock(&self.inner.limiters);
        if let Some((held, limiter)) = limiters.get(key_id)
            && *held == quota
        {
            return limiter.clone();
        }
        if limiters.len() >= MAX_LIMITERS {
            limiters.clear();
        }
        let limiter = RateLimiter::shared(
            format!("key:{key_id}"),
            quota,
            self.inner.config.clone(),
            self.inner.redis.clone(),
            format!("{}:limits:key:{key_id}", self.inner.prefix),
        );
        limiters.insert(key_id.to_owned(), (quota, limiter.clone()));
        limiter
    }

    /// Admits one request of `caller` now, or answers 429 with the seconds until its `rpm`
    /// frees up. A caller without `rpm` is never limited here.
    pub async fn admit(&self, caller: &Caller) -> Result<(), ApiError> {
        let Some(rpm) = caller.rpm else {
            return Ok(());
        };
        let limiter = self.limiter(&caller.key_id, Quota { rpm: Some(u64::from(rpm)), tpm: None });
        match limiter.acquire(0, Instant::now()).await {
            Ok(_reservation) => Ok(()),
            Err(limited) => {
                let wait = limited.wait.unwrap_or(Duration::from_secs(60));
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!("this key's limit of {rpm} requests per minute is used up"),
                )
                .with_retry_after(secs.max(1)))
            }
        }
    }
}
