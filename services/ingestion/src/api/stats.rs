//! `GET /v1/stats`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::core::Core;
use crate::stats::PipelineStats;

pub(crate) async fn stats(State(core): State<Arc<Core>>) -> Json<PipelineStats> {
    Json(core.pipeline_stats().await)
}
