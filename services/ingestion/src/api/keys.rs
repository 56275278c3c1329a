//! `POST /v1/keys`, `GET /v1/keys` and `DELETE /v1/keys/{id}`: API keys, for admins (the door
//! checks the scope). A key's secret is in the answer to its creation and nowhere else.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, response::IntoResponse};
use millrace_auth::{AuditLog, Caller, KeyRecord, KeyStore, NewKey, Scope, is_valid_name};
use millrace_common::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{JsonBody, path_param};

/// The key store and the audit log, which the key and audit routes share.
#[derive(Clone, Debug)]
pub struct Access {
    pub store: Option<KeyStore>,
    pub audit: AuditLog,
}

impl Access {
    fn store(&self) -> Result<&KeyStore, ApiError> {
        self.store.as_ref().ok_or_else(|| ApiError::unavailable("no key store: MILLRACE_DATABASE_URL is not set"))
    }
}

/// The body of `POST /v1/keys`. Scopes and limits are read loosely, so that a bad value is a
/// 422 naming its field rather than a 400 about the body's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    tenant: String,
    name: String,
    scopes: Vec<String>,
    collections: Option<Vec<String>>,
    rpm: Option<i64>,
    tpm: Option<i64>,
    daily_budget_usd: Option<f64>,
}

/// A key's name is for people: short, printable.
const MAX_NAME_CHARS: usize = 200;

fn validate(body: CreateKey) -> Result<NewKey, ApiError> {
    if !is_valid_name(&body.tenant) {
        return Err(ApiError::invalid("`tenant` must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"));
    }
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!("`name` must be 1 to {MAX_NAME_CHARS} printable characters")));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::invalid("`scopes` must name at least one of ingest, read, search, delete, admin, llm"));
    }
    let mut scopes = Vec::new();
    for (i, scope) in body.scopes.iter().enumerate() {
        let scope: Scope = scope.parse().map_err(|err| ApiError::invalid(format!("`scopes[{i}]`: {err}")))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if let Some(collections) = &body.collections {
        if collections.is_empty() {
            return Err(ApiError::invalid(
                "`collections` must name at least one collection (omit it for every collection)",
            ));
        }
        if let Some(i) = collections.iter().position(|c| !is_valid_name(c)) {
            return Err(ApiError::invalid(format!(
                "`collections[{i}]` must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
            )));
        }
    }
    let limit = |field: &str, value: Option<i64>| -> Result<Option<u32>, ApiError> {
        match value {
            None => Ok(None),
            Some(value) if (1..=i64::from(i32::MAX)).contains(&value) => Ok(u32::try_from(value).ok()),
            Some(_) => Err(ApiError::invalid(format!("`{field}` must be a whole number from 1 to {}", i32::MAX))),
        }
    };
    let rpm = limit("rpm", body.rpm)?;
    let tpm = limit("tpm", body.tpm)?;
    if body.daily_budget_usd.is_some_and(|usd| !(usd.is_finite() && usd > 0.0)) {
        return Err(ApiError::invalid("`daily_budget_usd` must be a positive number of US dollars"));
    }
    let mut collections = body.collections;
    if let Some(collections) = &mut collections {
        collections.sort();
        collections.dedup();
    }
    Ok(NewKey {
        tenant: body.tenant,
        name: name.to_owned(),
        scopes,
        collections,
        rpm,
        tpm,
        daily_budget_usd: body.daily_budget_usd,
    })
}

pub(crate) async fn create(
    State(access): State<Access>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    let key = validate(body)?;
    let (record, secret) = access.store()?.create(&key).await?;
    tracing::info!(key_id = %record.id, tenant = %record.tenant, by = %caller.key_id, "created key");
    access
        .audit
        .record(
            &caller,
            "key.created",
            &record.tenant,
            &record.id,
            json!({ "name": record.name, "scopes": record.scopes, "collections": record.collections, "prefix": record.prefix }),
        )
        .await;
    let body = json!({
        "id": record.id,
        "key": secret,
        "tenant": record.tenant,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": record.scopes,
        "collections": record.collections,
        "rpm": record.rpm,
        "tpm": record.tpm,
        "daily_budget_usd": record.daily_budget_usd,
        "created_at": record.created_at,
    });
    Ok((StatusCode::CREATED, Json(body)))
}

/// Read as text so that a bad value gets our JSON errors.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    tenant: Option<String>,
}

pub(crate) async fn list(
    State(access): State<Access>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let tenant = params.tenant.filter(|tenant| !tenant.is_empty());
    if tenant.as_deref().is_some_and(|tenant| !is_valid_name(tenant)) {
        return Err(ApiError::invalid("`tenant` must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"));
    }
    let keys: Vec<KeyRecord> = access.store()?.list(tenant.as_deref()).await?;
    Ok(Json(json!({ "keys": keys })))
}

pub(crate) async fn revoke(
    State(access): State<Access>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<KeyRecord>, ApiError> {
    let id = path_param(id)?;
    let Some((record, newly)) = access.store()?.revoke(&id).await? else {
        return Err(ApiError::not_found(format!("no key {id:?}")));
    };
    if newly {
        tracing::info!(key_id = %record.id, tenant = %record.tenant, by = %caller.key_id, "revoked key");
        access.audit.record(&caller, "key.revoked", &record.tenant, &record.id, json!({ "name": record.name })).await;
    }
    Ok(Json(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> CreateKey {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn every_bad_field_is_named() {
        let good = json!({"tenant": "acme", "name": "ci", "scopes": ["read"]});
        assert!(validate(body(good.clone())).is_ok());
        for (field, value, named) in [
            ("tenant", json!("a/b"), "`tenant`"),
            ("name", json!(" "), "`name`"),
            ("scopes", json!([]), "`scopes`"),
            ("scopes", json!(["read", "root"]), "`scopes[1]`"),
            ("collections", json!([]), "`collections`"),
            ("collections", json!(["ok", "no way"]), "`collections[1]`"),
            ("rpm", json!(0), "`rpm`"),
            ("tpm", json!(-5), "`tpm`"),
            ("daily_budget_usd", json!(0.0), "`daily_budget_usd`"),
        ] {
            let mut request = good.clone();
            request[field] = value;
            let err = validate(body(request)).unwrap_err();
            assert_eq!(err.code, millrace_common::ErrorCode::InvalidArgument);
            assert!(err.message.contains(named), "{field}: {}", err.message);
        }
    }
}
