//! `GET /v1/documents`: what is refused before storage is asked (storage is not running here;
//! the listing itself is tested end to end in `tests/tests/pipeline/sync.rs`).

use reqwest::StatusCode;

use crate::helpers::{assert_error, client_with_key, spawn_app, spawn_app_with_keys};

#[tokio::test]
async fn bad_listing_parameters_are_refused_before_storage_is_asked() {
    let app = spawn_app().await;
    for (query, status, says) in [
        ("?limit=0", StatusCode::UNPROCESSABLE_ENTITY, "`limit` must be 1 to 1000"),
        ("?limit=1001", StatusCode::UNPROCESSABLE_ENTITY, "`limit` must be 1 to 1000"),
        ("?limit=many", StatusCode::BAD_REQUEST, "limit"),
        ("?prefix=docs/", StatusCode::BAD_REQUEST, "prefix"),
        ("?tenant=bad%20name", StatusCode::UNPROCESSABLE_ENTITY, "tenant"),
    ] {
        let (_, message) = assert_error(app.get(&format!("/v1/documents{query}")).await, status).await;
        assert!(message.contains(says), "{query}: {message}");
    }
    // Well formed, it reaches storage, which is down here: 503, not a listing of nothing.
    let response = app.get("/v1/documents?document_id_prefix=docs/&limit=10").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_listing_needs_read_and_keeps_to_the_keys_collections() {
    let app = spawn_app_with_keys(&[]).await;
    let (_, ingest_only) = app.create_key("acme", &["ingest"]).await;
    let response = client_with_key(Some(&ingest_only)).get(app.url("/v1/documents")).send().await.unwrap();
    assert_error(response, StatusCode::FORBIDDEN).await;
    let body = serde_json::json!({"tenant": "acme", "name": "eng only", "scopes": ["read"], "collections": ["eng"]});
    let response = app.post_json("/v1/keys", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let key: serde_json::Value = response.json().await.unwrap();
    let eng = client_with_key(key["key"].as_str());
    let response = eng.get(app.url("/v1/documents?collection=hr")).send().await.unwrap();
    let (_, message) = assert_error(response, StatusCode::FORBIDDEN).await;
    assert!(message.contains("\"hr\""), "{message}");
    // Another tenant only for an admin.
    let response = eng.get(app.url("/v1/documents?tenant=other")).send().await.unwrap();
    assert_error(response, StatusCode::FORBIDDEN).await;
}

/// `GET /v1/documents/{id}/chunks`: the parameters are checked before storage is asked (the
/// listing itself is tested end to end in `tests/tests/pipeline/chunks.rs`).
#[tokio::test]
async fn bad_chunk_listing_parameters_are_refused_before_storage_is_asked() {
    let app = spawn_app().await;
    for (query, status, says) in [
        ("?limit=0", StatusCode::UNPROCESSABLE_ENTITY, "`limit` must be 1 to 500"),
        ("?limit=501", StatusCode::UNPROCESSABLE_ENTITY, "`limit` must be 1 to 500"),
        ("?limit=many", StatusCode::BAD_REQUEST, "limit"),
        ("?cursor=abc", StatusCode::UNPROCESSABLE_ENTITY, "`cursor`"),
        ("?cursor=0-5", StatusCode::UNPROCESSABLE_ENTITY, "`cursor`"),
        ("?cursor=3-", StatusCode::UNPROCESSABLE_ENTITY, "`cursor`"),
        ("?page=2", StatusCode::BAD_REQUEST, "page"),
        ("?tenant=bad%20name", StatusCode::UNPROCESSABLE_ENTITY, "tenant"),
    ] {
        let (code, message) = assert_error(app.get(&format!("/v1/documents/doc/chunks{query}")).await, status).await;
        assert!(message.contains(says), "{query}: {code} {message}");
    }
    // An id no document can have is a 404 at once, as for `GET /v1/documents/{id}`.
    let (_, message) = assert_error(app.get("/v1/documents/a%01b/chunks").await, StatusCode::NOT_FOUND).await;
    assert!(message.contains("no document"), "{message}");
    // Well formed (an empty cursor is the first page), it reaches storage, which is down here:
    // 503, not an empty listing.
    for query in ["", "?cursor=&limit=500", "?cursor=3-99&limit=1"] {
        let response = app.get(&format!("/v1/documents/doc/chunks{query}")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{query}");
    }
}

#[tokio::test]
async fn a_chunk_listing_needs_read_and_its_own_tenant() {
    let app = spawn_app_with_keys(&[]).await;
    let (_, ingest_only) = app.create_key("acme", &["ingest"]).await;
    let response = client_with_key(Some(&ingest_only)).get(app.url("/v1/documents/doc/chunks")).send().await.unwrap();
    assert_error(response, StatusCode::FORBIDDEN).await;
    let (_, reader) = app.create_key("acme", &["read"]).await;
    let response =
        client_with_key(Some(&reader)).get(app.url("/v1/documents/doc/chunks?tenant=other")).send().await.unwrap();
    assert_error(response, StatusCode::FORBIDDEN).await;
}
