//! What the metadata stage does with one stream entry (one batch).

use millrace_pipeline::runtime::{fail_job, running_batch};
use millrace_pipeline::{HalfOutcome, JobStore, Stage};
use millrace_proto::MetadataBatch;
use millrace_streams::{Handler, HandlerError, Message};
use tracing::debug;

use crate::extractors::Extractor;

pub struct MetadataHandler {
    store: JobStore,
    extractor: Extractor,
}

impl MetadataHandler {
    pub fn new(store: JobStore, extractor: Extractor) -> Self {
        Self { store, extractor }
    }
}

impl Handler for MetadataHandler {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let Some((entry, job, chunks)) = running_batch(&self.store, message).await? else { return Ok(()) };
        let extraction = self.extractor.extract(&chunks).await?;
        let reused = extraction.reused.iter().filter(|r| **r).count();
        let failed = extraction.failed as usize;
        let result = MetadataBatch {
            chunk_metadata_json: extraction.metadata.iter().map(ToString::to_string).collect(),
            reused: extraction.reused,
            failed: extraction.failed,
        };
        let batch = entry.batch;
        let outcome = self.store.complete_metadata(&entry, message.read_ms, chunks.chunks.len(), &result).await?;
        // Counted as the job counts them: not for a job that finished meanwhile.
        if outcome != HalfOutcome::JobFinished {
            crate::metrics::batch(self.extractor.name(), chunks.chunks.len(), reused, failed);
        }
        debug!(job_id = %job.job_id, batch, enqueued_storage = outcome == HalfOutcome::EnqueuedStorage, "metadata done");
        Ok(())
    }

    async fn give_up(&self, message: &Message, reason: &str) {
        fail_job(&self.store, message, Stage::Metadata, reason).await;
    }
}
