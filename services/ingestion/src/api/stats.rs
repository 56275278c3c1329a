//! `GET /v1/stats` and `GET /v1/limits`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::core::Core;

/// Every service's stats, and each tenant's jobs not yet finished (beside its bound,
/// `MILLRACE_MAX_QUEUED_JOBS_PER_TENANT`). A Redis that does not answer leaves the tenants out
/// rather than fail the whole answer.
pub(crate) async fn stats(State(core): State<Arc<Core>>) -> Json<serde_json::Value> {
    let pipeline = core.pipeline_stats().await;
    let mut body = serde_json::to_value(pipeline).unwrap_or_else(|_| serde_json::json!({}));
    if let (Ok(backlogs), Some(object)) = (core.jobs().tenant_backlogs().await, body.as_object_mut()) {
        let tenants: Vec<serde_json::Value> = backlogs
            .into_iter()
            .map(|(tenant, queued_jobs)| serde_json::json!({ "tenant": tenant, "queued_jobs": queued_jobs }))
            .collect();
        object.insert(
            "tenants".to_owned(),
            serde_json::json!({ "max_queued_jobs": core.config().max_queued_jobs_per_tenant, "queued": tenants }),
        );
    }
    Json(body)
}

/// Every service's limits in one place: the gateway's upstreams (quotas, use, breakers, budget)
/// and each stage's breaker toward the gateway. A service that did not answer says why.
pub(crate) async fn limits(State(core): State<Arc<Core>>) -> Json<serde_json::Value> {
    let stats = core.pipeline_stats().await;
    let mut services = serde_json::Map::new();
    for service in stats.services {
        let entry = match (&service.stats, &service.error) {
            (Some(snapshot), _) => snapshot.limits.clone().unwrap_or_else(|| serde_json::json!({})),
            (None, error) => serde_json::json!({ "reachable": false, "error": error }),
        };
        services.insert(service.service.clone(), entry);
    }
    Json(serde_json::json!({ "services": services }))
}
