//! Counts the calls in flight, so that shutdown can wait for them (and Admin can report them).

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone)]
pub struct InFlight(Arc<watch::Sender<usize>>);

impl Default for InFlight {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl InFlight {
    /// Counts one call until the guard is dropped (also when the caller goes away mid-call).
    pub fn enter(&self) -> Guard {
        self.0.send_modify(|n| *n += 1);
        Guard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        *self.0.borrow()
    }

    /// Resolves when no call is in flight.
    pub async fn idle(&self) {
        let mut rx = self.0.subscribe();
        // Fails only if the sender is gone, and we hold it.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

pub struct Guard(Arc<watch::Sender<usize>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_guard() {
        let in_flight = InFlight::default();
        in_flight.idle().await;
        let guard = in_flight.enter();
        let second = in_flight.enter();
        assert_eq!(in_flight.count(), 2);
        drop(second);
        assert!(tokio::time::timeout(Duration::from_millis(20), in_flight.idle()).await.is_err());
        drop(guard);
        tokio::time::timeout(Duration::from_millis(100), in_flight.idle()).await.unwrap();
    }
}
