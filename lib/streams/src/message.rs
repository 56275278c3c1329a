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
    pub(crate) fn from_redis(id: String, map: HashMap<String, Value>, delivery: u64) -> Self {
        let fields = map
            .into_iter()
            .filter_map(|(key, value)| redis::from_redis_value::<String>(value).ok().map(|v| (key, v)))
            .collect();
        Self { id, fields, delivery }
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
}
