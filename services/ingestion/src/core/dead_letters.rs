//! Dead letters: listing what each stage gave up on, and retrying it once its cause is fixed.
//! Admin keys only (the route says so), across tenants: each entry shows its job's tenant.

use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_pipeline::Stage;
use millrace_pipeline::dead_letters::{RetryReport, StageDeadLetters};

use super::{Core, store_error};

impl Core {
    /// The newest `limit` dead letters of `stage` (or of every stage, in pipeline order), with
    /// how many each stage holds.
    pub async fn dead_letters(&self, stage: Option<Stage>, limit: usize) -> Result<Vec<StageDeadLetters>, ApiError> {
        let stages = stage.map_or(Stage::ALL.to_vec(), |stage| vec![stage]);
        let mut found = Vec::with_capacity(stages.len());
        for stage in stages {
            found.push(self.jobs.dead_letters(stage, limit).await.map_err(store_error)?);
        }
        Ok(found)
    }

    /// Retries dead letters of `stage` (those named, else all): see
    /// [`millrace_pipeline::dead_letters`]. What cannot be retried is refused entry by entry.
    /// Like a submission, a retry puts work back on the streams: it is refused while the queue
    /// is full (503) or the day's LLM budget is spent (429; the work would only fail again).
    pub async fn retry_dead_letters(
        &self,
        caller: &Caller,
        stage: Stage,
        ids: Option<Vec<String>>,
    ) -> Result<RetryReport, ApiError> {
        self.capacity(&caller.tenant).await?.check_pipeline()?;
        self.budget.check().await?;
        let report = self.jobs.retry_dead_letters(stage, ids.as_deref()).await.map_err(store_error)?;
        // One event per tenant whose jobs were retried, so that each tenant's trail shows it.
        let mut by_tenant: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
        for retried in &report.retried {
            by_tenant.entry(retried.tenant_id.as_str()).or_default().push(retried.job_id.as_str());
        }
        for (tenant, job_ids) in by_tenant {
            let detail = serde_json::json!({ "entries": job_ids.len(), "job_ids": job_ids });
            self.audit.record(caller, "dead_letters.retried", tenant, stage.name(), detail).await;
        }
        metrics::counter!(crate::metrics::DEAD_LETTERS_RETRIED, "stage" => stage.name())
            .increment(report.retried.len() as u64);
        metrics::counter!(crate::metrics::DEAD_LETTERS_REFUSED, "stage" => stage.name())
            .increment(report.refused.len() as u64);
        tracing::info!(
            key_id = %caller.key_id,
            stage = stage.name(),
            retried = report.retried.len(),
            refused = report.refused.len(),
            superseded = report.superseded.len(),
            "dead letters retried"
        );
        Ok(report)
    }
}

/// The stage of a name, or a 404 naming the stages there are.
pub fn stage(name: &str) -> Result<Stage, ApiError> {
    Stage::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Stage::ALL.iter().map(|stage| stage.name()).collect();
        ApiError::not_found(format!("no stage {name:?}; the stages are {}", names.join(", ")))
    })
}
