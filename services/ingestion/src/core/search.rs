//! Search: the query embedded by the embeddings service, the nearest chunks found by storage.

use millrace_common::ApiError;
use millrace_proto::v1::{EmbedRequest, SearchFilter, VectorSearchRequest};
use serde::Serialize;

use super::{Core, downstream, json_object};
use crate::validate::ValidSearch;

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub document_id: String,
    pub chunk_index: u32,
    pub text: String,
    pub score: f32,
    pub metadata: serde_json::Value,
}

impl Core {
    /// Embeds the query through the embeddings service and searches through the storage service.
    pub async fn search(&self, search: ValidSearch) -> Result<Vec<Hit>, ApiError> {
        let embedded = self
            .embeddings
            .clone()
            .embed(EmbedRequest { texts: vec![search.query], job_id: String::new() })
            .await
            .map_err(|status| downstream("embeddings", status))?
            .into_inner();
        let vector = embedded
            .vectors
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the embeddings service returned no vector for the query"))?;
        let metadata_json = match &search.metadata {
            serde_json::Value::Object(map) if map.is_empty() => String::new(),
            other => other.to_string(),
        };
        let response = self
            .storage
            .clone()
            .search(VectorSearchRequest {
                tenant_id: self.config.tenant_id.clone(),
                vector: vector.values,
                top_k: search.top_k,
                filter: Some(SearchFilter { document_id: search.document_id, metadata_json }),
            })
            .await
            .map_err(|status| downstream("storage", status))?
            .into_inner();
        Ok(response
            .results
            .into_iter()
            .map(|hit| Hit {
                document_id: hit.document_id,
                chunk_index: hit.chunk_index,
                text: hit.text,
                score: hit.score,
                metadata: json_object(&hit.metadata_json),
            })
            .collect())
    }
}
