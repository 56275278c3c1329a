use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app};

/// Every route the service serves, as the API spec lists them.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/ingest"),
    ("post", "/v1/ingest/batch"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("delete", "/v1/jobs/{id}"),
    ("get", "/v1/jobs/{id}/events"),
    ("post", "/v1/search"),
    ("get", "/v1/documents"),
    ("get", "/v1/documents/{id}"),
    ("delete", "/v1/documents/{id}"),
    ("get", "/v1/documents/{id}/chunks"),
    ("get", "/v1/stats"),
    ("get", "/v1/limits"),
    ("get", "/v1/dlq"),
    ("post", "/v1/dlq/{stage}/retry"),
    ("post", "/v1/keys"),
    ("get", "/v1/keys"),
    ("delete", "/v1/keys/{id}"),
    ("get", "/v1/audit"),
    ("post", "/v1/runs"),
    ("get", "/v1/runs"),
    ("get", "/v1/runs/{id}"),
    ("delete", "/v1/runs/{id}"),
    ("get", "/v1/runs/{id}/items"),
    ("get", "/v1/runs/{id}/report.csv"),
    ("post", "/v1/runs/{id}/retry-failed"),
    ("get", "/v1/runs/{id}/webhooks"),
    ("get", "/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

#[tokio::test]
async fn openapi_document_parses_and_covers_every_route() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        assert!(paths.get(*path).and_then(|p| p.get(*method)).is_some(), "{method} {path} is not documented");
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, ROUTES.len(), "the document lists a route the service does not have");

    // Every documented operation is served (no routing 404 or 405), and every `$ref` resolves.
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let url = app.url(&path.replace("{id}", "some-id").replace("{stage}", "metadata"));
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = app.client.request(method.clone(), &url).send().await.unwrap();
            assert_ne!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let text = response.text().await.unwrap();
            assert!(!text.contains("no route for"), "{method} {path}: {text}");
        }
    }
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/").skip(1).filter_map(|rest| rest.split('"').next()) {
        let pointer = format!("/{reference}");
        assert!(doc.pointer(&pointer).is_some(), "dangling $ref {reference}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let health: Value = app.get("/healthz").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "ingestion");

    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "storage and embeddings are not running");
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["checks"]["redis"]["ok"], true);
    assert_eq!(ready["checks"]["storage"]["ok"], false);
    assert_eq!(ready["checks"]["embeddings"]["ok"], false);

    app.ingest("counted").await;
    assert_error(app.post_raw("/v1/ingest", "{").await, StatusCode::BAD_REQUEST).await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let metrics = response.text().await.unwrap();
    assert!(metrics.contains("millrace_ingestion_jobs_submitted_total"), "{metrics}");
    assert!(metrics.contains("millrace_ingestion_requests_rejected_total{reason=\"bad_request\"}"), "{metrics}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let (code, _) = assert_error(app.get("/v2/nothing").await, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "not_found");
    let response = app.client.put(app.url("/v1/ingest")).send().await.unwrap();
    assert_error(response, StatusCode::METHOD_NOT_ALLOWED).await;
}
