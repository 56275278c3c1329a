//! Requests-per-minute and tokens-per-minute quotas over a sliding 60 s window, answering how
//! many whole seconds remain until the request would fit, as OpenAI's `Retry-After` does.
//!
//! Written by hand rather than with a GCRA crate: the fake must report exactly when capacity
//! returns in a log-of-admissions window, which is what clients under test observe upstream.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub const WINDOW: Duration = Duration::from_secs(60);

/// The outcome of asking for capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; what is left of each limit in the window (None when unlimited).
    Admitted { remaining_requests: Option<u64>, remaining_tokens: Option<u64> },
    /// Over quota; `limit` is "requests" or "tokens".
    Limited { limit: &'static str, retry_after_secs: u64, message: String },
}

pub struct Quota {
    rpm: u64,
    tpm: u64,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// When each admitted request was admitted and how many tokens it used, oldest first.
    admitted: VecDeque<(Instant, u64)>,
    tokens: u64,
}

impl Window {
    fn evict(&mut self, now: Instant) {
        while let Some(&(at, tokens)) = self.admitted.front() {
            if now.saturating_duration_since(at) < WINDOW {
                break;
            }
            self.admitted.pop_front();
            self.tokens -= tokens;
        }
    }

    /// The instant the `index`-th oldest admission leaves the window.
    fn expiry(&self, index: usize) -> Option<Instant> {
        self.admitted.get(index).map(|&(at, _)| at + WINDOW)
    }
}

impl Quota {
    /// `0` means unlimited for either limit.
    pub fn new(rpm: u64, tpm: u64) -> Self {
        Self { rpm, tpm, window: Mutex::new(Window::default()) }
    }

    pub fn limits(&self) -> (u64, u64) {
        (self.rpm, self.tpm)
    }

    /// Admits a request using `tokens`, or says how long until it would fit.
    pub fn admit(&self, tokens: u64, now: Instant) -> Verdict {
        if self.rpm == 0 && self.tpm == 0 {
            return Verdict::Admitted { remaining_requests: None, remaining_tokens: None };
        }
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        window.evict(now);
        let used_requests = window.admitted.len() as u64;

        let mut wait_until: Option<(Instant, &'static str, String)> = None;
        if self.rpm > 0 && used_requests >= self.rpm {
            // The request fits once enough old admissions leave that fewer than `rpm` remain.
            let index = (used_requests - self.rpm) as usize;
            if let Some(at) = window.expiry(index) {
                let message = format!(
                    "Rate limit reached on requests per min (RPM): Limit {}, Used {used_requests}, Requested 1.",
                    self.rpm
                );
                wait_until = Some((at, "requests", message));
            }
        }
        if self.tpm > 0 && window.tokens + tokens > self.tpm {
            let (at, message) = if tokens > self.tpm {
                // Can never fit; OpenAI still answers 429 for this, so the fake does too.
                (
                    now + WINDOW,
                    format!("Request too large on tokens per min (TPM): Limit {}, Requested {tokens}.", self.tpm),
                )
            } else {
                let mut freed = 0;
                let mut at = now;
                for &(admitted_at, used) in &window.admitted {
                    freed += used;
                    at = admitted_at + WINDOW;
                    if window.tokens - freed + tokens <= self.tpm {
                        break;
                    }
                }
                let message = format!(
                    "Rate limit reached on tokens per min (TPM): Limit {}, Used {}, Requested {tokens}.",
                    self.tpm, window.tokens
                );
                (at, message)
            };
            if wait_until.as_ref().is_none_or(|(current, _, _)| at > *current) {
                wait_until = Some((at, "tokens", message));
            }
        }

        if let Some((at, limit, message)) = wait_until {
            let retry_after_secs = whole_seconds(at.saturating_duration_since(now));
            let message = format!("{message} Please try again in {retry_after_secs}s.");
            return Verdict::Limited { limit, retry_after_secs, message };
        }
        window.admitted.push_back((now, tokens));
        window.tokens += tokens;
        Verdict::Admitted {
            remaining_requests: (self.rpm > 0).then(|| self.rpm - window.admitted.len() as u64),
            remaining_tokens: (self.tpm > 0).then(|| self.tpm - window.tokens),
        }
    }
}

/// Rounded up, and at least 1: a client that waits `Retry-After` seconds must find capacity.
fn whole_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(verdict: Verdict) -> u64 {
        match verdict {
            Verdict::Limited { retry_after_secs, .. } => retry_after_secs,
            other => panic!("expected a limit, got {other:?}"),
        }
    }

    #[test]
    fn unlimited_admits_everything() {
        let quota = Quota::new(0, 0);
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(matches!(quota.admit(1_000_000, now), Verdict::Admitted { .. }));
        }
    }

    #[test]
    fn rpm_limits_and_recovers_when_the_oldest_leaves_the_window() {
        let quota = Quota::new(2, 0);
        let t0 = Instant::now();
        assert!(matches!(quota.admit(1, t0), Verdict::Admitted { remaining_requests: Some(1), .. }));
        assert!(matches!(quota.admit(1, t0 + Duration::from_secs(10)), Verdict::Admitted { .. }));
        // At t0+20 s the first admission leaves at t0+60 s: 40 s to wait.
        assert_eq!(retry_after(quota.admit(1, t0 + Duration::from_secs(20))), 40);
        assert_eq!(retry_after(quota.admit(1, t0 + Duration::from_millis(59_500))), 1);
        assert!(matches!(quota.admit(1, t0 + Duration::from_secs(60)), Verdict::Admitted { .. }));
        // Now t0+10 s and t0+60 s are in the window.
        assert_eq!(retry_after(quota.admit(1, t0 + Duration::from_secs(61))), 9);
    }

    #[test]
    fn tpm_waits_until_enough_tokens_leave() {
        let quota = Quota::new(0, 100);
        let t0 = Instant::now();
        assert!(matches!(quota.admit(30, t0), Verdict::Admitted { remaining_tokens: Some(70), .. }));
        assert!(matches!(quota.admit(50, t0 + Duration::from_secs(5)), Verdict::Admitted { .. }));
        // 80 used; 60 more needs both earlier admissions gone: the second leaves at t0+65 s.
        assert_eq!(retry_after(quota.admit(60, t0 + Duration::from_secs(10))), 55);
        // 40 more needs only the first gone (t0+60 s).
        assert_eq!(retry_after(quota.admit(40, t0 + Duration::from_secs(10))), 50);
        assert!(matches!(quota.admit(20, t0 + Duration::from_secs(10)), Verdict::Admitted { .. }));
    }

    #[test]
    fn a_request_larger_than_the_tpm_is_refused_with_a_full_window() {
        let quota = Quota::new(0, 10);
        let verdict = quota.admit(11, Instant::now());
        assert!(
            matches!(&verdict, Verdict::Limited { limit: "tokens", retry_after_secs: 60, message } if message.contains("too large"))
        );
    }

    #[test]
    fn refused_requests_use_no_capacity() {
        let quota = Quota::new(1, 0);
        let t0 = Instant::now();
        assert!(matches!(quota.admit(1, t0), Verdict::Admitted { .. }));
        for s in 1..30 {
            assert!(matches!(quota.admit(1, t0 + Duration::from_secs(s)), Verdict::Limited { .. }));
        }
        assert!(matches!(quota.admit(1, t0 + Duration::from_secs(60)), Verdict::Admitted { .. }));
    }
}
