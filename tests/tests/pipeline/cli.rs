//! The `millrace` command line, as the real binary against a real stack.

use std::path::Path;
use std::process::Output;

use millrace_e2e::{Stack, StackOptions};
use serde_json::Value;

/// Runs the `millrace` binary against `url`.
pub(crate) async fn millrace(url: &str, args: &[&str]) -> Output {
    let binary = millrace_testkit::cargo_bin("millrace").unwrap();
    tokio::process::Command::new(binary)
        .arg("--url")
        .arg(url)
        .args(args)
        .env("MILLRACE_API_KEY", millrace_e2e::ADMIN_KEY)
        .output()
        .await
        .unwrap()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn ingest_a_directory_and_wait_then_the_summary_matches_the_jobs() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let dir = tempdir("cli-ingest");
    std::fs::create_dir_all(dir.join("notes")).unwrap();
    std::fs::write(
        dir.join("guide.md"),
        "# Mills\n\nA millrace carries water to the wheel.\n\n## Gates\n\nThe sluice gate.",
    )
    .unwrap();
    std::fs::write(dir.join("notes/tide.txt"), "Tide mills store the sea in a pond and grind on the ebb.").unwrap();
    std::fs::write(dir.join("notes/.hidden"), "not sent").unwrap();

    let output = millrace(&stack.api(), &["ingest", dir.to_str().unwrap(), "--wait", "--json"]).await;
    assert!(output.status.success(), "{}\n{}", stderr(&output), stack.logs());
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let documents = report["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 2, "{report}");
    let mut chunks = 0;
    for document in documents {
        assert_eq!(document["status"], "completed", "{report}");
        let job = stack.job(document["job_id"].as_str().unwrap()).await;
        assert_eq!(job["chunks"]["stored"], document["chunks"].as_f64().unwrap() as u64, "{job}");
        chunks += job["chunks"]["stored"].as_u64().unwrap();
    }
    assert_eq!(report["totals"]["chunks"], chunks);
    assert_eq!((report["totals"]["succeeded"].as_u64(), report["totals"]["failed"].as_u64()), (Some(2), Some(0)));
    // The file's path is its document id, so search finds it by that name.
    let search = millrace(&stack.api(), &["search", "water to the wheel", "--top-k", "1", "--json"]).await;
    assert!(search.status.success(), "{}", stderr(&search));
    let hits: Value = serde_json::from_slice(&search.stdout).unwrap();
    assert!(hits["results"][0]["document_id"].as_str().unwrap().ends_with("guide.md"), "{hits}");

    // For a person: the totals in one line (the same file again completes at once, reused).
    let guide = dir.join("guide.md");
    let again = millrace(&stack.api(), &["ingest", guide.to_str().unwrap(), "--wait"]).await;
    assert!(again.status.success(), "{}", stderr(&again));
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.starts_with("1 documents: 1 succeeded, 0 failed;"), "{text}");
    assert!(text.contains("reused"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bad_paths_and_a_stopped_server_get_one_line_and_their_exit_codes() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let missing = millrace(&stack.api(), &["ingest", "/no/such/dir"]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(stderr(&missing).trim(), "millrace: cannot read /no/such/dir: no such file or directory");
    assert!(missing.stdout.is_empty());

    let unknown = millrace(&stack.api(), &["job", "no-such-job"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(stderr(&unknown).trim(), "millrace: the server answered 404: no job \"no-such-job\"");

    let closed = format!("http://127.0.0.1:{}", millrace_testkit::free_port());
    let stopped = millrace(&closed, &["jobs"]).await;
    assert_eq!(stopped.status.code(), Some(2));
    let message = stderr(&stopped);
    assert!(message.starts_with(&format!("millrace: cannot reach the millrace API at {closed}: ")), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("millrace-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    assert!(Path::new(&dir).is_dir());
    dir
}
