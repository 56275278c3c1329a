//! Chunks and their embeddings in PostgreSQL with pgvector, written so that at-least-once
//! delivery has exactly-once effects.
//!
//! - Chunk rows are keyed by (tenant, document, version, chunk index) and inserted with
//!   `ON CONFLICT DO NOTHING`: a redelivered batch changes nothing.
//! - A document's visible version is its row in `documents`. Search joins chunks on it, so a new
//!   version's chunks can be written while the old version is still being searched.
//! - [`PgStore::commit_version`] switches versions in one transaction, serialised per document by
//!   a transaction-level advisory lock: the newest version wins whatever order commits arrive in,
//!   and the chunks of older versions are deleted (never those of a newer version in flight).
//! - Stale writers cannot undo newer decisions: each chunk row carries the retry generation of the
//!   job attempt that wrote it (a discard deletes only its own generation's rows), and a deleted
//!   document leaves a tombstone below which no version is stored or committed again.
//! - Batches go in with binary COPY into a temporary table and one `INSERT ... SELECT`, a handful
//!   of round trips per batch; the HNSW index insert is the real cost (see DESIGN.md, Storage).
//!   PostgreSQL computes each chunk's `search_text` (a stored generated column) on the way in.
//! - Search (vector, keyword, hybrid) is in `search.rs`; listings of documents and of a
//!   document's chunks are in `list.rs` and `chunks.rs`.

mod chunks;
mod config;
mod error;
mod list;
mod migrate;
mod search;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Pool;
use pgvector::Vector;
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

pub use chunks::{ChunkListing, ChunkPage, ListChunks, ListedChunk};
pub use config::StoreConfig;
pub use error::StoreError;
pub use list::{DEFAULT_LIST_LIMIT, DocumentPage, ListDocuments, MAX_LIST_LIMIT};
pub use search::{ChunkMatch, GroupBy, Highlight, RRF_K, SearchFilter, SearchHit, SearchMode, SearchRequest};

/// Largest `top_k` a search accepts (pgvector's largest `ef_search`).
pub const MAX_TOP_K: usize = 1000;

/// One chunk of one version of a document, with its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    pub tenant_id: String,
    /// The collection of the row's document version (search filters on it in the index scan).
    pub collection: String,
    pub document_id: String,
    pub version: i64,
    pub chunk_index: i32,
    pub text: String,
    pub content_hash: String,
    /// A JSON object (null is stored as `{}`).
    pub metadata: Value,
    pub embedding: Vec<f32>,
    /// The retry generation of the job attempt that stored the row (0 before any retry).
    pub generation: i64,
}

/// A version of a document whose chunks are all stored, to be made visible.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentVersion {
    pub tenant_id: String,
    /// A version may move the document to another collection.
    pub collection: String,
    pub document_id: String,
    pub version: i64,
    pub content_hash: String,
    pub chunk_count: i32,
    /// A JSON object (null is stored as `{}`).
    pub metadata: Value,
    pub source: String,
    pub content_type: String,
    /// What produced this version (see the `documents.fingerprint` column).
    pub fingerprint: String,
}

/// What [`PgStore::commit_version`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The committed version is the visible one after the call (also when it already was, so a
    /// repeated commit answers the same). False when a newer version was already visible; this
    /// version's chunks were then deleted.
    pub switched: bool,
    /// The version visible before the call, if the document existed.
    pub previous_version: Option<i64>,
    /// The version visible after the call.
    pub current_version: i64,
    /// Chunk rows deleted (of versions older than the current one).
    pub deleted_chunks: u64,
    /// The document was deleted after this version was submitted: it was not made visible and
    /// its chunks were deleted.
    pub document_deleted: bool,
}

/// A document's visible version, and when it was made visible.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRecord {
    pub document: DocumentVersion,
    /// Milliseconds since the Unix epoch of the last commit.
    pub updated_at_unix_ms: i64,
}

/// What the visible version holds for a chunk, found by its content hash.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    pub content_hash: String,
    /// The chunk's stored metadata (extracted fields and positions).
    pub metadata: Value,
    pub embedding: Vec<f32>,
}

