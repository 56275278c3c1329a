//! Search: a vector retriever (the HNSW index) and a keyword retriever (PostgreSQL full text over
//! `chunks.search_text`, a GIN index), fused by weighted reciprocal rank fusion, then grouped by
//! document or not, then the returned chunks' text, metadata and highlights fetched.
//!
//! - Every filter is a condition of the retrievers' own scans (the HNSW scan with pgvector's
//!   iterative scan keeps going until enough rows pass them; the GIN bitmap scan sees them as
//!   it goes), never a filter over a first page of results: a selective filter still gets top_k.
//! - Each retriever takes a candidate pool larger than top_k (several chunks may belong to one
//!   document, and fusion needs both rankings to overlap); the two run side by side on two
//!   pooled connections, and fusion and grouping are a few hundred rows of Rust.
//! - Highlights come from `ts_headline` with `HighlightAll` and two private-use marker characters
//!   parsed out here: PostgreSQL's own parser and stemmers decide what matched, so highlights
//!   agree with what the keyword retriever found.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, Instant};

use pgvector::Vector;
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::{MAX_TOP_K, PgStore, StoreError, finite_score};

/// Reciprocal rank fusion's constant: a result at rank r adds weight / (RRF_K + r).
pub const RRF_K: f64 = 60.0;

/// A lexeme in more than this share of all chunks is left out of the broad keyword query's scan.
const COMMON_LEXEME_SHARE: f32 = 0.05;

/// How long the common lexemes are reused before they are read again.
const COMMON_LEXEMES_TTL: Duration = Duration::from_secs(60);

/// The common lexemes and when they were read (see `PgStore::common_lexemes`).
pub(crate) type CommonLexemes = std::sync::Mutex<Option<(Instant, Arc<Vec<String>>)>>;

/// Largest candidate pool a retriever takes (pgvector's largest `ef_search`).
const MAX_POOL: usize = 1000;

/// Marks the start and end of a match in `ts_headline`'s output (Unicode private use characters,
/// which text rarely holds; if it does, the chunk gets no highlights rather than wrong ones).
const START_MARK: char = '\u{E000}';
const STOP_MARK: char = '\u{E001}';

/// Which retrievers a search uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SearchMode {
    /// Both, fused by reciprocal rank fusion.
    #[default]
    Hybrid,
    /// Cosine similarity of embeddings only.
    Vector,
    /// PostgreSQL full text only.
    Keyword,
}

/// What a result is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupBy {
    /// One result per document (its best chunk, with its other matching chunks).
    #[default]
    Document,
    /// One result per chunk.
    Chunk,
}

/// Restricts a search. Every condition holds inside the retrievers' index scans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    /// Only this document (with `document_ids`: any of them).
    pub document_id: Option<String>,
    /// Only these documents; empty: any.
    pub document_ids: Vec<String>,
    /// Only documents of these content types; empty: any.
    pub content_types: Vec<String>,
    /// Only documents whose source starts with this; empty: any.
    pub source_prefix: Option<String>,
    /// The document's first version made visible at or after this (Unix ms, inclusive).
    pub created_after_unix_ms: Option<i64>,
    /// ... before this (exclusive).
    pub created_before_unix_ms: Option<i64>,
    /// The document's visible version made visible at or after this (Unix ms, inclusive).
    pub updated_after_unix_ms: Option<i64>,
    /// ... before this (exclusive).
    pub updated_before_unix_ms: Option<i64>,
    /// A JSON object of equalities that the hit's metadata must contain (`@>`).
    pub metadata: Option<Value>,
    /// Only chunks of these collections; empty: every collection of the tenant.
    pub collections: Vec<String>,
}

/// One search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// The query's text: what the keyword retriever matches and highlights show. Required in
    /// keyword and hybrid mode.
    pub query: String,
    /// The query's embedding. Required in vector and hybrid mode.
    pub vector: Vec<f32>,
    /// Results wanted: documents when grouping by document, else chunks.
    pub top_k: usize,
    pub mode: SearchMode,
    pub group_by: GroupBy,
    /// Reciprocal rank fusion weights (hybrid mode).
    pub vector_weight: f32,
    pub keyword_weight: f32,
    pub filter: SearchFilter,
}

impl Default for SearchRequest {
    fn default() -> Self {
        Self {
            query: String::new(),
            vector: Vec::new(),
            top_k: 10,
            mode: SearchMode::default(),
            group_by: GroupBy::default(),
            vector_weight: 1.0,
            keyword_weight: 1.0,
            filter: SearchFilter::default(),
        }
    }
}

