//! The pgvector store against a real PostgreSQL+pgvector (millrace-testkit).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chunks;
mod grpc;
mod helpers;
mod list;
mod search;

use helpers::{DIM, TestStore, axis, chunk, chunks, version, vsearch};
use millrace_storage::store::{ChunkRow, PgStore, SearchFilter, StoreConfig, StoreError};
use serde_json::json;

#[tokio::test]
async fn redelivered_batch_changes_nothing() {
    let t = TestStore::new().await;
    let batch = chunks("t1", "doc", 1, 20);
    assert_eq!(t.store.upsert_chunks(&batch).await.unwrap(), 20);
    assert_eq!(t.store.upsert_chunks(&batch).await.unwrap(), 0);
    // A batch overlapping the first one inserts only the new rows.
    let mut overlapping = chunks("t1", "doc", 1, 25);
    overlapping.push(overlapping[0].clone());
    assert_eq!(t.store.upsert_chunks(&overlapping).await.unwrap(), 5);
    assert_eq!(t.chunk_count("doc", 1).await, 25);
    assert_eq!(t.store.upsert_chunks(&[]).await.unwrap(), 0);
}

#[tokio::test]
async fn commit_switches_versions_and_old_chunks_disappear() {
    let t = TestStore::new().await;
    t.store.upsert_chunks(&chunks("t1", "doc", 1, 3)).await.unwrap();
    // Nothing is visible before the first commit.
    assert!(vsearch(&t.store, "t1", &axis(0, 0.1), 10, &SearchFilter::default()).await.unwrap().is_empty());

    let outcome = t.store.commit_version(&version("t1", "doc", 1, 3, json!({}))).await.unwrap();
    assert!(outcome.switched);
    assert_eq!((outcome.previous_version, outcome.current_version, outcome.deleted_chunks), (None, 1, 0));
    let hits = vsearch(&t.store, "t1", &axis(0, 0.1), 10, &SearchFilter::default()).await.unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.version == 1));

    // Version 2 is written while version 1 stays the one searched.
    t.store.upsert_chunks(&chunks("t1", "doc", 2, 2)).await.unwrap();
    let hits = vsearch(&t.store, "t1", &axis(0, 0.1), 10, &SearchFilter::default()).await.unwrap();
    assert!(hits.iter().all(|h| h.version == 1) && hits.len() == 3);

    let outcome = t.store.commit_version(&version("t1", "doc", 2, 2, json!({}))).await.unwrap();
    assert!(outcome.switched);
    assert_eq!((outcome.previous_version, outcome.current_version, outcome.deleted_chunks), (Some(1), 2, 3));
    let hits = vsearch(&t.store, "t1", &axis(0, 0.1), 10, &SearchFilter::default()).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.version == 2 && h.text.contains("v2")));
    assert_eq!(t.chunk_count("doc", 1).await, 0);

    // Repeating the commit (a redelivered message) changes nothing and answers the same.
    let again = t.store.commit_version(&version("t1", "doc", 2, 2, json!({}))).await.unwrap();
    assert!(again.switched);
    assert_eq!((again.current_version, again.deleted_chunks), (2, 0));
    let record = t.store.get_document("t1", "doc").await.unwrap().unwrap();
    let doc = &record.document;
    assert_eq!((doc.version, doc.chunk_count, doc.content_hash.as_str()), (2, 2, "doc-hash-doc-2"));
    assert_eq!(doc.source, "upload://doc");
    assert!(record.updated_at_unix_ms > 1_600_000_000_000);
}

