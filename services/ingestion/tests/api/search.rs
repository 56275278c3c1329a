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
    ] {
        let (code, _) = assert_error(app.post_json("/v1/search", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(code, "invalid_argument", "{body}");
    }
    for body in [json!({}), json!({"query": 3}), json!({"query": "q", "top_k": "ten"})] {
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
