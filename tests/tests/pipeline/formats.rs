//! Real documents through the whole pipeline: the bundled examples (Markdown, HTML, text, PDF)
//! embedded by the local model and found by meaning, and documents submitted by URL.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use millrace_e2e::{Stack, StackOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(120);

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[tokio::test]
async fn the_examples_are_found_by_meaning_with_the_local_model() {
    let stack = Stack::start(StackOptions::default().env("MILLRACE_EMBEDDINGS_PROVIDER", "local")).await.unwrap();
    let mut jobs = Vec::new();
    for (file, content_type) in [
        ("millraces.md", "text/markdown"),
        ("water-wheels.md", "text/markdown"),
        ("grist-mill.html", "text/html"),
        ("turbines.txt", "text/plain"),
        ("tide-mills.pdf", "application/pdf"),
    ] {
        let bytes = std::fs::read(examples().join(file)).unwrap();
        let body = json!({
            "document_id": file,
            "content_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
            "content_type": content_type,
        });
        let (status, accepted, _) = stack.post("/v1/ingest", &body).await;
        assert_eq!(status, 202, "{file}: {accepted}");
        jobs.push(accepted["job_id"].as_str().unwrap().to_owned());
    }
    for job_id in &jobs {
        let job = stack.wait_for_job(job_id, WAIT).await.unwrap();
        assert_eq!(job["status"], "completed", "{job}");
    }

    // No word of the question is in the answer's text: only the model can tie them.
    let hits = stack.search("how did a mill use the rise and fall of the sea", 3).await;
    assert_eq!(hits[0]["document_id"], "tide-mills.pdf", "{hits:#?}");
    assert_eq!(hits[0]["metadata"]["embedding_model"], "all-MiniLM-L6-v2");
    assert!(hits[0]["metadata"]["page_start"].as_u64().unwrap() >= 1, "{}", hits[0]);

    let hits = stack.search("which wheel is turned by water falling onto it from above", 3).await;
    assert_eq!(hits[0]["document_id"], "water-wheels.md", "{hits:#?}");
    assert!(!hits[0]["metadata"]["heading_path"].as_array().unwrap().is_empty(), "{}", hits[0]);

    // The HTML page's navigation, scripts and styles were not indexed.
    let client = stack.postgres().await;
    let boilerplate: i64 = client
        .query_one(
            "SELECT count(*) FROM chunks WHERE text ~ 'NAVIGATION-MENU-TEXT|SCRIPT-BLOCK-TEXT|STYLE-BLOCK-TEXT|FOOTER-TEXT'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(boilerplate, 0);
}

/// Serves `body` with `content_type` on a free loopback port, to any number of requests.
async fn serve(content_type: &'static str, body: &'static [u8]) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body).await;
        }
    });
    port
}

#[tokio::test]
async fn documents_submitted_by_url_are_fetched_and_unreachable_ones_fail_with_the_network_error() {
    let stack = Stack::start(StackOptions::default().env("MILLRACE_FETCH_ALLOW_PRIVATE", "true")).await.unwrap();
    let port =
        serve("text/markdown; charset=utf-8", b"# Sluices\n\n## Opening\n\nA sluice gate lets water into the race.")
            .await;

    let url = format!("http://127.0.0.1:{port}/guide.md");
    let (status, accepted, _) = stack.post("/v1/ingest", &json!({"url": url, "document_id": "guide"})).await;
    assert_eq!(status, 202, "{accepted}");
    let job = stack.wait_for_job(accepted["job_id"].as_str().unwrap(), WAIT).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    let hits = stack.search("sluice gate", 1).await;
    assert_eq!(hits[0]["document_id"], "guide");
    // The chunk starts under "# Sluices" (its sub-heading comes later in the chunk).
    assert_eq!(hits[0]["metadata"]["heading_path"], json!(["Sluices"]), "{}", hits[0]);

    // Nothing listens on this port: the job fails with the network error, others are unharmed.
    let closed = millrace_testkit::free_port();
    let (status, accepted, _) =
        stack.post("/v1/ingest", &json!({"url": format!("http://127.0.0.1:{closed}/gone.html")})).await;
    assert_eq!(status, 202, "{accepted}");
    let job: Value = stack.wait_for_job(accepted["job_id"].as_str().unwrap(), WAIT).await.unwrap();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["stage"], "chunking", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("gone.html") && message.to_lowercase().contains("connect"), "{message}");
}
