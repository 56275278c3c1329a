//! `GET /v1/documents/{id}/chunks`, gRPC `ListChunks` and `millrace chunks` through the whole
//! stack: every stored chunk once, in order, a page at a time, as search shows it; a cursor of
//! a replaced version refused; other tenants and collections answered as a missing document.

use std::time::Duration;

use millrace_e2e::{Stack, StackOptions, long_text, with_key};
use millrace_proto::v1::ListDocumentChunksRequest;
use serde_json::{Value, json};

/// Every page of the document's chunks with `limit` per page: the pages and the chunks.
async fn all_pages(stack: &Stack, document_id: &str, limit: u32) -> (Vec<Value>, Vec<Value>) {
    let (mut pages, mut chunks) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor.as_ref().map_or(String::new(), |cursor| format!("&cursor={cursor}"));
        let (status, page) = stack.get(&format!("/v1/documents/{document_id}/chunks?limit={limit}{query}")).await;
        assert_eq!(status, 200, "{page}");
        let listed = page["chunks"].as_array().unwrap();
        assert!(listed.len() <= limit as usize, "{page}");
        chunks.extend(listed.iter().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            break;
        }
    }
    (pages, chunks)
}

async fn key(stack: &Stack, tenant: &str, collections: &[&str]) -> reqwest::Client {
    let mut body = json!({"tenant": tenant, "name": "chunk listing", "scopes": ["read"]});
    if !collections.is_empty() {
        body["collections"] = json!(collections);
    }
    let (status, created, _) = stack.post("/v1/keys", &body).await;
    assert_eq!(status, 201, "{created}");
    with_key(reqwest::Client::builder(), created["key"].as_str().unwrap()).build().unwrap()
}

#[tokio::test]
async fn a_documents_chunks_are_listed_in_pages_as_search_shows_them() {
    let stack = Stack::start(StackOptions::default().service_env("chunking", "MILLRACE_CHUNK_SIZE", 65)).await.unwrap();
    let job_id = stack
        .ingest_json(&json!({
            "document_id": "paged-doc",
            "content": long_text("harbour", 12),
            "content_type": "text/plain",
            "collection": "manuals",
            "metadata": {"team": "docs"},
        }))
        .await;
    let job = stack.wait_for_job(&job_id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    let total = job["chunks"]["stored"].as_u64().unwrap();
    assert!(total > 4, "enough chunks for several pages: {job}");

    // Pages of 3: every stored chunk once, in index order, of the one visible version.
    let (pages, chunks) = all_pages(&stack, "paged-doc", 3).await;
    assert_eq!(pages.len() as u64, total.div_ceil(3), "{pages:?}");
    let indexes: Vec<u64> = chunks.iter().map(|c| c["chunk_index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (0..total).collect::<Vec<_>>());
    assert!(pages.iter().all(|p| p["version"] == 1 && p["collection"] == "manuals" && p["document_id"] == "paged-doc"));
    assert!(chunks.iter().all(|c| c["metadata"]["team"] == "docs" && c["metadata"]["extractor"] == "extractive"));
    let whole: String = chunks.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert!(whole.contains("item0") && whole.contains("item11"), "{whole}");
    // A chunk as the listing shows it is the chunk as search shows it.
    let found = stack
        .search_body(&json!({"query": "marker word item7", "top_k": 1, "group_by": "chunk", "mode": "keyword"}))
        .await;
    let hit = &found["results"][0];
    let listed = &chunks[hit["chunk_index"].as_u64().unwrap() as usize];
    assert_eq!((&listed["text"], &listed["metadata"]), (&hit["text"], &hit["metadata"]), "{hit}");
    // The command line prints them all.
    let output = crate::cli::millrace(&stack.api(), &["chunks", "paged-doc", "--json"]).await;
    assert!(output.status.success(), "{}", crate::cli::stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["chunks"].as_array().unwrap(), &chunks);
    // The default page holds them all here; gRPC answers the same.
    let (status, page) = stack.get("/v1/documents/paged-doc/chunks").await;
    assert_eq!((status, page["chunks"].as_array().unwrap().len() as u64), (200, total), "{page}");
    assert!(page["next_cursor"].is_null(), "{page}");
    let mut grpc = stack.ingestion_grpc().await;
    let request = ListDocumentChunksRequest { document_id: "paged-doc".into(), limit: 2, ..Default::default() };
    let first = grpc.list_chunks(request.clone()).await.unwrap().into_inner();
    assert_eq!((first.version, first.collection.as_str(), first.chunks.len()), (1, "manuals", 2));
    let second = grpc
        .list_chunks(ListDocumentChunksRequest { cursor: first.next_cursor.clone(), ..request.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.chunks[0].chunk_index, 2);
    assert_eq!(second.chunks[0].text, chunks[2]["text"].as_str().unwrap());

    // Refused: bad parameters (422/400), a document that is not there (404).
    for (query, status, code) in [
        ("limit=0", 422, "invalid_argument"),
        ("limit=501", 422, "invalid_argument"),
        ("cursor=abc", 422, "invalid_argument"),
        ("cursor=0-1", 422, "invalid_argument"),
        ("colour=red", 400, "bad_request"),
    ] {
        let (got, body) = stack.get(&format!("/v1/documents/paged-doc/chunks?{query}")).await;
        assert_eq!((got, body["error"]["code"].as_str().unwrap()), (status, code), "{query}: {body}");
    }
    let (status, body) = stack.get("/v1/documents/no-such-doc/chunks").await;
    assert_eq!((status, body["error"]["code"].as_str().unwrap()), (404, "not_found"), "{body}");

    // Another tenant's key and a key of other collections see no such document; a key of its
    // collection does.
    let url = format!("{}/v1/documents/paged-doc/chunks", stack.api());
    let hr_only = key(&stack, "default", &["hr"]).await;
    for (client, want) in [
        (&key(&stack, "elsewhere", &[]).await, 404),
        (&hr_only, 404),
        (&key(&stack, "default", &["manuals"]).await, 200),
    ] {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), want);
        let body: Value = response.json().await.unwrap();
        if want == 404 {
            assert_eq!(body["error"]["message"], "no document \"paged-doc\"", "{body}");
        }
    }

    // Re-ingested: the old version's cursor is refused (its chunks are gone), and a listing
    // from the start shows only the new version.
    let stale = pages[0]["next_cursor"].as_str().unwrap().to_owned();
    let job_id = stack.ingest("paged-doc", &long_text("meadow", 3)).await;
    stack.wait_for_jobs_completed(&[job_id], Duration::from_secs(60)).await;
    let (status, body) = stack.get(&format!("/v1/documents/paged-doc/chunks?cursor={stale}")).await;
    assert_eq!((status, body["error"]["code"].as_str().unwrap()), (409, "conflict"), "{body}");
    // Not to a key that may not see the document: to it the document is missing.
    let response = hr_only.get(format!("{url}?cursor={stale}")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let (_, chunks) = all_pages(&stack, "paged-doc", 500).await;
    assert_eq!(chunks.len(), stack.stored_chunks("paged-doc").await.len());
    assert!(chunks.iter().all(|c| c["text"].as_str().unwrap().contains("meadow")), "{chunks:?}");
    let err = grpc.list_chunks(ListDocumentChunksRequest { cursor: stale, ..request }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    assert_eq!(stack.delete("/v1/documents/paged-doc").await.0, 204);
    assert_eq!(stack.get("/v1/documents/paged-doc/chunks").await.0, 404);
}
