//! Tokens and dollars: each answer's `usage` priced by model, added to the caller's job (when it
//! named one), to today's spend shared by every replica in Redis, and to per-model metrics; and
//! the daily budget checked before each call.
//!
//! Accounting never fails a call that the upstream answered: a Redis error is logged and
//! counted, because the tokens are spent either way.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use millrace_pipeline::Keys;
use redis::Script;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::Price;
use crate::error::UpstreamError;
use crate::telemetry;
use crate::upstream::Usage;

/// How long a replica trusts its last reading of today's spend before asking Redis again.
const SPEND_FRESHNESS: Duration = Duration::from_millis(250);
/// Spend records outlive their day a little, for `/v1/limits` around midnight.
const SPEND_TTL_SECS: i64 = 3 * 24 * 3600;

/// Adds usage to a job only if the job exists: a stray id must not create a record.
const ADD_TO_JOB: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'llm_prompt_tokens', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'llm_completion_tokens', ARGV[2])
redis.call('HINCRBYFLOAT', KEYS[1], 'llm_cost_usd', ARGV[3])
return 1
";

pub struct Accounting {
    pool: deadpool_redis::Pool,
    keys: Keys,
    prices: BTreeMap<String, Price>,
    budget_usd: Option<f64>,
    add_to_job: Script,
    /// Today's spend as last read or written: (day, usd, when).
    spent: Mutex<Option<(String, f64, Instant)>>,
    unpriced_warned: Mutex<HashSet<String>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetSnapshot {
    pub day: String,
    pub max_daily_cost_usd: Option<f64>,
    pub spent_usd: f64,
    pub exhausted: bool,
}

impl Accounting {
    pub fn new(
        pool: deadpool_redis::Pool,
        keys: Keys,
        prices: BTreeMap<String, Price>,
        budget_usd: Option<f64>,
    ) -> Self {
        Self {
            pool,
            keys,
            prices,
            budget_usd,
            add_to_job: Script::new(ADD_TO_JOB),
            spent: Mutex::new(None),
            unpriced_warned: Mutex::new(HashSet::new()),
        }
    }

    /// Refuses the call when today's spend has reached the budget.
    pub async fn check_budget(&self) -> Result<(), UpstreamError> {
        let Some(budget_usd) = self.budget_usd else { return Ok(()) };
        let spent_usd = self.spent_today().await;
        if spent_usd >= budget_usd {
            telemetry::budget_refusal();
            return Err(UpstreamError::BudgetExceeded { spent_usd, budget_usd, resets_in: until_midnight() });
        }
        Ok(())
    }

    pub async fn snapshot(&self) -> BudgetSnapshot {
        let spent_usd = self.spent_today().await;
        BudgetSnapshot {
            day: today(),
            max_daily_cost_usd: self.budget_usd,
            spent_usd,
            exhausted: self.budget_usd.is_some_and(|budget| spent_usd >= budget),
        }
    }

    /// Prices `usage` of `model` and records it everywhere it belongs.
    pub async fn record(&self, model: &str, usage: Usage, job_id: &str) {
        telemetry::tokens(model, usage.prompt_tokens, usage.completion_tokens);
        let cost = match self.price(model) {
            Some(price) => price.cost(usage.prompt_tokens, usage.completion_tokens),
            None => {
                self.warn_unpriced(model);
                0.0
            }
        };
        telemetry::cost(model, cost);
        if let Err(err) = self.write(model, usage, cost, job_id).await {
            telemetry::accounting_error();
            tracing::warn!(model, job_id, error = %err, "cannot record LLM usage in redis");
        }
    }

    /// The answered model may carry a dated suffix (`gpt-4o-mini-2024-07-18`): the longest
    /// priced name it starts with prices it.
    fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied().or_else(|| {
            self.prices
                .iter()
                .filter(|(name, _)| model.starts_with(name.as_str()))
                .max_by_key(|(name, _)| name.len())
                .map(|(_, p)| *p)
        })
    }

    fn warn_unpriced(&self, model: &str) {
        let mut warned = self.unpriced_warned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if warned.insert(model.to_owned()) {
            tracing::warn!(
                model,
                "no price for this model: its calls count no cost (add it under [prices] in the upstreams file)"
            );
        }
    }

    async fn write(&self, model: &str, usage: Usage, cost: f64, job_id: &str) -> Result<(), RedisFailure> {
        let mut conn = self.pool.get().await?;
        let day = today();
        let key = self.keys.llm_spend(&day);
        let (spent,): (f64,) = redis::pipe()
            .cmd("HINCRBYFLOAT")
            .arg(&key)
            .arg("usd")
            .arg(cost)
            .cmd("HINCRBYFLOAT")
            .arg(&key)
            .arg(format!("usd:{model}"))
            .arg(cost)
            .ignore()
            .cmd("HINCRBY")
            .arg(&key)
            .arg(format!("prompt_tokens:{model}"))
            .arg(usage.prompt_tokens)
            .ignore()
            .cmd("HINCRBY")
            .arg(&key)
            .arg(format!("completion_tokens:{model}"))
            .arg(usage.completion_tokens)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(SPEND_TTL_SECS)
            .ignore()
            .query_async(&mut conn)
            .await?;
        self.remember(day, spent);
        if !job_id.is_empty() {
            let _: i64 = self
                .add_to_job
                .key(self.keys.job(job_id))
                .arg(usage.prompt_tokens)
                .arg(usage.completion_tokens)
                .arg(cost)
                .invoke_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Today's spend, from memory if fresh, else from Redis; 0 if Redis cannot say (a budget
    /// is a guard against runaway cost, not a reason to stop when Redis blinks).
    async fn spent_today(&self) -> f64 {
        let day = today();
        let seen = self.spent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some((seen_day, usd, at)) = seen
            && seen_day == day
            && at.elapsed() < SPEND_FRESHNESS
        {
            return usd;
        }
        let read = async {
            let mut conn = self.pool.get().await?;
            let usd = redis::cmd("HGET")
                .arg(self.keys.llm_spend(&day))
                .arg("usd")
                .query_async::<Option<f64>>(&mut conn)
                .await?;
            Ok::<_, RedisFailure>(usd)
        };
        match read.await {
            Ok(usd) => {
                let usd = usd.unwrap_or(0.0);
                self.remember(day, usd);
                usd
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read today's LLM spend; the budget check passes");
                self.spent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map_or(0.0, |s| s.1)
            }
        }
    }

    fn remember(&self, day: String, usd: f64) {
        *self.spent.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((day, usd, Instant::now()));
    }
}

/// Why Redis could not be used: a pool or a command error, as text for the log.
#[derive(Debug, thiserror::Error)]
enum RedisFailure {
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis: {0}")]
    Command(#[from] redis::RedisError),
}

fn today() -> String {
    let date = OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

fn until_midnight() -> Duration {
    let now = OffsetDateTime::now_utc();
    let elapsed = now - now.replace_time(time::Time::MIDNIGHT);
    Duration::from_secs(86_400).saturating_sub(Duration::try_from(elapsed).unwrap_or_default())
}
