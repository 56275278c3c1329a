//! `GET /v1/runs/{id}/webhooks`: a run's webhook deliveries and their attempts.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use millrace_auth::Caller;
use millrace_common::ApiError;
use serde::{Deserialize, Serialize};

use super::path_param;
use crate::core::Core;
use crate::webhooks::Delivery;

#[derive(Debug, Deserialize)]
pub(crate) struct Params {
    tenant: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Log {
    run_id: String,
    deliveries: Vec<Delivery>,
}

pub(crate) async fn log(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Log>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let run_id = path_param(id)?;
    let deliveries = core.run_webhooks(&caller, params.tenant.as_deref(), &run_id).await?;
    Ok(Json(Log { run_id, deliveries }))
}
