//! The shared log in Redis: two Lua scripts, so every replica's admission is one atomic step
//! on one clock (Redis `TIME`, never the replicas' own).
//!
//! Keys, under the limiter's key prefix `K`: `K:log`, a ZSET of admissions (member
//! `"{unique id}:{tokens}"`, score the admission time in ms), and `K:tokens`, the running total
//! of the tokens in the log. Both expire two windows after the last admission. (For a Redis
//! Cluster, give `K` a hash tag so that both land in one slot.)

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::coalesce::Coalescer;

use super::Quota;

/// Admits a request and its estimated tokens, or says how long to wait (`redis_log/admit.lua`).
static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis_log/admit.lua")));

/// Corrects reservations to the tokens used (`redis_log/settle.lua`).
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis_log/settle.lua")));

/// Reservations settled in one script call at most.
const MAX_SETTLES_PER_CALL: usize = 256;

/// What the admit script said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RedisAdmission {
    Admitted { member: String, requests: u64, tokens: u64 },
    Wait { wait: Duration, limit: &'static str, requests: u64, tokens: u64 },
    Never { limit: &'static str },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Batch(String),
}

pub(crate) struct RedisLog {
    conn: ConnectionManager,
    log_key: String,
    tokens_key: String,
    span_ms: u64,
    ttl_ms: u64,
    /// Makes members unique across replicas: random per handle, then a sequence number.
    member_prefix: String,
    sequence: std::sync::atomic::AtomicU64,
    timeout: Duration,
    /// Settlements of concurrent calls, written together: (member, settled member, delta).
    settles: Coalescer<(String, String, i128)>,
}

impl RedisLog {
    pub(crate) fn new(conn: ConnectionManager, key: &str, span: Duration, timeout: Duration) -> Self {
        let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX).max(1);
        let conn_for_settles = conn.clone();
        Self {
            conn,
            log_key: format!("{key}:log"),
            tokens_key: format!("{key}:tokens"),
            span_ms,
            ttl_ms: span_ms.saturating_mul(2),
            member_prefix: format!("{:016x}", rand::random::<u64>()),
            sequence: std::sync::atomic::AtomicU64::new(0),
            timeout,
            settles: settle_writer(conn_for_settles, format!("{key}:log"), format!("{key}:tokens"), span_ms, timeout),
        }
    }

    fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub(crate) async fn admit(&self, quota: Quota, tokens: u64) -> Result<RedisAdmission, RedisError> {
        let sequence = self.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{sequence}", self.member_prefix);
        let call = async {
            let mut conn = self.connection();
            let reply: (i64, u64, String, u64, u64) = ADMIT
                .key(&self.log_key)
                .key(&self.tokens_key)
                .arg(quota.rpm.unwrap_or(0))
                .arg(quota.tpm.unwrap_or(0))
                .arg(self.span_ms)
                .arg(tokens)
                .arg(&id)
                .arg(self.ttl_ms)
                .invoke_async(&mut conn)
                .await?;
            Ok::<_, RedisError>(reply)
        };
        let (status, wait_ms, limit, requests, total) =
            tokio::time::timeout(self.timeout, call).await.map_err(|_| RedisError::Timeout(self.timeout))??;
        let limit = if limit == "tokens" { "tokens" } else { "requests" };
        Ok(match status {
            1 => RedisAdmission::Admitted { member: format!("{id}:{tokens}"), requests, tokens: total },
            0 => RedisAdmission::Wait { wait: Duration::from_millis(wait_ms), limit, requests, tokens: total },
            _ => RedisAdmission::Never { limit },
        })
    }

    /// Replaces the member's estimate with `actual` (nothing changes if it already left the
    /// window), together with the settlements of other calls queued meanwhile.
    pub(crate) async fn settle(&self, member: &str, actual: u64) -> Result<(), RedisError> {
        let (id, estimate) = member.rsplit_once(':').unwrap_or((member, "0"));
        let estimate: u64 = estimate.parse().unwrap_or(0);
        let delta = i128::from(actual) - i128::from(estimate);
        self.settles.write((member.to_owned(), format!("{id}:{actual}"), delta)).await.map_err(RedisError::Batch)
    }
}

fn settle_writer(
    conn: ConnectionManager,
    log_key: String,
    tokens_key: String,
    span_ms: u64,
    timeout: Duration,
) -> Coalescer<(String, String, i128)> {
    let ttl_ms = span_ms.saturating_mul(2);
    Coalescer::new(MAX_SETTLES_PER_CALL, move |settles: Vec<(String, String, i128)>| {
        let (mut conn, log_key, tokens_key) = (conn.clone(), log_key.clone(), tokens_key.clone());
        async move {
            let call = async {
                let mut invocation = SETTLE.key(&log_key);
                invocation.key(&tokens_key).arg(span_ms).arg(ttl_ms);
                for (member, settled, delta) in &settles {
                    invocation.arg(member).arg(settled).arg(delta.to_string());
                }
                let _settled: i64 = invocation.invoke_async(&mut conn).await?;
                Ok::<_, RedisError>(())
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result.map_err(|err| err.to_string()),
                Err(_) => Err(RedisError::Timeout(timeout).to_string()),
            }
        }
    })
}
