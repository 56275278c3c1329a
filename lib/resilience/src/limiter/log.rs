//! The in-process sliding-window log: the same arithmetic as the Redis script, for a limiter of
//! one process and for a replica's share while Redis is unreachable.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::Quota;

/// The answer to "may one request of `tokens` go now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Admitted as entry `id`; the window now holds `requests` requests and `tokens` tokens.
    Admitted { id: u64, requests: u64, tokens: u64 },
    /// Not before `wait`; `limit` is the limit that frees up last.
    Wait { wait: Duration, limit: &'static str, requests: u64, tokens: u64 },
}

/// Which limit a request of `tokens` can never fit in, whatever the window holds.
pub(crate) fn never_fits(quota: Quota, tokens: u64) -> Option<&'static str> {
    if quota.rpm == Some(0) {
        return Some("requests");
    }
    quota.tpm.is_some_and(|tpm| tokens > tpm).then_some("tokens")
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    at: Instant,
    tokens: u64,
}

/// Admissions of the last `span` (window + margin), oldest first.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    quota: Quota,
    span: Duration,
    entries: VecDeque<Entry>,
    tokens: u64,
    next_id: u64,
}

impl Log {
    pub(crate) fn new(quota: Quota, span: Duration) -> Self {
        Self { quota, span, entries: VecDeque::new(), tokens: 0, next_id: 0 }
    }

    pub(crate) fn quota(&self) -> Quota {
        self.quota
    }

    /// An entry counts while `now < at + span`.
    fn evict(&mut self, now: Instant) {
        while let Some(entry) = self.entries.front() {
            if entry.at + self.span > now {
                break;
            }
            self.tokens -= entry.tokens;
            self.entries.pop_front();
        }
    }

    /// Requests and tokens in the window at `now`.
    pub(crate) fn usage(&mut self, now: Instant) -> (u64, u64) {
        self.evict(now);
        (self.entries.len() as u64, self.tokens)
    }

