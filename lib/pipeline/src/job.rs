//! A job as read from its Redis hash, with the JSON shape the API returns.

use std::collections::HashMap;

use millrace_common::time::rfc3339_from_millis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    pub fn to_proto(self) -> millrace_proto::JobStatus {
        use millrace_proto::JobStatus as P;
        match self {
            Self::Queued => P::Queued,
            Self::Running => P::Running,
            Self::Completed => P::Completed,
            Self::Failed => P::Failed,
            Self::Cancelled => P::Cancelled,
        }
    }

    pub fn from_proto(status: millrace_proto::JobStatus) -> Option<Self> {
        use millrace_proto::JobStatus as P;
        match status {
            P::Unspecified => None,
            P::Queued => Some(Self::Queued),
            P::Running => Some(Self::Running),
            P::Completed => Some(Self::Completed),
            P::Failed => Some(Self::Failed),
            P::Cancelled => Some(Self::Cancelled),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChunkCounts {
    pub total: u64,
    pub metadata_done: u64,
    pub embedded: u64,
    pub stored: u64,
    /// Chunks identical to one of the document's visible version, whose stored metadata and
    /// embedding were reused (no model call).
    pub reused: u64,
    /// Chunks whose LLM metadata failed (invalid answer after a repair attempt); they carry
    /// extractive metadata instead.
    pub metadata_failed: u64,
}

/// Per-request settings of a job, overriding the services' configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOptions {
    /// Largest chunk, in the chunking stage's size unit (tokens by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u32>,
    /// Size shared by consecutive chunks, in the same unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_overlap: Option<u32>,
}

impl JobOptions {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The fingerprint of a submission: hex SHA-256 over everything that decides what is stored for
/// it (content hash, content type, caller metadata, source, options). Two submissions of a
/// document with the same fingerprint store the same thing, so the second completes at once.
pub fn fingerprint(
    content_hash: &str,
    content_type: &str,
    metadata: &serde_json::Value,
    source: &str,
    options: &JobOptions,
) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let options = serde_json::to_string(options).unwrap_or_default();
    for part in [content_hash, content_type, &canonical_json(metadata), source, &options] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// JSON with object keys sorted at every level, so equal objects hash equally whatever order
/// their keys came in (serde_json keeps insertion order when a dependency enables `preserve_order`).
fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[derive(Debug, Clone, Serialize)]
pub struct JobError {
    pub stage: String,
    pub message: String,
}

/// Tokens and dollars of a job's LLM calls (chat and embeddings through the gateway).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LlmUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

/// One job, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub job_id: String,
    pub tenant_id: String,
    /// The collection the document goes to (`default` for records written before collections).
    pub collection: String,
    pub document_id: String,
    pub version: u64,
    pub status: JobStatus,
    /// The job's attempt: 0, then one more for each dead-letter retry that reopened it. Stream
    /// entries carry the generation they were written for (see [`crate::EntryRef`]).
    #[serde(skip)]
    pub generation: u64,
    /// 0–100.
    pub progress: u32,
    /// Seconds until the job is likely done, from the rates its own metadata, embeddings and
    /// storage steps have shown since it started (the slowest decides); None while any of them
    /// has done nothing yet, and for a job that is not running.
    pub eta_seconds: Option<u64>,
    pub chunks: ChunkCounts,
    pub batches_total: u32,
    pub batches_stored: u32,
    pub error: Option<JobError>,
    /// Charged by the llm-gateway to the job it was called for.
    pub llm: LlmUsage,
    pub content_type: String,
    pub content_hash: String,
    /// Hash of everything that decides the stored result (see `fingerprint`).
    #[serde(skip)]
    pub fingerprint: String,
    pub content_bytes: u64,
    pub source: String,
    /// The address the document is fetched from (by the chunking stage), if it was submitted
    /// by URL; empty otherwise.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    pub options: JobOptions,
    /// The submission was identical to the document's visible version and completed at once.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Caller-supplied document metadata.
    pub metadata: serde_json::Value,
    /// The trace of the job (its submission and every stage's work), to look up in Jaeger or
    /// Tempo; absent for jobs recorded without tracing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The run the job is part of, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The HTTP status of the fetch of the document's URL (by the chunking stage, or by the
    /// crawler that submitted the page), once there was an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// How many times the job was started: 1, and one more for each retry that reopened it.
    pub attempts: u64,
    /// When the current attempt started (the creation, or the last retry).
    pub last_attempt_at: String,
}

impl Job {
    /// Parses a job hash; `None` if the hash is empty (unknown or expired job).
    pub fn from_hash(fields: &HashMap<String, String>) -> Option<Self> {
        let text = |name: &str| fields.get(name).cloned().unwrap_or_default();
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let millis = |name: &str| fields.get(name).and_then(|v| v.parse::<i64>().ok()).map(rfc3339_from_millis);
        let job_id = fields.get("job_id")?.clone();
        let status = JobStatus::parse(fields.get("status")?)?;
        let chunks = ChunkCounts {
            total: number("chunks_total"),
            metadata_done: number("metadata_done"),
            embedded: number("embedded"),
            stored: number("stored"),
            reused: number("reused"),
            metadata_failed: number("metadata_failed"),
        };
        let error =
            fields.get("error_stage").map(|stage| JobError { stage: stage.clone(), message: text("error_message") });
        let mut job = Job {
            job_id,
            tenant_id: text("tenant_id"),
            collection: fields
                .get("collection")
                .filter(|collection| !collection.is_empty())
                .cloned()
                .unwrap_or_else(|| millrace_auth::DEFAULT_COLLECTION.to_owned()),
            document_id: text("document_id"),
            version: number("version"),
            status,
            generation: number("gen"),
            progress: 0,
            eta_seconds: None,
            chunks,
            batches_total: number("batches_total") as u32,
            batches_stored: number("batches_stored") as u32,
            error,
            llm: LlmUsage {
                prompt_tokens: number("llm_prompt_tokens"),
                completion_tokens: number("llm_completion_tokens"),
                cost_usd: fields.get("llm_cost_usd").and_then(|v| v.parse().ok()).unwrap_or(0.0),
            },
            content_type: text("content_type"),
            content_hash: text("content_hash"),
            fingerprint: text("fingerprint"),
            content_bytes: number("content_bytes"),
            source: text("source"),
            url: text("url"),
            options: fields.get("options").and_then(|o| serde_json::from_str(o).ok()).unwrap_or_default(),
            unchanged: fields.contains_key("unchanged"),
            created_at: millis("created_ms").unwrap_or_default(),
            started_at: millis("started_ms"),
            finished_at: millis("finished_ms"),
            metadata: fields
                .get("metadata")
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_else(|| serde_json::json!({})),
            trace_id: fields.get("trace_id").filter(|id| !id.is_empty()).cloned(),
            run_id: fields.get("run_id").filter(|id| !id.is_empty()).cloned(),
            http_status: fields.get("http_status").and_then(|status| status.parse().ok()),
            attempts: number("gen") + 1,
            last_attempt_at: millis("last_attempt_ms").or_else(|| millis("created_ms")).unwrap_or_default(),
        };
        job.progress = job.compute_progress();
        let started_ms = fields.get("started_ms").and_then(|v| v.parse::<i64>().ok());
        job.eta_seconds = started_ms.and_then(|started| job.estimate_eta(started, millrace_common::time::now_millis()));
        Some(job)
    }

    fn estimate_eta(&self, started_ms: i64, now_ms: i64) -> Option<u64> {
        let elapsed_ms = u64::try_from(now_ms - started_ms).ok().filter(|ms| *ms > 0)?;
        let total = self.chunks.total;
        if self.status != JobStatus::Running || total == 0 {
            return None;
        }
        [self.chunks.metadata_done, self.chunks.embedded, self.chunks.stored]
            .into_iter()
            .map(|done| (done > 0).then(|| total.saturating_sub(done) * elapsed_ms / done).map(|ms| ms.div_ceil(1000)))
            .try_fold(0, |slowest, eta| eta.map(|eta| eta.max(slowest)))
    }

    /// Chunking counts for 10 %, metadata and embeddings 25 % each, storage 40 %.
    fn compute_progress(&self) -> u32 {
        match self.status {
            JobStatus::Completed => return 100,
            JobStatus::Queued => return 0,
            _ => {}
        }
        let total = self.chunks.total;
        if total == 0 {
            return 0;
        }
        let share = |done: u64, weight: u64| weight * done.min(total) / total;
        let progress =
            10 + share(self.chunks.metadata_done, 25) + share(self.chunks.embedded, 25) + share(self.chunks.stored, 40);
        progress.min(99) as u32
    }

    pub fn to_proto(&self) -> millrace_proto::Job {
        millrace_proto::Job {
            job_id: self.job_id.clone(),
            document_id: self.document_id.clone(),
            version: self.version,
            status: self.status.to_proto() as i32,
            collection: self.collection.clone(),
            tenant_id: self.tenant_id.clone(),
            progress: self.progress,
            chunks: Some(millrace_proto::ChunkCounts {
                total: self.chunks.total,
                metadata_done: self.chunks.metadata_done,
                embedded: self.chunks.embedded,
                stored: self.chunks.stored,
                reused: self.chunks.reused,
                metadata_failed: self.chunks.metadata_failed,
            }),
            error: self
                .error
                .as_ref()
                .map(|e| millrace_proto::JobError { stage: e.stage.clone(), message: e.message.clone() }),
            created_at: self.created_at.clone(),
            finished_at: self.finished_at.clone(),
            content_type: self.content_type.clone(),
            source: self.source.clone(),
            batches_total: self.batches_total,
            batches_stored: self.batches_stored,
            eta_seconds: self.eta_seconds,
            trace_id: self.trace_id.clone(),
            llm: Some(millrace_proto::LlmUsage {
                prompt_tokens: self.llm.prompt_tokens,
                completion_tokens: self.llm.completion_tokens,
                cost_usd: self.llm.cost_usd,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn progress_weights_stages_and_stays_below_100_until_completed() {
        let mut fields = hash(&[
            ("job_id", "j"),
            ("status", "running"),
            ("chunks_total", "10"),
            ("metadata_done", "10"),
            ("embedded", "10"),
            ("stored", "10"),
        ]);
        assert_eq!(Job::from_hash(&fields).unwrap().progress, 99);
        fields.insert("stored".into(), "5".into());
        assert_eq!(Job::from_hash(&fields).unwrap().progress, 80);
        fields.insert("status".into(), "completed".into());
        assert_eq!(Job::from_hash(&fields).unwrap().progress, 100);
    }

    #[test]
    fn the_eta_follows_the_slowest_steps_rate_so_far() {
        let job = |metadata: &str, embedded: &str, stored: &str| {
            Job::from_hash(&hash(&[
                ("job_id", "j"),
                ("status", "running"),
                ("chunks_total", "100"),
                ("metadata_done", metadata),
                ("embedded", embedded),
                ("stored", stored),
            ]))
            .unwrap()
        };
        let now = 1_000_000;
        // 10 s in: metadata 5/s (10 s left), embeddings done, storage 2/s (40 s left).
        assert_eq!(job("50", "100", "20").estimate_eta(now - 10_000, now), Some(40));
        assert_eq!(job("50", "100", "0").estimate_eta(now - 10_000, now), None, "storage has shown no rate yet");
        assert_eq!(job("100", "100", "100").estimate_eta(now - 10_000, now), Some(0));
        let mut finished = job("100", "100", "100");
        finished.status = JobStatus::Completed;
        assert_eq!(finished.estimate_eta(now - 10_000, now), None);
    }

    #[test]
    fn the_gateways_charges_show_on_the_job() {
        let fields = hash(&[
            ("job_id", "j"),
            ("status", "running"),
            ("llm_prompt_tokens", "120"),
            ("llm_completion_tokens", "30"),
            ("llm_cost_usd", "0.000036"),
        ]);
        let llm = Job::from_hash(&fields).unwrap().llm;
        assert_eq!((llm.prompt_tokens, llm.completion_tokens, llm.cost_usd), (120, 30, 0.000036));
        let llm = Job::from_hash(&hash(&[("job_id", "j"), ("status", "queued")])).unwrap().llm;
        assert_eq!((llm.prompt_tokens, llm.completion_tokens, llm.cost_usd), (0, 0, 0.0));
    }

    #[test]
    fn fingerprint_changes_with_anything_that_changes_the_result() {
        let meta = serde_json::json!({"a": 1, "b": 2});
        let base = fingerprint("h", "text/plain", &meta, "s", &JobOptions::default());
        assert_eq!(
            base,
            fingerprint("h", "text/plain", &serde_json::json!({"b": 2, "a": 1}), "s", &JobOptions::default())
        );
        assert_ne!(base, fingerprint("h2", "text/plain", &meta, "s", &JobOptions::default()));
        assert_ne!(base, fingerprint("h", "text/markdown", &meta, "s", &JobOptions::default()));
        assert_ne!(base, fingerprint("h", "text/plain", &serde_json::json!({}), "s", &JobOptions::default()));
        assert_ne!(base, fingerprint("h", "text/plain", &meta, "s2", &JobOptions::default()));
        let options = JobOptions { chunk_size: Some(100), chunk_overlap: None };
        assert_ne!(base, fingerprint("h", "text/plain", &meta, "s", &options));
    }

    #[test]
    fn empty_hash_is_no_job() {
        assert!(Job::from_hash(&HashMap::new()).is_none());
    }

    #[test]
    fn error_is_read_with_its_stage() {
        let fields =
            hash(&[("job_id", "j"), ("status", "failed"), ("error_stage", "metadata"), ("error_message", "boom")]);
        let job = Job::from_hash(&fields).unwrap();
        let error = job.error.unwrap();
        assert_eq!((error.stage.as_str(), error.message.as_str()), ("metadata", "boom"));
    }
}