#[tokio::test]
async fn older_version_committed_after_newer_stays_invisible() {
    let t = TestStore::new().await;
    t.store.upsert_chunks(&chunks("t1", "doc", 1, 3)).await.unwrap();
    t.store.upsert_chunks(&chunks("t1", "doc", 2, 2)).await.unwrap();
    assert!(t.store.commit_version(&version("t1", "doc", 2, 2, json!({}))).await.unwrap().switched);
    assert_eq!(t.chunk_count("doc", 1).await, 0, "committing v2 deletes the unfinished v1");

    // v1's chunks arrive late (redelivery), then its commit: neither makes v1 visible.
    assert_eq!(t.store.upsert_chunks(&chunks("t1", "doc", 1, 3)).await.unwrap(), 0);
    let outcome = t.store.commit_version(&version("t1", "doc", 1, 3, json!({}))).await.unwrap();
    assert!(!outcome.switched);
    assert_eq!((outcome.previous_version, outcome.current_version), (Some(2), 2));
    assert_eq!(t.store.get_document("t1", "doc").await.unwrap().unwrap().document.version, 2);
    let hits = vsearch(&t.store, "t1", &axis(0, 0.0), 10, &SearchFilter::default()).await.unwrap();
    assert!(hits.iter().all(|h| h.version == 2));
    assert_eq!(t.chunk_count("doc", 1).await, 0);
    assert_eq!(t.chunk_count("doc", 2).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_of_a_new_document_leave_the_newest_visible() {
    let t = TestStore::new().await;
    for round in 0..5 {
        let doc = format!("race-{round}");
        t.store.upsert_chunks(&chunks("t1", &doc, 1, 2)).await.unwrap();
        t.store.upsert_chunks(&chunks("t1", &doc, 2, 3)).await.unwrap();
        let (old, new) = (version("t1", &doc, 1, 2, json!({})), version("t1", &doc, 2, 3, json!({})));
        let (a, b) = tokio::join!(t.store.commit_version(&old), t.store.commit_version(&new));
        assert!(b.unwrap().switched);
        // v1 was either committed first (and then replaced) or found v2 already visible.
        let a = a.unwrap();
        assert_eq!(a.switched, a.current_version == 1);
        assert_eq!(t.store.get_document("t1", &doc).await.unwrap().unwrap().document.version, 2);
        assert_eq!((t.chunk_count(&doc, 1).await, t.chunk_count(&doc, 2).await), (0, 3));
    }
}

#[tokio::test]
async fn default_384_dimensions_round_trip() {
    let pg = millrace_testkit::Postgres::shared().unwrap();
    let config = StoreConfig { database_url: pg.create_unique_database("store384").unwrap(), ..StoreConfig::default() };
    let store = PgStore::connect(&config).await.unwrap();
    assert_eq!(store.dimensions(), 384);
    let rows: Vec<_> = (0..50)
        .map(|i| {
            let mut v = vec![0.01f32; 384];
            v[i] = 1.0;
            chunk("t1", "doc", 1, i as i32, v)
        })
        .collect();
    assert_eq!(store.upsert_chunks(&rows).await.unwrap(), 50);
    store.commit_version(&version("t1", "doc", 1, 50, json!({}))).await.unwrap();
    let hits = vsearch(&store, "t1", &rows[17].embedding, 3, &SearchFilter::default()).await.unwrap();
    assert_eq!(hits[0].chunk_index, 17);
    assert!((hits[0].score - 1.0).abs() < 1e-4, "{}", hits[0].score);
}

#[tokio::test]
async fn discard_deletes_only_a_version_that_is_not_visible() {
    let t = TestStore::new().await;
    t.store.upsert_chunks(&chunks("t1", "doc", 1, 3)).await.unwrap();
    t.store.commit_version(&version("t1", "doc", 1, 3, json!({}))).await.unwrap();
    t.store.upsert_chunks(&chunks("t1", "doc", 2, 4)).await.unwrap();
    assert_eq!(t.store.discard_version("t1", "doc", 1, 0).await.unwrap(), 0, "the visible version is kept");
    assert_eq!(t.store.discard_version("t1", "doc", 2, 0).await.unwrap(), 4);
    assert_eq!(t.chunk_count("doc", 1).await, 3);
    assert_eq!(t.chunk_count("doc", 2).await, 0);
}

/// Issue 13, defect 6: a discard of a failed attempt that arrives after a dead-letter retry
/// stored the batch again (a newer generation) must not delete it.
#[tokio::test]
async fn a_late_discard_keeps_what_a_retry_stored_again() {
    let t = TestStore::new().await;
    let attempt = |generation: i64| {
        chunks("t1", "doc", 1, 3).into_iter().map(|row| ChunkRow { generation, ..row }).collect::<Vec<_>>()
    };
    // The failed attempt stored the batch; the retry stores it again before the discard lands.
    t.store.upsert_chunks(&attempt(0)).await.unwrap();
    assert_eq!(t.store.upsert_chunks(&attempt(1)).await.unwrap(), 3, "the retry takes the rows over");
    assert_eq!(t.store.upsert_chunks(&attempt(1)).await.unwrap(), 0, "a redelivery changes nothing");
    assert_eq!(t.store.discard_version("t1", "doc", 1, 0).await.unwrap(), 0);
    assert_eq!(t.chunk_count("doc", 1).await, 3);
    // A late writer of the old attempt does not take them back either.
    assert_eq!(t.store.upsert_chunks(&attempt(0)).await.unwrap(), 0);
    assert_eq!(t.store.discard_version("t1", "doc", 1, 0).await.unwrap(), 0);
    // The discard of the retried attempt itself does delete them.
    assert_eq!(t.store.discard_version("t1", "doc", 1, 1).await.unwrap(), 3);
}

/// Issue 13, defect 3: a version submitted before a delete is never stored or made visible
/// after it, by a job still running; a version submitted after the delete is.
#[tokio::test]
async fn a_deleted_document_stays_deleted_until_submitted_again() {
    let t = TestStore::new().await;
    t.store.upsert_chunks(&chunks("t1", "doc", 1, 3)).await.unwrap();
    t.store.commit_version(&version("t1", "doc", 1, 3, json!({}))).await.unwrap();
    // Version 2 is being written when the document is deleted (through version 2).
    t.store.upsert_chunks(&chunks("t1", "doc", 2, 1)).await.unwrap();
    assert_eq!(t.store.delete_document("t1", "doc", 2).await.unwrap(), Some(4));

    // Its job goes on: more batches, then the commit.
    assert_eq!(t.store.upsert_chunks(&chunks("t1", "doc", 2, 2)).await.unwrap(), 0);
    let outcome = t.store.commit_version(&version("t1", "doc", 2, 2, json!({}))).await.unwrap();
    assert!(outcome.document_deleted && !outcome.switched, "{outcome:?}");
    assert_eq!(t.store.get_document("t1", "doc").await.unwrap(), None);
    assert_eq!(t.chunk_count("doc", 2).await, 0);
    assert!(vsearch(&t.store, "t1", &axis(0, 0.1), 5, &SearchFilter::default()).await.unwrap().is_empty());

    // Submitted again after the delete: version 3 is a document again.
    t.store.upsert_chunks(&chunks("t1", "doc", 3, 2)).await.unwrap();
    let outcome = t.store.commit_version(&version("t1", "doc", 3, 2, json!({}))).await.unwrap();
    assert!(outcome.switched && !outcome.document_deleted, "{outcome:?}");
    assert_eq!(t.store.get_document("t1", "doc").await.unwrap().unwrap().document.version, 3);
    // A delete with no version named takes every version stored now.
    assert_eq!(t.store.delete_document("t1", "doc", 0).await.unwrap(), Some(2));
    assert_eq!(t.store.upsert_chunks(&chunks("t1", "doc", 3, 2)).await.unwrap(), 0);
}

#[tokio::test]
async fn search_returns_nearest_first_and_respects_filters() {
    let t = TestStore::new().await;
    // doc-a along axes 0..3, doc-b along axes 4..7; doc-b is French.
    let a: Vec<_> = (0..4).map(|i| chunk("t1", "doc-a", 1, i, axis(i as usize, 0.1))).collect();
    let mut b: Vec<_> = (0..4).map(|i| chunk("t1", "doc-b", 1, i, axis(4 + i as usize, 0.1))).collect();
    b[2].metadata = json!({ "chunk": 2, "section": "intro" });
    t.store.upsert_chunks(&a).await.unwrap();
    t.store.upsert_chunks(&b).await.unwrap();
    t.store.commit_version(&version("t1", "doc-a", 1, 4, json!({ "lang": "en" }))).await.unwrap();
    t.store.commit_version(&version("t1", "doc-b", 1, 4, json!({ "lang": "fr" }))).await.unwrap();
    // Another tenant's identical chunk is never seen.
    t.store.upsert_chunks(&[chunk("t2", "doc-a", 1, 0, axis(5, 0.0))]).await.unwrap();
    t.store.commit_version(&version("t2", "doc-a", 1, 1, json!({}))).await.unwrap();

    let hits = vsearch(&t.store, "t1", &axis(5, 0.0), 3, &SearchFilter::default()).await.unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!((hits[0].document_id.as_str(), hits[0].chunk_index), ("doc-b", 1));
    assert!(hits[0].score > 0.99, "score {}", hits[0].score);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "ordered by similarity");
    assert_eq!(hits[0].metadata, json!({ "lang": "fr", "chunk": 1 }), "document and chunk metadata merged");

    let only_a = SearchFilter { document_id: Some("doc-a".to_owned()), ..SearchFilter::default() };
    let hits = vsearch(&t.store, "t1", &axis(5, 0.0), 10, &only_a).await.unwrap();
    assert_eq!(hits.len(), 4);
    assert!(hits.iter().all(|h| h.document_id == "doc-a"));

    let english = SearchFilter { metadata: Some(json!({ "lang": "en" })), ..SearchFilter::default() };
    let hits = vsearch(&t.store, "t1", &axis(5, 0.0), 10, &english).await.unwrap();
    assert_eq!(hits.len(), 4);
    assert!(hits.iter().all(|h| h.document_id == "doc-a"));

    let intro = SearchFilter { metadata: Some(json!({ "lang": "fr", "section": "intro" })), ..SearchFilter::default() };
    let hits = vsearch(&t.store, "t1", &axis(0, 0.0), 10, &intro).await.unwrap();
    assert_eq!(hits.iter().map(|h| (h.document_id.as_str(), h.chunk_index)).collect::<Vec<_>>(), [("doc-b", 2)]);

    assert!(vsearch(&t.store, "t1", &axis(0, 0.0), 0, &SearchFilter::default()).await.unwrap().is_empty());
    assert!(vsearch(&t.store, "nobody", &axis(0, 0.0), 5, &SearchFilter::default()).await.unwrap().is_empty());
    let bad_filter = SearchFilter { metadata: Some(json!(["lang"])), ..SearchFilter::default() };
    let err = vsearch(&t.store, "t1", &axis(0, 0.0), 5, &bad_filter).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)) && !err.is_retryable());
}

