//! `GET /v1/runs/{id}/webhooks?status=&cursor=&limit=`: a run's webhook deliveries and their
//! attempts, a page at a time.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use millrace_auth::Caller;
use millrace_common::ApiError;
use serde::{Deserialize, Serialize};

use super::path_param;
use crate::core::Core;
use crate::core::webhooks::DEFAULT_LOG_LIMIT;
use crate::webhooks::{Delivery, DeliveryStatus, LogQuery};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    tenant: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Log {
    run_id: String,
    deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next page; absent on the last.
    next_cursor: Option<String>,
}

pub(crate) async fn log(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Log>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let run_id = path_param(id)?;
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("delivered") => Some(DeliveryStatus::Delivered),
        Some("failed") => Some(DeliveryStatus::Failed),
        Some(other) => {
            return Err(ApiError::invalid(format!("`status` {other:?} is not pending, delivered or failed")));
        }
    };
    let after = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .ok()
                .filter(|after| *after > 0)
                .ok_or_else(|| ApiError::invalid(format!("`cursor` {cursor:?} is not a cursor of this log")))?,
        ),
    };
    let query = LogQuery { status, after, limit: params.limit.unwrap_or(DEFAULT_LOG_LIMIT) };
    let page = core.run_webhooks(&caller, params.tenant.as_deref(), &run_id, &query).await?;
    Ok(Json(Log { run_id, deliveries: page.deliveries, next_cursor: page.next.map(|next| next.to_string()) }))
}
