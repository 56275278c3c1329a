//! `POST /v1/search`.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use millrace_auth::Caller;
use millrace_common::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::JsonBody;
use crate::core::Core;
use crate::validate::{self, SearchQuery};

#[derive(Debug, Deserialize)]
pub(crate) struct SearchRequest {
    query: String,
    /// Read as a JSON number: `10.0` is an integer in JSON Schema (and to most clients).
    top_k: Option<serde_json::Number>,
    /// Read as a value: serde would take an array for a struct, which the schema refuses.
    filter: Option<Value>,
    /// Only these collections; absent, null or empty: every collection the key may use.
    collections: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SearchFilter {
    document_id: Option<String>,
    metadata: Option<Value>,
}

pub(crate) async fn search(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let filter = match request.filter {
        None | Some(Value::Null) => None,
        Some(filter @ Value::Object(_)) => Some(
            serde_json::from_value::<SearchFilter>(filter)
                .map_err(|err| ApiError::bad_request(format!("`filter` is not of the expected shape: {err}")))?,
        ),
        Some(_) => return Err(ApiError::bad_request("`filter` must be an object")),
    };
    let (document_id, metadata) = filter.map(|f| (f.document_id, f.metadata)).unwrap_or_default();
    let top_k = request.top_k.map(|n| integral(&n)).transpose()?;
    let search = validate::validate_search(SearchQuery {
        query: request.query,
        top_k,
        document_id,
        metadata,
        collections: request.collections,
    })?;
    let results = core.search(&caller, search).await?;
    Ok(Json(json!({ "results": results })))
}

/// A JSON number that is a whole number (`7` or `7.0`).
fn integral(number: &serde_json::Number) -> Result<i64, ApiError> {
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    match number.as_f64() {
        // Exactly representable whole numbers only; the range check refuses them past i64.
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(ApiError::invalid(format!("`top_k` must be a whole number, not {number}"))),
    }
}
