//! `GET /v1/stats` and `GET /v1/limits`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::core::Core;
use crate::stats::PipelineStats;

pub(crate) async fn stats(State(core): State<Arc<Core>>) -> Json<PipelineStats> {
    Json(core.pipeline_stats().await)
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
