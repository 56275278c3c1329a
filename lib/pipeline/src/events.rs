//! A job's progress events, as the job's scripts append them to its events stream
//! (`Keys::job_events`): `queued`; `chunked` (chunks, batches); `batch` (stage metadata,
//! embeddings or storage, batch, chunks, and for storage reused and metadata_failed); then one
//! of `completed`, `failed` or `cancelled` (with the failing stage and error). `chunked` and
//! each `batch` also say when the stage's worker took up the work it finished (`started_ms`,
//! Unix ms, the worker's clock; the event's own time is its entry id): with the time the step
//! before it finished, that tells a stage's time queued from its time worked. A failed job that
//! is retried from its dead letters goes on after its `failed` event with `retried` (the stage
//! retried, and the error it had failed with) and the events of its new attempt, so `failed` is
//! final only when nothing follows it. The stream lives as long as the job record, so a late
//! reader replays the job from the start.

use std::time::Duration;

use millrace_common::time::rfc3339_from_millis;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use serde_json::{Map, Value};

use crate::JobStoreError;

/// Fields whose values are counts, sent as JSON numbers.
const NUMERIC: &[&str] = &["chunks", "batches", "batch", "reused", "metadata_failed", "started_ms"];

#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// The stream entry id (`{ms}-{seq}`): an SSE client resumes after it (`Last-Event-ID`).
    pub id: String,
    pub kind: String,
    fields: Vec<(String, String)>,
}

impl JobEvent {
    /// The final event of a finished job, from its record: for a reader that missed it (the
    /// events of a job recorded before events existed, or trimmed away).
    pub fn finished(job: &crate::Job) -> Self {
        let fields = job
            .error
            .as_ref()
            .map(|error| vec![("error".to_owned(), error.message.clone()), ("stage".to_owned(), error.stage.clone())])
            .unwrap_or_default();
        Self { id: "0-1".to_owned(), kind: job.status.as_str().to_owned(), fields }
    }

    /// Whether the job ends with this event.
    pub fn is_final(&self) -> bool {
        matches!(self.kind.as_str(), "completed" | "failed" | "cancelled")
    }

    /// When the event was written: the milliseconds of its stream entry id.
    fn at(&self) -> Option<String> {
        let ms = self.id.split('-').next()?.parse::<i64>().ok()?;
        Some(rfc3339_from_millis(ms))
    }

    /// The event as the gRPC `WatchJob` sends it.
    pub fn to_proto(&self, job_id: &str) -> millrace_proto::JobEvent {
        let mut event = millrace_proto::JobEvent {
            id: self.id.clone(),
            r#type: self.kind.clone(),
            job_id: job_id.to_owned(),
            at: self.at().unwrap_or_default(),
            ..Default::default()
        };
        let number = |value: &str| value.parse::<u64>().unwrap_or(0);
        for (name, value) in &self.fields {
            match name.as_str() {
                "stage" => event.stage.clone_from(value),
                "error" => event.error.clone_from(value),
                "batch" => event.batch = u32::try_from(number(value)).unwrap_or(u32::MAX),
                "batches" => event.batches = u32::try_from(number(value)).unwrap_or(u32::MAX),
                "chunks" => event.chunks = number(value),
                "reused" => event.reused = number(value),
                "metadata_failed" => event.metadata_failed = number(value),
                "started_ms" => event.started_ms = number(value),
                "unchanged" => event.unchanged = value == "1",
                _ => {}
            }
        }
        event
    }

    /// The event as JSON: its fields (counts as numbers), the job id, and `at` from the entry id.
    pub fn to_json(&self, job_id: &str) -> Value {
        let mut object = Map::new();
        object.insert("type".into(), Value::String(self.kind.clone()));
        object.insert("job_id".into(), Value::String(job_id.to_owned()));
        if let Some(at) = self.at() {
            object.insert("at".into(), Value::String(at));
        }
        for (name, value) in &self.fields {
            let value = match value.parse::<u64>() {
                Ok(n) if NUMERIC.contains(&name.as_str()) => Value::from(n),
                _ if name == "unchanged" => Value::Bool(value == "1"),
                _ => Value::String(value.clone()),
            };
            object.insert(name.clone(), value);
        }
        Value::Object(object)
    }
}

/// The events of a stream after entry `after` ("0" for all), waiting up to `block` for the
/// first one (not at all for zero); empty when none came. `conn` must be a connection of its
/// own: a blocking read holds it.
pub async fn read_events(
    conn: &mut MultiplexedConnection,
    key: &str,
    after: &str,
    block: Duration,
) -> Result<Vec<JobEvent>, JobStoreError> {
    let mut command = redis::cmd("XREAD");
    command.arg("COUNT").arg(500);
    // BLOCK 0 would wait for ever.
    if !block.is_zero() {
        command.arg("BLOCK").arg(block.as_millis().max(1) as u64);
    }
    let reply: Option<StreamReadReply> = command.arg("STREAMS").arg(key).arg(after).query_async(conn).await?;
    let entries = reply.into_iter().flat_map(|reply| reply.keys).flat_map(|stream| stream.ids);
    Ok(entries
        .map(|entry| {
            let mut kind = String::new();
            let mut fields = Vec::new();
            for (name, value) in &entry.map {
                let text: String = redis::from_redis_value_ref(value).unwrap_or_default();
                if name == "type" {
                    kind = text;
                } else {
                    fields.push((name.clone(), text));
                }
            }
            fields.sort();
            JobEvent { id: entry.id, kind, fields }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_json_with_counts_as_numbers() {
        let event = JobEvent {
            id: "1764000000000-0".into(),
            kind: "batch".into(),
            fields: vec![
                ("batch".into(), "2".into()),
                ("chunks".into(), "31".into()),
                ("stage".into(), "storage".into()),
                ("started_ms".into(), "1763999999250".into()),
            ],
        };
        assert_eq!(
            event.to_json("j1"),
            serde_json::json!({
                "type": "batch", "job_id": "j1", "at": "2025-11-24T16:00:00Z",
                "batch": 2, "chunks": 31, "stage": "storage", "started_ms": 1_763_999_999_250_u64,
            })
        );
        assert!(!event.is_final());
        let proto = event.to_proto("j1");
        assert_eq!(
            (proto.r#type.as_str(), proto.stage.as_str(), proto.batch, proto.chunks, proto.started_ms),
            ("batch", "storage", 2, 31, 1_763_999_999_250)
        );
        assert_eq!(proto.at, "2025-11-24T16:00:00Z");
        let done =
            JobEvent { id: "1-0".into(), kind: "failed".into(), fields: vec![("stage".into(), "chunking".into())] };
        assert!(done.is_final());
        assert_eq!(done.to_json("j")["stage"], "chunking");
    }
}
