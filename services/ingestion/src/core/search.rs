//! Search: the query embedded by the embeddings service (but in keyword mode), the matching
//! chunks ranked by the storage service among the caller's tenant's documents, in the
//! collections it names or may use. Storage fuses the rankings, groups by document, applies the
//! filters inside its index scans and finds the highlights; this side checks permissions,
//! reranks the fused results when asked ([`crate::rerank`]) and numbers the results.

use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_proto::v1::{self as proto, EmbedRequest, VectorSearchRequest};
use serde_json::{Value, json};

use super::{Core, downstream, json_object};
use crate::validate::{SearchGroupBy, SearchMode, ValidSearch};

/// One result of a search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hit {
    pub document_id: String,
    pub collection: String,
    pub chunk_index: u32,
    pub text: String,
    /// The mode's ranking score: fused (hybrid), cosine (vector) or text rank (keyword).
    pub score: f32,
    pub metadata: Value,
    /// 1-based, in the response.
    pub rank: u32,
    /// Each retriever's score and 1-based rank, when it found this chunk.
    pub vector: Option<Retrieved>,
    pub keyword: Option<Retrieved>,
    /// Code point offsets `[start, end)` of the query's terms in `text`.
    pub highlights: Vec<(u32, u32)>,
    /// Grouped by document: the document's other matching chunks, best first.
    pub other_chunks: Vec<OtherChunk>,
    /// The reranker's relevance (0 to 10), when it scored this result.
    pub rerank: Option<f32>,
}

/// What one retriever said of a chunk. The rank is absent when storage did not report it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retrieved {
    pub score: f32,
    pub rank: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtherChunk {
    pub chunk_index: u32,
    pub score: f32,
    pub vector_score: Option<f32>,
    pub keyword_score: Option<f32>,
}

/// A search's results, best first, and how they were found.
#[derive(Debug, Clone)]
pub struct SearchResults {
    pub hits: Vec<Hit>,
    pub mode: SearchMode,
    pub group_by: SearchGroupBy,
    /// Whether the hits are in the reranker's order.
    pub reranked: bool,
}

impl Hit {
    fn from_proto(hit: proto::SearchHit) -> Self {
        let retrieved = |score: Option<f32>, rank: Option<u32>| score.map(|score| Retrieved { score, rank });
        Self {
            vector: retrieved(hit.vector_score, hit.vector_rank),
            keyword: retrieved(hit.keyword_score, hit.keyword_rank),
            metadata: json_object(&hit.metadata_json),
            highlights: hit.highlights.iter().map(|h| (h.start, h.end)).collect(),
            other_chunks: hit
                .other_chunks
                .into_iter()
                .map(|chunk| OtherChunk {
                    chunk_index: chunk.chunk_index,
                    score: chunk.score,
                    vector_score: chunk.vector_score,
                    keyword_score: chunk.keyword_score,
                })
                .collect(),
            document_id: hit.document_id,
            collection: hit.collection,
            chunk_index: hit.chunk_index,
            text: hit.text,
            score: hit.score,
            rank: hit.rank,
            rerank: hit.rerank_score,
        }
    }

    pub fn to_proto(&self) -> proto::SearchHit {
        proto::SearchHit {
            document_id: self.document_id.clone(),
            chunk_index: self.chunk_index,
            text: self.text.clone(),
            score: self.score,
            metadata_json: self.metadata.to_string(),
            collection: self.collection.clone(),
            vector_score: self.vector.map(|r| r.score),
            keyword_score: self.keyword.map(|r| r.score),
            vector_rank: self.vector.and_then(|r| r.rank),
            keyword_rank: self.keyword.and_then(|r| r.rank),
            rank: self.rank,
            highlights: self.highlights.iter().map(|&(start, end)| proto::Highlight { start, end }).collect(),
            other_chunks: self
                .other_chunks
                .iter()
                .map(|chunk| proto::ChunkMatch {
                    chunk_index: chunk.chunk_index,
                    score: chunk.score,
                    vector_score: chunk.vector_score,
                    keyword_score: chunk.keyword_score,
                })
                .collect(),
            rerank_score: self.rerank,
        }
    }

