//! Per-request chunking options in the JSON form.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn options_are_stored_with_the_job() {
    let app = spawn_app().await;
    let body = json!({"content": "text", "options": {"chunk_size": 400, "chunk_overlap": 40}});
    let response = app.post_json("/v1/ingest", &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    let job = app.job(accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["options"], json!({"chunk_size": 400, "chunk_overlap": 40}));

    let body = json!({"content": "text", "options": {"chunk_overlap": 0}});
    let accepted: Value = app.post_json("/v1/ingest", &body).await.json().await.unwrap();
    assert_eq!(app.job(accepted["job_id"].as_str().unwrap()).await["options"], json!({"chunk_overlap": 0}));
}

#[tokio::test]
async fn invalid_options_are_422_naming_the_field() {
    let app = spawn_app().await;
    for (options, field) in [
        (json!({"chunk_size": 0}), "`options.chunk_size`"),
        (json!({"chunk_size": -3}), "`options.chunk_size`"),
        (json!({"chunk_size": 8193}), "`options.chunk_size`"),
        (json!({"chunk_size": "300"}), "`options.chunk_size`"),
        (json!({"chunk_size": 2.5}), "`options.chunk_size`"),
        (json!({"chunk_overlap": -1}), "`options.chunk_overlap`"),
        (json!({"chunk_size": 100, "chunk_overlap": 100}), "`options.chunk_overlap`"),
        (json!({"chunk_size": 100, "chunk_overlap": 150}), "`options.chunk_overlap`"),
        (json!({"chunk_sise": 100}), "`options.chunk_sise`"),
        (json!("big"), "`options`"),
        (json!([1]), "`options`"),
    ] {
        let body = json!({"content": "text", "options": options});
        let (code, message) =
            assert_error(app.post_json("/v1/ingest", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(code, "invalid_argument");
        assert!(message.contains(field), "{options}: {message}");
    }
    assert!(app.chunking_entries().await.is_empty());
}

#[tokio::test]
async fn batch_items_take_options_too() {
    let app = spawn_app().await;
    let body = json!({"documents": [
        {"content": "one", "options": {"chunk_size": 128}},
        {"content": "two", "options": {"chunk_size": 0}},
    ]});
    let response: Value = app.post_json("/v1/ingest/batch", &body).await.json().await.unwrap();
    let job = app.job(response["jobs"][0]["job_id"].as_str().unwrap()).await;
    assert_eq!(job["options"], json!({"chunk_size": 128}));
    assert_eq!(response["jobs"][1]["error"]["code"], "invalid_argument");
    assert!(response["jobs"][1]["error"]["message"].as_str().unwrap().contains("options.chunk_size"));
}
