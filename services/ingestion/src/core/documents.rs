//! Documents, through the storage service: reading the visible version, and deleting a document
//! with its running jobs.

use millrace_common::ApiError;
use millrace_proto::v1::{DeleteDocumentRequest, GetDocumentRequest};
use serde::Serialize;

use super::{Core, downstream, json_object, store_error};
use crate::validate;

#[derive(Debug, Clone, Serialize)]
pub struct DocumentInfo {
    pub document_id: String,
    pub version: u64,
    pub chunk_count: u32,
    pub content_hash: String,
    pub metadata: serde_json::Value,
    pub source: String,
    pub content_type: String,
    pub updated_at: String,
}

impl Core {
    pub async fn get_document(&self, document_id: &str) -> Result<DocumentInfo, ApiError> {
        validate::validate_document_id(document_id).map_err(|_| unknown_document(document_id))?;
        let document = self
            .storage
            .clone()
            .get_document(GetDocumentRequest {
                tenant_id: self.config.tenant_id.clone(),
                document_id: document_id.to_owned(),
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::NotFound => unknown_document(document_id),
                _ => downstream("storage", status),
            })?
            .into_inner();
        Ok(DocumentInfo {
            metadata: json_object(&document.metadata_json),
            document_id: document.document_id,
            version: document.version,
            chunk_count: document.chunk_count,
            content_hash: document.content_hash,
            source: document.source,
            content_type: document.content_type,
            updated_at: document.updated_at,
        })
    }

    /// Deletes a document: its visible version, the chunks of every version submitted so far,
    /// and its jobs still running, which end cancelled. Storage keeps a tombstone up to the last
    /// version submitted before the delete, so a job that is already past the cancel check
    /// cannot bring the document back; a submission after the delete is a new document.
    /// Returns how many chunks went; a 404 when there was neither a visible version nor a job
    /// still running.
    pub async fn delete_document(&self, document_id: &str) -> Result<u32, ApiError> {
        validate::validate_document_id(document_id).map_err(|_| unknown_document(document_id))?;
        let tenant_id = self.config.tenant_id.clone();
        let through_version = self.jobs.latest_version(&tenant_id, document_id).await.map_err(store_error)?;
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
        tracing::info!(document_id, chunks_deleted, jobs_cancelled = cancelled, through_version, "document deleted");
        Ok(chunks_deleted)
    }
}

fn unknown_document(document_id: &str) -> ApiError {
    ApiError::not_found(format!("no document {document_id:?}"))
}