/// The pgvector store. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: Arc<StoreConfig>,
    /// Whether pgvector supports `hnsw.iterative_scan` (learnt while migrating).
    iterative_scan: Arc<AtomicBool>,
    /// Lexemes too common to scan for (see `search.rs`).
    common_lexemes: Arc<search::CommonLexemes>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("config", &self.config).field("pool", &self.pool.status()).finish()
    }
}

/// Columns copied into the staging table, in order (see `upsert_chunks`).
const COPY_COLUMNS: &str =
    "tenant_id, document_id, version, chunk_index, text, content_hash, metadata, embedding, generation, collection";

impl PgStore {
    /// Validates the config, builds the pool and applies the migrations (idempotent, safe to run
    /// from several replicas at once). Fails if the schema holds another embedding dimension.
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let pool = millrace_common::postgres::pool(
            "MILLRACE_DATABASE_URL",
            &config.database_url,
            &config.database_tls,
            config.pool_size,
            config.pool_timeout,
        )
        .map_err(|err| StoreError::Config(err.to_string()))?;
        let store = Self {
            pool,
            config: Arc::new(config.clone()),
            iterative_scan: Arc::new(AtomicBool::new(false)),
            common_lexemes: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations and checks the schema against the configuration (done by
    /// `connect`; idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let info = migrate::migrate(&self.config).await?;
        self.iterative_scan.store(info.iterative_scan, Ordering::Relaxed);
        Ok(())
    }

    /// The embedding dimension this store holds.
    pub fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    /// Readiness: a pooled connection answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Stores chunk rows; rows whose key exists are left as they are, so a redelivered batch
    /// changes nothing, except that a newer generation (a dead-letter retry storing the batch
    /// again) takes the rows over. Rows of a version older than the document's visible one
    /// (a late redelivery after a newer version was committed) or of a deleted version are
    /// skipped. Returns the rows inserted or taken over.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "INSERT chunks", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "chunks", millrace.rows = rows.len()))]
    pub async fn upsert_chunks(&self, rows: &[ChunkRow]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        for row in rows {
            check_ids(&row.tenant_id, &row.document_id)?;
            self.check_vector(&row.embedding)?;
            check_object(&row.metadata, "chunk metadata")?;
        }
        let mut client = self.pool.get().await?;
        // The vector type's OID differs per database; the cached statement learns it once per connection.
        let vector_type = client
            .prepare_cached("SELECT NULL::vector")
            .await?
            .columns()
            .first()
            .map(|c| c.type_().clone())
            .ok_or_else(|| StoreError::Schema("cannot resolve the vector type".to_owned()))?;
        let tx = client.transaction().await?;
        // Shared with other writers of the document's batches, exclusive against its commits,
        // discards and deletes: a delete cannot slip between this statement's snapshot and its
        // insert, which would leave rows below the tombstone.
        let mut documents: Vec<(&str, &str)> =
            rows.iter().map(|row| (row.tenant_id.as_str(), row.document_id.as_str())).collect();
        documents.sort_unstable();
        documents.dedup();
        for (tenant_id, document_id) in documents {
            lock_document(&tx, tenant_id, document_id, DocumentLock::Shared).await?;
        }
        tx.batch_execute("CREATE TEMP TABLE millrace_chunks_in (LIKE chunks) ON COMMIT DROP").await?;
        let sink = tx.copy_in(&format!("COPY millrace_chunks_in ({COPY_COLUMNS}) FROM STDIN (FORMAT binary)")).await?;
        let types = [
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT4,
            Type::TEXT,
            Type::TEXT,
            Type::JSONB,
            vector_type,
            Type::INT8,
            Type::TEXT,
        ];
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
        for row in rows {
            let embedding = Vector::from(row.embedding.clone());
            let metadata = object_or_empty(&row.metadata);
            let values: [&(dyn ToSql + Sync); 10] = [
                &row.tenant_id,
                &row.document_id,
                &row.version,
                &row.chunk_index,
                &row.text,
                &row.content_hash,
                &metadata,
                &embedding,
                &row.generation,
                &row.collection,
            ];
            writer.as_mut().write(&values).await?;
        }
        writer.finish().await?;
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO chunks ({COPY_COLUMNS})
                     SELECT {COPY_COLUMNS} FROM millrace_chunks_in t
                     WHERE NOT EXISTS (
                         SELECT 1 FROM documents d
                         WHERE d.tenant_id = t.tenant_id AND d.document_id = t.document_id AND d.version > t.version)
                     AND NOT EXISTS (
                         SELECT 1 FROM document_tombstones x
                         WHERE x.tenant_id = t.tenant_id AND x.document_id = t.document_id
                           AND x.deleted_through >= t.version)
                     ORDER BY tenant_id, document_id, version, chunk_index
                     ON CONFLICT (tenant_id, document_id, version, chunk_index) DO UPDATE
                         SET generation = EXCLUDED.generation
                         WHERE chunks.generation < EXCLUDED.generation"
                ),
                &[],
            )
            .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Makes `doc.version` the visible version if it is newer than the visible one, and deletes
    /// the chunks of every older version; if a newer version is visible, or the document was
    /// deleted after this version was submitted (its tombstone covers it), this version's chunks
    /// are deleted instead. Chunks of newer versions still being written are left alone
    /// (deleting them would make that version visible without chunks when it commits). One
    /// transaction; repeating it changes nothing.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "INSERT documents", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "documents"))]
    pub async fn commit_version(&self, doc: &DocumentVersion) -> Result<CommitOutcome, StoreError> {
        check_ids(&doc.tenant_id, &doc.document_id)?;
        check_object(&doc.metadata, "document metadata")?;
        let metadata = object_or_empty(&doc.metadata);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_document(&tx, &doc.tenant_id, &doc.document_id, DocumentLock::Exclusive).await?;
        let deleted_through: Option<i64> = tx
            .query_opt(
                "SELECT deleted_through FROM document_tombstones WHERE tenant_id = $1 AND document_id = $2",
                &[&doc.tenant_id, &doc.document_id],
            )
            .await?
            .map(|r| r.get(0));
        if deleted_through.is_some_and(|through| through >= doc.version) {
            let deleted_chunks = tx
                .execute(
                    "DELETE FROM chunks WHERE tenant_id = $1 AND document_id = $2 AND version = $3",
                    &[&doc.tenant_id, &doc.document_id, &doc.version],
                )
                .await?;
            tx.commit().await?;
            return Ok(CommitOutcome {
                switched: false,
                previous_version: None,
                current_version: 0,
                deleted_chunks,
                document_deleted: true,
            });
        }
        let previous_version: Option<i64> = tx
            .query_opt(
                "SELECT version FROM documents WHERE tenant_id = $1 AND document_id = $2",
                &[&doc.tenant_id, &doc.document_id],
            )
            .await?
            .map(|r| r.get(0));
        let current_version = match previous_version {
            Some(previous) if previous >= doc.version => previous,
            _ => {
                tx.execute(
                    "INSERT INTO documents
                         (tenant_id, document_id, version, content_hash, chunk_count, metadata, source, content_type,
                          fingerprint, collection, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
                     ON CONFLICT (tenant_id, document_id) DO UPDATE SET
                         version = EXCLUDED.version, content_hash = EXCLUDED.content_hash,
                         chunk_count = EXCLUDED.chunk_count, metadata = EXCLUDED.metadata,
                         source = EXCLUDED.source, content_type = EXCLUDED.content_type,
                         fingerprint = EXCLUDED.fingerprint, collection = EXCLUDED.collection, updated_at = now()
                     WHERE documents.version < EXCLUDED.version",
                    &[
                        &doc.tenant_id,
                        &doc.document_id,
                        &doc.version,
                        &doc.content_hash,
                        &doc.chunk_count,
                        &metadata,
                        &doc.source,
                        &doc.content_type,
                        &doc.fingerprint,
                        &doc.collection,
                    ],
                )
                .await?;
                doc.version
            }
        };
        let deleted_chunks = tx
            .execute(
                "DELETE FROM chunks WHERE tenant_id = $1 AND document_id = $2 AND version < $3",
                &[&doc.tenant_id, &doc.document_id, &current_version],
            )
            .await?;
        tx.commit().await?;
        Ok(CommitOutcome {
            switched: current_version == doc.version,
            previous_version,
            current_version,
            deleted_chunks,
            document_deleted: false,
        })
    }

    /// Deletes the chunks of `version` written by job attempts up to `generation`, unless it is
    /// the visible version (for cancelled or failed jobs). Rows a later attempt (a dead-letter
    /// retry) stored or took over stay. Returns the rows deleted.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "DELETE chunks", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "DELETE", db.collection.name = "chunks"))]
    pub async fn discard_version(
        &self,
        tenant_id: &str,
        document_id: &str,
        version: i64,
        generation: i64,
    ) -> Result<u64, StoreError> {
        check_ids(tenant_id, document_id)?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_document(&tx, tenant_id, document_id, DocumentLock::Exclusive).await?;
        let deleted = tx
            .execute(
                "DELETE FROM chunks c WHERE c.tenant_id = $1 AND c.document_id = $2 AND c.version = $3
                 AND c.generation <= $4
                 AND NOT EXISTS (SELECT 1 FROM documents d
                                 WHERE d.tenant_id = $1 AND d.document_id = $2 AND d.version = $3)",
                &[&tenant_id, &document_id, &version, &generation],
            )
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// The visible version of a document.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT documents", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "documents"))]
    pub async fn get_document(&self, tenant_id: &str, document_id: &str) -> Result<Option<DocumentRecord>, StoreError> {
        check_ids(tenant_id, document_id)?;
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE tenant_id = $1 AND document_id = $2"
            ))
            .await?;
        let Some(row) = client.query_opt(&statement, &[&tenant_id, &document_id]).await? else { return Ok(None) };
        Ok(Some(document_record(&row)?))
    }

