//! `GET /v1/limits`: every upstream's limits, live use and breaker, and the budget — the page to
//! read when calls are slow or refused. The same document travels in `Admin.Stats`
//! (`limits_json`), so the ingestion service can show every service's limits in one place.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use millrace_proto::v1::{BreakerStats, StatsResponse};

use crate::config::SERVICE;
use crate::core::{Gateway, Limits};

pub fn routes(gateway: Arc<Gateway>) -> Router {
    Router::new().route("/v1/limits", get(limits)).with_state(gateway)
}

async fn limits(State(gateway): State<Arc<Gateway>>) -> Json<Limits> {
    Json(gateway.limits().await)
}

/// The gateway's answer to `Admin.Stats`.
pub async fn stats(gateway: &Gateway, in_flight: u32) -> StatsResponse {
    let limits = gateway.limits().await;
    let breakers = limits
        .upstreams
        .iter()
        .map(|upstream| BreakerStats {
            name: upstream.breaker.name.clone(),
            state: upstream.breaker.state.label().to_owned(),
        })
        .collect();
    StatsResponse {
        service: SERVICE.to_owned(),
        concurrency_limit: 0,
        concurrency_in_use: in_flight,
        queues: Vec::new(),
        breakers,
        limits_json: serde_json::to_string(&limits).unwrap_or_default(),
    }
}
