//! `millrace sync DIR` through the whole stack: a folder mirrored into a collection, then a file
//! changed and one deleted, synced again; the listing and search show the mirror.

use std::path::PathBuf;
use std::time::Duration;

use millrace_e2e::{Stack, StackOptions};
use serde_json::Value;

use crate::cli::{millrace, stderr};

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("millrace-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `millrace sync` with `args` and returns its JSON report (asserting success).
async fn sync(stack: &Stack, dir: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["sync", dir.to_str().unwrap(), "--prefix", "kb/", "--json"];
    all.extend_from_slice(args);
    let output = millrace(&stack.api(), &all).await;
    assert!(output.status.success(), "{}\n{}", stderr(&output), stack.logs());
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The documents under `kb/`, id → (version, content hash).
async fn listing(stack: &Stack) -> Vec<(String, u64, String)> {
    let (status, page) = stack.get("/v1/documents?document_id_prefix=kb%2F&limit=100").await;
    assert_eq!(status, 200, "{page}");
    assert!(page["next_cursor"].is_null(), "{page}");
    page["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["document_id"].as_str().unwrap().to_owned(),
                d["version"].as_u64().unwrap(),
                d["content_hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn totals(report: &Value) -> [u64; 5] {
    ["added", "changed", "unchanged", "deleted", "failed"].map(|k| report["totals"][k].as_u64().unwrap())
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn a_folder_is_mirrored_then_changes_and_deletions_follow() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let dir = tempdir("sync");
    std::fs::create_dir_all(dir.join("gates")).unwrap();
    let wheel = "# Wheels\n\nAn undershot wheel turns with the stream below it.";
    std::fs::write(dir.join("wheel.md"), wheel).unwrap();
    std::fs::write(dir.join("tide.txt"), "Tide mills store the sea in a pond and grind on the ebb.").unwrap();
    std::fs::write(
        dir.join("gates/sluice.html"),
        "<html><body><p>The sluice gate holds the millpond back.</p></body></html>",
    )
    .unwrap();
    std::fs::write(dir.join("photo.png"), [0x89, b'P', b'N', b'G']).unwrap();
    // A document outside the prefix is not the mirror's.
    let outside = stack.ingest("elsewhere", "Windmills grind with the wind, not with water.").await;
    stack.wait_for_job(&outside, Duration::from_secs(60)).await.unwrap();

    let first = sync(&stack, &dir, &["--wait"]).await;
    assert_eq!(totals(&first), [3, 0, 0, 0, 0], "{first}");
    assert!(first["documents"].as_array().unwrap().iter().all(|d| d["status"] == "completed"), "{first}");
    let listed = listing(&stack).await;
    let ids: Vec<&str> = listed.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, ["kb/gates/sluice.html", "kb/tide.txt", "kb/wheel.md"]);
    assert_eq!(listed[2], ("kb/wheel.md".to_owned(), 1, sha256(wheel.as_bytes())));

    // Nothing changed: nothing is sent.
    let again = sync(&stack, &dir, &["--wait"]).await;
    assert_eq!(totals(&again), [0, 0, 3, 0, 0], "{again}");
    assert!(again["documents"].as_array().unwrap().iter().all(|d| d["job_id"].is_null()), "{again}");

    let overshot = "# Wheels\n\nAn overshot wheel is filled from above by the leat.";
    std::fs::write(dir.join("wheel.md"), overshot).unwrap();
    std::fs::remove_file(dir.join("tide.txt")).unwrap();

    // A dry run says what would happen and does none of it.
    let dry = sync(&stack, &dir, &["--dry-run"]).await;
    assert_eq!(totals(&dry), [0, 1, 1, 1, 0], "{dry}");
    assert_eq!(listing(&stack).await, listed);
    let human = millrace(&stack.api(), &["sync", dir.to_str().unwrap(), "--prefix", "kb/", "--dry-run"]).await;
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("would be changed kb/wheel.md") && text.contains("would be deleted kb/tide.txt"), "{text}");
    assert!(text.trim_end().ends_with("dry run, kb/: 0 added, 1 changed, 1 unchanged, 1 deleted, 0 failed"), "{text}");

    let second = sync(&stack, &dir, &["--wait"]).await;
    assert_eq!(totals(&second), [0, 1, 1, 1, 0], "{second}");
    let listed = listing(&stack).await;
    assert_eq!(
        listed,
        [
            ("kb/gates/sluice.html".to_owned(), 1, listed[0].2.clone()),
            ("kb/wheel.md".to_owned(), 2, sha256(overshot.as_bytes())),
        ]
    );
    // Search sees the new version and not the deleted file; the document outside is untouched.
    let hits = stack.search("overshot wheel filled from above", 3).await;
    assert_eq!(hits[0]["document_id"], "kb/wheel.md", "{hits:?}");
    let tide = stack.search("tide mills store the sea", 5).await;
    assert!(tide.iter().all(|hit| hit["document_id"] != "kb/tide.txt"), "{tide:?}");
    // The same listing over gRPC, a page of one at a time.
    let mut grpc = stack.ingestion_grpc().await;
    let (mut ids, mut cursor) = (Vec::new(), String::new());
    loop {
        let request = millrace_proto::v1::ListDocumentsRequest {
            document_id_prefix: "kb/".into(),
            cursor: cursor.clone(),
            limit: 1,
            ..Default::default()
        };
        let page = grpc.list_documents(request).await.unwrap().into_inner();
        ids.extend(page.documents.iter().map(|d| (d.document_id.clone(), d.version, d.content_hash.clone())));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(ids, listed);
    assert_eq!(stack.get("/v1/documents/elsewhere").await.0, 200);
    assert_eq!(stack.get("/v1/documents/kb%2Ftide.txt").await.0, 404);
    std::fs::remove_dir_all(&dir).unwrap();
}
