//! A job as read from its Redis hash, with the JSON shape the API returns.

use std::collections::HashMap;

use millrace_common::time::rfc3339_from_millis;
use serde::Serialize;

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
}

#[derive(Debug, Clone, Serialize)]
pub struct JobError {
    pub stage: String,
    pub message: String,
}

/// One job, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub job_id: String,
    pub tenant_id: String,
    pub document_id: String,
    pub version: u64,
    pub status: JobStatus,
    /// 0–100.
    pub progress: u32,
    pub chunks: ChunkCounts,
    pub batches_total: u32,
    pub batches_stored: u32,
    pub error: Option<JobError>,
    pub content_type: String,
    pub content_hash: String,
    pub content_bytes: u64,
    pub source: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Caller-supplied document metadata.
    pub metadata: serde_json::Value,
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
        };
        let error =
            fields.get("error_stage").map(|stage| JobError { stage: stage.clone(), message: text("error_message") });
        let mut job = Job {
            job_id,
            tenant_id: text("tenant_id"),
            document_id: text("document_id"),
            version: number("version"),
            status,
            progress: 0,
            chunks,
            batches_total: number("batches_total") as u32,
            batches_stored: number("batches_stored") as u32,
            error,
            content_type: text("content_type"),
            content_hash: text("content_hash"),
            content_bytes: number("content_bytes"),
            source: text("source"),
            created_at: millis("created_ms").unwrap_or_default(),
            started_at: millis("started_ms"),
            finished_at: millis("finished_ms"),
            metadata: fields
                .get("metadata")
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_else(|| serde_json::json!({})),
        };
        job.progress = job.compute_progress();
        Some(job)
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
            progress: self.progress,
            chunks: Some(millrace_proto::ChunkCounts {
                total: self.chunks.total,
                metadata_done: self.chunks.metadata_done,
                embedded: self.chunks.embedded,
                stored: self.chunks.stored,
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
