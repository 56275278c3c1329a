//! `POST /v1/runs`, `GET /v1/runs`, `GET /v1/runs/{id}`, `GET /v1/runs/{id}/items`,
//! `GET /v1/runs/{id}/report.csv`, `POST /v1/runs/{id}/retry-failed` and `DELETE /v1/runs/{id}`.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use millrace_auth::Caller;
use millrace_common::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{JsonBody, path_param};
use crate::core::Core;
use crate::validate::{self, RunRequest};

pub(crate) async fn create(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    body: Result<JsonBody<RunRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(request) = body?;
    let run = validate::validate_run(request)?;
    let accepted = core.create_run(&caller, run).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// Every parameter is read as text so that a bad value gets our JSON 422, not a plain 400.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    cursor: Option<String>,
    limit: Option<String>,
    /// Admin keys only: another tenant's runs.
    tenant: Option<String>,
}

pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let cursor = validate::cursor_param(params.cursor.as_deref())?;
    let limit = validate::list_limit_param(params.limit.as_deref())?;
    let page = core.list_runs(&caller, params.tenant.as_deref(), cursor, limit).await?;
    Ok(Json(json!({ "runs": page.items, "next_cursor": page.next_cursor })))
}

pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(core.get_run(&caller, &path_param(id)?).await?))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ItemParams {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

pub(crate) async fn items(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<ItemParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let run_id = path_param(id)?;
    let Query(params) = params.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let status = validate::item_status_param(params.status.as_deref())?;
    let cursor = validate::cursor_param(params.cursor.as_deref())?;
    let limit = validate::list_limit_param(params.limit.as_deref())?;
    let page = core.run_items(&caller, &run_id, status, cursor, limit).await?;
    Ok(Json(json!({ "run_id": run_id, "items": page.items, "next_cursor": page.next_cursor })))
}

pub(crate) async fn report(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let run_id = path_param(id)?;
    let csv = core.run_report(&caller, &run_id).await?;
    let disposition = format!("attachment; filename=\"{run_id}.csv\"");
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        csv,
    )
        .into_response())
}

pub(crate) async fn retry_failed(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(core.retry_failed(&caller, &path_param(id)?).await?))
}

pub(crate) async fn cancel(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(core.cancel_run(&caller, &path_param(id)?).await?))
}
