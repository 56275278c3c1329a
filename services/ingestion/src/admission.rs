//! Admission control: whether there is room for more work, and how long to wait when there is
//! none. Three bounds, each answered with 503 and `Retry-After`: jobs not yet finished
//! (`MILLRACE_MAX_QUEUED_JOBS`), the bytes of their documents, which Redis holds until each
//! finishes (`MILLRACE_MAX_QUEUED_BYTES`), and Redis' own memory: with `noeviction` a Redis at
//! its `maxmemory` refuses every write of the whole pipeline, so new work stops at a
//! watermark below it (`MILLRACE_REDIS_MEMORY_HIGH_WATERMARK`). And one bound per tenant, so
//! that one tenant cannot fill the queue for all: its jobs not yet finished
//! (`MILLRACE_MAX_QUEUED_JOBS_PER_TENANT`), answered with 429 and `Retry-After`, since the
//! service has room and only this tenant must wait.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use millrace_common::sync::lock;
use millrace_common::{ApiError, ErrorCode};

/// How long one reading of Redis' memory is trusted.
const MEMORY_READING_TTL: Duration = Duration::from_secs(1);

/// Room left for new jobs now.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub free_jobs: u64,
    pub free_bytes: u64,
    /// Room left in the caller's tenant, and its bound (`MAX_QUEUED_JOBS_PER_TENANT`).
    pub free_tenant_jobs: u64,
    pub max_tenant_jobs: u64,
    /// What to tell a caller who finds no room.
    pub retry_after_secs: u64,
}

/// The variable of the per-tenant bound, named in its refusals (and how they are counted).
pub const PER_TENANT_LIMIT: &str = "MILLRACE_MAX_QUEUED_JOBS_PER_TENANT";

impl Capacity {
    /// Takes room for one document of `bytes`, or says which bound is reached.
    pub fn admit(&mut self, bytes: u64) -> Result<(), ApiError> {
        if self.free_tenant_jobs == 0 {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "this tenant's jobs queued or running have reached its limit ({PER_TENANT_LIMIT}={}); \
                     retry once some have finished",
                    self.max_tenant_jobs
                ),
            )
            .with_retry_after(self.retry_after_secs.max(1)));
        }
        if self.free_jobs == 0 {
            return Err(full("too many jobs are queued (MILLRACE_MAX_QUEUED_JOBS)", self.retry_after_secs));
        }
        if bytes > self.free_bytes {
            return Err(full("too many document bytes are queued (MILLRACE_MAX_QUEUED_BYTES)", self.retry_after_secs));
        }
        self.free_jobs -= 1;
        self.free_tenant_jobs -= 1;
        self.free_bytes -= bytes;
        Ok(())
    }

    /// Refuses when not even an empty document would be admitted.
    pub fn check_any(&self) -> Result<(), ApiError> {
        let mut copy = *self;
        copy.admit(0)
    }

    /// Refuses when the pipeline as a whole has no room, whatever the tenant's share: for work
    /// an admin puts back across tenants (dead-letter retries).
    pub fn check_pipeline(&self) -> Result<(), ApiError> {
        Capacity { free_tenant_jobs: 1, ..*self }.check_any()
    }
}

fn full(reason: &str, retry_after_secs: u64) -> ApiError {
    ApiError::unavailable(format!("{reason}; retry later")).with_retry_after(retry_after_secs)
}

/// Seconds a rejected caller should wait: the jobs over the bound divided by the recent
/// completion rate, within 1 to 300 s; 30 s when nothing finished recently.
pub fn retry_after_secs(active: u64, max_queued: u64, finished_last_minute: u64) -> u64 {
    if finished_last_minute == 0 {
        return 30;
    }
    let excess = active.saturating_sub(max_queued).saturating_add(1);
    // excess / (finished / 60 s), rounded up.
    let secs = (excess.saturating_mul(60)).div_ceil(finished_last_minute);
    secs.clamp(1, 300)
}

/// Redis' `used_memory` and `maxmemory` (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReading {
    pub used: u64,
    pub max: u64,
}

impl MemoryReading {
    /// Parses the answer of `INFO memory`; `None` if either field is missing.
    pub fn parse(info: &str) -> Option<Self> {
        let field = |name: &str| {
            info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<u64>().ok())
        };
        Some(Self { used: field("used_memory")?, max: field("maxmemory")? })
    }

    /// Whether Redis is at or above `watermark` of its limit (never without a limit).
    pub fn over(&self, watermark: f64) -> bool {
        self.max > 0 && self.used as f64 >= watermark * self.max as f64
    }
}

