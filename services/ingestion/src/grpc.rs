//! `millrace.v1.Ingestion` over gRPC: the same operations and rules as the HTTP API (dead
//! letters included), through the same [`Core`]. Proto3 zero values mean "not set" (`top_k: 0` is the default, `limit: 0`
//! is 50, an empty `metadata_json` is no metadata).

use std::sync::Arc;

use futures::StreamExt as _;
use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_pipeline::JobStatus;
use millrace_proto::v1::ingestion_server::{Ingestion, IngestionServer};
use millrace_proto::v1::{
    CancelJobRequest, DeleteDocumentRequest, DeleteDocumentResponse, Document, DocumentChunk, GetJobRequest, Job,
    JobEvent, ListDeadLettersRequest, ListDeadLettersResponse, ListDocumentChunksRequest, ListDocumentChunksResponse,
    ListDocumentsRequest, ListDocumentsResponse, ListJobsRequest, ListJobsResponse, RetryDeadLettersRequest,
    RetryDeadLettersResponse, SearchRequest, SearchResponse, SubmitRequest, SubmitResponse, WatchJobRequest,
};
use tonic::{Request, Response, Status};

use crate::core::{self, Core};
use crate::validate::{
    self, Payload, RawOptions, SearchFilterQuery, SearchGroupBy, SearchMode, SearchQuery, Submission,
};
use crate::watch::Watchers;

pub struct IngestionGrpc {
    core: Arc<Core>,
    watchers: Watchers,
}

impl IngestionGrpc {
    /// The gRPC service, accepting messages as large as the largest document allows.
    pub fn server(core: Arc<Core>, watchers: Watchers) -> IngestionServer<Self> {
        let max_message = core.config().max_document_bytes.saturating_add(64 * 1024);
        IngestionServer::new(Self { core, watchers }).max_decoding_message_size(max_message)
    }
}

type EventStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<JobEvent, Status>> + Send>>;

/// The caller the authentication layer put on the request; its absence is our bug (a method
/// reached without the layer), never a reason to act for nobody or for a default tenant.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request.extensions().get::<Caller>().cloned().ok_or_else(|| {
        tracing::error!("a gRPC call reached the ingestion service without an authenticated caller");
        ApiError::internal("the request carries no authenticated caller").into()
    })
}

#[tonic::async_trait]
impl Ingestion for IngestionGrpc {
    type WatchJobStream = EventStream;

