//! One limiter per API key, made on first use and kept per replica: the door's per-key RPM
//! (lib/auth) and the gateway's virtual keys share this cache.

use std::collections::HashMap;
use std::sync::Mutex;

use millrace_common::sync::lock;

use super::{Quota, RateLimiter};

/// Limiters kept per replica at most; past it they are dropped and made again (a shared
/// limiter's log lives in Redis, so it loses nothing but a little memory churn).
const MAX_LIMITERS: usize = 10_000;

type Make = Box<dyn Fn(&str, Quota) -> RateLimiter + Send + Sync>;

/// The limiters of many keys, each made by `make(key_id, quota)`.
pub struct PerKeyLimiters {
    make: Make,
    limiters: Mutex<HashMap<String, RateLimiter>>,
}

impl std::fmt::Debug for PerKeyLimiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerKeyLimiters").finish_non_exhaustive()
    }
}

impl PerKeyLimiters {
    pub fn new(make: impl Fn(&str, Quota) -> RateLimiter + Send + Sync + 'static) -> Self {
        Self { make: Box::new(make), limiters: Mutex::new(HashMap::new()) }
    }

    /// The limiter of `key_id` with `quota`: the one made before, or a new one if none was or
    /// its quota differs (a key's limits changed).
    pub fn get(&self, key_id: &str, quota: Quota) -> RateLimiter {
        let mut limiters = lock(&self.limiters);
        if let Some(limiter) = limiters.get(key_id).filter(|limiter| limiter.quota() == quota) {
            return limiter.clone();
        }
        if limiters.len() >= MAX_LIMITERS {
            limiters.clear();
        }
        let limiter = (self.make)(key_id, quota);
        limiters.insert(key_id.to_owned(), limiter.clone());
        limiter
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::LimiterConfig;

    #[test]
    fn a_key_keeps_its_limiter_until_its_quota_changes() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&made);
        let limiters = PerKeyLimiters::new(move |key_id, quota| {
            counter.fetch_add(1, Ordering::Relaxed);
            RateLimiter::local(format!("key:{key_id}"), quota, LimiterConfig::default())
        });
        let quota = Quota { rpm: Some(10), tpm: None };
        limiters.get("a", quota);
        limiters.get("a", quota);
        assert_eq!(made.load(Ordering::Relaxed), 1);
        limiters.get("b", quota);
        assert_eq!(made.load(Ordering::Relaxed), 2);
        let changed = limiters.get("a", Quota { rpm: Some(20), tpm: None });
        assert_eq!(changed.quota().rpm, Some(20));
        assert_eq!(made.load(Ordering::Relaxed), 3);
    }
}
