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

use std::collections::HashMap;
use std::sync::Mutex;

use millrace_common::sync::lock;
use millrace_pipeline::Keys;
use millrace_resilience::{LimiterConfig, Quota, RateLimiter, Reservation};
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use crate::error::UpstreamError;

/// Limiters kept per replica at most; past it they are dropped and made again (their logs live
/// in Redis, so a shared limiter loses nothing).
const MAX_LIMITERS: usize = 10_000;

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
    conn: ConnectionManager,
    keys: Keys,
    config: LimiterConfig,
    shared: bool,
    limiters: Mutex<HashMap<String, RateLimiter>>,
}

impl KeyLimits {
    /// `shared`: through Redis (`MILLRACE_LLM_SHARED_LIMITS`), as the upstreams' limiters are.
    pub fn new(conn: ConnectionManager, keys: Keys, config: LimiterConfig, shared: bool) -> Self {
        Self { conn, keys, config, shared, limiters: Mutex::new(HashMap::new()) }
    }

    /// Takes one request of `tokens` (an estimate) from the key's RPM and TPM, or refuses at once
    /// with the wait until it would fit (none: it never fits the key's TPM).
    pub async fn admit(&self, key: &VirtualKey, tokens: u64) -> Result<KeyAdmission, UpstreamError> {
        let Some(limiter) = self.limiter(key) else { return Ok(KeyAdmission::default()) };
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

    /// The key's limiter, made on first use (and again if the key's limits changed); none when
    /// the key has no RPM or TPM.
    fn limiter(&self, key: &VirtualKey) -> Option<RateLimiter> {
        let quota = key.quota();
        if quota.is_unlimited() {
            return None;
        }
        let mut limiters = lock(&self.limiters);
        if let Some(limiter) = limiters.get(&key.id).filter(|limiter| limiter.quota() == quota) {
            return Some(limiter.clone());
        }
        if limiters.len() >= MAX_LIMITERS {
            limiters.clear();
        }
        let name = format!("key:{}", key.id);
        let limiter = if self.shared {
            let redis_key = self.keys.llm_limiter(&name);
            RateLimiter::shared(name, quota, self.config.clone(), self.conn.clone(), redis_key)
        } else {
            RateLimiter::local(name, quota, self.config.clone())
        };
        limiters.insert(key.id.clone(), limiter.clone());
        Some(limiter)
    }
}
