//! Per-replica concurrency toward a downstream is a semaphore: tower's
//! [`ConcurrencyLimitLayer`] in a service stack, or tokio's [`Semaphore`] around a call.
//! Nothing here replaces them; [`Concurrency`] only names a semaphore and says how much of it
//! is in use, for status pages next to the breaker and limiter snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
pub use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
pub use tower::limit::{ConcurrencyLimit, ConcurrencyLimitLayer, GlobalConcurrencyLimitLayer};

/// A named semaphore of `limit` permits; cheap to clone (clones share the permits). Give its
/// [`semaphore`](Self::semaphore) to tower's [`GlobalConcurrencyLimitLayer::with_semaphore`]
/// to share the limit with a service stack.
#[derive(Debug, Clone)]
pub struct Concurrency {
    name: Arc<str>,
    limit: usize,
    semaphore: Arc<Semaphore>,
    waiting: Arc<AtomicU64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConcurrencySnapshot {
    pub name: String,
    pub limit: usize,
    pub in_use: usize,
    /// Callers waiting in [`Concurrency::acquire`] now.
    pub waiting: u64,
}

impl Concurrency {
    /// `limit` is at least 1.
    pub fn new(name: impl Into<String>, limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            name: Arc::from(name.into()),
            limit,
            semaphore: Arc::new(Semaphore::new(limit)),
            waiting: Arc::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn semaphore(&self) -> Arc<Semaphore> {
        Arc::clone(&self.semaphore)
    }

    /// Waits for a permit; the call holds it until dropped. Fails only if the semaphore was
    /// closed.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        if let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_owned() {
            return Ok(permit);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        Arc::clone(&self.semaphore).acquire_owned().await
    }

    /// A permit if one is free now.
    pub fn try_acquire(&self) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        Arc::clone(&self.semaphore).try_acquire_owned()
    }

    pub fn snapshot(&self) -> ConcurrencySnapshot {
        ConcurrencySnapshot {
            name: self.name.to_string(),
            limit: self.limit,
            in_use: self.limit.saturating_sub(self.semaphore.available_permits()),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }
}

/// Decrements the waiting count however the wait ends (a permit, or a cancelled caller).
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn snapshot_counts_permits_in_use_and_waiters() {
        let concurrency = Concurrency::new("gateway", 2);
        let first = concurrency.acquire().await.unwrap();
        let _second = concurrency.acquire().await.unwrap();
        assert!(concurrency.try_acquire().is_err());
        let waiter = tokio::spawn({
            let concurrency = concurrency.clone();
            async move { concurrency.acquire().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            concurrency.snapshot(),
            ConcurrencySnapshot { name: "gateway".into(), limit: 2, in_use: 2, waiting: 1 }
        );
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(concurrency.snapshot().in_use, 1);
        assert_eq!(concurrency.snapshot().waiting, 0);
    }
}
