//! The per-replica memory of recent key checks, so that a request with a known key costs no
//! round trip to PostgreSQL. Entries live at most the configured TTL (≤ 1 s), which is what
//! bounds how long a revoked key keeps working on a replica; the map is bounded so a flood of
//! random keys cannot grow it.
//!
//! Written by hand: a mutex over a hash map is enough at these sizes (a lookup is well under a
//! microsecond), and a cache crate with its own clock and eviction policy would be heavier.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use millrace_common::sync::lock;

use crate::Caller;
use crate::secret::KeyDigest;

/// What a lookup found: remembered alike, so unknown keys do not hammer PostgreSQL either.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Caller),
    Revoked,
    Unknown,
}

pub struct Cache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<KeyDigest, (Instant, Lookup)>>,
}

impl Cache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity, entries: Mutex::new(HashMap::new()) }
    }

    /// The remembered result, if younger than the TTL.
    pub fn get(&self, digest: &KeyDigest) -> Option<Lookup> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = lock(&self.entries);
        let (at, lookup) = entries.get(digest)?;
        (at.elapsed() < self.ttl).then(|| lookup.clone())
    }

    /// Remembers a result found at `at` (taken before the query was sent, so an entry never
    /// outlives the TTL measured from what PostgreSQL knew). When full, expired entries go
    /// first; if none has expired, everything goes (a flood of unknown keys, which must not
    /// keep live entries in and the map growing).
    pub fn put(&self, digest: KeyDigest, at: Instant, lookup: Lookup) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = lock(&self.entries);
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            let ttl = self.ttl;
            entries.retain(|_, (seen, _)| seen.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest, (at, lookup));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> KeyDigest {
        [n; 32]
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = Cache::new(Duration::from_millis(50), 10);
        cache.put(digest(1), Instant::now(), Lookup::Unknown);
        assert_eq!(cache.get(&digest(1)), Some(Lookup::Unknown));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&digest(1)), None);
    }

    #[test]
    fn the_age_counts_from_when_the_query_was_sent() {
        let cache = Cache::new(Duration::from_millis(50), 10);
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        cache.put(digest(1), sent, Lookup::Revoked);
        assert_eq!(cache.get(&digest(1)), None);
    }

    #[test]
    fn it_never_grows_past_its_capacity() {
        let cache = Cache::new(Duration::from_secs(1), 4);
        for n in 0..100 {
            cache.put(digest(n), Instant::now(), Lookup::Unknown);
            assert!(cache.len() <= 4);
        }
        assert_eq!(cache.get(&digest(99)), Some(Lookup::Unknown));
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = Cache::new(Duration::ZERO, 4);
        cache.put(digest(1), Instant::now(), Lookup::Unknown);
        assert!(cache.is_empty());
    }
}
