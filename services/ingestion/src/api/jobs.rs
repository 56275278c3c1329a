//! `GET /v1/jobs`, `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/events` and `DELETE /v1/jobs/{id}`.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt as _};
use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_pipeline::{Job, JobStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;

use super::{is_stream_id, path_param};
use crate::core::{Core, JobListing};
use crate::validate;
use crate::watch::Watchers;

/// Every parameter is read as text so that a bad value gets our JSON 422, not a plain 400.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    limit: Option<String>,
    /// Admin keys only: another tenant's jobs.
    tenant: Option<String>,
    cursor: Option<String>,
    run_id: Option<String>,
    collection: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
}

pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
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
    let limit = validate::list_limit_param(params.limit.as_deref())?;
    let nonempty = |value: Option<String>| value.filter(|v| !v.is_empty());
    let collection = nonempty(params.collection).map(|c| validate::validate_collection(c, "collection")).transpose()?;
    let run_id = nonempty(params.run_id);
    if run_id.as_ref().is_some_and(|id| id.len() > 128) {
        return Err(ApiError::invalid("`run_id` is longer than 128 characters"));
    }
    let listing = JobListing {
        tenant: params.tenant,
        status,
        run_id,
        collection,
        created_after: nonempty(params.created_after),
        created_before: nonempty(params.created_before),
        cursor: validate::cursor_param(params.cursor.as_deref())?,
        limit,
    };
    let page = core.list_job_page(&caller, listing).await?;
    Ok(Json(json!({ "jobs": page.items, "next_cursor": page.next_cursor })))
}

pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(core.get_job(&caller, &path_param(id)?).await?))
}

/// The job's progress as Server-Sent Events (`event:` the type, `data:` JSON, `id:` to resume
/// with `Last-Event-ID`), from its start or after that id, closing after its final event.
pub(crate) async fn events(
    State(watchers): State<Watchers>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job_id = path_param(id)?;
    let after = match headers.get("last-event-id").map(|value| value.to_str().unwrap_or_default()) {
        // `0` is the start of the stream, as in Redis: a client may name it to replay all.
        None | Some("0") => "0".to_owned(),
        Some(id) if is_stream_id(id) => id.to_owned(),
        Some(id) => return Err(ApiError::invalid(format!("`Last-Event-ID` {id:?} is not an event id of this job"))),
    };
    let events = watchers.watch(&caller, &job_id, after).await?;
    let sse = events.map(move |event| {
        let data = event.to_json(&job_id).to_string();
        Ok(Event::default().id(event.id.clone()).event(event.kind.clone()).data(data))
    });
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()))
}

pub(crate) async fn cancel(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(core.cancel_job(&caller, &path_param(id)?).await?))
}
