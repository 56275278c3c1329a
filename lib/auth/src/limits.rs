//! Per-key request limits at the door: a key with `rpm` gets that many requests per minute,
//! counted across every replica on the shared Redis limiter of `millrace_resilience` (one
//! sliding-window log per key), answered 429 with `Retry-After` when used up.

use std::sync::Arc;
use std::time::Duration;

use millrace_common::{ApiError, ErrorCode};
use millrace_resilience::{LimiterConfig, PerKeyLimiters, Quota, RateLimiter};
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use crate::Caller;

/// One shared limiter per key id. Cheap to clone.
#[derive(Clone, Debug)]
pub struct KeyLimits {
    limiters: Arc<PerKeyLimiters>,
}

impl KeyLimits {
    /// Limits kept in `redis` under `prefix` (the service's `MILLRACE_KEY_PREFIX`): Redis keys
    /// `{prefix}:limits:key:{key_id}`.
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        let prefix = prefix.to_owned();
        let limiters = PerKeyLimiters::new(move |key_id, quota| {
            let redis_key = format!("{prefix}:limits:key:{key_id}");
            RateLimiter::shared(format!("key:{key_id}"), quota, LimiterConfig::default(), redis.clone(), redis_key)
        });
        Self { limiters: Arc::new(limiters) }
    }

    /// Admits one request of `caller` now, or answers 429 with the seconds until its `rpm`
    /// frees up. A caller without `rpm` is never limited here.
    pub async fn admit(&self, caller: &Caller) -> Result<(), ApiError> {
        let Some(rpm) = caller.rpm else {
            return Ok(());
        };
        let limiter = self.limiters.get(&caller.key_id, Quota { rpm: Some(u64::from(rpm)), tpm: None });
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
