//! Search and documents go through the storage and embeddings services, which are not running
//! here: the checks that come before them, and the 503 when they cannot be reached.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn bad_search_bodies_are_refused() {
    let app = spawn_app().await;
    for body in [
        json!({"query": ""}),
        json!({"query": "   "}),
        json!({"query": "q", "top_k": 0}),
        json!({"query": "q", "top_k": 101}),
        json!({"query": "x".repeat(8193)}),
        json!({"query": "q", "filter": {"metadata": [1]}}),
        json!({"query": "q", "filter": {"document_id": ""}}),
        json!({"query": "q", "filter": {"document_ids": ["a", "b\nc"]}}),
        json!({"query": "q", "mode": "semantic"}),
        json!({"query": "q", "mode": "Hybrid"}),
        json!({"query": "q", "group_by": "page"}),
        json!({"query": "q", "weights": {"vector": -0.5}}),
        json!({"query": "q", "weights": {"keyword": 1e300}}),
        json!({"query": "q", "filter": {"created_after": "yesterday"}}),
        json!({"query": "q", "filter": {"updated_before": "2026-12-07 10:00:00"}}),
        json!({"query": "q", "filter": {"content_types": ["text/x-unknown"]}}),
        json!({"query": "q", "filter": {"source_prefix": "s".repeat(2049)}}),
        json!({"query": "q", "rerank": true, "rerank_candidates": 0}),
        json!({"query": "q", "rerank": true, "rerank_candidates": 51}),
        json!({"query": "q", "rerank_candidates": 2.5}),
    ] {
        let (code, _) = assert_error(app.post_json("/v1/search", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(code, "invalid_argument", "{body}");
    }
    for body in [
        json!({}),
        json!({"query": 3}),
        json!({"query": "q", "top_k": "ten"}),
        json!({"query": "q", "mode": 1}),
        json!({"query": "q", "weights": [1, 2]}),
        json!({"query": "q", "weights": {"vector": "1"}}),
        json!({"query": "q", "weights": {"dense": 1}}),
        // A misspelt condition is refused rather than ignored (which would widen the search).
        json!({"query": "q", "filter": {"content_type": "text/plain"}}),
        json!({"query": "q", "filter": {"document_ids": "a"}}),
        json!({"query": "q", "filter": {"created_after": 1796601600000_i64}}),
        json!({"query": "q", "rerank": "yes"}),
        json!({"query": "q", "rerank": 1}),
        json!({"query": "q", "rerank_candidates": "20"}),
    ] {
        assert_error(app.post_json("/v1/search", &body).await, StatusCode::BAD_REQUEST).await;
    }
    assert_error(app.post_raw("/v1/search", "{").await, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn search_answers_503_when_embeddings_is_unreachable() {
    let app = spawn_app().await;
    let body = json!({"query": "what is millrace?", "top_k": 5, "filter": {"metadata": {"team": "search"}}});
    let (code, message) = assert_error(app.post_json("/v1/search", &body).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(code, "unavailable");
    assert!(message.starts_with("embeddings service"), "{message}");
}

/// Keyword search needs no embedding: it goes to storage without calling the embeddings
/// service, while the other modes call it first.
#[tokio::test]
async fn keyword_search_does_not_call_the_embeddings_service() {
    let app = spawn_app().await;
    let body = json!({"query": "E0499", "mode": "keyword", "group_by": "chunk", "weights": {"keyword": 2},
                      "filter": {"document_ids": ["a"], "content_types": ["text/plain"], "source_prefix": "https://x/",
                                 "created_after": "2026-01-01T00:00:00Z", "updated_before": "2026-12-31T23:59:59.5+01:00",
                                 "metadata": {"team": "search"}}});
    let (code, message) = assert_error(app.post_json("/v1/search", &body).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(code, "unavailable");
    assert!(message.starts_with("storage service"), "{message}");
    for mode in ["hybrid", "vector"] {
        let body = json!({"query": "E0499", "mode": mode});
        let (_, message) =
            assert_error(app.post_json("/v1/search", &body).await, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(message.starts_with("embeddings service"), "{mode}: {message}");
    }
}

/// A filter nothing can match (an empty time range, metadata holding NUL, which jsonb cannot
/// store) is answered at once: no storage call (storage is not running here), no error.
#[tokio::test]
async fn a_filter_that_matches_nothing_is_answered_without_storage() {
    let app = spawn_app().await;
    for filter in [
        json!({"created_after": "2026-01-01T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"}),
        json!({"updated_after": "2026-01-02T00:00:00Z", "updated_before": "2026-01-01T23:00:00-01:00"}),
        json!({"metadata": {"team": "a\u{0}b"}}),
    ] {
        for mode in ["hybrid", "keyword"] {
            let body = json!({"query": "q", "mode": mode, "group_by": "chunk", "filter": filter});
            let response = app.post_json("/v1/search", &body).await;
            assert_eq!(response.status(), StatusCode::OK, "{body}");
            let answer: serde_json::Value = response.json().await.unwrap();
            assert_eq!(answer, json!({"results": [], "mode": mode, "group_by": "chunk", "reranked": false}), "{body}");
        }
        // Nothing to rerank: no call to the llm-gateway (not running here either).
        let body = json!({"query": "q", "filter": filter, "rerank": true});
        let answer: serde_json::Value = app.post_json("/v1/search", &body).await.json().await.unwrap();
        assert_eq!(answer["reranked"], true, "{answer}");
        assert_eq!(answer["results"], json!([]), "{answer}");
    }
}

#[tokio::test]
async fn documents_answer_503_when_storage_is_unreachable() {
    let app = spawn_app().await;
    let (code, message) = assert_error(app.get("/v1/documents/doc-1").await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(code, "unavailable");
    assert!(message.starts_with("storage service"), "{message}");
    assert_error(app.delete("/v1/documents/doc-1").await, StatusCode::SERVICE_UNAVAILABLE).await;
}

/// Found by schemathesis: `10.0` is an integer to JSON Schema, and serde took an array for an
/// object (the whole body, or `filter`).
#[tokio::test]
async fn whole_floats_are_integers_and_bodies_must_be_objects() {
    let app = spawn_app().await;
    // Past validation, the unreachable embeddings service answers 503.
    let response = app.post_json("/v1/search", &json!({"query": "q", "top_k": 7.0, "filter": null})).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_error(
        app.post_json("/v1/search", &json!({"query": "q", "top_k": 7.5})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_error(
        app.post_json("/v1/search", &json!({"query": "q", "filter": [null, null]})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(app.post_json("/v1/search", &json!(["q", 3])).await, StatusCode::BAD_REQUEST).await;
}