impl SearchRequest {
    /// The nearest `top_k` chunks to `vector`, one result per chunk (the search before issue 14).
    pub fn nearest(vector: Vec<f32>, top_k: usize, filter: SearchFilter) -> Self {
        Self { vector, top_k, mode: SearchMode::Vector, group_by: GroupBy::Chunk, filter, ..Self::default() }
    }
}

/// A span of a hit's text that matches the query: Unicode code point offsets, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Highlight {
    pub start: u32,
    pub end: u32,
}

/// Another matching chunk of a grouped hit's document.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkMatch {
    pub chunk_index: i32,
    /// As [`SearchHit::score`].
    pub score: f32,
    pub vector_score: Option<f32>,
    pub keyword_score: Option<f32>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub document_id: String,
    pub collection: String,
    pub version: i64,
    pub chunk_index: i32,
    pub text: String,
    /// The ranking score of the mode: the fused RRF score (hybrid), the cosine similarity,
    /// 1 - cosine distance (vector), or `ts_rank_cd` (keyword). Higher is better.
    pub score: f32,
    /// The document's metadata merged with the chunk's (the chunk's keys win).
    pub metadata: Value,
    /// Each retriever's own score and 1-based rank for this chunk, when it found it.
    pub vector_score: Option<f32>,
    pub keyword_score: Option<f32>,
    pub vector_rank: Option<u32>,
    pub keyword_rank: Option<u32>,
    /// 1-based rank of this result in the response.
    pub rank: u32,
    /// Where the query's terms occur in `text`, in order.
    pub highlights: Vec<Highlight>,
    /// Grouped by document: the document's other matching chunks, best first.
    pub other_chunks: Vec<ChunkMatch>,
}

/// A chunk one or both retrievers found.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    document_id: String,
    version: i64,
    chunk_index: i32,
    /// (score, 1-based rank)
    vector: Option<(f32, u32)>,
    keyword: Option<(f32, u32)>,
    /// How much of the query the keyword retriever found in it.
    term_match: Option<TermMatch>,
    score: f64,
}

/// A chunk a retriever found, in its ranking's order (best first).
#[derive(Debug, Clone, PartialEq)]
struct Found {
    document_id: String,
    version: i64,
    chunk_index: i32,
    score: f32,
    /// How much of the query the keyword retriever found in the chunk (None from the vector
    /// retriever).
    term_match: Option<TermMatch>,
}

/// How much of the query's text a keyword match holds, strongest first. The keyword ranking
/// orders by it before `ts_rank_cd`; in hybrid fusion only a match holding every term votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TermMatch {
    /// Every term of the query, anywhere in the chunk (a copied sentence, an error message, an
    /// identifier).
    EveryTerm,
    /// Some of its terms.
    SomeTerms,
}

impl TermMatch {
    /// The share of the keyword weight that a match of this kind carries in hybrid fusion.
    /// Measured through the service (docs/benchmarks.md, "Search"): with partial matches
    /// voting (at half weight, or fully as before), the chunks sharing a few common words with
    /// a question in a user's words (mostly noise) pushed the vector retriever's answer down,
    /// and scanning them cost hybrid search 100 ms at p99 on 100k chunks; without, hybrid beat
    /// vector alone on both query sets at the cost of a vector search.
    fn fusion_weight(self) -> f32 {
        match self {
            TermMatch::EveryTerm => 1.0,
            TermMatch::SomeTerms => 0.0,
        }
    }
}

type Ranked = Vec<Found>;

impl PgStore {
    /// Searches the visible versions of the tenant's documents (see the module documentation).
    /// Fewer than `top_k` results only when fewer match.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "SELECT chunks", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "chunks", millrace.mode = ?request.mode, millrace.group_by = ?request.group_by))]
    pub async fn search(&self, tenant_id: &str, request: &SearchRequest) -> Result<Vec<SearchHit>, StoreError> {
        self.check_search(tenant_id, request)?;
        if request.top_k == 0 {
            return Ok(Vec::new());
        }
        let mut pool = candidate_pool(request);
        loop {
            let (vector, keyword) = match request.mode {
                SearchMode::Vector => (self.vector_candidates(tenant_id, request, pool).await?, Vec::new()),
                SearchMode::Keyword => (Vec::new(), self.keyword_candidates(tenant_id, request, pool).await?),
                SearchMode::Hybrid => tokio::try_join!(
                    self.vector_candidates(tenant_id, request, pool),
                    self.keyword_candidates(tenant_id, request, pool)
                )?,
            };
            // A few documents with many chunks each can fill a pool: then ask for a deeper one
            // (rare; each retry is 4 times deeper, up to MAX_POOL).
            let pool_full = vector.len() >= pool || keyword.len() >= pool;
            let groups = group(request, fuse(request, vector, keyword));
            if groups.len() < request.top_k && pool_full && pool < MAX_POOL {
                pool = (pool * 4).min(MAX_POOL);
                continue;
            }
            return self.fetch_hits(tenant_id, &request.query, groups).await;
        }
    }

