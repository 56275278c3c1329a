//! `POST /v1/search`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use millrace_common::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::JsonBody;
use crate::core::Core;
use crate::validate::{self, SearchQuery};

#[derive(Debug, Deserialize)]
pub(crate) struct SearchRequest {
    query: String,
    top_k: Option<i64>,
    filter: Option<SearchFilter>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SearchFilter {
    document_id: Option<String>,
    metadata: Option<Value>,
}

pub(crate) async fn search(
    State(core): State<Arc<Core>>,
    JsonBody(request): JsonBody<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let (document_id, metadata) = request.filter.map(|f| (f.document_id, f.metadata)).unwrap_or_default();
    let search =
        validate::validate_search(SearchQuery { query: request.query, top_k: request.top_k, document_id, metadata })?;
    let results = core.search(search).await?;
    Ok(Json(json!({ "results": results })))
}
