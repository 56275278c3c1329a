//! Documents submitted by URL: checked at submit (syntax, scheme, the addresses the name
//! resolves to), fetched later by the chunking stage. Names resolve through the test table
//! (`helpers::resolver`): nothing here sends a packet anywhere but to the test's own servers.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, metric, spawn_app, spawn_app_with};

#[tokio::test]
async fn internal_urls_are_refused_with_the_reason() {
    let app = spawn_app().await;
    for (url, reason) in [
        ("http://127.0.0.1:8060/v1/stats", "127.0.0.1 is a loopback address"),
        ("http://localhost/admin", "localhost is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is a cloud metadata address"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 is an IPv4-mapped form of 127.0.0.1, a loopback address"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata address"),
        ("http://192.168.1.10/share/doc.pdf", "192.168.1.10 is a private address"),
        ("http://100.64.0.7/", "100.64.0.7 is a shared (CGNAT) address"),
        ("https://intranet.example.com/doc.pdf", "intranet.example.com resolves to 10.0.0.5, a private address"),
        (
            "https://sneaky.example.com/",
            "sneaky.example.com resolves to ::ffff:169.254.169.254, an IPv4-mapped form of 169.254.169.254, a cloud metadata address",
        ),
        ("ftp://docs.example.com/a.pdf", "the scheme \"ftp\" is not allowed"),
        ("https://user:secret@docs.example.com/a.pdf", "credentials"),
    ] {
        let (code, message) =
            assert_error(app.post_json("/v1/ingest", &json!({ "url": url })).await, StatusCode::UNPROCESSABLE_ENTITY)
                .await;
        assert_eq!(code, "invalid_argument", "{url}");
        assert!(message.starts_with("`url` is refused"), "{url}: {message}");
        assert!(message.contains(reason), "{url}: {message}");
    }
    let (_, message) =
        assert_error(app.post_json("/v1/ingest", &json!({"url": "not a url"})).await, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    assert!(message.contains("not a valid URL"), "{message}");
    assert!(app.chunking_entries().await.is_empty());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metric(&metrics, "millrace_ingestion_urls_refused_total") >= 10.0, "{metrics}");
}

#[tokio::test]
async fn an_accepted_url_makes_a_job_without_content() {
    let app = spawn_app().await;
    let url = "https://docs.example.com/guides/Intro.pdf";
    let response = app.post_json("/v1/ingest", &json!({"url": url, "metadata": {"lang": "en"}})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["document_id"], url, "the URL is the document's id by default");
    let job_id = accepted["job_id"].as_str().unwrap();
    let job = app.job(job_id).await;
    assert_eq!(job["url"], url);
    assert_eq!(job["source"], url);
    assert_eq!(job["content_hash"], "");
    assert_eq!(job["content_bytes"], 0);
    assert_eq!(job["content_type"], "", "the chunking stage resolves it from the response");
    assert_eq!(job["metadata"], json!({"lang": "en"}));
    assert_eq!(app.chunking_entries().await, vec![job_id.to_owned()]);

    // Declared types are checked and kept; a generic one is kept for the chunking stage.
    let body =
        json!({"url": "https://docs.example.com/notes", "content_type": "text/markdown", "document_id": "notes"});
    let accepted: Value = app.post_json("/v1/ingest", &body).await.json().await.unwrap();
    let job = app.job(accepted["job_id"].as_str().unwrap()).await;
    assert_eq!((job["document_id"].as_str(), job["content_type"].as_str()), (Some("notes"), Some("text/markdown")));
    let body = json!({"url": "https://docs.example.com/blob", "content_type": "application/octet-stream"});
    let accepted: Value = app.post_json("/v1/ingest", &body).await.json().await.unwrap();
    assert_eq!(app.job(accepted["job_id"].as_str().unwrap()).await["content_type"], "application/octet-stream");
    let body = json!({"url": "https://docs.example.com/a.png", "content_type": "image/png"});
    assert_error(app.post_json("/v1/ingest", &body).await, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_accepted() {
    let app = spawn_app().await;
    let url = "https://unknown.example.org/a.md";
    let response = app.post_json("/v1/ingest", &json!({ "url": url })).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "the job fails later, when the chunking stage fetches");
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(app.job(accepted["job_id"].as_str().unwrap()).await["url"], url);
}

#[tokio::test]
async fn url_and_content_are_mutually_exclusive() {
    let app = spawn_app().await;
    for body in [
        json!({"url": "https://docs.example.com/a.md", "content": "inline"}),
        json!({"url": "https://docs.example.com/a.md", "content_base64": "aGk="}),
    ] {
        let (_, message) =
            assert_error(app.post_json("/v1/ingest", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(message.contains("mutually exclusive") && message.contains("`url`"), "{message}");
    }
    let (_, message) =
        assert_error(app.post_json("/v1/ingest", &json!({"source": "x"})).await, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    assert!(message.contains("`url`"), "{message}");
}

#[tokio::test]
async fn allow_private_lets_internal_urls_in_but_never_metadata() {
    let app = spawn_app_with(&[("FETCH_ALLOW_PRIVATE", "true")]).await;
    for url in ["http://127.0.0.1:9/doc.md", "https://intranet.example.com/doc.pdf"] {
        let response = app.post_json("/v1/ingest", &json!({ "url": url })).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{url}");
    }
    for url in ["http://169.254.169.254/latest/meta-data/", "http://metadata.google.internal/"] {
        let (_, message) =
            assert_error(app.post_json("/v1/ingest", &json!({ "url": url })).await, StatusCode::UNPROCESSABLE_ENTITY)
                .await;
        assert!(message.contains("cloud metadata"), "{message}");
    }
}

#[tokio::test]
async fn the_allowlist_lets_in_only_its_host_port_pairs() {
    let app = spawn_app_with(&[("FETCH_ALLOW_HOSTS", "127.0.0.1:9,intranet.example.com:443")]).await;
    for url in ["http://127.0.0.1:9/doc.md", "https://intranet.example.com/doc.pdf"] {
        let response = app.post_json("/v1/ingest", &json!({ "url": url })).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{url}");
    }
    for (url, reason) in [
        ("http://127.0.0.1:10/doc.md", "127.0.0.1 is a loopback address"),
        ("http://127.0.0.2:9/doc.md", "127.0.0.2 is a loopback address"),
        ("http://intranet.example.com:8443/doc.pdf", "intranet.example.com resolves to 10.0.0.5, a private address"),
    ] {
        let (_, message) =
            assert_error(app.post_json("/v1/ingest", &json!({ "url": url })).await, StatusCode::UNPROCESSABLE_ENTITY)
                .await;
        assert!(message.contains(reason), "{url}: {message}");
    }
}

#[tokio::test]
async fn batch_items_by_url_are_checked_one_by_one() {
    let app = spawn_app().await;
    let body = json!({"documents": [
        {"url": "https://docs.example.com/one.md"},
        {"url": "http://10.1.1.1/two.md"},
        {"content": "three"},
    ]});
    let response = app.post_json("/v1/ingest/batch", &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs[0]["document_id"], "https://docs.example.com/one.md");
    assert_eq!(jobs[1]["error"]["code"], "invalid_argument");
    assert!(jobs[1]["error"]["message"].as_str().unwrap().contains("10.1.1.1 is a private address"));
    assert!(jobs[2]["job_id"].is_string());
    assert_eq!(app.chunking_entries().await.len(), 2);
}
