//! A run's webhook delivery log.

use millrace_auth::Caller;
use millrace_common::ApiError;

use super::{Core, tenant_for};
use crate::webhooks::{LogPage, LogQuery};

/// Deliveries per page of the log unless asked otherwise, and at most.
pub const DEFAULT_LOG_LIMIT: usize = 100;
pub const MAX_LOG_LIMIT: usize = 1000;

impl Core {
    /// A page of run `run_id`'s deliveries, oldest first, each with its attempts. A run of
    /// another tenant, or of a collection the key may not use, is a 404 like a missing one.
    pub async fn run_webhooks(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        run_id: &str,
        query: &LogQuery,
    ) -> Result<LogPage, ApiError> {
        let tenant = tenant_for(caller, tenant)?;
        if !(1..=MAX_LOG_LIMIT).contains(&query.limit) {
            return Err(ApiError::invalid(format!("`limit` must be 1 to {MAX_LOG_LIMIT}")));
        }
        // The durable record says whose the run is, so the log outlives the run's Redis hash.
        let run = self.visible_run(caller, run_id).await?;
        if run.tenant != tenant {
            return Err(ApiError::not_found(format!("no run {run_id:?}")));
        }
        let Some(outbox) = self.outbox.as_ref() else {
            // Without a database no webhook is ever queued: the log is empty.
            return Ok(LogPage { deliveries: Vec::new(), next: None });
        };
        Ok(outbox.log(&tenant, run_id, query).await?)
    }
}
