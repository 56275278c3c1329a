//! Listing a document's chunks: pages in chunk order of the visible version only, metadata
//! merged as search merges it, tenant isolation, a cursor of a replaced version, and the gRPC
//! call's paging.

use std::sync::Arc;

use millrace_proto::ListChunksRequest;
use millrace_proto::storage_server::Storage;
use millrace_storage::grpc::StorageService;
use millrace_storage::store::{ChunkListing, ChunkPage, ListChunks, StoreError};
use serde_json::json;
use tonic::{Code, Request};

use crate::helpers::{TestStore, chunks, version};

fn query(tenant: &str, doc: &str, after: Option<i64>, limit: usize) -> ListChunks {
    ListChunks { tenant_id: tenant.into(), document_id: doc.into(), after_chunk_index: after, version: None, limit }
}

fn page(listing: ChunkListing) -> ChunkPage {
    match listing {
        ChunkListing::Page(page) => page,
        other => panic!("expected a page, got {other:?}"),
    }
}

fn indexes(page: &ChunkPage) -> Vec<i32> {
    page.chunks.iter().map(|c| c.chunk_index).collect()
}

#[tokio::test]
async fn chunks_are_listed_in_order_a_page_at_a_time() {
    let t = TestStore::new().await;
    // Inserted out of order: the listing's order is the index's, not the insertion's.
    let mut rows = chunks("t1", "doc", 1, 7);
    rows.reverse();
    t.store.upsert_chunks(&rows).await.unwrap();
    t.store.commit_version(&version("t1", "doc", 1, 7, json!({"lang": "en", "chunk": "doc"}))).await.unwrap();

    let first = page(t.store.list_chunks(&query("t1", "doc", None, 3)).await.unwrap());
    assert_eq!(indexes(&first), [0, 1, 2]);
    assert!(first.more);
    assert_eq!((first.version, first.collection.as_str()), (1, "default"));
    assert_eq!(first.chunks[1].text, "doc v1 chunk 1");
    // As search merges them: the document's metadata, then the chunk's, whose keys win.
    assert_eq!(first.chunks[1].metadata, json!({"lang": "en", "chunk": 1}));
    let second = page(t.store.list_chunks(&query("t1", "doc", Some(2), 3)).await.unwrap());
    assert_eq!(indexes(&second), [3, 4, 5]);
    assert!(second.more);
    let last = page(t.store.list_chunks(&query("t1", "doc", Some(5), 3)).await.unwrap());
    assert_eq!(indexes(&last), [6]);
    assert!(!last.more);
    // A page that ends exactly at the last chunk says there is no more.
    let exact = page(t.store.list_chunks(&query("t1", "doc", Some(3), 3)).await.unwrap());
    assert_eq!((indexes(&exact), exact.more), (vec![4, 5, 6], false));
    // Past the end: an empty page of the visible version, not a missing document.
    let beyond = page(t.store.list_chunks(&query("t1", "doc", Some(99), 3)).await.unwrap());
    assert_eq!((beyond.chunks.len(), beyond.more, beyond.version), (0, false, 1));

    for bad in [
        query("t1", "doc", None, 0),
        query("t1", "doc", None, 1001),
        query("", "doc", None, 10),
        query("t1", "", None, 10),
    ] {
        assert!(matches!(t.store.list_chunks(&bad).await, Err(StoreError::InvalidInput(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn only_the_tenants_visible_version_is_listed() {
    let t = TestStore::new().await;
    t.store.upsert_chunks(&chunks("t1", "doc", 1, 4)).await.unwrap();
    t.store.commit_version(&version("t1", "doc", 1, 4, json!({}))).await.unwrap();
    // Another tenant's document of the same id, and a version of it still being written.
    t.store.upsert_chunks(&chunks("t2", "doc", 1, 2)).await.unwrap();
    t.store.commit_version(&version("t2", "doc", 1, 2, json!({}))).await.unwrap();
    t.store.upsert_chunks(&chunks("t1", "doc", 2, 2)).await.unwrap();
    // Chunks stored but never committed are no document yet.
    t.store.upsert_chunks(&chunks("t1", "unfinished", 1, 2)).await.unwrap();

    let visible = page(t.store.list_chunks(&query("t1", "doc", None, 10)).await.unwrap());
    assert_eq!((visible.version, indexes(&visible)), (1, vec![0, 1, 2, 3]));
    assert!(visible.chunks.iter().all(|c| c.text.starts_with("doc v1 ")));
    let other = page(t.store.list_chunks(&query("t2", "doc", None, 10)).await.unwrap());
    assert_eq!(indexes(&other), [0, 1]);
    assert_eq!(t.store.list_chunks(&query("t3", "doc", None, 10)).await.unwrap(), ChunkListing::Missing);
    assert_eq!(t.store.list_chunks(&query("t1", "unfinished", None, 10)).await.unwrap(), ChunkListing::Missing);
    assert_eq!(t.store.list_chunks(&query("t1", "nothing", None, 10)).await.unwrap(), ChunkListing::Missing);

    // Re-ingested: version 2 (written above, moving the document to another collection)
    // replaces version 1; a cursor of version 1 is refused rather than continued in version 2.
    let v2 = crate::helpers::DocumentVersion { collection: "hr".into(), ..version("t1", "doc", 2, 2, json!({})) };
    t.store.commit_version(&v2).await.unwrap();
    let stale = ListChunks { version: Some(1), ..query("t1", "doc", Some(1), 10) };
    assert_eq!(t.store.list_chunks(&stale).await.unwrap(), ChunkListing::VersionChanged { visible: 2 });
    let current =
        page(t.store.list_chunks(&ListChunks { version: Some(2), ..query("t1", "doc", None, 10) }).await.unwrap());
    assert_eq!((current.version, current.collection.as_str(), indexes(&current)), (2, "hr", vec![0, 1]));
    assert!(current.chunks.iter().all(|c| c.text.starts_with("doc v2 ")));

    // Deleted: gone.
    t.store.delete_document("t1", "doc", 0).await.unwrap();
    assert_eq!(t.store.list_chunks(&query("t1", "doc", None, 10)).await.unwrap(), ChunkListing::Missing);
}

#[tokio::test]
async fn list_chunks_over_grpc_pages_to_the_end() {
    let t = TestStore::new().await;
    t.store.upsert_chunks(&chunks("t1", "doc", 3, 5)).await.unwrap();
    t.store.commit_version(&version("t1", "doc", 3, 5, json!({"source": "test"}))).await.unwrap();
    let service = StorageService::new(Arc::new(t.store.clone()));
    let request = |after: Option<u32>, version: u64| ListChunksRequest {
        tenant_id: "t1".into(),
        document_id: "doc".into(),
        after_chunk_index: after,
        version,
        limit: 2,
    };
    let mut seen = Vec::new();
    let (mut after, mut pinned) = (None, 0);
    loop {
        let page = service.list_chunks(Request::new(request(after, pinned))).await.unwrap().into_inner();
        assert!(page.chunks.len() <= 2);
        assert_eq!((page.version, page.collection.as_str()), (3, "default"));
        seen.extend(page.chunks.iter().map(|c| c.chunk_index));
        let metadata: serde_json::Value = serde_json::from_str(&page.chunks[0].metadata_json).unwrap();
        assert_eq!(metadata["source"], "test");
        match page.next_after_chunk_index {
            Some(next) => (after, pinned) = (Some(next), page.version),
            None => break,
        }
    }
    assert_eq!(seen, [0, 1, 2, 3, 4]);

    // 0 means the default page; errors have their codes.
    let all = service
        .list_chunks(Request::new(ListChunksRequest { limit: 0, ..request(None, 0) }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.chunks.len(), all.next_after_chunk_index), (5, None));
    let stale = service.list_chunks(Request::new(request(Some(1), 2))).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("version 3"), "{}", stale.message());
    let missing = ListChunksRequest { document_id: "nope".into(), ..request(None, 0) };
    assert_eq!(service.list_chunks(Request::new(missing)).await.unwrap_err().code(), Code::NotFound);
    let no_tenant = ListChunksRequest { tenant_id: String::new(), ..request(None, 0) };
    assert_eq!(service.list_chunks(Request::new(no_tenant)).await.unwrap_err().code(), Code::InvalidArgument);
}