    fn check_search(&self, tenant_id: &str, request: &SearchRequest) -> Result<(), StoreError> {
        if tenant_id.is_empty() {
            return Err(StoreError::InvalidInput("tenant_id is empty".to_owned()));
        }
        if request.top_k > MAX_TOP_K {
            return Err(StoreError::InvalidInput(format!("top_k must be at most {MAX_TOP_K}, got {}", request.top_k)));
        }
        let uses_text = matches!(request.mode, SearchMode::Keyword | SearchMode::Hybrid);
        let uses_vector = matches!(request.mode, SearchMode::Vector | SearchMode::Hybrid);
        if uses_text && request.query.trim().is_empty() {
            return Err(StoreError::InvalidInput("keyword and hybrid search need a query text".to_owned()));
        }
        if uses_vector {
            if request.vector.is_empty() {
                return Err(StoreError::InvalidInput("vector and hybrid search need a query vector".to_owned()));
            }
            self.check_vector(&request.vector)?;
        }
        for (name, weight) in [("vector", request.vector_weight), ("keyword", request.keyword_weight)] {
            if !weight.is_finite() || weight < 0.0 {
                return Err(StoreError::InvalidInput(format!("the {name} weight must be a finite number >= 0")));
            }
        }
        let filter = &request.filter;
        if let Some(metadata) = &filter.metadata
            && !metadata.is_object()
        {
            return Err(StoreError::InvalidInput("the metadata filter must be a JSON object".to_owned()));
        }
        for (name, after, before) in [
            ("created", filter.created_after_unix_ms, filter.created_before_unix_ms),
            ("updated", filter.updated_after_unix_ms, filter.updated_before_unix_ms),
        ] {
            if let (Some(after), Some(before)) = (after, before)
                && after >= before
            {
                return Err(StoreError::InvalidInput(format!(
                    "the {name} range is empty: {name}_after must be earlier than {name}_before"
                )));
            }
        }
        Ok(())
    }

