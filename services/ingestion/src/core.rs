//! The operations of the job API, written once and called by both the HTTP handlers and the
//! gRPC service, one file per kind of operation: [`submit`] (admission control, the daily LLM
//! budget and, for a URL, the address rules), [`jobs`] (get, list, cancel), [`search`] (and its
//! reranking, [`crate::rerank`]), [`documents`] (read or delete through the storage service) and
//! [`dead_letters`]; and, for HTTP only, the stats of every service of the pipeline.
//!
//! Every operation takes the [`Caller`] the request's key stands for and works in its tenant:
//! a job or document of another tenant, or of a collection the key may not use, is answered
//! exactly as a missing one is (404, the same body), so no call reveals that it exists.

mod dead_letters;
mod documents;
mod jobs;
mod runs;
mod search;
mod submit;
pub(crate) mod webhooks;

use std::sync::Arc;

use millrace_auth::{AuditLog, Caller};
use millrace_common::telemetry::{GrpcChannel, PropagateContext};
use millrace_common::{ApiError, ErrorCode};
use millrace_fetch::UrlGuard;
use millrace_pipeline::{JobStore, JobStoreError};
use millrace_proto::v1::embeddings_client::EmbeddingsClient;
use millrace_proto::v1::storage_client::StorageClient;
use tonic::transport::Channel;

pub use self::dead_letters::stage;
pub use self::documents::{ChunkList, DocumentInfo, DocumentList, DocumentQuery};
pub use self::jobs::{JobListing, job_visible, unknown_job};
pub use self::runs::{Page, RunAccepted, push_csv_field};
pub use self::search::Hit;
pub use self::submit::{Accepted, count_rejection};
use crate::admission::RedisMemory;
use crate::budget::BudgetGuard;
use crate::config::Config;
use crate::history::HistoryStore;
use crate::rerank::Reranker;
use crate::stats::{Peers, PipelineStats};
use crate::webhooks::Outbox;

/// Everything the operations need; cheap to clone.
#[derive(Clone)]
pub struct Core {
    config: Config,
    jobs: JobStore,
    storage: StorageClient<GrpcChannel>,
    embeddings: EmbeddingsClient<GrpcChannel>,
    /// Orders search results through the llm-gateway, when a search asks.
    reranker: Reranker,
    peers: Peers,
    budget: Arc<BudgetGuard>,
    urls: UrlGuard,
    redis_memory: Arc<RedisMemory>,
    /// Where deletes, cancels and dead-letter retries are recorded.
    audit: AuditLog,
    /// The durable history of runs and jobs (PostgreSQL).
    history: HistoryStore,
    /// The webhook outbox, when there is a database (`MILLRACE_DATABASE_URL`).
    outbox: Option<Outbox>,
}

/// The channels to the services the operations call, each with the deadline of one call.
pub struct Downstream {
    pub storage: Channel,
    pub embeddings: Channel,
    pub llm_gateway: Channel,
}

impl Core {
    pub fn new(
        config: Config,
        jobs: JobStore,
        downstream: Downstream,
        peers: Peers,
        urls: UrlGuard,
        audit: AuditLog,
    ) -> Self {
        Self {
            reranker: Reranker::new(downstream.llm_gateway, &config.rerank),
            config,
            jobs,
            storage: StorageClient::with_interceptor(downstream.storage, PropagateContext),
            embeddings: EmbeddingsClient::with_interceptor(downstream.embeddings, PropagateContext),
            budget: Arc::new(BudgetGuard::new(peers.clone())),
            peers,
            urls,
            redis_memory: Arc::default(),
            audit,
            history: HistoryStore::none(),
            outbox: None,
        }
    }

    /// With the durable history in `history` (without it, every history call is a 503).
    pub fn with_history(mut self, history: HistoryStore) -> Self {
        self.history = history;
        self
    }

    pub fn history(&self) -> &HistoryStore {
        &self.history
    }

    pub fn with_outbox(mut self, outbox: Option<Outbox>) -> Self {
        self.outbox = outbox;
        self
    }

    /// The webhook outbox, if there is a database to keep it in.
    pub fn outbox(&self) -> Option<&Outbox> {
        self.outbox.as_ref()
    }

    pub fn urls(&self) -> &UrlGuard {
        &self.urls
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn jobs(&self) -> &JobStore {
        &self.jobs
    }

    /// The stats of every service of the pipeline; one that does not answer is shown
    /// unreachable, so this never fails.
    pub async fn pipeline_stats(&self) -> PipelineStats {
        self.peers.collect().await
    }
}

/// The tenant a call acts in: the key's own, or, for an admin key only, the one it names
/// (`?tenant=`, gRPC `tenant`); naming another tenant without `admin` is a 403.
pub fn tenant_for(caller: &Caller, requested: Option<&str>) -> Result<String, ApiError> {
    match requested.filter(|tenant| !tenant.is_empty()) {
        None => Ok(caller.tenant.clone()),
        Some(tenant) if tenant == caller.tenant => Ok(caller.tenant.clone()),
        // It becomes part of Redis keys: only a name a key's tenant could have.
        Some(tenant) if caller.is_admin() && millrace_auth::is_valid_name(tenant) => Ok(tenant.to_owned()),
        Some(tenant) if caller.is_admin() => {
            Err(ApiError::invalid(format!("`tenant` {tenant:?} is not a tenant name")))
        }
        Some(_) => Err(ApiError::permission_denied("only an admin key may act in another tenant")),
    }
}

/// Redis being away is a 503 (retry later); a corrupt record is ours to fix.
pub fn store_error(err: JobStoreError) -> ApiError {
    if err.is_retryable() {
        tracing::warn!(error = %err, "job store unavailable");
        ApiError::unavailable(format!("job store unavailable: {err}"))
    } else {
        tracing::error!(error = %err, "job store error");
        ApiError::internal(err.to_string())
    }
}

/// A failed call to another service keeps its code and says which service failed.
fn downstream(service: &str, status: tonic::Status) -> ApiError {
    let mut err = ApiError::from(status);
    if err.code == ErrorCode::Unavailable || err.code == ErrorCode::Internal || err.code == ErrorCode::DeadlineExceeded
    {
        tracing::warn!(service, code = ?err.code, error = %err.message, "downstream call failed");
    }
    err.message = format!("{service} service: {}", err.message);
    err
}

fn json_object(text: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}))
}

#[cfg(test)]
mod tests {
    use millrace_auth::Scope;

    use super::*;

    #[test]
    fn only_an_admin_acts_in_another_tenant_and_only_in_a_valid_one() {
        let reader = Caller { tenant: "acme".into(), scopes: vec![Scope::Read], ..Caller::bootstrap_admin() };
        assert_eq!(tenant_for(&reader, None).unwrap(), "acme");
        assert_eq!(tenant_for(&reader, Some("")).unwrap(), "acme");
        assert_eq!(tenant_for(&reader, Some("acme")).unwrap(), "acme");
        assert_eq!(tenant_for(&reader, Some("globex")).unwrap_err().code, ErrorCode::PermissionDenied);
        let admin = Caller::bootstrap_admin();
        assert_eq!(tenant_for(&admin, None).unwrap(), millrace_auth::DEFAULT_TENANT);
        assert_eq!(tenant_for(&admin, Some("globex")).unwrap(), "globex");
        assert_eq!(tenant_for(&admin, Some("a:b")).unwrap_err().code, ErrorCode::InvalidArgument);
    }
}
