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

use super::Quota;

/// KEYS: log, tokens. ARGV: rpm (0 = unlimited), tpm (0 = unlimited), span ms, tokens,
/// member id, ttl ms.
/// Returns {1, 0, '', requests, tokens} when admitted (counts include this request), or
/// {0, wait ms, limit, requests, tokens} when it must wait; -1 in the first slot when it can
/// never fit.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.replicate_commands then redis.replicate_commands() end
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local span = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
if tpm > 0 and tokens > tpm then return {-1, 0, 'tokens', 0, 0} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function tokens_of(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - span)
if #expired > 0 then
  for _, member in ipairs(expired) do total = total - tokens_of(member) end
  if total < 0 then total = 0 end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
  redis.call('SET', KEYS[2], total, 'PX', ARGV[6])
end
local requests = redis.call('ZCARD', KEYS[1])
local fits_at = -1
local limit = ''
if rpm > 0 and requests >= rpm then
  local entry = redis.call('ZRANGE', KEYS[1], requests - rpm, requests - rpm, 'WITHSCORES')
  fits_at = tonumber(entry[2]) + span
  limit = 'requests'
end
if tpm > 0 and total + tokens > tpm then
  local excess = total + tokens - tpm
  local freed = 0
  local at = now
  local offset = 0
  while freed < excess do
    local page = redis.call('ZRANGE', KEYS[1], offset, offset + 99, 'WITHSCORES')
    if #page == 0 then break end
    for i = 1, #page, 2 do
      freed = freed + tokens_of(page[i])
      at = tonumber(page[i + 1]) + span
      if freed >= excess then break end
    end
    offset = offset + 100
  end
  if at > fits_at then
    fits_at = at
    limit = 'tokens'
  end
end
if fits_at >= 0 then return {0, fits_at - now, limit, requests, total} end
redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':' .. tokens)
total = total + tokens
redis.call('SET', KEYS[2], total, 'PX', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {1, 0, '', requests + 1, total}
",
    )
});

/// KEYS: log, tokens. ARGV: member as admitted, member with the actual tokens, actual minus
/// estimated tokens, span ms, ttl ms.
/// Returns 1 when settled, 0 when the entry has already left the window (nothing changes).
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.replicate_commands then redis.replicate_commands() end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if tonumber(score) <= now - tonumber(ARGV[4]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], score, ARGV[2])
local total = tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(ARGV[3])
if total < 0 then total = 0 end
redis.call('SET', KEYS[2], total, 'PX', ARGV[5])
return 1
",
    )
});

/// What the admit script said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RedisAdmission {
    Admitted { member: String, requests: u64, tokens: u64 },
    Wait { wait: Duration, limit: &'static str, requests: u64, tokens: u64 },
    Never { limit: &'static str },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

pub(crate) struct RedisLog {
    pool: deadpool_redis::Pool,
    log_key: String,
    tokens_key: String,
    span_ms: u64,
    ttl_ms: u64,
    /// Makes members unique across replicas: random per handle, then a sequence number.
    member_prefix: String,
    sequence: std::sync::atomic::AtomicU64,
    timeout: Duration,
}

impl RedisLog {
    pub(crate) fn new(pool: deadpool_redis::Pool, key: &str, span: Duration, timeout: Duration) -> Self {
        let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX).max(1);
        Self {
            pool,
            log_key: format!("{key}:log"),
            tokens_key: format!("{key}:tokens"),
            span_ms,
            ttl_ms: span_ms.saturating_mul(2),
            member_prefix: format!("{:016x}", rand::random::<u64>()),
            sequence: std::sync::atomic::AtomicU64::new(0),
            timeout,
        }
    }

    async fn connection(&self) -> Result<deadpool_redis::Connection, RedisError> {
        Ok(self.pool.get().await?)
    }

    pub(crate) async fn admit(&self, quota: Quota, tokens: u64) -> Result<RedisAdmission, RedisError> {
        let sequence = self.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{sequence}", self.member_prefix);
        let call = async {
            let mut conn = self.connection().await?;
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

    /// Replaces the member's estimate with `actual`; false when it already left the window.
    pub(crate) async fn settle(&self, member: &str, actual: u64) -> Result<bool, RedisError> {
        let (id, estimate) = member.rsplit_once(':').unwrap_or((member, "0"));
        let estimate: u64 = estimate.parse().unwrap_or(0);
        let delta = i128::from(actual) - i128::from(estimate);
        let call = async {
            let mut conn = self.connection().await?;
            let settled: i64 = SETTLE
                .key(&self.log_key)
                .key(&self.tokens_key)
                .arg(member)
                .arg(format!("{id}:{actual}"))
                .arg(delta.to_string())
                .arg(self.span_ms)
                .arg(self.ttl_ms)
                .invoke_async(&mut conn)
                .await?;
            Ok::<_, RedisError>(settled == 1)
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| RedisError::Timeout(self.timeout))?
    }
}
