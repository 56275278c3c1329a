//! One stream entry as a handler sees it.

use std::collections::HashMap;

use redis::Value;

#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub fields: HashMap<String, String>,
    /// How many times this entry has been delivered, this delivery included.
    pub delivery: u64,
}

impl Message {
    /// The entry as a handler sees it, and whether `fields` holds all of it: a value that is not
    /// text is left out, so such an entry cannot be copied back faithfully from `fields`.
    pub(crate) fn from_redis(id: String, map: HashMap<String, Value>, delivery: u64) -> (Self, bool) {
        let entries = map.len();
        let fields: HashMap<String, String> = map
            .into_iter()
            .filter_map(|(key, value)| redis::from_redis_value::<String>(value).ok().map(|v| (key, v)))
            .collect();
        let complete = fields.len() == entries;
        (Self { id, fields, delivery }, complete)
    }

    /// A required field; its absence makes the entry unprocessable.
    pub fn field(&self, name: &str) -> Result<&str, HandlerError> {
        self.fields
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| HandlerError::Fatal(format!("stream entry {} has no field {name:?}", self.id)))
    }
}

/// How a handler failed, which decides what happens to the entry.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again: the entry stays pending and is redelivered after the visibility
    /// timeout, until `max_deliveries`.
    #[error("{0}")]
    Retry(String),
    /// Trying again cannot help (bad input): the entry is dead-lettered at once.
    #[error("{0}")]
    Fatal(String),
    /// The entry did not get a fair try because a downstream is unavailable (its circuit breaker
    /// is open, or it answered that it is unavailable). The entry goes back to the end of the
    /// stream without using up a delivery, after a short pause (`MILLRACE_DEFER_DELAY_MS`).
    ///
    /// Use it only for the downstream's availability, never for a failure of this entry (that
    /// is `Retry`): a downstream that stays down makes its entries wait, and their jobs stay
    /// running, until it comes back or the jobs are cancelled. That is the intent: waiting work
    /// is not poisoned work. A stage that defers should also give its worker a
    /// [`Gate`](crate::Gate), so that it stops reading while the downstream is down.
    #[error("{0}")]
    Deferred(String),
}
