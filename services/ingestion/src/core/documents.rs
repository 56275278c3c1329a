//! Documents, through the storage service: reading the visible version (and its chunks, a page
//! at a time), and deleting a document with its running jobs. All act in the caller's tenant (an
//! admin may name another); a document of another tenant, or of a collection the key may not
//! use, is the same 404 as a missing one.

use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_proto::v1::{
    DeleteDocumentRequest, Document, GetDocumentRequest, ListChunksRequest, ListDocumentsRequest,
};
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

/// Chunks per page of a document's chunk listing unless asked otherwise, and at most.
pub const DEFAULT_CHUNK_LIMIT: u32 = 100;
pub const MAX_CHUNK_LIMIT: u32 = 500;

/// A chunk of a document's visible version, as `GET /v1/documents/{id}/chunks` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkInfo {
    pub chunk_index: u32,
    pub text: String,
    /// The document's metadata merged with the chunk's, as a search result's.
    pub metadata: serde_json::Value,
}

/// A page of a document's chunks; `next_cursor` is null on the last page.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkList {
    pub document_id: String,
    pub version: u64,
    pub collection: String,
    pub chunks: Vec<ChunkInfo>,
    pub next_cursor: Option<String>,
}

/// Where the next page of a chunk listing starts: after chunk `after` of `version`. Written as
/// `{version}-{after}` (digits only, so that the OpenAPI pattern says exactly which cursors are
/// accepted); the version keeps a listing from running on into another version's chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCursor {
    pub version: u64,
    pub after: u32,
}

impl ChunkCursor {
    pub fn encode(self) -> String {
        format!("{}-{}", self.version, self.after)
    }

    /// Any string of the documented shape (`^[1-9][0-9]{0,17}-[0-9]{1,10}$`) is a position,
    /// whether or not this API gave it: an index past every chunk is past the end.
    pub fn decode(text: &str) -> Option<Self> {
        let (version, after) = text.split_once('-')?;
        let digits =
            |part: &str, max: usize| !part.is_empty() && part.len() <= max && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(version, 18) || version.starts_with('0') || !digits(after, 10) {
            return None;
        }
        let after: u64 = after.parse().ok()?;
        Some(Self { version: version.parse().ok()?, after: u32::try_from(after).unwrap_or(u32::MAX) })
    }
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

    /// A page of the chunks of a document's visible version, in chunk order. A cursor of a
    /// version that is no longer visible is a 409 (the pages would mix two versions); a
    /// document missing, of another tenant or of a collection the key may not use is a 404.
    pub async fn list_chunks(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        document_id: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ChunkList, ApiError> {
        let tenant_id = tenant_for(caller, tenant)?;
        let limit = limit.unwrap_or(DEFAULT_CHUNK_LIMIT);
        if !(1..=MAX_CHUNK_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!("`limit` must be 1 to {MAX_CHUNK_LIMIT}")));
        }
        let cursor = match cursor.filter(|cursor| !cursor.is_empty()) {
            None => None,
            Some(text) => Some(ChunkCursor::decode(text).ok_or_else(|| {
                ApiError::invalid("`cursor` is not a chunk cursor (pass a page's `next_cursor` as it is)")
            })?),
        };
        validate::validate_document_id(document_id).map_err(|_| unknown_document(document_id))?;
        let request = ListChunksRequest {
            tenant_id: tenant_id.clone(),
            document_id: document_id.to_owned(),
            after_chunk_index: cursor.map(|cursor| cursor.after),
            version: cursor.map_or(0, |cursor| cursor.version),
            limit,
        };
        let page = match self.storage.clone().list_chunks(request).await {
            Ok(page) => page.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Err(unknown_document(document_id)),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                // Only to a key that may see the document: for others it is missing.
                if caller.collections.is_some() {
                    let visible = self.stored_document(&tenant_id, document_id).await?;
                    if !visible.is_some_and(|document| caller.may_use(&document.collection)) {
                        return Err(unknown_document(document_id));
                    }
                }
                return Err(ApiError::conflict(format!(
                    "document {document_id:?} has a new version since this cursor: list its chunks again from \
                     the first page (without `cursor`)"
                )));
            }
            Err(status) => return Err(downstream("storage", status)),
        };
        if !caller.may_use(&page.collection) {
            return Err(unknown_document(document_id));
        }
        let next_cursor =
            page.next_after_chunk_index.map(|after| ChunkCursor { version: page.version, after }.encode());
        Ok(ChunkList {
            document_id: document_id.to_owned(),
            version: page.version,
            collection: page.collection,
            chunks: page
                .chunks
                .into_iter()
                .map(|chunk| ChunkInfo {
                    metadata: json_object(&chunk.metadata_json),
                    chunk_index: chunk.chunk_index,
                    text: chunk.text,
                })
                .collect(),
            next_cursor,
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

#[cfg(test)]
mod tests {
    use super::ChunkCursor;

    #[test]
    fn a_chunk_cursor_is_exactly_the_documented_shape() {
        let cursor = ChunkCursor { version: 7, after: 99 };
        assert_eq!(cursor.encode(), "7-99");
        assert_eq!(ChunkCursor::decode("7-99"), Some(cursor));
        assert_eq!(ChunkCursor::decode("7-0099"), Some(cursor));
        assert_eq!(
            ChunkCursor::decode("999999999999999999-9999999999"),
            Some(ChunkCursor { version: 999_999_999_999_999_999, after: u32::MAX })
        );
        for bad in [
            "",
            "7",
            "7-",
            "-9",
            "07-9",
            "0-9",
            "7-9-",
            "7--9",
            "+7-9",
            "7-+9",
            "1234567890123456789-1",
            "7-12345678901",
            "7-9 ",
            "٣-9",
        ] {
            assert_eq!(ChunkCursor::decode(bad), None, "{bad:?}");
        }
    }
}
