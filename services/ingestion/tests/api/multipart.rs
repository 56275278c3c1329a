//! `POST /v1/ingest` as `multipart/form-data`: a `file` and the JSON form's other fields.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Part, assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_uploaded_file_becomes_a_job_typed_by_its_name() {
    let app = spawn_app().await;
    let bytes = b"# Guide\n\nHow the wheel turns.";
    let response = app
        .post_multipart(
            "/v1/ingest",
            &[
                Part::Text("document_id", "docs/guide"),
                Part::file("guide.md", "application/octet-stream", bytes),
                Part::Text("source", "upload"),
                Part::Text("metadata", r#"{"team": "docs"}"#),
                Part::Text("chunk_size", "300"),
                Part::Text("chunk_overlap", "30"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["document_id"], "docs/guide");
    let job_id = accepted["job_id"].as_str().unwrap();
    let job = app.job(job_id).await;
    assert_eq!(job["content_type"], "text/markdown");
    assert_eq!(job["source"], "upload");
    assert_eq!(job["metadata"], json!({"team": "docs"}));
    assert_eq!(job["options"], json!({"chunk_size": 300, "chunk_overlap": 30}));
    assert_eq!(job["content_bytes"], bytes.len());
    assert_eq!(job["content_hash"], hex::encode(Sha256::digest(bytes)));
    assert_eq!(app.chunking_entries().await, vec![job_id.to_owned()]);

    let mut redis = app.redis().await;
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(format!("{}:job:{{{job_id}}}:content", crate::helpers::PREFIX))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(stored, bytes);
}

#[tokio::test]
async fn the_type_comes_from_the_field_the_part_or_the_bytes() {
    let app = spawn_app().await;
    let submit = |parts: Vec<Part<'static>>| {
        let app = &app;
        async move {
            let response = app.post_multipart("/v1/ingest", &parts).await;
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            let accepted: Value = response.json().await.unwrap();
            app.job(accepted["job_id"].as_str().unwrap()).await
        }
    };
    // No name, no type: the PDF signature tells; options as one JSON field.
    let job = submit(vec![
        Part::File { name: "file", file_name: None, content_type: None, bytes: b"%PDF-1.7\n%binary" },
        Part::Text("options", r#"{"chunk_size": 512}"#),
    ])
    .await;
    assert_eq!(job["content_type"], "application/pdf");
    assert_eq!(job["options"], json!({"chunk_size": 512}));
    assert!(job["document_id"].as_str().unwrap().starts_with("sha256:"));
    // A supported part type is used.
    let job = submit(vec![Part::file("page", "text/html; charset=utf-8", b"<p>hello</p>")]).await;
    assert_eq!(job["content_type"], "text/html");
    // The form's content_type wins over the part's and the name's.
    let job = submit(vec![
        Part::file("notes.html", "text/html", b"# not html after all"),
        Part::Text("content_type", "text/markdown"),
    ])
    .await;
    assert_eq!(job["content_type"], "text/markdown");
    // An unsupported part type is a guess to ignore: UTF-8 bytes are plain text.
    let job = submit(vec![Part::file("table.csv", "text/csv", b"a,b\n1,2\n")]).await;
    assert_eq!(job["content_type"], "text/plain");
}

#[tokio::test]
async fn form_errors_name_what_to_fix() {
    let app = spawn_app().await;
    let file = Part::file("a.txt", "text/plain", b"some text");
    let cases: Vec<(Vec<Part<'_>>, StatusCode, &str)> = vec![
        (vec![Part::Text("document_id", "x")], StatusCode::UNPROCESSABLE_ENTITY, "`file`"),
        (
            vec![Part::file("a.txt", "text/plain", b"one"), Part::file("b.txt", "text/plain", b"two")],
            { StatusCode::UNPROCESSABLE_ENTITY },
            "`file` is given twice",
        ),
        (
            vec![Part::Text("colour", "blue"), Part::file("a.txt", "text/plain", b"x")],
            { StatusCode::UNPROCESSABLE_ENTITY },
            "unknown field `colour`",
        ),
        (vec![Part::Text("url", "https://docs.example.com/a.md")], StatusCode::UNPROCESSABLE_ENTITY, "`url`"),
        (vec![Part::Text("content", "inline text")], StatusCode::UNPROCESSABLE_ENTITY, "`content`"),
        (
            vec![Part::file("a.txt", "text/plain", b"x"), Part::Text("metadata", "[1]")],
            { StatusCode::UNPROCESSABLE_ENTITY },
            "`metadata`",
        ),
        (
            vec![Part::file("a.txt", "text/plain", b"x"), Part::Text("metadata", "{")],
            { StatusCode::UNPROCESSABLE_ENTITY },
            "`metadata`",
        ),
        (
            vec![Part::file("a.txt", "text/plain", b"x"), Part::Text("chunk_size", "big")],
            { StatusCode::UNPROCESSABLE_ENTITY },
            "`chunk_size`",
        ),
        (
            vec![Part::file("a.txt", "text/plain", b"x"), Part::Text("chunk_size", "0")],
            { StatusCode::UNPROCESSABLE_ENTITY },
            "`chunk_size`",
        ),
        (
            vec![
                Part::file("a.txt", "text/plain", b"x"),
                Part::Text("chunk_size", "100"),
                Part::Text("chunk_overlap", "100"),
            ],
            { StatusCode::UNPROCESSABLE_ENTITY },
            "`chunk_overlap`",
        ),
        (
            vec![Part::file("a.txt", "text/plain", b"x"), Part::Text("options", "{\"chunk_size\": 9000}")],
            { StatusCode::UNPROCESSABLE_ENTITY },
            "`options.chunk_size`",
        ),
        (
            vec![Part::file("a.txt", "text/plain", b"x"), Part::Text("options", "{}"), Part::Text("chunk_size", "5")],
            { StatusCode::UNPROCESSABLE_ENTITY },
            "`options`",
        ),
        (
            vec![Part::Text("source", "a"), Part::Text("source", "b"), file],
            StatusCode::UNPROCESSABLE_ENTITY,
            "`source`",
        ),
        (
            vec![Part::file("blob.bin", "application/octet-stream", &[0x00, 0xff, 0x10, 0x80])],
            { StatusCode::UNSUPPORTED_MEDIA_TYPE },
            "content_type",
        ),
        (
            vec![Part::file("a.txt", "text/plain", b"x"), Part::Text("content_type", "image/png")],
            { StatusCode::UNSUPPORTED_MEDIA_TYPE },
            "image/png",
        ),
        (vec![Part::file("a.txt", "text/plain", &[0x66, 0xff])], StatusCode::UNPROCESSABLE_ENTITY, "UTF-8"),
        (vec![Part::file("a.txt", "text/plain", b"  \n ")], StatusCode::UNPROCESSABLE_ENTITY, "empty"),
    ];
    for (parts, status, expected) in cases {
        let (_, message) = assert_error(app.post_multipart("/v1/ingest", &parts).await, status).await;
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
    }
    assert!(app.chunking_entries().await.is_empty());
}

#[tokio::test]
async fn oversized_uploads_are_413() {
    let app = spawn_app_with(&[("MAX_DOCUMENT_BYTES", "1000")]).await;
    let fits = vec![b'a'; 1000];
    let response = app.post_multipart("/v1/ingest", &[Part::file("a.txt", "text/plain", &fits)]).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // Over the document limit but within the body limit: refused while reading the file.
    let over = vec![b'a'; 1001];
    let (code, message) = assert_error(
        app.post_multipart("/v1/ingest", &[Part::file("a.txt", "text/plain", &over)]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(code, "payload_too_large");
    assert!(message.contains("`file`"), "{message}");
    // Past the body limit (1000 × 4/3 + 64 KiB): refused by the body limit.
    let huge = vec![b'a'; 100_000];
    assert_error(
        app.post_multipart("/v1/ingest", &[Part::file("a.txt", "text/plain", &huge)]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(app.chunking_entries().await.len(), 1);
}

#[tokio::test]
async fn a_malformed_form_is_400() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/ingest"))
        .header("content-type", "multipart/form-data")
        .body("--x\r\n")
        .send()
        .await
        .unwrap();
    let (code, _) = assert_error(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(code, "bad_request");
    let response = app
        .client
        .post(app.url("/v1/ingest"))
        .header("content-type", "multipart/form-data; boundary=abc")
        .body("--abc\r\ncontent-disposition: form-data; name=\"file\"\r\n\r\nno closing boundary")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST).await;
}

/// Found by schemathesis: a blank `options` field (as an HTML form sends one) is no options.
#[tokio::test]
async fn a_blank_options_field_is_left_out() {
    let app = spawn_app().await;
    let parts = [
        Part::Text("chunk_size", "200"),
        Part::Text("options", ""),
        Part::file("notes.txt", "text/plain", b"some text"),
    ];
    assert_eq!(app.post_multipart("/v1/ingest", &parts).await.status(), StatusCode::ACCEPTED);
}