/// With the HNSW index in use, a selective filter must still yield top_k hits (pgvector's
/// iterative index scan), not only those among the first ef_search candidates.
#[tokio::test]
async fn filtered_search_through_the_hnsw_index_still_finds_top_k() {
    let t = TestStore::new().await;
    let crowd: Vec<_> = (0..300).map(|i| chunk("t1", "big", 1, i, axis(0, i as f32 / 1000.0))).collect();
    t.store.upsert_chunks(&crowd).await.unwrap();
    t.store.commit_version(&version("t1", "big", 1, 300, json!({ "lang": "en" }))).await.unwrap();
    let few: Vec<_> = (0..5).map(|i| chunk("t1", "small", 1, i, axis(0, 0.5 + i as f32 / 10.0))).collect();
    t.store.upsert_chunks(&few).await.unwrap();
    t.store.commit_version(&version("t1", "small", 1, 5, json!({ "lang": "fr" }))).await.unwrap();

    // Make the planner take the HNSW index (as it would on a large table) rather than sort.
    let db = t.config.database_url.rsplit('/').next().unwrap().to_owned();
    t.pg.execute(&db, &format!("ALTER DATABASE \"{db}\" SET enable_sort = off; ANALYZE")).unwrap();
    let plan = t
        .text_rows(
            "EXPLAIN SELECT c.document_id FROM chunks c
             JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id AND d.version = c.version
             WHERE c.tenant_id = 't1' AND (d.metadata || c.metadata) @> '{\"lang\": \"fr\"}'
             ORDER BY c.embedding <=> '[1,0,0,0,0,0,0,0]' LIMIT 5",
        )
        .await
        .join("\n");
    assert!(plan.contains("chunks_embedding_hnsw"), "the test needs the HNSW path:\n{plan}");

    let store = PgStore::connect(&t.config).await.unwrap();
    let french = SearchFilter { metadata: Some(json!({ "lang": "fr" })), ..SearchFilter::default() };
    let hits = vsearch(&store, "t1", &axis(0, 0.0), 5, &french).await.unwrap();
    assert_eq!(hits.len(), 5);
    assert_eq!((hits[0].document_id.as_str(), hits[0].chunk_index), ("small", 0));
}

