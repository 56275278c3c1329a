use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn bad_items_get_their_own_error_and_the_others_are_accepted() {
    let app = spawn_app().await;
    let body = json!({"documents": [
        {"document_id": "good", "content": "a good document"},
        {"document_id": "bad"},
        {"content": 42},
        {"content": "<b>x</b>", "content_type": "image/png"},
    ]});
    let response = app.post_json("/v1/ingest/batch", &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4);

    assert_eq!(jobs[0]["index"], 0);
    assert_eq!(jobs[0]["document_id"], "good");
    assert_eq!(jobs[0]["status"], "queued");
    let job_id = jobs[0]["job_id"].as_str().unwrap();
    assert_eq!(jobs[0]["status_url"], format!("/v1/jobs/{job_id}"));
    assert!(jobs[0].get("error").is_none());

    for (index, code) in [(1, "invalid_argument"), (2, "bad_request"), (3, "unsupported_media_type")] {
        assert_eq!(jobs[index]["index"], index);
        assert_eq!(jobs[index]["error"]["code"], code, "{}", jobs[index]);
        assert!(jobs[index]["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(jobs[index].get("job_id").is_none());
    }
    assert_eq!(app.chunking_entries().await, vec![job_id.to_owned()]);
    let job: Value = app.get(&format!("/v1/jobs/{job_id}")).await.json().await.unwrap();
    assert_eq!(job["status"], "queued");
}

#[tokio::test]
async fn malformed_batches_are_refused_whole() {
    let app = spawn_app().await;
    assert_error(app.post_json("/v1/ingest/batch", &json!({"documents": []})).await, StatusCode::UNPROCESSABLE_ENTITY)
        .await;
    assert_error(app.post_json("/v1/ingest/batch", &json!({})).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_error(app.post_json("/v1/ingest/batch", &json!({"documents": "x"})).await, StatusCode::BAD_REQUEST).await;
    assert_error(app.post_raw("/v1/ingest/batch", "{").await, StatusCode::BAD_REQUEST).await;
    let many: Vec<Value> = (0..1001).map(|i| json!({"content": format!("doc {i}")})).collect();
    let (_, message) = assert_error(
        app.post_json("/v1/ingest/batch", &json!({"documents": many})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(message.contains("1000"), "{message}");
    assert!(app.chunking_entries().await.is_empty());
}

#[tokio::test]
async fn items_past_the_queue_bound_are_refused_one_by_one() {
    let app = spawn_app_with(&[("MAX_QUEUED_JOBS", "2")]).await;
    let body = json!({"documents": [{"content": "one"}, {"content": "two"}, {"content": "three"}]});
    let response = app.post_json("/v1/ingest/batch", &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert!(body["jobs"][0]["job_id"].is_string());
    assert!(body["jobs"][1]["job_id"].is_string());
    assert_eq!(body["jobs"][2]["error"]["code"], "unavailable");

    // Now full: the whole batch is refused with Retry-After.
    let response = app.post_json("/v1/ingest/batch", &json!({"documents": [{"content": "four"}]})).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
}
