//! Documents, through the storage service: reading the visible version, and deleting a document
//! with its running jobs. Both act in the caller's tenant (an admin may name another); a document
//! of another tenant, or of a collection the key may not use, is the same 404 as a missing one.

use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_proto::v1::{DeleteDocumentRequest, Document, GetDocumentRequest, ListDocumentsRequest};
use serde::Serialize;

use super::{Core, downstream, json_object, store_error, tenant_for};
use crate::validate;

#[derive(Debug, Clone, Serialize)]
pub struct DocumentInfo {
    pub document_id: String,
    pub collection: String,
    pub version: u64,
    pub chunk_count: u32,
    pub content_hash: String,
    pub metadata: serde_json::Value,
    pub source: String,
    pub content_type: String,
    pub updated_at: String,
}

impl From<Document> for DocumentInfo {
    fn from(document: Document) -> Self {
        Self {
            metadata: json_object(&document.metadata_json),
            document_id: document.document_id,
            collection: document.collection,
            version: document.version,
            chunk_count: document.chunk_count,
            content_hash: document.content_hash,
            source: document.source,
            content_type: document.content_type,
            updated_at: document.updated_at,
        }
    }
}

/// Documents per page of a listing unless asked otherwise, and at most.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
pub const MAX_LIST_LIMIT: u32 = 1000;

/// What a listing asks for (`GET /v1/documents`' query, gRPC `ListDocuments`).
#[derive(Debug, Clone, Default)]
pub struct DocumentQuery {
    pub collection: Option<String>,
    /// Only documents whose id starts with this.
    pub document_id_prefix: Option<String>,
    /// Only documents whose source starts with this.
    pub source_prefix: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// A page of documents; `next_cursor` is absent on the last page.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentList {
    pub documents: Vec<DocumentInfo>,
    pub next_cursor: Option<String>,
}

impl Core {
    pub async fn get_document(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        document_id: &str,
    ) -> Result<DocumentInfo, ApiError> {
        let tenant_id = tenant_for(caller, tenant)?;
        validate::validate_document_id(document_id).map_err(|_| unknown_document(document_id))?;
        let document = self
            .stored_document(&tenant_id, document_id)
            .await?
            .filter(|document| caller.may_use(&document.collection))
            .ok_or_else(|| unknown_document(document_id))?;
        Ok(DocumentInfo::from(document))
    }

    /// A page of the tenant's documents in id order, limited to the collections the key may
    /// use (a named collection it may not use is a 403, as for search).
    pub async fn list_documents(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        query: DocumentQuery,
    ) -> Result<DocumentList, ApiError> {
        let tenant_id = tenant_for(caller, tenant)?;
        let collections = match query.collection.filter(|collection| !collection.is_empty()) {
            Some(collection) if caller.may_use(&collection) => vec![collection],
            Some(collection) => {
                return Err(ApiError::permission_denied(format!("this key may not use collection {collection:?}")));
            }
            None => caller.collections.clone().unwrap_or_default(),
        };
        let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!("`limit` must be 1 to {MAX_LIST_LIMIT}")));
        }
        let request = ListDocumentsRequest {
            tenant_id,
            collections,
            document_id_prefix: query.document_id_prefix.unwrap_or_default(),
            source_prefix: query.source_prefix.unwrap_or_default(),
            cursor: query.cursor.unwrap_or_default(),
            limit,
        };
        let page =
            self.storage.clone().list_documents(request).await.map_err(|status| downstream("storage", status))?;
        let page = page.into_inner();
        Ok(DocumentList {
            documents: page.documents.into_iter().map(DocumentInfo::from).collect(),
            next_cursor: Some(page.next_cursor).filter(|cursor| !cursor.is_empty()),
        })
    }

    /// The visible version of a document of `tenant_id`, if there is one.
    pub(super) async fn stored_document(
        &self,
        tenant_id: &str,
        document_id: &str,
    ) -> Result<Option<Document>, ApiError> {
        let request = GetDocumentRequest { tenant_id: tenant_id.to_owned(), document_id: document_id.to_owned() };
        match self.storage.clone().get_document(request).await {
            Ok(found) => Ok(Some(found.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(downstream("storage", status)),
        }
    }

    /// Deletes a document: its visible version, the chunks of every version submitted so far,
    /// and its jobs still running, which end cancelled. Storage keeps a tombstone up to the last
    /// version submitted before the delete, so a job that is already past the cancel check
    /// cannot bring the document back; a submission after the delete is a new document.
    /// Returns how many chunks went; a 404 when there was neither a visible version nor a job
    /// still running, or when the key may not use the collection of either.
    pub async fn delete_document(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        document_id: &str,
    ) -> Result<u32, ApiError> {
        let tenant_id = tenant_for(caller, tenant)?;
        validate::validate_document_id(document_id).map_err(|_| unknown_document(document_id))?;
        let through_version = self.jobs.latest_version(&tenant_id, document_id).await.map_err(store_error)?;
        if caller.collections.is_some() {
            // A key limited to some collections deletes only what lies in them: the visible
            // version and every job that would be cancelled.
            let visible = self.stored_document(&tenant_id, document_id).await?;
            let jobs = self.jobs.document_jobs(&tenant_id, document_id, through_version).await.map_err(store_error)?;
            let foreign = visible.iter().any(|document| !caller.may_use(&document.collection))
                || jobs.iter().any(|job| !job.status.is_terminal() && !caller.may_use(&job.collection));
            if foreign {
                return Err(unknown_document(document_id));
            }
        }
        let deleted = self
            .storage
            .clone()
            .delete_document(DeleteDocumentRequest {
                tenant_id: tenant_id.clone(),
                document_id: document_id.to_owned(),
                through_version,
            })
            .await
            .map(|response| Some(response.into_inner()).filter(|response| response.deleted))
            .or_else(|status| match status.code() {
                tonic::Code::NotFound => Ok(None),
                _ => Err(downstream("storage", status)),
            })?;
        let cancelled = self
            .jobs
            .cancel_document_jobs(&tenant_id, document_id, through_version, "the document was deleted")
            .await
            .map_err(store_error)?;
        if deleted.is_none() && cancelled == 0 {
            return Err(unknown_document(document_id));
        }
        let chunks_deleted = deleted.map_or(0, |response| response.chunks_deleted);
        let detail = serde_json::json!({
            "chunks_deleted": chunks_deleted,
            "jobs_cancelled": cancelled,
            "through_version": through_version,
        });
        self.audit.record(caller, "document.deleted", &tenant_id, document_id, detail).await;
        tracing::info!(document_id, tenant = %tenant_id, key_id = %caller.key_id, chunks_deleted, jobs_cancelled = cancelled, through_version, "document deleted");
        Ok(chunks_deleted)
    }
}

/// The answer for a document that is missing or not the caller's: always the same.
fn unknown_document(document_id: &str) -> ApiError {
    ApiError::not_found(format!("no document {document_id:?}"))
}