/// Redis' memory, read at most once a second per replica.
#[derive(Default)]
pub struct RedisMemory {
    last: Mutex<Option<(Instant, MemoryReading)>>,
}

impl RedisMemory {
    /// Redis' memory now (from a reading at most a second old). `None` when Redis cannot be
    /// read: that refuses nothing here, the submission's own writes report it.
    pub async fn reading(&self, pool: &deadpool_redis::Pool) -> Option<MemoryReading> {
        let cached = *lock(&self.last);
        if let Some((at, reading)) = cached
            && at.elapsed() < MEMORY_READING_TTL
        {
            return Some(reading);
        }
        let reading = read(pool).await?;
        *lock(&self.last) = Some((Instant::now(), reading));
        Some(reading)
    }
}

/// The refusal while Redis is above its watermark.
pub fn memory_full(reading: MemoryReading, retry_after_secs: u64) -> ApiError {
    tracing::warn!(used = reading.used, max = reading.max, "redis is near its memory limit; refusing new work");
    full(
        &format!(
            "the job store is near its memory limit ({} of {} bytes used; MILLRACE_REDIS_MEMORY_HIGH_WATERMARK)",
            reading.used, reading.max
        ),
        retry_after_secs.max(5),
    )
}

/// Says once, at start, when Redis keeps no append-only file: then a 202 does not survive a
/// restart of Redis (README "What a 202 promises").
pub async fn warn_unless_durable(pool: deadpool_redis::Pool) {
    let Ok(mut conn) = pool.get().await else { return };
    let Ok(info) = redis::cmd("INFO").arg("persistence").query_async::<String>(&mut conn).await else { return };
    if info.lines().any(|line| line.trim() == "aof_enabled:0") {
        tracing::warn!(
            "redis runs without its append-only file (appendonly no): accepted jobs are lost if redis restarts; \
             run it with appendonly yes"
        );
    }
}

async fn read(pool: &deadpool_redis::Pool) -> Option<MemoryReading> {
    let mut conn = pool.get().await.ok()?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.ok()?;
    MemoryReading::parse(&info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_follows_the_completion_rate() {
        // Nothing finished recently: a fixed guess.
        assert_eq!(retry_after_secs(10, 10, 0), 30);
        // 1 job over the bound, 60 finished per minute: 1 s.
        assert_eq!(retry_after_secs(10, 10, 60), 1);
        // 11 jobs to wait for at 6 per minute: 110 s.
        assert_eq!(retry_after_secs(20, 10, 6), 110);
        assert_eq!(retry_after_secs(10_000, 10, 1), 300);
    }

    #[test]
    fn each_bound_refuses_with_its_own_reason() {
        let mut capacity =
            Capacity { free_jobs: 2, free_bytes: 100, free_tenant_jobs: 5, max_tenant_jobs: 5, retry_after_secs: 7 };
        capacity.admit(60).unwrap();
        let err = capacity.admit(60).unwrap_err();
        assert!(err.message.contains("MILLRACE_MAX_QUEUED_BYTES"), "{err}");
        assert_eq!(err.retry_after_secs, Some(7));
        capacity.admit(40).unwrap();
        assert!(capacity.admit(0).unwrap_err().message.contains("MILLRACE_MAX_QUEUED_JOBS"));
        assert!(capacity.check_any().is_err());
    }

    #[test]
    fn a_tenant_at_its_bound_waits_with_429_while_others_go_on() {
        let mut capacity =
            Capacity { free_jobs: 10, free_bytes: 100, free_tenant_jobs: 1, max_tenant_jobs: 3, retry_after_secs: 0 };
        capacity.admit(1).unwrap();
        let err = capacity.admit(1).unwrap_err();
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert!(err.message.contains("MILLRACE_MAX_QUEUED_JOBS_PER_TENANT=3"), "{err}");
        assert_eq!(err.retry_after_secs, Some(1), "never `Retry-After: 0`");
        assert_eq!(capacity.free_jobs, 9);
    }

    #[test]
    fn memory_is_read_from_info_and_compared_with_the_watermark() {
        let info = "# Memory\r\nused_memory:900\r\nused_memory_human:900B\r\nmaxmemory:1000\r\nmaxmemory_policy:noeviction\r\n";
        let reading = MemoryReading::parse(info).unwrap();
        assert_eq!(reading, MemoryReading { used: 900, max: 1000 });
        assert!(reading.over(0.9) && !reading.over(0.95));
        assert!(!MemoryReading { used: 900, max: 0 }.over(0.5), "no maxmemory: no limit");
        assert_eq!(MemoryReading::parse("# Memory\r\nused_memory:1\r\n"), None);
    }
}
