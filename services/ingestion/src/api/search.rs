//! `POST /v1/search`: the JSON shape of a search (RFC 3339 times, named modes) turned into a
//! [`SearchQuery`], and the results back into JSON. A value of the wrong JSON type is a 400, a
//! value of the right type that breaks a rule (an unknown mode, a bad time) a 422.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use millrace_auth::Caller;
use millrace_common::ApiError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::JsonBody;
use crate::core::Core;
use crate::validate::{self, SearchFilterQuery, SearchGroupBy, SearchMode, SearchQuery};

#[derive(Debug, Deserialize)]
pub(crate) struct SearchRequest {
    query: String,
    /// Read as a JSON number: `10.0` is an integer in JSON Schema (and to most clients).
    top_k: Option<serde_json::Number>,
    /// `hybrid` (absent or null), `vector` or `keyword`.
    mode: Option<String>,
    /// `document` (absent or null) or `chunk`.
    group_by: Option<String>,
    /// Read as values: serde would take an array for a struct, which the schema refuses.
    weights: Option<Value>,
    filter: Option<Value>,
    /// Only these collections; absent, null or empty: every collection the key may use.
    collections: Option<Vec<String>>,
    /// Order the fused results with the LLM reranker; absent or null: the server's default.
    rerank: Option<bool>,
    /// As `top_k`, a JSON number.
    rerank_candidates: Option<serde_json::Number>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Weights {
    vector: Option<f64>,
    keyword: Option<f64>,
}

/// Unknown fields are refused: a misspelt condition silently ignored would widen the search.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchFilter {
    document_id: Option<String>,
    document_ids: Option<Vec<String>>,
    content_types: Option<Vec<String>>,
    source_prefix: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    updated_after: Option<String>,
    updated_before: Option<String>,
    metadata: Option<Value>,
}

pub(crate) async fn search(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let filter: SearchFilter = object_field(request.filter, "filter")?.unwrap_or_default();
    let weights: Weights = object_field(request.weights, "weights")?.unwrap_or_default();
    let time = |text: Option<String>, field: &str| {
        text.map(|text| validate::unix_ms_from_rfc3339(&text, &format!("filter.{field}"))).transpose()
    };
    let filter = SearchFilterQuery {
        document_id: filter.document_id,
        document_ids: filter.document_ids.unwrap_or_default(),
        content_types: filter.content_types.unwrap_or_default(),
        source_prefix: filter.source_prefix,
        created_after_ms: time(filter.created_after, "created_after")?,
        created_before_ms: time(filter.created_before, "created_before")?,
        updated_after_ms: time(filter.updated_after, "updated_after")?,
        updated_before_ms: time(filter.updated_before, "updated_before")?,
        metadata: filter.metadata,
    };
    let search = validate::validate_search(SearchQuery {
        query: request.query,
        top_k: request.top_k.map(|n| integral(&n, "top_k")).transpose()?,
        mode: SearchMode::from_name(request.mode.as_deref())?,
        group_by: SearchGroupBy::from_name(request.group_by.as_deref())?,
        vector_weight: weights.vector,
        keyword_weight: weights.keyword,
        filter,
        collections: request.collections,
        rerank: request.rerank,
        rerank_candidates: request.rerank_candidates.map(|n| integral(&n, "rerank_candidates")).transpose()?,
    })?;
    let found = core.search(&caller, search).await?;
    let results: Vec<Value> = found.hits.iter().map(|hit| hit.to_json(found.group_by, found.reranked)).collect();
    Ok(Json(json!({
        "results": results,
        "mode": found.mode.as_str(),
        "group_by": found.group_by.as_str(),
        "reranked": found.reranked,
    })))
}

/// An optional JSON object field read as `T`: null is absent, anything but an object a 400.
fn object_field<T: DeserializeOwned>(value: Option<Value>, field: &str) -> Result<Option<T>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(object @ Value::Object(_)) => serde_json::from_value(object)
            .map(Some)
            .map_err(|err| ApiError::bad_request(format!("`{field}` is not of the expected shape: {err}"))),
        Some(_) => Err(ApiError::bad_request(format!("`{field}` must be an object"))),
    }
}

/// A JSON number that is a whole number (`7` or `7.0`).
fn integral(number: &serde_json::Number, field: &str) -> Result<i64, ApiError> {
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    match number.as_f64() {
        // Exactly representable whole numbers only; the range check refuses them past i64.
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(ApiError::invalid(format!("`{field}` must be a whole number, not {number}"))),
    }
}
