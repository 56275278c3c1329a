//! Reading one document's chunks a page at a time, in chunk order (keyset pagination on the
//! chunks' primary key: a page costs the same at any depth, and no query embedding is needed
//! as when the console read them through search).

use serde_json::Value;

use super::{MAX_LIST_LIMIT, PgStore, StoreError, check_ids};

/// Which chunks of which document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListChunks {
    pub tenant_id: String,
    pub document_id: String,
    /// Only chunks after this index (the last of the previous page); `None`: from the first.
    pub after_chunk_index: Option<i64>,
    /// The version the previous page was of; `None`: whichever is visible.
    pub version: Option<i64>,
    /// Page size, 1 to [`MAX_LIST_LIMIT`].
    pub limit: usize,
}

/// A chunk as a listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedChunk {
    pub chunk_index: i32,
    pub text: String,
    /// The document's metadata merged with the chunk's, as search returns it.
    pub metadata: Value,
}

/// One page of the visible version's chunks; `more` says whether a next page has anything.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPage {
    pub version: i64,
    pub collection: String,
    pub chunks: Vec<ListedChunk>,
    pub more: bool,
}

/// What a listing found.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkListing {
    /// The tenant has no visible version of the document.
    Missing,
    /// Another version than the one asked for is visible now (the earlier pages were of an
    /// older one, whose chunks are gone).
    VersionChanged {
        visible: i64,
    },
    Page(ChunkPage),
}

impl PgStore {
    /// A page of the chunks of a document's visible version in chunk index order. The document
    /// row and its chunks are read in one statement, so the page and its version agree even
    /// while a new version commits.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT chunks", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "chunks"))]
    pub async fn list_chunks(&self, query: &ListChunks) -> Result<ChunkListing, StoreError> {
        check_ids(&query.tenant_id, &query.document_id)?;
        if query.limit == 0 || query.limit > MAX_LIST_LIMIT {
            return Err(StoreError::InvalidInput(format!("limit must be 1 to {MAX_LIST_LIMIT}")));
        }
        let client = self.pool.get().await?;
        // One row per chunk of the page (the primary key's range after the cursor), or a single
        // row with NULL chunk columns when the document has none left; none when the document
        // is not visible. One more chunk than the page says whether another page follows.
        let statement = client
            .prepare_cached(
                "SELECT d.version, d.collection, c.chunk_index, c.text, d.metadata || c.metadata
                 FROM documents d
                 LEFT JOIN LATERAL (
                     SELECT chunk_index, text, metadata FROM chunks
                     WHERE tenant_id = d.tenant_id AND document_id = d.document_id AND version = d.version
                       AND chunk_index > $3::int8
                     ORDER BY chunk_index
                     LIMIT $4) c ON true
                 WHERE d.tenant_id = $1 AND d.document_id = $2
                 ORDER BY c.chunk_index",
            )
            .await?;
        let after = query.after_chunk_index.unwrap_or(-1);
        let limit = i64::try_from(query.limit + 1).unwrap_or(i64::MAX);
        let rows = client.query(&statement, &[&query.tenant_id, &query.document_id, &after, &limit]).await?;
        let Some(first) = rows.first() else { return Ok(ChunkListing::Missing) };
        let version: i64 = first.try_get(0)?;
        if query.version.is_some_and(|asked| asked != version) {
            return Ok(ChunkListing::VersionChanged { visible: version });
        }
        let collection: String = first.try_get(1)?;
        let mut chunks = Vec::with_capacity(rows.len().min(query.limit));
        for row in &rows {
            let Some(chunk_index) = row.try_get::<_, Option<i32>>(2)? else { continue };
            chunks.push(ListedChunk { chunk_index, text: row.try_get(3)?, metadata: row.try_get(4)? });
        }
        let more = chunks.len() > query.limit;
        chunks.truncate(query.limit);
        Ok(ChunkListing::Page(ChunkPage { version, collection, chunks, more }))
    }
}