    /// The pool's nearest chunks by cosine similarity, nearest first.
    async fn vector_candidates(
        &self,
        tenant_id: &str,
        request: &SearchRequest,
        pool: usize,
    ) -> Result<Ranked, StoreError> {
        let embedding = Vector::from(request.vector.clone());
        let limit = i64::try_from(pool).unwrap_or(i64::MAX);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&embedding, &tenant_id, &limit];
        let filter = FilterParams::new(&request.filter);
        let conditions = filter.conditions(&mut params);
        let sql = format!(
            "SELECT c.document_id, c.version, c.chunk_index, (1 - (c.embedding <=> $1))::float8
             FROM chunks c
             JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id AND d.version = c.version
             WHERE c.tenant_id = $2{conditions}
             ORDER BY c.embedding <=> $1
             LIMIT $3"
        );
        let mut client = self.pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        let tx = client.transaction().await?;
        // HNSW returns at most ef_search candidates; iterative scans (pgvector 0.8) keep going
        // when filters reject some of them.
        let ef_search = self.config.hnsw_ef_search.max(u32::try_from(pool).unwrap_or(u32::MAX)).min(1000);
        let iterative = self.iterative_scan.load(AtomicOrdering::Relaxed);
        let mut settings = format!("SET LOCAL hnsw.ef_search = {ef_search};");
        if iterative {
            settings.push_str(" SET LOCAL hnsw.iterative_scan = strict_order;");
        }
        // The planner cannot estimate a filter such as metadata containment on the merged
        // metadata, guesses it very selective and prefers computing every chunk's distance and
        // sorting (900 ms at 100k chunks with a filter that 10% pass) to the iterative HNSW scan
        // (18 ms). With a filter the HNSW path is taken first; if it finds fewer than the pool
        // (an iterative scan stops after hnsw.max_scan_tuples: the filter is that selective, or
        // fewer chunks pass it), an exact scan answers instead.
        let filtered = !conditions.is_empty() && iterative;
        if filtered {
            settings.push_str(" SET LOCAL enable_sort = off;");
        }
        tx.batch_execute(&settings).await?;
        let mut rows = tx.query(&statement, &params).await?;
        if filtered && rows.len() < pool {
            // HNSW only has index scans: without them the plan reads the tenant's filtered
            // chunks (a bitmap scan of the primary key, or the table) and sorts them, exactly.
            tx.batch_execute("SET LOCAL enable_sort = on; SET LOCAL enable_indexscan = off;").await?;
            rows = tx.query(&statement, &params).await?;
        }
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let score: Option<f64> = row.try_get(3)?;
                Ok(Found {
                    document_id: row.try_get(0)?,
                    version: row.try_get(1)?,
                    chunk_index: row.try_get(2)?,
                    score: finite_score(score),
                    term_match: None,
                })
            })
            .collect()
    }

    /// The pool's best chunks for the query's text, best first: those holding every term of the
    /// query, then those holding some, each part by `ts_rank_cd` (see [`TermMatch`]). In hybrid
    /// mode, where partial matches have no vote, only the first part is read.
    async fn keyword_candidates(
        &self,
        tenant_id: &str,
        request: &SearchRequest,
        pool: usize,
    ) -> Result<Ranked, StoreError> {
        let limit = i64::try_from(pool).unwrap_or(i64::MAX);
        let cap = i64::try_from(keyword_match_cap(pool)).unwrap_or(i64::MAX);
        let client = self.pool.get().await?;
        let partial = request.mode == SearchMode::Keyword || TermMatch::SomeTerms.fusion_weight() > 0.0;
        let common = if partial { self.common_lexemes(&client).await? } else { Arc::default() };
        let common: &Vec<String> = &common;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&request.query, &tenant_id, &limit, &cap];
        if partial {
            params.push(&common);
        }
        let filter = FilterParams::new(&request.filter);
        let conditions = filter.conditions(&mut params);
        let partial_matches = if partial {
            format!(
                "UNION ALL
                 (SELECT c.document_id, c.version, c.chunk_index, c.search_text, false
                  FROM chunks c
                  JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id AND d.version = c.version
                  WHERE c.tenant_id = $2 AND c.search_text @@ (SELECT millrace_search_query_any($1, $5::text[])){conditions}
                  LIMIT $4)"
            )
        } else {
            String::new()
        };
        // Ranking reads every matching chunk's tsvector, and one common word of a query can match
        // most chunks: ranking is bounded to `cap` matches of the precise query (every term), then
        // `cap` of the broad one (any term but the common ones), in the GIN scan's order. A
        // query's tsquery is built once per statement (an InitPlan), so that the GIN scan can use
        // it and ranking does not rebuild it per row. ts_rank_cd rewards the query's words close
        // together; normalisation 1 (divide by 1 + log of the chunk's length) keeps long chunks
        // from winning by repetition. A chunk holding every term ranks above one holding some,
        // whatever their ts_rank_cd: otherwise a chunk dense in the query's common words
        // outranks the one holding the copied sentence or the error message.
        let sql = format!(
            "WITH matches AS MATERIALIZED (
                 (SELECT c.document_id, c.version, c.chunk_index, c.search_text, true AS every_term
                  FROM chunks c
                  JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id AND d.version = c.version
                  WHERE c.tenant_id = $2 AND c.search_text @@ (SELECT millrace_search_query_all($1)){conditions}
                  LIMIT $4)
                 {partial_matches})
             SELECT document_id, version, chunk_index,
                    max(ts_rank_cd(search_text, (SELECT millrace_search_query($1)), 1))::float8 AS score,
                    bool_or(every_term) AS every_term
             FROM matches
             GROUP BY document_id, version, chunk_index
             ORDER BY every_term DESC, score DESC, document_id, chunk_index
             LIMIT $3"
        );
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &params).await?;
        rows.iter()
            .map(|row| {
                let score: Option<f64> = row.try_get(3)?;
                Ok(Found {
                    document_id: row.try_get(0)?,
                    version: row.try_get(1)?,
                    chunk_index: row.try_get(2)?,
                    score: finite_score(score),
                    term_match: Some(if row.try_get(4)? { TermMatch::EveryTerm } else { TermMatch::SomeTerms }),
                })
            })
            .collect()
    }

    /// The lexemes in more than [`COMMON_LEXEME_SHARE`] of all chunks, from the statistics
    /// ANALYZE keeps on `search_text` (none before the first ANALYZE), fetched at most once per
    /// [`COMMON_LEXEMES_TTL`].
    async fn common_lexemes(&self, client: &deadpool_postgres::Client) -> Result<Arc<Vec<String>>, StoreError> {
        if let Ok(cache) = self.common_lexemes.lock()
            && let Some((fetched, lexemes)) = cache.as_ref()
            && fetched.elapsed() < COMMON_LEXEMES_TTL
        {
            return Ok(Arc::clone(lexemes));
        }
        let statement = client
            .prepare_cached(
                "SELECT coalesce(array_agg(e.lexeme), '{}')
                 FROM pg_stats s,
                      unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS e(lexeme, share)
                 WHERE s.schemaname = current_schema() AND s.tablename = 'chunks' AND s.attname = 'search_text'
                   AND e.lexeme IS NOT NULL AND e.share > $1",
            )
            .await?;
        let lexemes: Vec<String> = client.query_one(&statement, &[&COMMON_LEXEME_SHARE]).await?.try_get(0)?;
        let lexemes = Arc::new(lexemes);
        if let Ok(mut cache) = self.common_lexemes.lock() {
            *cache = Some((Instant::now(), Arc::clone(&lexemes)));
        }
        Ok(lexemes)
    }

    /// Text, metadata, collection and highlights of each group's best chunk, in order. A chunk
    /// deleted since the retrievers ran (its document got a newer version) is left out.
    async fn fetch_hits(&self, tenant_id: &str, query: &str, groups: Vec<Group>) -> Result<Vec<SearchHit>, StoreError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let documents: Vec<&str> = groups.iter().map(|g| g.best.document_id.as_str()).collect();
        let versions: Vec<i64> = groups.iter().map(|g| g.best.version).collect();
        let indexes: Vec<i32> = groups.iter().map(|g| g.best.chunk_index).collect();
        let query = query.trim();
        let options = format!("StartSel={START_MARK}, StopSel={STOP_MARK}, HighlightAll=true");
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT k.ord, c.text, d.metadata || c.metadata, c.collection,
                        ts_headline(millrace_text_search_config(c.metadata ->> 'language'), c.text,
                                    (SELECT millrace_search_query(NULLIF($5, ''))), $6),
                        ts_headline('simple'::regconfig, c.text, (SELECT millrace_search_query(NULLIF($5, ''))), $6)
                 FROM unnest($2::text[], $3::int8[], $4::int4[]) WITH ORDINALITY AS k(document_id, version, chunk_index, ord)
                 JOIN chunks c ON c.tenant_id = $1 AND c.document_id = k.document_id AND c.version = k.version
                                  AND c.chunk_index = k.chunk_index
                 JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id AND d.version = c.version",
            )
            .await?;
        let rows = client.query(&statement, &[&tenant_id, &documents, &versions, &indexes, &query, &options]).await?;
        let mut found: HashMap<i64, (String, Value, String, Vec<Highlight>)> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let text: String = row.try_get(1)?;
            let mut highlights = Vec::new();
            for column in [4, 5] {
                if let Some(marked) = row.try_get::<_, Option<String>>(column)? {
                    highlights.extend(parse_highlights(&text, &marked));
                }
            }
            found.insert(row.try_get(0)?, (text, row.try_get(2)?, row.try_get(3)?, merge_highlights(highlights)));
        }
        let mut hits = Vec::with_capacity(groups.len());
        for (ord, group) in (1i64..).zip(groups) {
            let Some((text, metadata, collection, highlights)) = found.remove(&ord) else { continue };
            let best = group.best;
            hits.push(SearchHit {
                rank: u32::try_from(hits.len() + 1).unwrap_or(u32::MAX),
                document_id: best.document_id,
                collection,
                version: best.version,
                chunk_index: best.chunk_index,
                text,
                score: best.score as f32,
                metadata,
                vector_score: best.vector.map(|(score, _)| score),
                keyword_score: best.keyword.map(|(score, _)| score),
                vector_rank: best.vector.map(|(_, rank)| rank),
                keyword_rank: best.keyword.map(|(_, rank)| rank),
                highlights,
                other_chunks: group
                    .others
                    .into_iter()
                    .map(|c| ChunkMatch {
                        chunk_index: c.chunk_index,
                        score: c.score as f32,
                        vector_score: c.vector.map(|(score, _)| score),
                        keyword_score: c.keyword.map(|(score, _)| score),
                    })
                    .collect(),
            });
        }
        Ok(hits)
    }
}

