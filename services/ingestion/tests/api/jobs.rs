use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn unknown_job_is_404() {
    let app = spawn_app().await;
    let (code, _) =
        assert_error(app.get("/v1/jobs/0190e0b0-0000-7000-8000-000000000000").await, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "not_found");
    assert_error(app.delete("/v1/jobs/nope").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn cancel_marks_the_job_cancelled_and_is_idempotent() {
    let app = spawn_app().await;
    let job_id = app.ingest("to be cancelled").await["job_id"].as_str().unwrap().to_owned();
    let response = app.delete(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["status"], "cancelled");
    assert!(job["finished_at"].is_string());
    assert_eq!(job["error"], Value::Null);

    let again: Value = app.delete(&format!("/v1/jobs/{job_id}")).await.json().await.unwrap();
    assert_eq!(again["status"], "cancelled");
    assert_eq!(again["finished_at"], job["finished_at"]);
    let read: Value = app.get(&format!("/v1/jobs/{job_id}")).await.json().await.unwrap();
    assert_eq!(read["status"], "cancelled");
}

#[tokio::test]
async fn listing_filters_by_status_and_limits() {
    let app = spawn_app().await;
    let a = app.ingest("first").await["job_id"].as_str().unwrap().to_owned();
    let b = app.ingest("second").await["job_id"].as_str().unwrap().to_owned();
    let c = app.ingest("third").await["job_id"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&format!("/v1/jobs/{b}")).await.status(), StatusCode::OK);

    let ids = |body: Value| -> Vec<String> {
        body["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap().to_owned()).collect()
    };
    let all: Value = app.get("/v1/jobs").await.json().await.unwrap();
    assert_eq!(ids(all), vec![c.clone(), b.clone(), a.clone()], "newest first");
    let cancelled: Value = app.get("/v1/jobs?status=cancelled").await.json().await.unwrap();
    assert_eq!(ids(cancelled), vec![b]);
    let queued: Value = app.get("/v1/jobs?status=queued&limit=1").await.json().await.unwrap();
    assert_eq!(ids(queued), vec![c]);
    let completed: Value = app.get("/v1/jobs?status=completed").await.json().await.unwrap();
    assert!(ids(completed).is_empty());
}

#[tokio::test]
async fn bad_listing_parameters_are_422() {
    let app = spawn_app().await;
    for query in ["status=done", "limit=0", "limit=1001", "limit=ten", "limit=-3"] {
        let (code, _) =
            assert_error(app.get(&format!("/v1/jobs?{query}")).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(code, "invalid_argument", "{query}");
    }
}
