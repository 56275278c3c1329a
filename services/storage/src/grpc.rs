//! `millrace.v1.Storage`: search, documents and chunk hashes over gRPC. Every call names its
//! tenant: the ingestion service (from the caller's key) or a stage (from the job's record). There
//! is no default tenant to fall back on, so a caller that forgets it gets nothing of anyone's.

use std::sync::Arc;

use millrace_common::ApiError;
use millrace_proto::storage_server::Storage;
use millrace_proto::{
    ChunkMatch, DeleteDocumentRequest, DeleteDocumentResponse, DiscardVersionRequest, DiscardVersionResponse, Document,
    DocumentChunk, GetDocumentRequest, Highlight, ListChunksRequest, ListChunksResponse, ListDocumentsRequest,
    ListDocumentsResponse, SearchGroupBy as ProtoGroupBy, SearchHit, SearchMode as ProtoMode, SearchResponse,
    StoredChunk, StoredChunkEntry, StoredChunksRequest, StoredChunksResponse, Vector, VectorSearchRequest,
};
use tonic::{Request, Response, Status};

use crate::store::{
    ChunkListing, DEFAULT_LIST_LIMIT, DocumentRecord, GroupBy, ListChunks, ListDocuments, MAX_LIST_LIMIT, PgStore,
    SearchFilter, SearchMode, SearchRequest, StoreError,
};

/// Content hashes per `StoredChunks` request: keeps an answer (vectors included) well under
/// gRPC's 4 MiB message limit.
pub const MAX_STORED_CHUNKS: usize = 512;

pub struct StorageService {
    store: Arc<PgStore>,
}

impl StorageService {
    pub fn new(store: Arc<PgStore>) -> Self {
        Self { store }
    }
}

/// The tenant a request names; an empty one is refused.
fn tenant(requested: &str) -> Result<&str, Status> {
    if requested.is_empty() { Err(ApiError::invalid("tenant_id is required").into()) } else { Ok(requested) }
}

fn status(err: StoreError) -> Status {
    if err.is_retryable() {
        ApiError::unavailable(err.to_string()).into()
    } else {
        ApiError::invalid(err.to_string()).into()
    }
}

/// A listing's page size: 0 (unset) is the default, more than the most is the most.
fn page_limit(asked: u32) -> usize {
    match asked as usize {
        0 => DEFAULT_LIST_LIMIT,
        limit => limit.min(MAX_LIST_LIMIT),
    }
}

fn require_id(document_id: &str) -> Result<(), Status> {
    if document_id.is_empty() { Err(ApiError::invalid("document_id is required").into()) } else { Ok(()) }
}