/// Chunks each retriever takes. Alone and per chunk, top_k is exact. Fusion wants the rankings
/// deeper than top_k so that they overlap, and grouping by document wants more still, since a
/// document's several chunks take several places.
fn candidate_pool(request: &SearchRequest) -> usize {
    let k = request.top_k;
    let pool = match (request.mode, request.group_by) {
        (SearchMode::Vector | SearchMode::Keyword, GroupBy::Chunk) => k,
        (SearchMode::Hybrid, GroupBy::Chunk) => (k * 4).max(50),
        (_, GroupBy::Document) => (k * 10).max(100),
    };
    pool.clamp(1, MAX_POOL)
}

/// Matches of each half of a keyword query that are ranked (see `keyword_candidates`).
fn keyword_match_cap(pool: usize) -> usize {
    (pool * 5).clamp(500, 5000)
}

/// The filter's values, owned, and its SQL conditions (one statement per combination of filters
/// rather than `$n IS NULL OR ...`, so that each gets its own plan).
struct FilterParams<'a> {
    filter: &'a SearchFilter,
    document_ids: Vec<String>,
    source_prefix: Option<&'a str>,
    /// Seconds since the epoch, for `to_timestamp`.
    times: [Option<f64>; 4],
}

impl<'a> FilterParams<'a> {
    fn new(filter: &'a SearchFilter) -> Self {
        let mut document_ids = filter.document_ids.clone();
        document_ids.extend(filter.document_id.iter().cloned());
        let seconds = |ms: Option<i64>| ms.map(|ms| ms as f64 / 1000.0);
        Self {
            filter,
            document_ids,
            source_prefix: filter.source_prefix.as_deref().filter(|p| !p.is_empty()),
            times: [
                seconds(filter.created_after_unix_ms),
                seconds(filter.created_before_unix_ms),
                seconds(filter.updated_after_unix_ms),
                seconds(filter.updated_before_unix_ms),
            ],
        }
    }

