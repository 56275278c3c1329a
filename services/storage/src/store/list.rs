//! Listing a tenant's documents a page at a time, by document id (keyset pagination on the
//! primary key, so a page costs the same at any depth and a document added or removed between
//! pages moves nothing else).

use super::{DOCUMENT_COLUMNS, DocumentRecord, PgStore, StoreError, document_record};

/// Documents per page unless asked otherwise, and at most.
pub const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 1000;

/// Which documents, from where.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListDocuments {
    pub tenant_id: String,
    /// Only these collections; empty: any.
    pub collections: Vec<String>,
    /// Only ids starting with this; empty: any.
    pub document_id_prefix: String,
    /// Only sources starting with this; empty: any.
    pub source_prefix: String,
    /// Only ids after this one (the last of the previous page); empty: from the first.
    pub after: String,
    /// Page size, 1 to [`MAX_LIST_LIMIT`].
    pub limit: usize,
}

/// One page; `more` says whether a next page has anything.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentPage {
    pub documents: Vec<DocumentRecord>,
    pub more: bool,
}

impl PgStore {
    /// A page of the tenant's documents in id order (byte order, whatever the database's
    /// collation, so that the cursor means the same to every reader).
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT documents", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "documents"))]
    pub async fn list_documents(&self, query: &ListDocuments) -> Result<DocumentPage, StoreError> {
        if query.tenant_id.is_empty() {
            return Err(StoreError::InvalidInput("tenant_id must not be empty".to_owned()));
        }
        if query.limit == 0 || query.limit > MAX_LIST_LIMIT {
            return Err(StoreError::InvalidInput(format!("limit must be 1 to {MAX_LIST_LIMIT}")));
        }
        let client = self.pool.get().await?;
        // The cursor is a range of `documents_by_id_bytes` (migration 6), read in its order;
        // one more row than the page says whether another page follows.
        let statement = client
            .prepare_cached(&format!(
                "SELECT {DOCUMENT_COLUMNS}
                 FROM documents
                 WHERE tenant_id = $1
                   AND (cardinality($2::text[]) = 0 OR collection = ANY($2))
                   AND starts_with(document_id, $3)
                   AND starts_with(source, $4)
                   AND document_id COLLATE \"C\" > $5 COLLATE \"C\"
                 ORDER BY document_id COLLATE \"C\"
                 LIMIT $6"
            ))
            .await?;
        let limit = i64::try_from(query.limit + 1).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &statement,
                &[
                    &query.tenant_id,
                    &query.collections,
                    &query.document_id_prefix,
                    &query.source_prefix,
                    &query.after,
                    &limit,
                ],
            )
            .await?;
        let more = rows.len() > query.limit;
        let documents = rows
            .iter()
            .take(query.limit)
            .map(|row| {
                // The listing does not show what decides an unchanged resubmission.
                let mut record = document_record(row)?;
                record.document.fingerprint.clear();
                Ok(record)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(DocumentPage { documents, more })
    }
}
