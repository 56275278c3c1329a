//! `GET /v1/jobs`, `GET /v1/jobs/{id}` and `DELETE /v1/jobs/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use millrace_common::ApiError;
use millrace_pipeline::{Job, JobStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use super::path_param;
use crate::core::Core;
use crate::validate;

/// Both parameters are read as text so that a bad value gets our JSON 422, not a plain 400.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    limit: Option<String>,
}

pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let status = match params.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(JobStatus::parse(text).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown status {text:?}; use one of queued, running, completed, failed, cancelled"
            ))
        })?),
    };
    let limit = match params.limit.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(
            text.parse::<i64>().map_err(|_| ApiError::invalid(format!("`limit` must be an integer, not {text:?}")))?,
        ),
    };
    let limit = validate::list_limit(limit)?;
    let jobs = core.list_jobs(status, limit).await?;
    Ok(Json(json!({ "jobs": jobs })))
}

pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(core.get_job(&path_param(id)?).await?))
}

pub(crate) async fn cancel(
    State(core): State<Arc<Core>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(core.cancel_job(&path_param(id)?).await?))
}
