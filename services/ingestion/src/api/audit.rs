//! `GET /v1/audit`: what admins and tenants did (keys created and revoked, documents deleted,
//! dead letters retried, jobs cancelled), newest first, for admins (the door checks the scope).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use millrace_auth::{AuditQuery, is_valid_name};
use millrace_common::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::keys::Access;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// Read as text so that a bad value gets our JSON errors.
#[derive(Debug, Deserialize)]
pub(crate) struct AuditParams {
    limit: Option<String>,
    before: Option<String>,
    action: Option<String>,
    tenant: Option<String>,
}

fn query(params: AuditParams) -> Result<AuditQuery, ApiError> {
    let present = |value: Option<String>| value.filter(|value| !value.is_empty());
    let limit = match present(params.limit) {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<u32>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            _ => return Err(ApiError::invalid(format!("`limit` must be a whole number from 1 to {MAX_LIMIT}"))),
        },
    };
    let before = match present(params.before) {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(id) if id > 0 => Some(id),
            _ => return Err(ApiError::invalid("`before` must be the id of an audit event")),
        },
    };
    let action = present(params.action);
    if action.as_deref().is_some_and(|action| !is_valid_name(action)) {
        return Err(ApiError::invalid("`action` must be an action name such as key.created"));
    }
    let tenant = present(params.tenant);
    if tenant.as_deref().is_some_and(|tenant| !is_valid_name(tenant)) {
        return Err(ApiError::invalid("`tenant` must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"));
    }
    Ok(AuditQuery { limit, before, action, tenant })
}

pub(crate) async fn list(
    State(access): State<Access>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let events = access.audit.list(&query(params)?).await?;
    Ok(Json(json!({ "events": events })))
}