    async fn watch_job(&self, request: Request<WatchJobRequest>) -> Result<Response<EventStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let after = match request.after_event_id {
            id if id.is_empty() => "0".to_owned(),
            id if crate::api::is_stream_id(&id) => id,
            id => {
                return Err(ApiError::invalid(format!("`after_event_id` {id:?} is not an event id of this job")).into());
            }
        };
        let job_id = request.job_id;
        let events = self.watchers.watch(&caller, &job_id, after).await?;
        Ok(Response::new(Box::pin(events.map(move |event| Ok(event.to_proto(&job_id))))))
    }

    async fn submit(&self, request: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let metadata =
            validate::metadata_from_json(&request.metadata_json, "metadata_json").inspect_err(core::count_rejection)?;
        // Proto3 cannot tell an empty `bytes` from an absent one: a URL with no content is a
        // submission by URL, a URL with content is ambiguous.
        let payload = match (request.content.is_empty(), request.url.is_empty()) {
            (_, true) => Payload::Bytes(request.content),
            (true, false) => Payload::Url(request.url),
            (false, false) => {
                let err = ApiError::invalid("`content` and `url` are mutually exclusive: send only one");
                core::count_rejection(&err);
                return Err(err.into());
            }
        };
        let accepted = self
            .core
            .submit(
                &caller,
                Submission {
                    document_id: request.document_id,
                    payload,
                    content_type: Some(request.content_type),
                    file_name: None,
                    source: Some(request.source),
                    metadata: Some(metadata),
                    options: RawOptions {
                        chunk_size: request.chunk_size.map(i64::from),
                        chunk_overlap: request.chunk_overlap.map(i64::from),
                        prefix: "",
                    },
                    collection: Some(request.collection),
                },
            )
            .await?;
        Ok(Response::new(SubmitResponse {
            job_id: accepted.job_id,
            document_id: accepted.document_id,
            status: accepted.status.to_proto() as i32,
        }))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        let caller = caller(&request)?;
        let job = self.core.get_job(&caller, &request.into_inner().job_id).await?;
        Ok(Response::new(job.to_proto()))
    }

    async fn list_jobs(&self, request: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let status = match millrace_proto::v1::JobStatus::try_from(request.status) {
            Ok(status) => JobStatus::from_proto(status),
            Err(_) => return Err(ApiError::invalid(format!("unknown job status {}", request.status)).into()),
        };
        let limit = validate::list_limit((request.limit != 0).then_some(i64::from(request.limit)))?;
        let jobs = self.core.list_jobs(&caller, Some(&request.tenant), status, limit).await?;
        Ok(Response::new(ListJobsResponse { jobs: jobs.iter().map(|job| job.to_proto()).collect() }))
    }

    async fn cancel_job(&self, request: Request<CancelJobRequest>) -> Result<Response<Job>, Status> {
        let caller = caller(&request)?;
        let job = self.core.cancel_job(&caller, &request.into_inner().job_id).await?;
        Ok(Response::new(job.to_proto()))
    }

    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let filter = request.filter.unwrap_or_default();
        let metadata = validate::metadata_from_json(&filter.metadata_json, "filter.metadata_json")?;
        let search = validate::validate_search(SearchQuery {
            query: request.query,
            top_k: (request.top_k != 0).then_some(i64::from(request.top_k)),
            mode: SearchMode::from_proto(request.mode)?,
            group_by: SearchGroupBy::from_proto(request.group_by)?,
            vector_weight: request.vector_weight.map(f64::from),
            keyword_weight: request.keyword_weight.map(f64::from),
            filter: SearchFilterQuery {
                document_id: filter.document_id,
                document_ids: filter.document_ids,
                content_types: filter.content_types,
                source_prefix: filter.source_prefix,
                created_after_ms: filter.created_after_unix_ms,
                created_before_ms: filter.created_before_unix_ms,
                updated_after_ms: filter.updated_after_unix_ms,
                updated_before_ms: filter.updated_before_unix_ms,
                metadata: Some(metadata),
            },
            collections: Some(request.collections),
            rerank: request.rerank,
            rerank_candidates: request.rerank_candidates.map(i64::from),
        })?;
        let found = self.core.search(&caller, search).await?;
        Ok(Response::new(SearchResponse {
            results: found.hits.iter().map(|hit| hit.to_proto()).collect(),
            reranked: found.reranked,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let stage = (!request.stage.is_empty()).then(|| core::stage(&request.stage)).transpose()?;
        let limit = validate::list_limit((request.limit != 0).then_some(i64::from(request.limit)))?;
        let stages = self.core.dead_letters(stage, limit).await?;
        Ok(Response::new(ListDeadLettersResponse {
            total: stages.iter().map(|stage| stage.count).sum(),
            stages: stages.iter().map(|stage| stage.to_proto()).collect(),
        }))
    }

    async fn retry_dead_letters(
        &self,
        request: Request<RetryDeadLettersRequest>,
    ) -> Result<Response<RetryDeadLettersResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let stage = core::stage(&request.stage)?;
        if let Some((i, id)) = request.ids.iter().enumerate().find(|(_, id)| !crate::api::is_stream_id(id)) {
            return Err(ApiError::invalid(format!("`ids[{i}]` {id:?} is not a dead-letter entry id")).into());
        }
        let ids = (!request.ids.is_empty()).then_some(request.ids);
        let report = self.core.retry_dead_letters(&caller, stage, ids).await?;
        Ok(Response::new(report.to_proto()))
    }

    /// Deletes in the caller's tenant. The request's `tenant_id` may name another tenant for an
    /// admin key only (PERMISSION_DENIED otherwise); `through_version` is decided here.
    async fn delete_document(
        &self,
        request: Request<DeleteDocumentRequest>,
    ) -> Result<Response<DeleteDocumentResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let chunks_deleted = self.core.delete_document(&caller, Some(&request.tenant_id), &request.document_id).await?;
        Ok(Response::new(DeleteDocumentResponse { deleted: true, chunks_deleted }))
    }

    /// A page of the caller's documents; `tenant_id` may name another tenant for an admin key
    /// only. One collection at most may be named (`collections`), as over HTTP.
    async fn list_documents(
        &self,
        request: Request<ListDocumentsRequest>,
    ) -> Result<Response<ListDocumentsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        if request.collections.len() > 1 {
            return Err(ApiError::invalid("name at most one collection").into());
        }
        let query = core::DocumentQuery {
            collection: request.collections.into_iter().next(),
            document_id_prefix: Some(request.document_id_prefix),
            source_prefix: Some(request.source_prefix),
            cursor: Some(request.cursor),
            limit: Some(request.limit).filter(|limit| *limit > 0),
        };
        let list = self.core.list_documents(&caller, Some(&request.tenant_id), query).await?;
        let tenant_id = core::tenant_for(&caller, Some(&request.tenant_id))?;
        Ok(Response::new(ListDocumentsResponse {
            documents: list
                .documents
                .into_iter()
                .map(|info| Document {
                    tenant_id: tenant_id.clone(),
                    document_id: info.document_id,
                    version: info.version,
                    content_hash: info.content_hash,
                    chunk_count: info.chunk_count,
                    metadata_json: info.metadata.to_string(),
                    source: info.source,
                    content_type: info.content_type,
                    updated_at: info.updated_at,
                    fingerprint: String::new(),
                    collection: info.collection,
                })
                .collect(),
            next_cursor: list.next_cursor.unwrap_or_default(),
        }))
    }

    /// A page of a document's chunks, as `GET /v1/documents/{id}/chunks`; `tenant_id` may name
    /// another tenant for an admin key only, `limit` 0 is the default page.
    async fn list_chunks(
        &self,
        request: Request<ListDocumentChunksRequest>,
    ) -> Result<Response<ListDocumentChunksResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let limit = Some(request.limit).filter(|limit| *limit > 0);
        let list = self
            .core
            .list_chunks(&caller, Some(&request.tenant_id), &request.document_id, Some(request.cursor.as_str()), limit)
            .await?;
        Ok(Response::new(ListDocumentChunksResponse {
            document_id: list.document_id,
            version: list.version,
            collection: list.collection,
            chunks: list
                .chunks
                .into_iter()
                .map(|chunk| DocumentChunk {
                    chunk_index: chunk.chunk_index,
                    text: chunk.text,
                    metadata_json: chunk.metadata.to_string(),
                })
                .collect(),
            next_cursor: list.next_cursor.unwrap_or_default(),
        }))
    }
}
