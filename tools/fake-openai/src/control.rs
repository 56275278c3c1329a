//! Changing the fake's faults while it runs (`GET`/`POST /control`), so a chaos run can inject
//! an upstream 5xx burst or a latency spike and end it without restarting the fake (a restart
//! would also drop connections and reset the quota window and the stats).

use serde::{Deserialize, Serialize};

use crate::{Config, Error};

/// The faults drawn for each admitted request; starts as the flags gave them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Faults {
    pub latency_ms: u64,
    pub jitter_ms: u64,
    pub error_rate: f64,
    pub timeout_rate: f64,
}

impl Faults {
    pub fn from_config(config: &Config) -> Self {
        Self {
            latency_ms: config.latency_ms,
            jitter_ms: config.jitter_ms,
            error_rate: config.error_rate,
            timeout_rate: config.timeout_rate,
        }
    }

    /// The faults with `change` applied, or why it is refused (then nothing changes).
    pub fn changed(self, change: &FaultsChange) -> Result<Self, Error> {
        let next = Self {
            latency_ms: change.latency_ms.unwrap_or(self.latency_ms),
            jitter_ms: change.jitter_ms.unwrap_or(self.jitter_ms),
            error_rate: change.error_rate.unwrap_or(self.error_rate),
            timeout_rate: change.timeout_rate.unwrap_or(self.timeout_rate),
        };
        // The same checks as the flags get, so a control call cannot make a config the flags refuse.
        Config {
            latency_ms: next.latency_ms,
            jitter_ms: next.jitter_ms,
            error_rate: next.error_rate,
            timeout_rate: next.timeout_rate,
            ..Config::default()
        }
        .validate()?;
        // A typo of a latency in seconds for milliseconds would hang every caller for hours.
        const MAX_LATENCY_MS: u64 = 600_000;
        if next.latency_ms > MAX_LATENCY_MS || next.jitter_ms > MAX_LATENCY_MS {
            return Err(Error::Config(format!("latency_ms and jitter_ms must not exceed {MAX_LATENCY_MS}")));
        }
        Ok(next)
    }
}

/// The body of `POST /control`: the fields to change; those left out keep their value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsChange {
    pub latency_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub timeout_rate: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_keeps_the_fields_it_leaves_out() {
        let start = Faults::from_config(&Config { latency_ms: 20, jitter_ms: 5, ..Config::default() });
        let next = start.changed(&FaultsChange { error_rate: Some(0.5), ..FaultsChange::default() }).unwrap();
        assert_eq!(next, Faults { latency_ms: 20, jitter_ms: 5, error_rate: 0.5, timeout_rate: 0.0 });
    }

    #[test]
    fn a_change_the_flags_would_refuse_is_refused() {
        let start = Faults::from_config(&Config::default());
        let err = start.changed(&FaultsChange { error_rate: Some(1.5), ..FaultsChange::default() }).unwrap_err();
        assert!(err.to_string().contains("--error-rate must be between 0 and 1"), "{err}");
        let both = FaultsChange { error_rate: Some(0.6), timeout_rate: Some(0.6), ..FaultsChange::default() };
        assert!(start.changed(&both).unwrap_err().to_string().contains("must not exceed 1"));
        let slow = FaultsChange { latency_ms: Some(3_600_000), ..FaultsChange::default() };
        assert!(start.changed(&slow).is_err());
    }
}