/// The tenant and the collections are conditions of the HNSW index scan itself: a tenant with a
/// few chunks among many of another tenant's, all nearer the query, still gets its top_k (a
/// filter applied to the scan's first ef_search candidates would find none of them).
#[tokio::test]
async fn a_small_tenant_among_a_large_one_still_gets_its_top_k() {
    let t = TestStore::new().await;
    let crowd: Vec<_> = (0..300).map(|i| chunk("big", "crowd", 1, i, axis(0, i as f32 / 1000.0))).collect();
    t.store.upsert_chunks(&crowd).await.unwrap();
    t.store.commit_version(&version("big", "crowd", 1, 300, json!({}))).await.unwrap();
    let mut few: Vec<ChunkRow> = (0..6).map(|i| chunk("small", "mine", 1, i, axis(0, 0.5 + i as f32 / 10.0))).collect();
    for row in &mut few[3..] {
        row.collection = "hr".to_owned();
    }
    t.store.upsert_chunks(&few).await.unwrap();
    t.store
        .commit_version(&helpers::DocumentVersion {
            collection: "hr".to_owned(),
            ..version("small", "mine", 1, 6, json!({}))
        })
        .await
        .unwrap();

    let db = t.config.database_url.rsplit('/').next().unwrap().to_owned();
    t.pg.execute(&db, &format!("ALTER DATABASE \"{db}\" SET enable_sort = off; ANALYZE")).unwrap();
    let plan = t
        .text_rows(
            "EXPLAIN SELECT c.document_id FROM chunks c
             JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id AND d.version = c.version
             WHERE c.tenant_id = 'small' AND c.collection = ANY('{hr}')
             ORDER BY c.embedding <=> '[1,0,0,0,0,0,0,0]' LIMIT 3",
        )
        .await
        .join("\n");
    assert!(plan.contains("chunks_embedding_hnsw"), "the test needs the HNSW path:\n{plan}");

    let store = PgStore::connect(&t.config).await.unwrap();
    let hits = vsearch(&store, "small", &axis(0, 0.0), 6, &SearchFilter::default()).await.unwrap();
    assert_eq!(hits.len(), 6, "every chunk of the small tenant, though 300 others are nearer");
    assert!(hits.iter().all(|hit| hit.document_id == "mine"));
    let hr = SearchFilter { collections: vec!["hr".to_owned()], ..SearchFilter::default() };
    let hits = vsearch(&store, "small", &axis(0, 0.0), 3, &hr).await.unwrap();
    assert_eq!(hits.iter().map(|hit| hit.chunk_index).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(hits.iter().all(|hit| hit.collection == "hr"));
    let neither = SearchFilter { collections: vec!["legal".to_owned()], ..SearchFilter::default() };
    assert!(vsearch(&store, "small", &axis(0, 0.0), 3, &neither).await.unwrap().is_empty());
    // The big tenant never sees the small one's chunks, however near they are.
    let hits = vsearch(&store, "big", &axis(0, 0.9), 20, &SearchFilter::default()).await.unwrap();
    assert!(hits.iter().all(|hit| hit.document_id == "crowd"));
}

/// A new version may move a document to another collection: the document and its chunks follow.
#[tokio::test]
async fn a_new_version_moves_the_document_to_its_collection() {
    let t = TestStore::new().await;
    t.store.upsert_chunks(&chunks("t1", "doc", 1, 2)).await.unwrap();
    t.store.commit_version(&version("t1", "doc", 1, 2, json!({}))).await.unwrap();
    let moved: Vec<ChunkRow> =
        chunks("t1", "doc", 2, 2).into_iter().map(|row| ChunkRow { collection: "hr".to_owned(), ..row }).collect();
    t.store.upsert_chunks(&moved).await.unwrap();
    t.store
        .commit_version(&helpers::DocumentVersion {
            collection: "hr".to_owned(),
            ..version("t1", "doc", 2, 2, json!({}))
        })
        .await
        .unwrap();
    let record = t.store.get_document("t1", "doc").await.unwrap().unwrap();
    assert_eq!((record.document.version, record.document.collection.as_str()), (2, "hr"));
    let default = SearchFilter { collections: vec!["default".to_owned()], ..SearchFilter::default() };
    assert!(vsearch(&t.store, "t1", &axis(0, 0.0), 5, &default).await.unwrap().is_empty());
    let hr = SearchFilter { collections: vec!["hr".to_owned()], ..SearchFilter::default() };
    assert_eq!(vsearch(&t.store, "t1", &axis(0, 0.0), 5, &hr).await.unwrap().len(), 2);
}

#[tokio::test]
async fn delete_removes_the_document_from_search() {
    let t = TestStore::new().await;
    t.store.upsert_chunks(&chunks("t1", "gone", 1, 3)).await.unwrap();
    t.store.upsert_chunks(&chunks("t1", "kept", 1, 2)).await.unwrap();
    t.store.commit_version(&version("t1", "gone", 1, 3, json!({}))).await.unwrap();
    t.store.commit_version(&version("t1", "kept", 1, 2, json!({}))).await.unwrap();
    // An unfinished next version goes too.
    t.store.upsert_chunks(&chunks("t1", "gone", 2, 1)).await.unwrap();

    assert_eq!(t.store.delete_document("t1", "gone", 0).await.unwrap(), Some(4));
    let hits = vsearch(&t.store, "t1", &axis(0, 0.0), 10, &SearchFilter::default()).await.unwrap();
    assert!(hits.iter().all(|h| h.document_id == "kept") && hits.len() == 2);
    assert_eq!(t.store.get_document("t1", "gone").await.unwrap(), None);
    assert_eq!(t.store.stored_chunks("t1", "gone", &["hash-gone-1-0".to_owned()]).await.unwrap(), (0, vec![]));
    assert_eq!(t.store.delete_document("t1", "gone", 0).await.unwrap(), None);
}

#[tokio::test]
async fn stored_chunks_are_those_of_the_visible_version_with_the_asked_hashes() {
    let t = TestStore::new().await;
    let wanted = |hashes: &[&str]| hashes.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
    assert_eq!(t.store.stored_chunks("t1", "doc", &wanted(&["hash-doc-3-0"])).await.unwrap(), (0, vec![]));
    t.store.upsert_chunks(&chunks("t1", "doc", 3, 3)).await.unwrap();
    t.store.commit_version(&version("t1", "doc", 3, 3, json!({}))).await.unwrap();
    // A newer version being written is not what re-ingest compares against.
    t.store.upsert_chunks(&chunks("t1", "doc", 4, 1)).await.unwrap();

    let (visible, mut found) = t
        .store
        .stored_chunks("t1", "doc", &wanted(&["hash-doc-3-2", "hash-doc-3-0", "hash-doc-4-0", "nope"]))
        .await
        .unwrap();
    assert_eq!(visible, 3);
    found.sort_by(|a, b| a.content_hash.cmp(&b.content_hash));
    let hashes: Vec<&str> = found.iter().map(|c| c.content_hash.as_str()).collect();
    assert_eq!(hashes, ["hash-doc-3-0", "hash-doc-3-2"]);
    let expected = &chunks("t1", "doc", 3, 3)[2];
    assert_eq!(found[1].embedding, expected.embedding);
    assert_eq!(found[1].metadata, expected.metadata);
}

#[tokio::test]
async fn dimension_mismatch_is_a_clear_permanent_error() {
    let t = TestStore::new().await;
    let mut wrong = chunk("t1", "doc", 1, 0, vec![0.5; DIM + 1]);
    let err = t.store.upsert_chunks(std::slice::from_ref(&wrong)).await.unwrap_err();
    assert!(matches!(err, StoreError::DimensionMismatch { expected: DIM, got } if got == DIM + 1), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("MILLRACE_EMBEDDING_DIM"), "{err}");
    assert_eq!(t.chunk_count("doc", 1).await, 0);

    wrong.embedding = vec![f32::NAN; DIM];
    assert!(!t.store.upsert_chunks(&[wrong]).await.unwrap_err().is_retryable());
    let err = vsearch(&t.store, "t1", &[1.0, 0.0], 5, &SearchFilter::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::DimensionMismatch { .. }) && !err.is_retryable());

    // The same database opened with another dimension refuses to start, naming the setting.
    let other = StoreConfig { dimensions: DIM * 2, ..t.config.clone() };
    let err = PgStore::connect(&other).await.unwrap_err();
    assert!(matches!(err, StoreError::Schema(_)), "{err:?}");
    assert!(err.to_string().contains("MILLRACE_EMBEDDING_DIM"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_from_concurrent_replicas() {
    let t = TestStore::new().await;
    let (a, b, c) = tokio::join!(PgStore::connect(&t.config), PgStore::connect(&t.config), PgStore::connect(&t.config));
    a.unwrap();
    b.unwrap();
    c.unwrap();
    t.store.migrate().await.unwrap();
    t.store.ping().await.unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap().count();
    assert_eq!(
        t.scalar("SELECT count(*) FROM millrace_migrations").await,
        files as i64,
        "each migration recorded once"
    );
    // The HNSW index exists with the configured parameters.
    let options = t.scalar("SELECT count(*) FROM pg_class WHERE relname = 'chunks_embedding_hnsw' AND reloptions @> ARRAY['m=16', 'ef_construction=64']").await;
    assert_eq!(options, 1);
}

#[tokio::test]
async fn an_unreachable_database_is_a_retryable_error() {
    let port = millrace_testkit::free_port();
    let config = StoreConfig {
        database_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        dimensions: DIM,
        ..StoreConfig::default()
    };
    let err = PgStore::connect(&config).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Whatever order versions are written and committed in (all written first, or each
        /// committed as soon as written), the newest committed one is visible and it is the only
        /// one left with chunks.
        #[test]
        fn newest_committed_version_wins(
            order in Just(vec![1i64, 2, 3, 4]).prop_shuffle(),
            write_all_first in any::<bool>(),
            repeat in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let t = TestStore::new().await;
                if write_all_first {
                    for &v in &order {
                        t.store.upsert_chunks(&chunks("t1", "doc", v, v as i32)).await.unwrap();
                    }
                }
                for &v in &order {
                    if !write_all_first {
                        t.store.upsert_chunks(&chunks("t1", "doc", v, v as i32)).await.unwrap();
                    }
                    t.store.commit_version(&version("t1", "doc", v, v as i32, json!({}))).await.unwrap();
                    if repeat {
                        t.store.commit_version(&version("t1", "doc", v, v as i32, json!({}))).await.unwrap();
                    }
                }
                let newest = *order.iter().max().unwrap();
                assert_eq!(t.store.get_document("t1", "doc").await.unwrap().unwrap().document.version, newest);
                assert_eq!(t.scalar("SELECT count(*) FROM chunks").await, newest);
                assert_eq!(t.scalar(&format!("SELECT count(*) FROM chunks WHERE version = {newest}")).await, newest);
            });
        }
    }
}
