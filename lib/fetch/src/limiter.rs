//! At most N requests to one host at once from this process, so that a batch of URLs on one
//! site does not hammer it (or get this service banned). One semaphore per host, created on
//! first use and dropped when no request holds or awaits it, so the table stays as small as the
//! set of hosts in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::FetchError;

#[derive(Debug)]
pub(crate) struct HostLimiter {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A request's place under its host's limit, released on drop.
pub(crate) struct HostPermit<'a> {
    permit: Option<OwnedSemaphorePermit>,
    limiter: &'a HostLimiter,
    host: String,
}

impl HostLimiter {
    pub(crate) fn new(per_host: usize) -> Self {
        Self { per_host: per_host.max(1), hosts: Mutex::new(HashMap::new()) }
    }

    fn hosts(&self) -> MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a place under `host`'s limit.
    pub(crate) async fn acquire(&self, host: &str) -> Result<HostPermit<'_>, FetchError> {
        let host = host.to_ascii_lowercase();
        let semaphore =
            self.hosts().entry(host.clone()).or_insert_with(|| Arc::new(Semaphore::new(self.per_host))).clone();
        // If this wait is cancelled (the fetch timed out), the clone goes and the entry is
        // removed by the next release on the host, or stays as one idle semaphore.
        let permit = semaphore
            .acquire_owned()
            .await
            .map_err(|_| FetchError::Network("the per-host limiter is closed".to_owned()))?;
        Ok(HostPermit { permit: Some(permit), limiter: self, host })
    }

    #[cfg(test)]
    fn tracked_hosts(&self) -> usize {
        self.hosts().len()
    }
}

impl Drop for HostPermit<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut hosts = self.limiter.hosts();
        // Only the table holds it: no request has or awaits a place on this host.
        if hosts.get(&self.host).is_some_and(|semaphore| Arc::strong_count(semaphore) == 1) {
            hosts.remove(&self.host);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_host_gets_at_most_its_share_and_idle_hosts_are_forgotten() {
        let limiter = HostLimiter::new(2);
        let a1 = limiter.acquire("a.example").await.unwrap();
        let _a2 = limiter.acquire("A.example").await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(50), limiter.acquire("a.example")).await;
        assert!(third.is_err(), "a third request on the same host waits");
        let _b = limiter.acquire("b.example").await.unwrap();
        assert_eq!(limiter.tracked_hosts(), 2);
        drop(a1);
        let _a3 = tokio::time::timeout(Duration::from_millis(50), limiter.acquire("a.example")).await.unwrap().unwrap();
        drop(_b);
        assert_eq!(limiter.tracked_hosts(), 1, "b.example is idle");
    }
}