    /// Appends the filter's parameters and returns its conditions (each starting with " AND ").
    fn conditions<'p>(&'p self, params: &mut Vec<&'p (dyn ToSql + Sync)>) -> String {
        let mut sql = String::new();
        let mut add = |params: &mut Vec<&'p (dyn ToSql + Sync)>, value: &'p (dyn ToSql + Sync), condition: &str| {
            params.push(value);
            sql.push_str(" AND ");
            sql.push_str(&condition.replace("$?", &format!("${}", params.len())));
        };
        if !self.filter.collections.is_empty() {
            add(params, &self.filter.collections, "c.collection = ANY($?)");
        }
        if !self.document_ids.is_empty() {
            add(params, &self.document_ids, "c.document_id = ANY($?)");
        }
        if !self.filter.content_types.is_empty() {
            add(params, &self.filter.content_types, "d.content_type = ANY($?)");
        }
        if let Some(prefix) = &self.source_prefix {
            add(params, prefix, "starts_with(d.source, $?)");
        }
        let columns = [
            "d.created_at >= to_timestamp($?::float8)",
            "d.created_at < to_timestamp($?::float8)",
            "d.updated_at >= to_timestamp($?::float8)",
            "d.updated_at < to_timestamp($?::float8)",
        ];
        for (time, condition) in self.times.iter().zip(columns) {
            if let Some(seconds) = time {
                add(params, seconds, condition);
            }
        }
        if let Some(metadata) = &self.filter.metadata {
            add(params, metadata, "(d.metadata || c.metadata) @> $?");
        }
        sql
    }
}

