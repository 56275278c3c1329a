//! Per-key limits of the OpenAI-compatible API (virtual keys), so that one team's key cannot
//! spend another's share of the upstream: each `llm` key may carry its own requests and tokens
//! per minute, counted on the same shared limiter as the upstreams' quotas (one sliding-window
//! log per key in Redis, so every replica counts together; a local share while Redis is away),
//! and a daily budget in USD, checked against the key's spend of the UTC day that the gateway's
//! own cost accounting keeps ([`crate::accounting`]).
//!
//! Over a limit a call is refused at once with how long to wait (429 + `Retry-After`), never
//! queued: a key's owner decides whether to wait, and a waiting call would hold a connection.
//! Tokens are counted like the upstream's TPM: the estimate is reserved before the call and
//! replaced by the answer's usage after it ([`KeyAdmission::settle`]).

use millrace_pipeline::Keys;
use millrace_resilience::{LimiterConfig, PerKeyLimiters, Quota, RateLimiter, Reservation};
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use crate::error::UpstreamError;

/// The key a call of the HTTP API came with: its id (never its secret) and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualKey {
    pub id: String,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub daily_budget_usd: Option<f64>,
}

impl VirtualKey {
    fn quota(&self) -> Quota {
        Quota { rpm: self.rpm.map(u64::from), tpm: self.tpm.map(u64::from) }
    }
}

impl From<&millrace_auth::Caller> for VirtualKey {
    fn from(caller: &millrace_auth::Caller) -> Self {
        Self { id: caller.key_id.clone(), rpm: caller.rpm, tpm: caller.tpm, daily_budget_usd: caller.daily_budget_usd }
    }
}

/// A key's admission: the tokens it reserved, to settle with those the answer used.
#[derive(Debug, Default)]
pub struct KeyAdmission(Option<Reservation>);

impl KeyAdmission {
    /// Replaces the estimate with the tokens really used (kept when the upstream did not say).
    pub async fn settle(self, used: Option<u64>) {
        if let (Some(reservation), Some(used)) = (self.0, used) {
            reservation.settle(used).await;
        }
    }
}

pub struct KeyLimits {
    limiters: PerKeyLimiters,
}

impl KeyLimits {
    /// `shared`: through Redis (`MILLRACE_LLM_SHARED_LIMITS`), as the upstreams' limiters are.
    pub fn new(conn: ConnectionManager, keys: Keys, config: LimiterConfig, shared: bool) -> Self {
        let limiters = PerKeyLimiters::new(move |key_id, quota| {
            let name = format!("key:{key_id}");
            if shared {
                let redis_key = keys.llm_limiter(&name);
                RateLimiter::shared(name, quota, config.clone(), conn.clone(), redis_key)
            } else {
                RateLimiter::local(name, quota, config.clone())
            }
        });
        Self { limiters }
    }

    /// Takes one request of `tokens` (an estimate) from the key's RPM and TPM, or refuses at once
    /// with the wait until it would fit (none: it never fits the key's TPM).
    pub async fn admit(&self, key: &VirtualKey, tokens: u64) -> Result<KeyAdmission, UpstreamError> {
        let quota = key.quota();
        if quota.is_unlimited() {
            return Ok(KeyAdmission::default());
        }
        let limiter = self.limiters.get(&key.id, quota);
        match limiter.acquire(tokens, Instant::now()).await {
            Ok(reservation) => Ok(KeyAdmission(Some(reservation))),
            Err(limited) => {
                crate::metrics::key_refusal(limited.limit);
                tracing::debug!(key_id = %key.id, limit = limited.limit, wait = ?limited.wait, "key over its limit");
                Err(UpstreamError::KeyRateLimited {
                    key_id: key.id.clone(),
                    limit: limited.limit,
                    retry_after: limited.wait,
                })
            }
        }
    }
}