    /// Deletes a document's versions up to `through_version` (the last one submitted before the
    /// delete; 0: every version stored now) and their chunks, and leaves a tombstone so that no
    /// such version is stored or made visible later by a job still running. Versions submitted
    /// after the delete are untouched. One transaction. `None` if no visible version was
    /// deleted (chunks of unfinished versions are deleted all the same).
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "DELETE documents", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "DELETE", db.collection.name = "documents"))]
    pub async fn delete_document(
        &self,
        tenant_id: &str,
        document_id: &str,
        through_version: i64,
    ) -> Result<Option<u64>, StoreError> {
        check_ids(tenant_id, document_id)?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_document(&tx, tenant_id, document_id, DocumentLock::Exclusive).await?;
        let through: i64 = if through_version > 0 {
            through_version
        } else {
            tx.query_one(
                "SELECT GREATEST(
                     (SELECT max(version) FROM documents WHERE tenant_id = $1 AND document_id = $2),
                     (SELECT max(version) FROM chunks WHERE tenant_id = $1 AND document_id = $2), 0)",
                &[&tenant_id, &document_id],
            )
            .await?
            .get(0)
        };
        let existed = tx
            .execute(
                "DELETE FROM documents WHERE tenant_id = $1 AND document_id = $2 AND version <= $3",
                &[&tenant_id, &document_id, &through],
            )
            .await?
            > 0;
        let chunks = tx
            .execute(
                "DELETE FROM chunks WHERE tenant_id = $1 AND document_id = $2 AND version <= $3",
                &[&tenant_id, &document_id, &through],
            )
            .await?;
        tx.execute(
            "INSERT INTO document_tombstones (tenant_id, document_id, deleted_through) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, document_id) DO UPDATE
                 SET deleted_through = GREATEST(document_tombstones.deleted_through, EXCLUDED.deleted_through),
                     deleted_at = now()",
            &[&tenant_id, &document_id, &through],
        )
        .await?;
        tx.commit().await?;
        Ok(existed.then_some(chunks))
    }

    /// What the visible version of a document holds for the chunks with these content hashes
    /// (the first chunk of each hash), for incremental re-ingestion: the visible version (0 if
    /// none) and the matches, in no particular order.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT chunks", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "chunks"))]
    pub async fn stored_chunks(
        &self,
        tenant_id: &str,
        document_id: &str,
        content_hashes: &[String],
    ) -> Result<(i64, Vec<StoredChunk>), StoreError> {
        check_ids(tenant_id, document_id)?;
        let client = self.pool.get().await?;
        let version: Option<i64> = client
            .query_opt(
                &client
                    .prepare_cached("SELECT version FROM documents WHERE tenant_id = $1 AND document_id = $2")
                    .await?,
                &[&tenant_id, &document_id],
            )
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let Some(version) = version else { return Ok((0, Vec::new())) };
        if content_hashes.is_empty() {
            return Ok((version, Vec::new()));
        }
        let statement = client
            .prepare_cached(
                "SELECT DISTINCT ON (content_hash) content_hash, metadata, embedding
                 FROM chunks
                 WHERE tenant_id = $1 AND document_id = $2 AND version = $3 AND content_hash = ANY($4)
                 ORDER BY content_hash, chunk_index",
            )
            .await?;
        let rows = client.query(&statement, &[&tenant_id, &document_id, &version, &content_hashes]).await?;
        let chunks = rows
            .iter()
            .map(|row| {
                let embedding: Vector = row.try_get(2)?;
                Ok(StoredChunk {
                    content_hash: row.try_get(0)?,
                    metadata: row.try_get(1)?,
                    embedding: embedding.to_vec(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((version, chunks))
    }

    fn check_vector(&self, v: &[f32]) -> Result<(), StoreError> {
        if v.len() != self.config.dimensions {
            return Err(StoreError::DimensionMismatch { expected: self.config.dimensions, got: v.len() });
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(StoreError::InvalidInput("embedding contains NaN or infinity".to_owned()));
        }
        Ok(())
    }
}

/// How a transaction holds a document's advisory lock.
#[derive(Clone, Copy)]
enum DocumentLock {
    /// Commits, discards and deletes: one at a time (also a document's first insert, which a
    /// row lock could not cover).
    Exclusive,
    /// Batch writers: side by side, but never during a commit, discard or delete.
    Shared,
}

/// Takes the document's lock, released at the end of the transaction.
async fn lock_document(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant_id: &str,
    document_id: &str,
    mode: DocumentLock,
) -> Result<(), StoreError> {
    let sql = match mode {
        DocumentLock::Exclusive => "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
        DocumentLock::Shared => "SELECT pg_advisory_xact_lock_shared(hashtext($1), hashtext($2))",
    };
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(&statement, &[&tenant_id, &document_id]).await?;
    Ok(())
}

fn check_ids(tenant_id: &str, document_id: &str) -> Result<(), StoreError> {
    if tenant_id.is_empty() || document_id.is_empty() {
        return Err(StoreError::InvalidInput("tenant_id and document_id must not be empty".to_owned()));
    }
    Ok(())
}

fn check_object(value: &Value, what: &str) -> Result<(), StoreError> {
    if value.is_object() || value.is_null() {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(format!("{what} must be a JSON object")))
    }
}

fn object_or_empty(value: &Value) -> Value {
    if value.is_null() { Value::Object(serde_json::Map::new()) } else { value.clone() }
}

/// A hit's score for JSON: pgvector's cosine distance to a zero vector (a query the hashing
/// embedder finds no token in) is NaN, which JSON has no number for (serde writes `null`, which
/// the API's schema refuses; schemathesis found it). Such a query is similar to nothing: 0.
fn finite_score(score: Option<f64>) -> f32 {
    score.filter(|s| s.is_finite()).map_or(0.0, |s| s as f32)
}

/// The `documents` columns [`document_record`] reads, in its order.
pub(crate) const DOCUMENT_COLUMNS: &str = "tenant_id, document_id, version, content_hash, chunk_count, metadata, \
     source, content_type, fingerprint, (extract(epoch FROM updated_at) * 1000)::bigint, collection";

/// A document's row, selected as [`DOCUMENT_COLUMNS`].
pub(crate) fn document_record(row: &tokio_postgres::Row) -> Result<DocumentRecord, tokio_postgres::Error> {
    let document = DocumentVersion {
        tenant_id: row.try_get(0)?,
        document_id: row.try_get(1)?,
        version: row.try_get(2)?,
        content_hash: row.try_get(3)?,
        chunk_count: row.try_get(4)?,
        metadata: row.try_get(5)?,
        source: row.try_get(6)?,
        content_type: row.try_get(7)?,
        fingerprint: row.try_get(8)?,
        collection: row.try_get(10)?,
    };
    Ok(DocumentRecord { document, updated_at_unix_ms: row.try_get(9)? })
}

#[cfg(test)]
mod score_tests {
    use super::finite_score;

    #[test]
    fn a_score_is_always_a_json_number() {
        assert_eq!(finite_score(Some(f64::NAN)), 0.0);
        assert_eq!(finite_score(None), 0.0);
        assert_eq!(finite_score(Some(0.5)), 0.5);
    }
}
