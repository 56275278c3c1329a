//! `GET /v1/documents`, `GET /v1/documents/{id}`, `GET /v1/documents/{id}/chunks` and
//! `DELETE /v1/documents/{id}`, answered by the storage service, in the caller's tenant (an admin
//! key may name another with `?tenant=`).

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use millrace_auth::Caller;
use millrace_common::ApiError;
use serde::Deserialize;

use super::path_param;
use crate::core::{ChunkList, Core, DocumentInfo, DocumentList, DocumentQuery};

#[derive(Debug, Deserialize)]
pub(crate) struct TenantParam {
    tenant: Option<String>,
}

fn tenant(params: Result<Query<TenantParam>, QueryRejection>) -> Result<Option<String>, ApiError> {
    params.map(|Query(params)| params.tenant).map_err(|err| ApiError::bad_request(err.body_text()))
}

pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<TenantParam>, QueryRejection>,
) -> Result<Json<DocumentInfo>, ApiError> {
    let tenant = tenant(params)?;
    Ok(Json(core.get_document(&caller, tenant.as_deref(), &path_param(id)?).await?))
}

pub(crate) async fn delete(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<TenantParam>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let tenant = tenant(params)?;
    core.delete_document(&caller, tenant.as_deref(), &path_param(id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of a listing; an unknown parameter is a 400, so a misspelt filter is not
/// silently a listing of everything.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    tenant: Option<String>,
    collection: Option<String>,
    document_id_prefix: Option<String>,
    source_prefix: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/documents?collection=&document_id_prefix=&source_prefix=&cursor=&limit=`.
pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<DocumentList>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let query = DocumentQuery {
        collection: params.collection,
        document_id_prefix: params.document_id_prefix,
        source_prefix: params.source_prefix,
        cursor: params.cursor,
        limit: params.limit,
    };
    Ok(Json(core.list_documents(&caller, params.tenant.as_deref(), query).await?))
}

/// The query of a chunk listing; an unknown parameter is a 400, as for the document listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChunkParams {
    tenant: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/documents/{id}/chunks?cursor=&limit=`: the visible version's chunks in order.
pub(crate) async fn chunks(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<ChunkParams>, QueryRejection>,
) -> Result<Json<ChunkList>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let document_id = path_param(id)?;
    let list = core
        .list_chunks(&caller, params.tenant.as_deref(), &document_id, params.cursor.as_deref(), params.limit)
        .await?;
    Ok(Json(list))
}