    /// The HTTP API's shape: `scores` and `ranks` per retriever (null when it did not find the
    /// chunk), `scores.rerank` when `reranked` (null for a result the model did not score), and
    /// `chunks` (the other matching chunks) when grouped by document.
    pub fn to_json(&self, group_by: SearchGroupBy, reranked: bool) -> Value {
        let mut hit = json!({
            "document_id": self.document_id,
            "collection": self.collection,
            "chunk_index": self.chunk_index,
            "text": self.text,
            "score": self.score,
            "metadata": self.metadata,
            "rank": self.rank,
            "scores": scores(self.vector.map(|r| r.score), self.keyword.map(|r| r.score)),
            "ranks": {
                "vector": self.vector.and_then(|r| r.rank),
                "keyword": self.keyword.and_then(|r| r.rank),
            },
            "highlights": self.highlights.iter().map(|&(start, end)| json!({"start": start, "end": end})).collect::<Vec<_>>(),
        });
        if reranked {
            hit["scores"]["rerank"] = json!(self.rerank);
        }
        if group_by == SearchGroupBy::Document {
            hit["chunks"] = self
                .other_chunks
                .iter()
                .map(|chunk| {
                    json!({
                        "chunk_index": chunk.chunk_index,
                        "score": chunk.score,
                        "scores": scores(chunk.vector_score, chunk.keyword_score),
                    })
                })
                .collect();
        }
        hit
    }
}

fn scores(vector: Option<f32>, keyword: Option<f32>) -> Value {
    json!({ "vector": vector, "keyword": keyword })
}

impl Core {
    /// Searches through the storage service, which filters by tenant, collection and the
    /// caller's conditions inside its index scans. The query is embedded first unless the mode
    /// is keyword (which needs no model call). Naming a collection the key may not use is a 403,
    /// before anything is embedded.
    ///
    /// Reranked, storage is asked for the candidates (at least `top_k`), the reranker orders
    /// them in one call to the llm-gateway, and the best `top_k` are kept.
    pub async fn search(&self, caller: &Caller, search: ValidSearch) -> Result<SearchResults, ApiError> {
        let collections = searched_collections(caller, search.collections)?;
        let reranked = search.rerank.unwrap_or(self.config.rerank.by_default);
        let (mode, group_by) = (search.mode, search.group_by);
        if search.filter.matches_nothing() {
            return Ok(SearchResults { hits: Vec::new(), mode, group_by, reranked });
        }
        let wanted = if reranked {
            search.rerank_candidates.unwrap_or(self.config.rerank.candidates).max(search.top_k)
        } else {
            search.top_k
        };
        let vector = if search.mode.embeds_query() { self.embed_query(&search.query).await? } else { Vec::new() };
        let response = self
            .storage
            .clone()
            .search(VectorSearchRequest {
                tenant_id: caller.tenant.clone(),
                vector,
                top_k: wanted,
                filter: Some(search.filter.to_proto()),
                collections,
                query: search.query.clone(),
                mode: search.mode.to_proto() as i32,
                group_by: search.group_by.to_proto() as i32,
                vector_weight: Some(search.vector_weight),
                keyword_weight: Some(search.keyword_weight),
            })
            .await
            .map_err(|status| downstream("storage", status))?
            .into_inner();
        let mut hits: Vec<Hit> = response.results.into_iter().map(Hit::from_proto).collect();
        if reranked && !hits.is_empty() {
            hits = self.reranker.rerank(&caller.tenant, &search.query, hits).await?;
        }
        hits.truncate(search.top_k as usize);
        number(&mut hits);
        Ok(SearchResults { hits, mode, group_by, reranked })
    }

    async fn embed_query(&self, query: &str) -> Result<Vec<f32>, ApiError> {
        let embedded = self
            .embeddings
            .clone()
            .embed(EmbedRequest { texts: vec![query.to_owned()], job_id: String::new() })
            .await
            .map_err(|status| downstream("embeddings", status))?
            .into_inner();
        let vector = embedded
            .vectors
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the embeddings service returned no vector for the query"))?;
        Ok(vector.values)
    }
}

/// Gives each hit its 1-based rank in the response, whatever order produced it.
fn number(hits: &mut [Hit]) {
    for (rank, hit) in (1u32..).zip(hits.iter_mut()) {
        hit.rank = rank;
    }
}

