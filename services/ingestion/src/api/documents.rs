//! `GET /v1/documents/{id}` and `DELETE /v1/documents/{id}`, answered by the storage service.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use millrace_common::ApiError;

use super::path_param;
use crate::core::{Core, DocumentInfo};

pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<DocumentInfo>, ApiError> {
    Ok(Json(core.get_document(&path_param(id)?).await?))
}

pub(crate) async fn delete(
    State(core): State<Arc<Core>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    core.delete_document(&path_param(id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