/// Both rankings on one list, each chunk scored by the mode, best first.
fn fuse(request: &SearchRequest, vector: Ranked, keyword: Ranked) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = Vec::with_capacity(vector.len() + keyword.len());
    let mut positions: HashMap<(String, i64, i32), usize> = HashMap::with_capacity(vector.len() + keyword.len());
    for (is_vector, ranked) in [(true, vector), (false, keyword)] {
        for (rank, found) in (1u32..).zip(ranked) {
            let key = (found.document_id, found.version, found.chunk_index);
            let position = *positions.entry(key.clone()).or_insert_with(|| {
                candidates.push(Candidate {
                    document_id: key.0,
                    version: key.1,
                    chunk_index: key.2,
                    vector: None,
                    keyword: None,
                    term_match: None,
                    score: 0.0,
                });
                candidates.len() - 1
            });
            let candidate = &mut candidates[position];
            if is_vector {
                candidate.vector = Some((found.score, rank));
            } else {
                candidate.keyword = Some((found.score, rank));
                candidate.term_match = found.term_match;
            }
        }
    }
    for candidate in &mut candidates {
        candidate.score = match request.mode {
            SearchMode::Vector => candidate.vector.map_or(0.0, |(score, _)| f64::from(score)),
            SearchMode::Keyword => candidate.keyword.map_or(0.0, |(score, _)| f64::from(score)),
            SearchMode::Hybrid => {
                let rrf = |found: Option<(f32, u32)>, weight: f32| {
                    found.map_or(0.0, |(_, rank)| f64::from(weight) / (RRF_K + f64::from(rank)))
                };
                let keyword_weight =
                    request.keyword_weight * candidate.term_match.map_or(1.0, TermMatch::fusion_weight);
                rrf(candidate.vector, request.vector_weight) + rrf(candidate.keyword, keyword_weight)
            }
        };
    }
    // One retriever: its own order (the keyword ranking puts stronger matches first, whatever
    // their score). Fused: by score; ties go to the better single rank. Then a stable
    // order.
    let rank = |c: &Candidate| match request.mode {
        SearchMode::Vector => c.vector.map_or(u32::MAX, |v| v.1),
        SearchMode::Keyword => c.keyword.map_or(u32::MAX, |k| k.1),
        SearchMode::Hybrid => c.vector.map_or(u32::MAX, |v| v.1).min(c.keyword.map_or(u32::MAX, |k| k.1)),
    };
    candidates.sort_by(|a, b| {
        let by_score = if request.mode == SearchMode::Hybrid { b.score.total_cmp(&a.score) } else { Ordering::Equal };
        by_score
            .then_with(|| rank(a).cmp(&rank(b)))
            .then_with(|| a.document_id.cmp(&b.document_id))
            .then_with(|| a.chunk_index.cmp(&b.chunk_index))
    });
    candidates
}

/// A result before its text is fetched.
#[derive(Debug)]
struct Group {
    best: Candidate,
    others: Vec<Candidate>,
}

/// The first `top_k` results: chunks, or documents with their other chunks (best first).
fn group(request: &SearchRequest, ranked: Vec<Candidate>) -> Vec<Group> {
    match request.group_by {
        GroupBy::Chunk => {
            ranked.into_iter().take(request.top_k).map(|best| Group { best, others: Vec::new() }).collect()
        }
        GroupBy::Document => {
            let mut groups: Vec<Group> = Vec::with_capacity(request.top_k);
            let mut by_document: HashMap<String, usize> = HashMap::new();
            for candidate in ranked {
                match by_document.get(&candidate.document_id) {
                    Some(&i) => groups[i].others.push(candidate),
                    None if groups.len() < request.top_k => {
                        by_document.insert(candidate.document_id.clone(), groups.len());
                        groups.push(Group { best: candidate, others: Vec::new() });
                    }
                    None => {}
                }
            }
            groups
        }
    }
}

/// Code point spans between the markers of `ts_headline`'s output. None unless the output
/// without its markers is exactly `text` (a text holding a marker character itself).
fn parse_highlights(text: &str, marked: &str) -> Vec<Highlight> {
    let mut spans = Vec::new();
    let mut offset: u32 = 0;
    let mut start = None;
    let mut stripped = String::with_capacity(text.len());
    for ch in marked.chars() {
        match ch {
            START_MARK => start = Some(offset),
            STOP_MARK => {
                if let Some(start) = start.take()
                    && offset > start
                {
                    spans.push(Highlight { start, end: offset });
                }
            }
            _ => {
                stripped.push(ch);
                offset += 1;
            }
        }
    }
    if stripped == text { spans } else { Vec::new() }
}