/// The collections a search covers: those named, each of which the key must be allowed (403
/// otherwise); none named, the key's own list, or every collection (empty) for a key not limited.
fn searched_collections(caller: &Caller, named: Vec<String>) -> Result<Vec<String>, ApiError> {
    if named.is_empty() {
        return match &caller.collections {
            // An empty list would mean "every collection" to storage.
            Some(allowed) if allowed.is_empty() => Err(ApiError::permission_denied("this key may use no collection")),
            allowed => Ok(allowed.clone().unwrap_or_default()),
        };
    }
    if let Some(refused) = named.iter().find(|collection| !caller.may_use(collection)) {
        return Err(ApiError::permission_denied(format!("this key may not use collection {refused:?}")));
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use millrace_common::ErrorCode;

    use super::*;

    fn key(collections: Option<&[&str]>) -> Caller {
        Caller {
            key_id: "k".into(),
            tenant: "acme".into(),
            scopes: vec![millrace_auth::Scope::Search],
            collections: collections.map(|list| list.iter().map(|c| (*c).to_owned()).collect()),
            ..Caller::bootstrap_admin()
        }
    }

    fn hit() -> Hit {
        Hit::from_proto(proto::SearchHit {
            document_id: "guide".into(),
            chunk_index: 2,
            text: "café lighthouse".into(),
            score: 0.5,
            metadata_json: r#"{"team":"docs"}"#.into(),
            collection: "eng".into(),
            vector_score: Some(0.75),
            keyword_score: None,
            vector_rank: Some(3),
            keyword_rank: None,
            rank: 0,
            highlights: vec![proto::Highlight { start: 5, end: 15 }],
            other_chunks: vec![proto::ChunkMatch {
                chunk_index: 7,
                score: 0.25,
                vector_score: Some(0.5),
                keyword_score: None,
            }],
            rerank_score: None,
        })
    }

    #[test]
    fn a_hit_has_the_http_shape_and_goes_back_to_proto_unchanged() {
        let mut hits = vec![hit(), hit()];
        number(&mut hits);
        assert_eq!((hits[0].rank, hits[1].rank), (1, 2));
        assert_eq!(
            hits[1].to_json(SearchGroupBy::Document, false),
            json!({
                "document_id": "guide", "collection": "eng", "chunk_index": 2, "text": "café lighthouse",
                "score": 0.5, "metadata": {"team": "docs"}, "rank": 2,
                "scores": {"vector": 0.75, "keyword": null}, "ranks": {"vector": 3, "keyword": null},
                "highlights": [{"start": 5, "end": 15}],
                "chunks": [{"chunk_index": 7, "score": 0.25, "scores": {"vector": 0.5, "keyword": null}}],
            })
        );
        assert!(hits[0].to_json(SearchGroupBy::Chunk, false).get("chunks").is_none(), "chunks only when grouped");
        let proto = hits[0].to_proto();
        assert_eq!(Hit::from_proto(proto), hits[0]);
        // Reranked: the model's relevance beside the retrievers' scores, null where it gave none.
        hits[0].rerank = Some(7.0);
        assert_eq!(
            hits[0].to_json(SearchGroupBy::Chunk, true)["scores"],
            json!({"vector": 0.75, "keyword": null, "rerank": 7.0})
        );
        assert_eq!(hits[1].to_json(SearchGroupBy::Chunk, true)["scores"]["rerank"], Value::Null);
        assert!(hits[1].to_json(SearchGroupBy::Chunk, true)["scores"].get("rerank").is_some());
        assert_eq!(hits[0].to_proto().rerank_score, Some(7.0));
        assert_eq!(Hit::from_proto(hits[0].to_proto()), hits[0]);
    }

    #[test]
    fn a_search_covers_what_the_key_may_use_and_nothing_else() {
        let owned = |list: &[&str]| list.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
        assert_eq!(searched_collections(&key(None), vec![]).unwrap(), Vec::<String>::new(), "every collection");
        assert_eq!(searched_collections(&key(None), owned(&["x"])).unwrap(), ["x"]);
        let limited = key(Some(&["hr", "eng"]));
        assert_eq!(searched_collections(&limited, vec![]).unwrap(), ["hr", "eng"]);
        assert_eq!(searched_collections(&limited, owned(&["eng"])).unwrap(), ["eng"]);
        let err = searched_collections(&limited, owned(&["eng", "legal"])).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        let nothing = key(Some(&[]));
        assert_eq!(searched_collections(&nothing, vec![]).unwrap_err().code, ErrorCode::PermissionDenied);
    }
}
