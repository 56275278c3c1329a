//! `GET /v1/limits`: every upstream's limits, live use and breaker, and the budget — the page to
//! read when calls are slow or refused. The same document travels in `Admin.Stats`
//! (`limits_json`), so the ingestion service can show every service's limits in one place,
//! and the gateway's gauges sample it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use millrace_common::metrics::spawn_sampler;
use millrace_proto::v1::{BreakerStats, StatsResponse};
use tokio_util::sync::CancellationToken;

use crate::config::SERVICE;
use crate::core::{Gateway, Limits};
use crate::metrics;

/// `/v1/limits` shows the upstreams' addresses and the spend: an operators' page, for `admin` keys.
pub fn routes(gateway: Arc<Gateway>, authenticator: millrace_auth::Authenticator) -> Router {
    Router::new()
        .route("/v1/limits", get(limits))
        .route_layer(axum::middleware::from_fn_with_state(authenticator, crate::http::auth::require_admin_key))
        .with_state(gateway)
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

/// Every `interval` until `stop`: today's spend, each upstream's concurrency, and each breaker's
/// state (reading it moves an open breaker whose pause has ended to half-open, so its gauge
/// does not stay `open` while no call comes).
pub fn sample(gateway: Arc<Gateway>, interval: Duration, stop: CancellationToken) {
    spawn_sampler(interval, stop, move || {
        let gateway = gateway.clone();
        async move {
            if gateway.probe_due() {
                gateway.probe_upstreams().await;
            }
            let limits = gateway.limits().await;
            metrics::daily_spend(limits.budget.spent_usd);
            for upstream in limits.upstreams {
                let reachable = upstream.probe.as_ref().map(|probe| probe.reachable);
                metrics::upstream_state(&upstream.name, upstream.in_flight, upstream.max_concurrency, reachable);
            }
        }
    });
}