#[tonic::async_trait]
impl Storage for StorageService {
    async fn search(&self, request: Request<VectorSearchRequest>) -> Result<Response<SearchResponse>, Status> {
        let request = request.into_inner();
        let mode = match ProtoMode::try_from(request.mode) {
            // Callers from before keyword search send a vector and no text: for them the default
            // stays what it was. A text makes the default hybrid; asking for hybrid without one
            // is refused.
            Ok(ProtoMode::Unspecified) if request.query.trim().is_empty() => SearchMode::Vector,
            Ok(ProtoMode::Unspecified | ProtoMode::Hybrid) => SearchMode::Hybrid,
            Ok(ProtoMode::Vector) => SearchMode::Vector,
            Ok(ProtoMode::Keyword) => SearchMode::Keyword,
            Err(_) => return Err(ApiError::invalid(format!("unknown search mode {}", request.mode)).into()),
        };
        let group_by = match ProtoGroupBy::try_from(request.group_by) {
            Ok(ProtoGroupBy::Unspecified | ProtoGroupBy::Document) => GroupBy::Document,
            Ok(ProtoGroupBy::Chunk) => GroupBy::Chunk,
            Err(_) => return Err(ApiError::invalid(format!("unknown group_by {}", request.group_by)).into()),
        };
        let top_k = if request.top_k == 0 { 10 } else { request.top_k.min(100) } as usize;
        let filter = request.filter.unwrap_or_default();
        let metadata = if filter.metadata_json.trim().is_empty() {
            None
        } else {
            match serde_json::from_str::<serde_json::Value>(&filter.metadata_json) {
                Ok(value @ serde_json::Value::Object(_)) => Some(value),
                _ => return Err(ApiError::invalid("filter.metadata must be a JSON object").into()),
            }
        };
        let search = SearchRequest {
            query: request.query,
            vector: request.vector,
            top_k,
            mode,
            group_by,
            vector_weight: request.vector_weight.unwrap_or(1.0),
            keyword_weight: request.keyword_weight.unwrap_or(1.0),
            filter: SearchFilter {
                document_id: filter.document_id.filter(|id| !id.is_empty()),
                document_ids: filter.document_ids,
                content_types: filter.content_types,
                source_prefix: filter.source_prefix,
                created_after_unix_ms: filter.created_after_unix_ms,
                created_before_unix_ms: filter.created_before_unix_ms,
                updated_after_unix_ms: filter.updated_after_unix_ms,
                updated_before_unix_ms: filter.updated_before_unix_ms,
                metadata,
                collections: request.collections,
            },
        };
        let hits = self.store.search(tenant(&request.tenant_id)?, &search).await.map_err(status)?;
        Ok(Response::new(SearchResponse {
            results: hits
                .into_iter()
                .map(|hit| SearchHit {
                    document_id: hit.document_id,
                    chunk_index: u32::try_from(hit.chunk_index).unwrap_or_default(),
                    text: hit.text,
                    score: hit.score,
                    metadata_json: hit.metadata.to_string(),
                    collection: hit.collection,
                    vector_score: hit.vector_score,
                    keyword_score: hit.keyword_score,
                    vector_rank: hit.vector_rank,
                    keyword_rank: hit.keyword_rank,
                    rank: hit.rank,
                    highlights: hit
                        .highlights
                        .into_iter()
                        .map(|span| Highlight { start: span.start, end: span.end })
                        .collect(),
                    other_chunks: hit
                        .other_chunks
                        .into_iter()
                        .map(|chunk| ChunkMatch {
                            chunk_index: u32::try_from(chunk.chunk_index).unwrap_or_default(),
                            score: chunk.score,
                            vector_score: chunk.vector_score,
                            keyword_score: chunk.keyword_score,
                        })
                        .collect(),
                    // Reranking is ingestion's, after fusion.
                    rerank_score: None,
                })
                .collect(),
            reranked: false,
        }))
    }

    async fn get_document(&self, request: Request<GetDocumentRequest>) -> Result<Response<Document>, Status> {
        let request = request.into_inner();
        require_id(&request.document_id)?;
        let found = self
            .store
            .get_document(tenant(&request.tenant_id)?, &request.document_id)
            .await
            .map_err(status)?
            .ok_or_else(|| ApiError::not_found(format!("document {:?} not found", request.document_id)))?;
        Ok(Response::new(document_message(found)))
    }

