//! Jobs by status across the whole deployment, read in one command: the scripts that change a
//! job's status keep a hash of counts beside the jobs (`Keys::job_status_counts`), so no job
//! record needs to be read to know how many are queued, running or finished.

use std::collections::HashMap;

use redis::AsyncCommands;

use crate::{JobStatus, JobStore, JobStoreError};

/// `queued` and `running` are the jobs in that status now; `completed`, `failed` and `cancelled`
/// count every job that ever finished so (a job record expires after the retention period; its
/// count stays).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobStatusCounts {
    pub queued: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Bytes of the documents of the queued and running jobs, which Redis holds until each
    /// job finishes. A document submitted by URL counts 0: its size is unknown at submit (its
    /// fetch is capped by `MILLRACE_FETCH_MAX_BYTES`).
    pub queued_bytes: u64,
}

/// The field of the counts hash that holds [`JobStatusCounts::queued_bytes`].
pub(crate) const QUEUED_BYTES: &str = "queued_bytes";

impl JobStatusCounts {
    pub fn get(&self, status: JobStatus) -> u64 {
        match status {
            JobStatus::Queued => self.queued,
            JobStatus::Running => self.running,
            JobStatus::Completed => self.completed,
            JobStatus::Failed => self.failed,
            JobStatus::Cancelled => self.cancelled,
        }
    }

    /// A count below zero (a job that was already under way when the counts began, finishing
    /// since) reads as zero.
    fn from_hash(fields: &HashMap<String, i64>) -> Self {
        let count = |status: JobStatus| fields.get(status.as_str()).copied().unwrap_or(0).max(0) as u64;
        Self {
            queued: count(JobStatus::Queued),
            running: count(JobStatus::Running),
            completed: count(JobStatus::Completed),
            failed: count(JobStatus::Failed),
            cancelled: count(JobStatus::Cancelled),
            queued_bytes: fields.get(QUEUED_BYTES).copied().unwrap_or(0).max(0) as u64,
        }
    }
}

/// What is waiting in the pipeline, as admission control reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Jobs accepted and not yet finished.
    pub jobs: u64,
    /// Bytes of their documents (see [`JobStatusCounts::queued_bytes`]).
    pub bytes: u64,
    /// Of those jobs, the tenant's (see [`crate::Keys::tenant_backlog`]).
    pub tenant_jobs: u64,
}

impl JobStore {
    /// The backlog, in all and of `tenant_id`, in one round trip (it is read on every
    /// submission).
    pub async fn backlog(&self, tenant_id: &str) -> Result<Backlog, JobStoreError> {
        let mut conn = self.pool().get().await?;
        let (jobs, bytes, tenant_jobs): (u64, Option<i64>, Option<i64>) = redis::pipe()
            .scard(self.keys().active_jobs())
            .hget(self.keys().job_status_counts(), QUEUED_BYTES)
            .hget(self.keys().tenant_backlog(), tenant_id)
            .query_async(&mut conn)
            .await?;
        Ok(Backlog {
            jobs,
            bytes: bytes.unwrap_or(0).max(0) as u64,
            tenant_jobs: tenant_jobs.unwrap_or(0).max(0) as u64,
        })
    }

    /// Jobs not yet finished per tenant, for the tenants that have any.
    pub async fn tenant_backlogs(&self) -> Result<Vec<(String, u64)>, JobStoreError> {
        let mut conn = self.pool().get().await?;
        let fields: HashMap<String, i64> = conn.hgetall(self.keys().tenant_backlog()).await?;
        let mut backlogs: Vec<(String, u64)> =
            fields.into_iter().filter(|(_, count)| *count > 0).map(|(tenant, count)| (tenant, count as u64)).collect();
        backlogs.sort();
        Ok(backlogs)
    }

    pub async fn status_counts(&self) -> Result<JobStatusCounts, JobStoreError> {
        let mut conn = self.pool().get().await?;
        let fields: HashMap<String, i64> = conn.hgetall(self.keys().job_status_counts()).await?;
        Ok(JobStatusCounts::from_hash(&fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_statuses_are_zero_and_negative_counts_read_as_zero() {
        let fields: HashMap<String, i64> = [("queued".to_owned(), -2), ("completed".to_owned(), 7)].into();
        let counts = JobStatusCounts::from_hash(&fields);
        assert_eq!(counts, JobStatusCounts { completed: 7, ..JobStatusCounts::default() });
        assert_eq!(counts.get(JobStatus::Completed), 7);
    }
}
