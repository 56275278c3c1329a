//! Incremental re-ingest: before a new version's batches are handed on, each chunk whose text
//! (content hash) is also in the document's visible version gets what storage holds for it —
//! its metadata and embedding — so the metadata and embeddings stages need no model call for it.
//! Whether the stored result fits (same embedding model, same kind of extractor) is for each
//! stage to judge; this only finds the candidates.

use millrace_common::telemetry::{GrpcChannel, PropagateContext};
use std::collections::{HashMap, HashSet};

use millrace_common::ErrorCode;
use millrace_proto::storage_client::StorageClient;
use millrace_proto::{ChunkBatch, StoredChunk, StoredChunksRequest};
use millrace_streams::HandlerError;
use tonic::transport::Channel;

/// Hashes per `StoredChunks` call (the storage service's own limit).
const HASHES_PER_CALL: usize = 512;

#[derive(Clone)]
pub struct StoredChunks {
    client: StorageClient<GrpcChannel>,
}

impl StoredChunks {
    pub fn new(channel: Channel) -> Self {
        Self { client: StorageClient::with_interceptor(channel, PropagateContext) }
    }

    /// Sets `stored` on every chunk identical to one of the visible version; returns how many.
    pub async fn attach(
        &self,
        tenant_id: &str,
        document_id: &str,
        batches: &mut [ChunkBatch],
    ) -> Result<usize, HandlerError> {
        let mut unique = HashSet::new();
        let hashes: Vec<String> = batches
            .iter()
            .flat_map(|b| &b.chunks)
            .filter(|c| unique.insert(c.content_hash.as_str()))
            .map(|c| c.content_hash.clone())
            .collect();
        let mut found: HashMap<String, StoredChunk> = HashMap::new();
        for group in hashes.chunks(HASHES_PER_CALL) {
            let request = StoredChunksRequest {
                tenant_id: tenant_id.to_owned(),
                document_id: document_id.to_owned(),
                content_hashes: group.to_vec(),
            };
            let response = self.client.clone().stored_chunks(request).await.map_err(|status| {
                let message = format!("storage (stored chunks): {}", status.message());
                if ErrorCode::from_grpc(status.code()).is_retryable() {
                    HandlerError::Retry(message)
                } else {
                    HandlerError::Fatal(message)
                }
            })?;
            let response = response.into_inner();
            if response.version == 0 {
                // No visible version: nothing to reuse.
                return Ok(0);
            }
            found.extend(response.chunks.into_iter().filter_map(|entry| Some((entry.content_hash, entry.stored?))));
        }
        let mut attached = 0;
        for chunk in batches.iter_mut().flat_map(|b| &mut b.chunks) {
            chunk.stored = found.get(&chunk.content_hash).cloned();
            attached += usize::from(chunk.stored.is_some());
        }
        Ok(attached)
    }
}
