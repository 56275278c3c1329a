//! `millrace.v1.Embeddings`: query vectors for search, from the same embedder as the chunks.

use std::sync::Arc;

use millrace_common::{ApiError, HandlerError};
use millrace_proto::embeddings_server::Embeddings;
use millrace_proto::{EmbedRequest, EmbedResponse, Vector};
use tonic::{Request, Response, Status};

use crate::embedders::Embedder;

/// Texts per request, at most.
const MAX_TEXTS: usize = 256;

pub struct EmbeddingsService {
    embedder: Arc<Embedder>,
}

impl EmbeddingsService {
    pub fn new(embedder: Arc<Embedder>) -> Self {
        Self { embedder }
    }
}

#[tonic::async_trait]
impl Embeddings for EmbeddingsService {
    async fn embed(&self, request: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        let request = request.into_inner();
        if request.texts.is_empty() || request.texts.len() > MAX_TEXTS {
            return Err(ApiError::invalid(format!("texts must hold 1 to {MAX_TEXTS} items")).into());
        }
        let vectors = self.embedder.embed(&request.texts, &request.job_id).await.map_err(|err| match err {
            HandlerError::Retry(message) | HandlerError::Deferred(message) => ApiError::unavailable(message),
            HandlerError::Fatal(message) => ApiError::internal(message),
        })?;
        Ok(Response::new(EmbedResponse {
            model: self.embedder.model(),
            dimensions: self.embedder.dimensions() as u32,
            vectors: vectors.into_iter().map(|values| Vector { values }).collect(),
        }))
    }
}
