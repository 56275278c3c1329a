//! A run's webhook delivery log.

use millrace_auth::Caller;
use millrace_common::ApiError;

use super::{Core, store_error, tenant_for};
use crate::webhooks::Delivery;

impl Core {
    /// The deliveries of run `run_id`, oldest first, each with its attempts. A run of another
    /// tenant, or of a collection the key may not use, is a 404 like a missing one.
    pub async fn run_webhooks(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        run_id: &str,
    ) -> Result<Vec<Delivery>, ApiError> {
        let tenant = tenant_for(caller, tenant)?;
        // The run's live state says whose it is; once runs are kept in PostgreSQL, the durable
        // record should answer instead, so the log outlives the Redis hash.
        let run = self.jobs.run_state(run_id).await.map_err(store_error)?;
        match run {
            Some(run) if run.tenant == tenant && caller.may_use(&run.collection) => {}
            _ => return Err(ApiError::not_found(format!("no run {run_id:?}"))),
        }
        let outbox = self
            .outbox
            .as_ref()
            .ok_or_else(|| ApiError::not_found("no webhook deliveries: webhooks need MILLRACE_DATABASE_URL"))?;
        Ok(outbox.deliveries(&tenant, run_id).await?)
    }
}
