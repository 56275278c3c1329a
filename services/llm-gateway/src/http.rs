//! The OpenAI-compatible HTTP API (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`), so
//! that any OpenAI SDK or tool pointed at the gateway gets the same limits, retries, budget and
//! accounting as the other services' gRPC calls: both doors lead to [`Gateway`]. Every call
//! needs an `llm`-scoped key ([`auth`]: virtual keys), which carries its own limits (RPM, TPM,
//! a daily budget) and is what a call is charged to: never a job (see [`NO_JOB`]).
//!
//! Request bodies are read as JSON objects and checked field by field, as OpenAI does, so that
//! every 400 names the field at fault (`param`); unknown fields are ignored, as OpenAI ignores
//! them. Every failure answers in OpenAI's error shape (`{"error":{"message","type","param",
//! "code"}}`), which the SDKs parse into their exceptions, rather than the shared
//! `millrace_common::ApiError` shape the other services' routes use.

pub mod auth;
mod chat;
mod embeddings;
mod error;
mod models;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{any, get, post};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::core::Gateway;
use crate::error::UpstreamError;
use crate::key_limits::VirtualKey;
use crate::metrics;
pub use error::OpenAiError;
use millrace_auth::{Authenticator, Caller};
use millrace_openai::ApiError;

/// The job an HTTP call is charged to: none. Only the stages name a job, over gRPC (an internal
/// door: mutual TLS when configured); a public caller must not be able to bill its spend to
/// someone's job, so the HTTP API reads no `x-millrace-job-id`.
const NO_JOB: &str = "";

/// The `/v1` routes, to merge into the service's HTTP router. Any other `/v1/…` path answers
/// OpenAI's 404, so SDK users see a clear error rather than an empty body. Bodies are bounded by
/// the servers' shared `MILLRACE_MAX_BODY_BYTES` (4 MiB: OpenAI's own largest embeddings request,
/// 300,000 tokens, fits; it was 64 MiB, which let a few callers hold gigabytes).
pub fn routes(gateway: Arc<Gateway>, authenticator: Authenticator) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::completions).fallback(method_not_allowed))
        .route("/v1/embeddings", post(embeddings::create).fallback(method_not_allowed))
        .route("/v1/models", get(models::list).fallback(method_not_allowed))
        // Model ids may hold slashes (`meta-llama/Llama-3.1-8B`).
        .route("/v1/models/{*id}", get(models::retrieve).fallback(method_not_allowed))
        // On the routes above only: an unknown path stays a 404 for anyone.
        .route_layer(axum::middleware::from_fn_with_state(authenticator, auth::require_llm_key))
        .route("/v1/{*rest}", any(not_found))
        .with_state(gateway)
}

/// The virtual key of a call, from the [`Caller`] the door admitted.
fn virtual_key(caller: &Caller) -> VirtualKey {
    VirtualKey::from(caller)
}

async fn not_found(method: Method, uri: Uri) -> OpenAiError {
    ApiError::not_found(format!("Invalid URL ({method} {})", uri.path())).into()
}

async fn method_not_allowed(method: Method, uri: Uri) -> OpenAiError {
    ApiError::method_not_allowed(format!("Method {method} is not allowed on {}", uri.path())).into()
}

/// The request body as a JSON object, or the 400 (or 413) OpenAI answers for anything else.
fn json_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    let body = body.map_err(error::unreadable_body)?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("The request body must be a JSON object, but got {} instead.", kind(&other)),
        )
        .with_code("invalid_type")),
        Err(err) => Err(ApiError::unparsable_json(&err)),
    }
}

/// Takes the field `name` out of `object`: absent or null is None, the wrong type a 400 naming it.
fn field<T: DeserializeOwned>(
    object: &mut Map<String, Value>,
    name: &str,
    expected: &'static str,
) -> Result<Option<T>, ApiError> {
    field_at(object, name, name, expected)
}

/// [`field`] of a nested object, whose field is `param` in messages (`messages[2].role`).
fn field_at<T: DeserializeOwned>(
    object: &mut Map<String, Value>,
    name: &str,
    param: &str,
    expected: &'static str,
) -> Result<Option<T>, ApiError> {
    match object.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            let got = kind(&value);
            serde_json::from_value(value).map(Some).map_err(|_| ApiError::invalid_type(param, expected, got))
        }
    }
}

/// How OpenAI names a JSON value's type in its messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Counts and logs a call's outcome, as the gRPC door does for its calls.
fn finish<T>(method: &'static str, key_id: &str, result: Result<T, UpstreamError>) -> Result<T, OpenAiError> {
    match result {
        Ok(value) => {
            metrics::call(method, "ok");
            Ok(value)
        }
        Err(err) => Err(failed(method, key_id, err)),
    }
}

/// Counts and logs a failed call, and says it OpenAI's way.
fn failed(method: &'static str, key_id: &str, err: UpstreamError) -> OpenAiError {
    metrics::call(method, err.kind());
    if err.is_callers_fault() {
        tracing::debug!(method, key_id, error = %err, "refused");
    } else {
        tracing::warn!(method, key_id, kind = err.kind(), error = %err, "upstream call failed");
    }
    err.into()
}

/// Seconds since the Unix epoch, for the `created` fields.
fn unix_now() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_the_wrong_type_are_named() {
        let mut object = serde_json::json!({"temperature": "hot", "stream": null}).as_object().cloned().unwrap();
        let err = field::<f32>(&mut object, "temperature", "a decimal").unwrap_err();
        assert_eq!(err.param.as_deref(), Some("temperature"));
        assert_eq!(err.message, "Invalid type for 'temperature': expected a decimal, but got a string instead.");
        assert_eq!(field::<bool>(&mut object, "stream", "a boolean").unwrap(), None);
        assert_eq!(field::<bool>(&mut object, "absent", "a boolean").unwrap(), None);
    }

    #[test]
    fn a_body_must_be_a_json_object() {
        let err = json_object(Ok(Bytes::from_static(b"[1, 2]"))).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("JSON object"), "{}", err.message);
        let err = json_object(Ok(Bytes::from_static(b"{\"model\": "))).unwrap_err();
        assert_eq!(err.code, Some("invalid_json"));
    }
}
