//! `millrace.v1.Storage/Search` over the store: the request's fields reach the search, the
//! hit's fields come back, bad requests are INVALID_ARGUMENT.

use std::sync::Arc;

use millrace_proto::storage_server::Storage;
use millrace_proto::{SearchFilter, SearchGroupBy, SearchMode, VectorSearchRequest};
use millrace_storage::grpc::StorageService;
use millrace_storage::store::ChunkRow;
use serde_json::json;
use tonic::{Code, Request};

use crate::helpers::{DocumentVersion, TestStore, axis, version};

fn row(doc: &str, index: i32, text: &str, embedding: Vec<f32>) -> ChunkRow {
    ChunkRow {
        tenant_id: "t1".to_owned(),
        collection: "default".to_owned(),
        document_id: doc.to_owned(),
        version: 1,
        chunk_index: index,
        text: text.to_owned(),
        content_hash: format!("{doc}-{index}"),
        metadata: json!({ "language": "en" }),
        embedding,
        generation: 0,
    }
}

#[tokio::test]
async fn search_over_grpc_carries_mode_grouping_filters_scores_and_highlights() {
    let t = TestStore::new().await;
    let near = vec![row("intro", 0, "An introduction to collections.", axis(0, 0.0))];
    let entry = vec![
        row("entry", 0, "Call map.entry(key).or_insert(0) to count.", axis(3, 0.0)),
        row("entry", 1, "More about or_insert and its friends.", axis(4, 0.0)),
    ];
    t.store.upsert_chunks(&near).await.unwrap();
    t.store.commit_version(&version("t1", "intro", 1, 1, json!({}))).await.unwrap();
    t.store.upsert_chunks(&entry).await.unwrap();
    let markdown =
        DocumentVersion { content_type: "text/markdown".to_owned(), ..version("t1", "entry", 1, 2, json!({})) };
    t.store.commit_version(&markdown).await.unwrap();
    let service = StorageService::new(Arc::new(t.store.clone()));

    let base = VectorSearchRequest {
        tenant_id: "t1".to_owned(),
        vector: axis(0, 0.0),
        top_k: 5,
        query: "or_insert".to_owned(),
        ..VectorSearchRequest::default()
    };
    // Defaults: hybrid, grouped by document.
    let response = service.search(Request::new(base.clone())).await.unwrap().into_inner();
    let first = &response.results[0];
    assert_eq!((first.document_id.as_str(), first.rank), ("entry", 1));
    assert_eq!(response.results.len(), 2, "two documents");
    assert!(first.vector_score.is_some() && first.keyword_score.is_some());
    assert!(first.vector_rank.is_some() && first.keyword_rank.is_some());
    assert_eq!(first.other_chunks.len(), 1);
    assert!(first.other_chunks[0].keyword_score.is_some());
    let chars: Vec<char> = first.text.chars().collect();
    let marked: Vec<String> =
        first.highlights.iter().map(|h| chars[h.start as usize..h.end as usize].iter().collect()).collect();
    assert!(marked.contains(&"insert".to_owned()), "{marked:?}");
    assert_eq!(response.results[1].document_id, "intro");
    assert_eq!(response.results[1].keyword_score, None);

    // Vector mode by chunk, with a weight that changes nothing there.
    let vector = VectorSearchRequest {
        mode: SearchMode::Vector as i32,
        group_by: SearchGroupBy::Chunk as i32,
        keyword_weight: Some(5.0),
        ..base.clone()
    };
    let response = service.search(Request::new(vector)).await.unwrap().into_inner();
    assert_eq!(response.results.len(), 3);
    assert_eq!(response.results[0].document_id, "intro");
    assert!(response.results.iter().all(|h| h.keyword_score.is_none() && h.other_chunks.is_empty()));

    // Keyword mode needs no vector; a content type filter.
    let keyword = VectorSearchRequest {
        mode: SearchMode::Keyword as i32,
        vector: vec![],
        filter: Some(SearchFilter { content_types: vec!["text/plain".to_owned()], ..SearchFilter::default() }),
        query: "introduction".to_owned(),
        ..base.clone()
    };
    let response = service.search(Request::new(keyword.clone())).await.unwrap().into_inner();
    assert_eq!(response.results.iter().map(|h| h.document_id.as_str()).collect::<Vec<_>>(), ["intro"]);
    let markdown_only = VectorSearchRequest {
        filter: Some(SearchFilter { content_types: vec!["text/markdown".to_owned()], ..SearchFilter::default() }),
        ..keyword.clone()
    };
    assert!(service.search(Request::new(markdown_only)).await.unwrap().into_inner().results.is_empty());

    for bad in [
        VectorSearchRequest { mode: 9, ..base.clone() },
        VectorSearchRequest { group_by: 9, ..base.clone() },
        VectorSearchRequest { query: String::new(), ..base.clone() },
        VectorSearchRequest { vector: vec![], ..base.clone() },
        VectorSearchRequest { tenant_id: String::new(), ..base.clone() },
        VectorSearchRequest {
            filter: Some(SearchFilter { metadata_json: "[1]".to_owned(), ..SearchFilter::default() }),
            ..base.clone()
        },
        VectorSearchRequest {
            filter: Some(SearchFilter {
                created_after_unix_ms: Some(5),
                created_before_unix_ms: Some(1),
                ..SearchFilter::default()
            }),
            ..base.clone()
        },
    ] {
        let status = service.search(Request::new(bad.clone())).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
    }
}
