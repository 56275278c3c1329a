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

/// Runs the `millrace` binary against `url` with no key in its environment but `env`.
async fn millrace_env(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let binary = millrace_testkit::cargo_bin("millrace").unwrap();
    tokio::process::Command::new(binary)
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("MILLRACE_API_KEY")
        .env_remove("MILLRACE_DATA_DIR")
        .envs(env.iter().copied())
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

#[tokio::test]
async fn keys_are_made_listed_and_revoked_and_the_key_comes_from_flag_env_or_file() {
    let mut options = StackOptions::default();
    for service in ["llm-gateway", "storage", "embeddings", "metadata", "chunking"] {
        options = options.skip(service);
    }
    let stack = Stack::start(options).await.unwrap();
    let api = stack.api();
    let made =
        millrace(&api, &["keys", "create", "--tenant", "acme", "--name", "ci", "--scope", "read", "--json"]).await;
    assert!(made.status.success(), "{}", stderr(&made));
    let key: Value = serde_json::from_slice(&made.stdout).unwrap();
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    assert_eq!(key["scopes"], serde_json::json!(["read"]));

    // --api-key wins over MILLRACE_API_KEY (the admin key): a read key may list jobs, not keys.
    let jobs = millrace(&api, &["--api-key", secret, "jobs"]).await;
    assert!(jobs.status.success(), "{}", stderr(&jobs));
    let denied = millrace(&api, &["--api-key", secret, "keys", "list"]).await;
    assert_eq!(denied.status.code(), Some(1));
    assert!(stderr(&denied).contains("answered 403"), "{}", stderr(&denied));

    let listed = millrace(&api, &["keys", "list", "--tenant", "acme"]).await;
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(id) && text.contains("active") && !text.contains(&secret[10..]), "{text}");
    let revoked = millrace(&api, &["keys", "revoke", id]).await;
    assert_eq!(String::from_utf8_lossy(&revoked.stdout).trim(), format!("revoked {id}"));

    // With neither flag nor variable, the local stack's key file; with none at all, 401.
    let dir = tempdir("cli-keys");
    std::fs::write(dir.join("admin.key"), format!("{}\n", millrace_e2e::ADMIN_KEY)).unwrap();
    let from_file =
        millrace_env(&api, &["keys", "list", "--json"], &[("MILLRACE_DATA_DIR", dir.to_str().unwrap())]).await;
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    let empty = tempdir("cli-nokey");
    let no_key = millrace_env(&api, &["jobs"], &[("MILLRACE_DATA_DIR", empty.to_str().unwrap())]).await;
    assert_eq!(no_key.status.code(), Some(1));
    assert!(stderr(&no_key).contains("answered 401"), "{}", stderr(&no_key));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("millrace-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    assert!(Path::new(&dir).is_dir());
    dir
}
