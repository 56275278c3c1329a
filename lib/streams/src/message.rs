//! One stream entry as a handler sees it.

use std::collections::HashMap;

use millrace_common::HandlerError;
use redis::Value;

#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub fields: HashMap<String, String>,
    /// How many times this entry has been delivered, this delivery included.
    pub delivery: u64,
    /// When the worker read this delivery off the stream (Unix ms, the worker's clock): when
    /// its attempt started. The stages record it with their result (`started_ms` of the job's
    /// events), so that a job's time waiting in a stream and its time being worked on can be
    /// told apart.
    pub read_ms: i64,
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
        (Self { id, fields, delivery, read_ms: millrace_common::time::now_millis() }, complete)
    }

    /// A required field; its absence makes the entry unprocessable.
    pub fn field(&self, name: &str) -> Result<&str, HandlerError> {
        self.fields
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| HandlerError::Fatal(format!("stream entry {} has no field {name:?}", self.id)))
    }
}