    async fn list_documents(
        &self,
        request: Request<ListDocumentsRequest>,
    ) -> Result<Response<ListDocumentsResponse>, Status> {
        let request = request.into_inner();
        let limit = page_limit(request.limit);
        let query = ListDocuments {
            tenant_id: tenant(&request.tenant_id)?.to_owned(),
            collections: request.collections,
            document_id_prefix: request.document_id_prefix,
            source_prefix: request.source_prefix,
            after: request.cursor,
            limit,
        };
        let page = self.store.list_documents(&query).await.map_err(status)?;
        let next_cursor = match page.documents.last() {
            Some(last) if page.more => last.document.document_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListDocumentsResponse {
            documents: page.documents.into_iter().map(document_message).collect(),
            next_cursor,
        }))
    }

    async fn list_chunks(&self, request: Request<ListChunksRequest>) -> Result<Response<ListChunksResponse>, Status> {
        let request = request.into_inner();
        require_id(&request.document_id)?;
        let limit = page_limit(request.limit);
        let query = ListChunks {
            tenant_id: tenant(&request.tenant_id)?.to_owned(),
            document_id: request.document_id,
            after_chunk_index: request.after_chunk_index.map(i64::from),
            version: Some(request.version).filter(|version| *version > 0).map(|version| version as i64),
            limit,
        };
        let page = match self.store.list_chunks(&query).await.map_err(status)? {
            ChunkListing::Page(page) => page,
            ChunkListing::Missing => {
                return Err(ApiError::not_found(format!("document {:?} not found", query.document_id)).into());
            }
            ChunkListing::VersionChanged { visible } => {
                return Err(ApiError::conflict(format!(
                    "document {:?} is at version {visible} now, not {}: list its chunks from the first page",
                    query.document_id, request.version
                ))
                .into());
            }
        };
        let next_after_chunk_index = match page.chunks.last() {
            Some(last) if page.more => u32::try_from(last.chunk_index).ok(),
            _ => None,
        };
        Ok(Response::new(ListChunksResponse {
            version: page.version as u64,
            collection: page.collection,
            chunks: page
                .chunks
                .into_iter()
                .map(|chunk| DocumentChunk {
                    chunk_index: u32::try_from(chunk.chunk_index).unwrap_or_default(),
                    text: chunk.text,
                    metadata_json: chunk.metadata.to_string(),
                })
                .collect(),
            next_after_chunk_index,
        }))
    }

    async fn delete_document(
        &self,
        request: Request<DeleteDocumentRequest>,
    ) -> Result<Response<DeleteDocumentResponse>, Status> {
        let request = request.into_inner();
        require_id(&request.document_id)?;
        let deleted = self
            .store
            .delete_document(
                tenant(&request.tenant_id)?,
                &request.document_id,
                i64::try_from(request.through_version).unwrap_or(i64::MAX),
            )
            .await
            .map_err(status)?
            .ok_or_else(|| ApiError::not_found(format!("document {:?} not found", request.document_id)))?;
        Ok(Response::new(DeleteDocumentResponse { deleted: true, chunks_deleted: deleted as u32 }))
    }

    async fn stored_chunks(
        &self,
        request: Request<StoredChunksRequest>,
    ) -> Result<Response<StoredChunksResponse>, Status> {
        let request = request.into_inner();
        require_id(&request.document_id)?;
        if request.content_hashes.len() > MAX_STORED_CHUNKS {
            return Err(ApiError::invalid(format!("at most {MAX_STORED_CHUNKS} content hashes per request")).into());
        }
        let (version, chunks) = self
            .store
            .stored_chunks(tenant(&request.tenant_id)?, &request.document_id, &request.content_hashes)
            .await
            .map_err(status)?;
        Ok(Response::new(StoredChunksResponse {
            version: version as u64,
            chunks: chunks
                .into_iter()
                .map(|chunk| StoredChunkEntry {
                    stored: Some(StoredChunk {
                        embedding_model: chunk.metadata["embedding_model"].as_str().unwrap_or_default().to_owned(),
                        metadata_json: chunk.metadata.to_string(),
                        embedding: Some(Vector { values: chunk.embedding }),
                    }),
                    content_hash: chunk.content_hash,
                })
                .collect(),
        }))
    }

    async fn discard_version(
        &self,
        request: Request<DiscardVersionRequest>,
    ) -> Result<Response<DiscardVersionResponse>, Status> {
        let request = request.into_inner();
        require_id(&request.document_id)?;
        let deleted = self
            .store
            .discard_version(
                tenant(&request.tenant_id)?,
                &request.document_id,
                request.version as i64,
                i64::try_from(request.generation).unwrap_or(i64::MAX),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(DiscardVersionResponse { chunks_deleted: deleted }))
    }
}

fn document_message(found: DocumentRecord) -> Document {
    let (updated_at_unix_ms, document) = (found.updated_at_unix_ms, found.document);
    Document {
        tenant_id: document.tenant_id,
        document_id: document.document_id,
        version: document.version as u64,
        content_hash: document.content_hash,
        chunk_count: document.chunk_count as u32,
        metadata_json: document.metadata.to_string(),
        source: document.source,
        content_type: document.content_type,
        fingerprint: document.fingerprint,
        collection: document.collection,
        updated_at: millrace_common::time::rfc3339_from_millis(updated_at_unix_ms),
    }
}