    /// Admits one request of `tokens` at `now`, or says how long until it fits: when enough
    /// of the oldest entries have left the window for both limits. The caller has checked
    /// [`never_fits`].
    pub(crate) fn admit(&mut self, tokens: u64, now: Instant) -> Admission {
        self.evict(now);
        let requests = self.entries.len() as u64;
        let mut fits_at: Option<(Instant, &'static str)> = None;
        if let Some(rpm) = self.quota.rpm
            && requests >= rpm
        {
            // Fits once all but rpm - 1 entries have left: the (requests - rpm)-th oldest is the last to go.
            let index = usize::try_from(requests - rpm).unwrap_or(usize::MAX);
            if let Some(entry) = self.entries.get(index) {
                fits_at = Some((entry.at + self.span, "requests"));
            }
        }
        if let Some(tpm) = self.quota.tpm
            && self.tokens.saturating_add(tokens) > tpm
        {
            let excess = self.tokens.saturating_add(tokens) - tpm;
            let mut freed = 0u64;
            let mut at = now;
            for entry in &self.entries {
                freed += entry.tokens;
                at = entry.at + self.span;
                if freed >= excess {
                    break;
                }
            }
            if fits_at.is_none_or(|(current, _)| at > current) {
                fits_at = Some((at, "tokens"));
            }
        }
        if let Some((at, limit)) = fits_at {
            return Admission::Wait { wait: at.saturating_duration_since(now), limit, requests, tokens: self.tokens };
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back(Entry { id, at: now, tokens });
        self.tokens += tokens;
        Admission::Admitted { id, requests: requests + 1, tokens: self.tokens }
    }

    /// Replaces entry `id`'s tokens with `actual`; nothing if it has left the window.
    pub(crate) fn settle(&mut self, id: u64, actual: u64, now: Instant) {
        self.evict(now);
        // Recent entries are settled first: search from the newest.
        if let Some(entry) = self.entries.iter_mut().rev().find(|entry| entry.id == id) {
            self.tokens = self.tokens - entry.tokens + actual;
            entry.tokens = actual;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SPAN: Duration = Duration::from_millis(60_500);

    fn quota(rpm: Option<u64>, tpm: Option<u64>) -> Quota {
        Quota { rpm, tpm }
    }

    fn wait(admission: Admission) -> (Duration, &'static str) {
        match admission {
            Admission::Wait { wait, limit, .. } => (wait, limit),
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn waits_for_the_later_of_both_limits() {
        let t0 = Instant::now();
        let mut log = Log::new(quota(Some(2), Some(100)), SPAN);
        assert!(matches!(log.admit(90, t0), Admission::Admitted { requests: 1, tokens: 90, .. }));
        assert!(matches!(log.admit(5, t0 + Duration::from_secs(10)), Admission::Admitted { requests: 2, .. }));
        // Requests free up when the first entry leaves; 20 tokens need it gone too: same instant.
        assert_eq!(wait(log.admit(20, t0 + Duration::from_secs(20))), (SPAN - Duration::from_secs(20), "requests"));
        let mut log = Log::new(quota(Some(3), Some(100)), SPAN);
        log.admit(10, t0);
        log.admit(85, t0 + Duration::from_secs(10));
        // One request is free, but 10 + 85 + 20 > 100 needs the second entry gone.
        assert_eq!(wait(log.admit(20, t0 + Duration::from_secs(20))), (SPAN - Duration::from_secs(10), "tokens"));
    }

    #[test]
    fn settling_replaces_the_estimate_unless_the_entry_left() {
        let t0 = Instant::now();
        let mut log = Log::new(quota(None, Some(100)), SPAN);
        let Admission::Admitted { id, .. } = log.admit(80, t0) else { panic!() };
        log.settle(id, 30, t0);
        assert_eq!(log.usage(t0), (1, 30));
        assert!(matches!(log.admit(70, t0), Admission::Admitted { tokens: 100, .. }));
        let late = t0 + SPAN;
        log.settle(id, 1000, late);
        assert_eq!(log.usage(late), (0, 0));
    }

    #[derive(Debug, Clone)]
    struct Step {
        advance_ms: u64,
        tokens: u64,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            (0u64..20_000, 0u64..60).prop_map(|(advance_ms, tokens)| Step { advance_ms, tokens }),
            1..80,
        )
    }

    proptest! {
        /// In every window the log admits at most rpm requests and tpm tokens, and a wait it
        /// names is exact: a millisecond earlier the request does not fit, at the instant it does.
        #[test]
        fn never_over_quota_and_waits_are_exact(rpm in 1u64..6, tpm in 60u64..200, steps in steps()) {
            let span = Duration::from_millis(60_500);
            let t0 = Instant::now();
            let mut log = Log::new(quota(Some(rpm), Some(tpm)), span);
            let mut now = t0;
            let mut admitted: Vec<(Instant, u64)> = Vec::new();
            for step in steps {
                now += Duration::from_millis(step.advance_ms);
                match log.admit(step.tokens, now) {
                    Admission::Admitted { .. } => admitted.push((now, step.tokens)),
                    Admission::Wait { wait, .. } => {
                        prop_assert!(wait > Duration::ZERO);
                        let mut early = log.clone();
                        let just_before = now + wait - Duration::from_millis(1);
                        let is_wait = matches!(early.admit(step.tokens, just_before), Admission::Wait { .. });
                        prop_assert!(is_wait);
                        let mut on_time = log.clone();
                        let is_admitted = matches!(on_time.admit(step.tokens, now + wait), Admission::Admitted { .. });
                        prop_assert!(is_admitted);
                    }
                }
                let in_window: Vec<_> = admitted.iter().filter(|(at, _)| *at + span > now).collect();
                prop_assert!(in_window.len() as u64 <= rpm);
                prop_assert!(in_window.iter().map(|(_, t)| t).sum::<u64>() <= tpm);
                prop_assert_eq!(log.usage(now), (in_window.len() as u64, in_window.iter().map(|(_, t)| t).sum::<u64>()));
            }
        }
    }
}
