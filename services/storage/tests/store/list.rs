//! Listing documents: pages by id in byte order, filters by collection and prefixes, tenant
//! isolation, and the gRPC call's cursor.

use std::sync::Arc;

use millrace_proto::ListDocumentsRequest;
use millrace_proto::storage_server::Storage;
use millrace_storage::grpc::StorageService;
use millrace_storage::store::{ListDocuments, StoreError};
use serde_json::json;
use tonic::{Code, Request};

use crate::helpers::{TestStore, version};

async fn commit(t: &TestStore, tenant: &str, doc: &str, v: i64, collection: &str, source: &str) {
    let mut document = version(tenant, doc, v, 2, json!({"n": v}));
    document.collection = collection.to_owned();
    document.source = source.to_owned();
    t.store.commit_version(&document).await.unwrap();
}

fn ids(page: &millrace_storage::store::DocumentPage) -> Vec<&str> {
    page.documents.iter().map(|d| d.document.document_id.as_str()).collect()
}

#[tokio::test]
async fn documents_are_listed_by_id_a_page_at_a_time_with_filters() {
    let t = TestStore::new().await;
    // Byte order puts upper case and '/' before lower case, whatever the database's collation.
    for doc in ["docs/b.md", "docs/a.md", "Zeta", "docs/sub/c.md", "notes/x.md", "docs-other"] {
        commit(&t, "t1", doc, 1, "default", &format!("file://{doc}")).await;
    }
    commit(&t, "t1", "docs/a.md", 2, "default", "file://docs/a.md").await;
    commit(&t, "t1", "eng/y.md", 1, "eng", "https://example.com/y").await;
    commit(&t, "t2", "docs/a.md", 1, "default", "file://docs/a.md").await;

    let query = |after: &str, limit: usize| ListDocuments {
        tenant_id: "t1".into(),
        after: after.into(),
        limit,
        ..ListDocuments::default()
    };
    let first = t.store.list_documents(&query("", 3)).await.unwrap();
    assert_eq!(ids(&first), ["Zeta", "docs-other", "docs/a.md"]);
    assert!(first.more);
    let a = &first.documents[2];
    assert_eq!((a.document.version, a.document.chunk_count), (2, 2));
    assert_eq!(a.document.content_hash, "doc-hash-docs/a.md-2");
    assert_eq!(a.document.metadata, json!({"n": 2}));
    assert!(a.updated_at_unix_ms > 0);
    let second = t.store.list_documents(&query("docs/a.md", 3)).await.unwrap();
    assert_eq!(ids(&second), ["docs/b.md", "docs/sub/c.md", "eng/y.md"]);
    assert!(second.more);
    let last = t.store.list_documents(&query("eng/y.md", 3)).await.unwrap();
    assert_eq!(ids(&last), ["notes/x.md"]);
    assert!(!last.more);

    let prefixed = ListDocuments { document_id_prefix: "docs/".into(), ..query("", 10) };
    assert_eq!(ids(&t.store.list_documents(&prefixed).await.unwrap()), ["docs/a.md", "docs/b.md", "docs/sub/c.md"]);
    let by_source = ListDocuments { source_prefix: "https://".into(), ..query("", 10) };
    assert_eq!(ids(&t.store.list_documents(&by_source).await.unwrap()), ["eng/y.md"]);
    let by_collection = ListDocuments { collections: vec!["eng".into()], ..query("", 10) };
    assert_eq!(ids(&t.store.list_documents(&by_collection).await.unwrap()), ["eng/y.md"]);
    let other = ListDocuments { tenant_id: "t2".into(), ..query("", 10) };
    assert_eq!(ids(&t.store.list_documents(&other).await.unwrap()), ["docs/a.md"]);

    // A deleted document is no longer listed.
    t.store.delete_document("t1", "docs/b.md", 0).await.unwrap();
    assert_eq!(ids(&t.store.list_documents(&prefixed).await.unwrap()), ["docs/a.md", "docs/sub/c.md"]);

    for bad in [query("", 0), query("", 1001), ListDocuments { tenant_id: String::new(), ..query("", 10) }] {
        assert!(matches!(t.store.list_documents(&bad).await, Err(StoreError::InvalidInput(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn list_documents_over_grpc_pages_with_a_cursor() {
    let t = TestStore::new().await;
    for n in 0..5 {
        commit(&t, "t1", &format!("doc-{n}"), 1, "default", "upload://x").await;
    }
    let service = StorageService::new(Arc::new(t.store.clone()));
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let request =
            ListDocumentsRequest { tenant_id: "t1".into(), cursor: cursor.clone(), limit: 2, ..Default::default() };
        let page = service.list_documents(Request::new(request)).await.unwrap().into_inner();
        assert!(page.documents.len() <= 2);
        seen.extend(page.documents.iter().map(|d| (d.document_id.clone(), d.tenant_id.clone(), d.updated_at.clone())));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let ids: Vec<&str> = seen.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, ["doc-0", "doc-1", "doc-2", "doc-3", "doc-4"]);
    assert!(seen.iter().all(|(_, tenant, at)| tenant == "t1" && at.ends_with('Z')));

    // 0 means the default page; no tenant is refused.
    let all = service
        .list_documents(Request::new(ListDocumentsRequest { tenant_id: "t1".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.documents.len(), all.next_cursor.as_str()), (5, ""));
    let err = service.list_documents(Request::new(ListDocumentsRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
