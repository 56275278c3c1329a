//! The JSON job API over HTTP. Handlers only translate between HTTP and [`Core`]; every rule
//! lives in `validate` and every operation in `core`, shared with the gRPC service.

mod audit;
mod dlq;
mod documents;
pub(crate) mod ingest;
mod jobs;
pub mod keys;
mod multipart;
mod runs;
mod search;
mod stats;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use millrace_auth::Door;
use millrace_common::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

use crate::console::ConsoleConfig;
use crate::core::Core;
use crate::watch::Watchers;

/// The hand-written OpenAPI 3.1 document of this API.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Body limit of requests that carry no document (search, retries).
const SMALL_BODY_BYTES: usize = 1024 * 1024;

/// The service's own routes (health, readiness and metrics are merged in by the caller), each
/// behind the door: a key with the scope `crate::auth::rules` gives the route.
pub fn router(core: Arc<Core>, watchers: Watchers, access: keys::Access, door: Door) -> Router {
    let document_body = DefaultBodyLimit::max(core.config().max_body_bytes());
    // The console's pages hold no data and are public (`auth::rules`); their calls carry a key.
    let trace_url = core.config().trace_url.clone();
    // Event streams are served by the watchers, keys and the audit log by the key store, not
    // by `Core`.
    let events = Router::new().route("/v1/jobs/{id}/events", get(jobs::events)).with_state(watchers);
    let access = Router::new()
        .route("/v1/keys", post(keys::create).get(keys::list).layer(DefaultBodyLimit::max(SMALL_BODY_BYTES)))
        .route("/v1/keys/{id}", delete(keys::revoke))
        .route("/v1/audit", get(audit::list))
        .with_state(access);
    Router::new()
        .route("/v1/ingest", post(ingest::ingest).layer(document_body))
        // A batch is bounded like one document's body: large documents go one by one.
        .route("/v1/ingest/batch", post(ingest::batch).layer(document_body))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/v1/runs", post(runs::create).layer(document_body).get(runs::list))
        .route("/v1/runs/{id}", get(runs::get).delete(runs::cancel))
        .route("/v1/runs/{id}/items", get(runs::items))
        .route("/v1/runs/{id}/report.csv", get(runs::report))
        .route("/v1/runs/{id}/retry-failed", post(runs::retry_failed))
        .route("/v1/search", post(search::search).layer(DefaultBodyLimit::max(SMALL_BODY_BYTES)))
        .route("/v1/documents", get(documents::list))
        .route("/v1/documents/{id}", get(documents::get).delete(documents::delete))
        .route("/v1/documents/{id}/chunks", get(documents::chunks))
        .route("/v1/runs/{id}/webhooks", get(webhooks::log))
        .route("/v1/stats", get(stats::stats))
        .route("/v1/limits", get(stats::limits))
        .route("/v1/dlq", get(dlq::list))
        .route("/v1/dlq/{stage}/retry", post(dlq::retry).layer(DefaultBodyLimit::max(SMALL_BODY_BYTES)))
        .route("/openapi.json", get(openapi))
        .with_state(core)
        .merge(events)
        .merge(access)
        .merge(crate::console::router(ConsoleConfig { trace_url }))
        .route_layer(axum::middleware::from_fn_with_state(door, millrace_auth::door::http::require_key))
}

/// JSON errors for paths and methods no route matches, so that every answer has one shape.
pub fn with_json_fallbacks(router: Router) -> Router {
    router.fallback(no_route).method_not_allowed_fallback(method_not_allowed)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> impl IntoResponse {
    let err = ApiError::new(ErrorCode::BadRequest, format!("method {method} is not allowed on {}", uri.path()));
    let mut response = err.into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// A JSON body read under the route's size limit, whose failures are our JSON errors:
/// 413 past the limit, 400 when it is not JSON or has the wrong shape.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        let shape = |err: serde_json::Error| {
            ApiError::bad_request(format!("request body is not valid JSON of the expected shape: {err}"))
        };
        // Every body is a JSON object; serde alone would also take an array for a struct.
        match serde_json::from_slice::<serde_json::Value>(&bytes).map_err(shape)? {
            object @ serde_json::Value::Object(_) => serde_json::from_value(object).map(JsonBody).map_err(shape),
            _ => Err(ApiError::bad_request("request body must be a JSON object")),
        }
    }
}

pub(crate) fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "request body is larger than this endpoint accepts")
    } else {
        ApiError::bad_request(format!("cannot read the request body: {}", rejection.body_text()))
    }
}

/// A path parameter; a malformed one (bad percent-encoding) is a JSON 400.
/// `{ms}-{seq}`, as Redis stream ids (and so job event ids) are.
pub(crate) fn is_stream_id(text: &str) -> bool {
    text.split_once('-').is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

pub(crate) fn path_param(
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    path.map(|p| p.0).map_err(|err| ApiError::bad_request(err.body_text()))
}
