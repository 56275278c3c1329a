//! `GET /v1/dlq` and `POST /v1/dlq/{stage}/retry`: the entries each stage gave up on, and
//! retrying them once their cause is fixed (see `millrace_pipeline::dead_letters`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_pipeline::dead_letters::RetryReport;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{body_error, is_stream_id, path_param};
use crate::core::{self, Core};
use crate::validate;

/// Read as text so that a bad value gets our JSON errors, not a plain 400.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    stage: Option<String>,
    limit: Option<String>,
}

pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let stage = params.stage.as_deref().filter(|s| !s.is_empty()).map(core::stage).transpose()?;
    let limit = validate::list_limit_param(params.limit.as_deref())?;
    let stages = core.dead_letters(stage, limit).await?;
    let total: u64 = stages.iter().map(|stage| stage.count).sum();
    Ok(Json(json!({ "total": total, "stages": stages })))
}

/// The optional body of a retry: the entries to retry (all of the stage's when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    ids: Option<Vec<String>>,
}

pub(crate) async fn retry(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    stage: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RetryReport>, ApiError> {
    let stage = core::stage(&path_param(stage)?)?;
    let body = body.map_err(body_error)?;
    let ids = retry_ids(&body)?;
    Ok(Json(core.retry_dead_letters(&caller, stage, ids).await?))
}

/// The ids a retry names: None (every entry) for an empty body or one without `ids`.
fn retry_ids(body: &[u8]) -> Result<Option<Vec<String>>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body: RetryBody = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("request body is not valid JSON of the expected shape: {err}")))?;
    let Some(ids) = body.ids else { return Ok(None) };
    if ids.is_empty() {
        return Err(ApiError::invalid("`ids` is empty: name at least one entry, or leave `ids` out to retry them all"));
    }
    if let Some((i, id)) = ids.iter().enumerate().find(|(_, id)| !is_stream_id(id)) {
        return Err(ApiError::invalid(format!("`ids[{i}]` {id:?} is not a dead-letter entry id (`{{ms}}-{{seq}}`)")));
    }
    Ok(Some(ids))
}

#[cfg(test)]
mod tests {
    use millrace_common::ErrorCode;

    use super::retry_ids;

    #[test]
    fn a_retry_names_entries_or_none_for_all() {
        assert_eq!(retry_ids(b"").unwrap(), None);
        assert_eq!(retry_ids(b" \n").unwrap(), None);
        assert_eq!(retry_ids(b"{}").unwrap(), None);
        assert_eq!(retry_ids(br#"{"ids": ["1-0", "2-5"]}"#).unwrap(), Some(vec!["1-0".to_owned(), "2-5".to_owned()]));
        assert_eq!(retry_ids(br#"{"ids": []}"#).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(retry_ids(br#"{"ids": ["x"]}"#).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(retry_ids(br#"{"id": ["1-0"]}"#).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(retry_ids(b"[").unwrap_err().code, ErrorCode::BadRequest);
    }
}