/// Sorted, overlapping spans joined (the two configurations often mark the same word).
fn merge_highlights(mut spans: Vec<Highlight>) -> Vec<Highlight> {
    spans.sort_unstable();
    let mut merged: Vec<Highlight> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start < last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(document_id: &str, chunk_index: i32, term_match: Option<TermMatch>) -> Found {
        Found { document_id: document_id.to_owned(), version: 1, chunk_index, score: 0.5, term_match }
    }

    fn ranked(items: &[(&str, i32)]) -> Ranked {
        items.iter().map(|(doc, index)| found(doc, *index, None)).collect()
    }

    #[test]
    fn reciprocal_rank_fusion_adds_weighted_inverse_ranks() {
        let request = SearchRequest { keyword_weight: 2.0, ..SearchRequest::default() };
        let every = |doc: &str| found(doc, 0, Some(TermMatch::EveryTerm));
        let fused = fuse(&request, ranked(&[("a", 0), ("b", 0)]), vec![every("b"), every("c")]);
        let order: Vec<&str> = fused.iter().map(|c| c.document_id.as_str()).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert!((fused[0].score - (1.0 / 62.0 + 2.0 / 61.0)).abs() < 1e-12);
        assert_eq!((fused[0].vector.unwrap().1, fused[0].keyword.unwrap().1), (2, 1));
        assert!((fused[1].score - 2.0 / 62.0).abs() < 1e-12);
        assert!(fused[2].keyword.is_none());
    }

    #[test]
    fn only_a_keyword_match_of_every_term_votes_in_fusion_and_keyword_mode_keeps_it_first() {
        let vector = ranked(&[("a", 0), ("b", 0), ("d", 0)]);
        // The keyword ranking as storage returns it: every-term matches first, whatever the score.
        let keyword = vec![
            Found { score: 0.1, ..found("d", 0, Some(TermMatch::EveryTerm)) },
            Found { score: 0.9, ..found("c", 0, Some(TermMatch::SomeTerms)) },
            Found { score: 0.8, ..found("a", 0, Some(TermMatch::SomeTerms)) },
        ];
        let hybrid = fuse(&SearchRequest::default(), vector, keyword.clone());
        let score = |doc: &str| hybrid.iter().find(|c| c.document_id == doc).unwrap().score;
        assert!((score("d") - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12, "every term votes");
        assert_eq!(score("c"), 0.0, "some terms do not");
        assert!((score("a") - 1.0 / 61.0).abs() < 1e-12);
        let order: Vec<&str> = hybrid.iter().map(|c| c.document_id.as_str()).collect();
        assert_eq!(order, ["d", "a", "b", "c"], "the vector's third holding every term wins");
        let alone = SearchRequest { mode: SearchMode::Keyword, ..SearchRequest::default() };
        let order: Vec<String> = fuse(&alone, Vec::new(), keyword).into_iter().map(|c| c.document_id).collect();
        assert_eq!(order, ["d", "c", "a"], "keyword mode keeps its own order despite the scores");
    }

    #[test]
    fn grouping_counts_documents_and_keeps_their_other_chunks() {
        let request = SearchRequest { top_k: 2, mode: SearchMode::Vector, ..SearchRequest::default() };
        let fused = fuse(&request, ranked(&[("a", 3), ("a", 1), ("b", 0), ("c", 0), ("a", 2)]), Vec::new());
        let groups = group(&request, fused);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].best.document_id.as_str(), groups[0].best.chunk_index), ("a", 3));
        assert_eq!(groups[0].others.iter().map(|c| c.chunk_index).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(groups[1].best.document_id, "b");
    }

    #[test]
    fn highlights_are_code_point_offsets_between_markers() {
        let text = "Größe — or_insert 🙂 E0499";
        let marked = format!("Größe — or_{START_MARK}insert{STOP_MARK} 🙂 {START_MARK}E0499{STOP_MARK}");
        let spans = parse_highlights(text, &marked);
        assert_eq!(spans, [Highlight { start: 11, end: 17 }, Highlight { start: 20, end: 25 }]);
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(chars[11..17].iter().collect::<String>(), "insert");
        // Output that is not the text with markers gives no highlights rather than wrong ones.
        assert!(parse_highlights("other", &marked).is_empty());
        let merged = merge_highlights(vec![
            Highlight { start: 5, end: 9 },
            Highlight { start: 0, end: 2 },
            Highlight { start: 5, end: 9 },
            Highlight { start: 3, end: 4 },
        ]);
        assert_eq!(
            merged,
            [Highlight { start: 0, end: 2 }, Highlight { start: 3, end: 4 }, Highlight { start: 5, end: 9 }]
        );
    }
}
