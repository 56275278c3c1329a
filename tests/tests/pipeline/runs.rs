//! A run through the whole stack: items of content and of URLs served by the test itself
//! (allowed by `MILLRACE_FETCH_ALLOW_HOSTS`, which names only this server), one of which fails
//! until `retry-failed` submits it again, one refused by the address rules; the report's rows;
//! and the durable history answering once Redis has forgotten the run and its jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use millrace_e2e::{Stack, StackOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(120);

/// A small site on a free loopback port: `/guide.md` always, `/flaky.md` a 503 until `recover`
/// is set, then a page. Answers how many times `/flaky.md` was asked for.
async fn serve(recover: Arc<AtomicBool>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let flaky = Arc::new(AtomicUsize::new(0));
    let asked = flaky.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let n = socket.read(&mut request).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&request[..n]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            if path == "/flaky.md" {
                asked.fetch_add(1, Ordering::SeqCst);
            }
            let (status, body) = match path.as_str() {
                "/guide.md" => ("200 OK", "# Weirs\n\nA weir holds the water back above the mill.".to_owned()),
                "/flaky.md" if !recover.load(Ordering::SeqCst) => ("503 Service Unavailable", "try later".to_owned()),
                "/flaky.md" => ("200 OK", "# Leats\n\nThe leat carries water to the wheel.".to_owned()),
                _ => ("404 Not Found", "no such page".to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/markdown\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        }
    });
    (port, flaky)
}

async fn wait_for_run(stack: &Stack, run_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, run) = stack.get(&format!("/v1/runs/{run_id}")).await;
        if status == 200 && done(&run) {
            return run;
        }
        assert!(tokio::time::Instant::now() < deadline, "run {run_id} never got there: {run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The report's rows by document id (header checked), each as its columns.
async fn report(stack: &Stack, run_id: &str) -> Vec<Vec<String>> {
    let (status, body) = stack.get(&format!("/v1/runs/{run_id}/report.csv")).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap().to_owned();
    let mut lines = text.split("\r\n").filter(|line| !line.is_empty());
    assert_eq!(
        lines.next(),
        Some("url,document_id,status,http_status,chunks,tokens,cost_usd,attempts,last_attempt_at,error")
    );
    // No field of these rows needs quoting but the errors, which are last.
    lines
        .map(|line| {
            let mut fields: Vec<String> = line.splitn(10, ',').map(str::to_owned).collect();
            fields[9] = fields[9].trim_matches('"').replace("\"\"", "\"");
            fields
        })
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], document_id: &str) -> &'a [String] {
    rows.iter().find(|row| row[1] == document_id).unwrap_or_else(|| panic!("no row of {document_id}: {rows:?}"))
}

#[tokio::test]
async fn a_run_of_content_and_urls_is_reported_retried_and_kept_after_redis_forgets_it() {
    let recover = Arc::new(AtomicBool::new(false));
    let (port, flaky) = serve(recover.clone()).await;
    let stack = Stack::start(StackOptions::default().env("MILLRACE_FETCH_ALLOW_HOSTS", format!("127.0.0.1:{port}")))
        .await
        .unwrap();
    let site = format!("http://127.0.0.1:{port}");
    let other_port = millrace_testkit::free_port();
    let (status, accepted, _) = stack
        .post(
            "/v1/runs",
            &json!({"name": "mills", "collection": "mills", "items": [
                {"content": "The mill race runs beside the river.", "document_id": "race"},
                {"url": format!("{site}/guide.md"), "document_id": "guide"},
                {"url": format!("{site}/flaky.md"), "document_id": "flaky"},
                {"url": format!("http://127.0.0.1:{other_port}/not-allowed.md"), "document_id": "elsewhere"},
            ]}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap().to_owned();
    let run = wait_for_run(&stack, &run_id, |run| run["status"] == "done").await;
    assert_eq!(run["items"], 4, "{run}");
    assert_eq!(
        (run["counts"]["completed"].as_i64(), run["counts"]["failed"].as_i64(), run["counts"]["refused"].as_i64()),
        (Some(2), Some(1), Some(1)),
        "{run}"
    );
    assert_eq!(run["progress"], 1.0);
    assert!(run["finished_at"].is_string());

    let rows = report(&stack, &run_id).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    let race = row(&rows, "race");
    assert_eq!((race[0].as_str(), race[2].as_str(), race[7].as_str()), ("", "completed", "1"), "{race:?}");
    assert!(race[4].parse::<u64>().unwrap() >= 1, "chunks of a completed item: {race:?}");
    assert!(!race[8].is_empty(), "last_attempt_at: {race:?}");
    let guide = row(&rows, "guide");
    assert_eq!((guide[0].as_str(), guide[2].as_str()), (format!("{site}/guide.md").as_str(), "completed"));
    let failed = row(&rows, "flaky");
    assert_eq!((failed[2].as_str(), failed[7].as_str()), ("failed", "1"), "{failed:?}");
    assert!(failed[9].contains("503"), "the fetch's failure is the error: {failed:?}");
    let elsewhere = row(&rows, "elsewhere");
    assert_eq!((elsewhere[2].as_str(), elsewhere[7].as_str()), ("refused", "0"), "{elsewhere:?}");
    assert!(elsewhere[9].contains("refused"), "{elsewhere:?}");

    // The site recovers; retry-failed submits the failed item again, as a second attempt.
    let asked = flaky.load(Ordering::SeqCst);
    assert!(asked >= 1);
    recover.store(true, Ordering::SeqCst);
    let (status, retried, _) = stack.post(&format!("/v1/runs/{run_id}/retry-failed"), &json!({})).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["retried"], 1);
    let run = wait_for_run(&stack, &run_id, |run| run["status"] == "done" && run["counts"]["completed"] == 3).await;
    assert_eq!(run["counts"]["failed"], 0, "{run}");
    let rows = report(&stack, &run_id).await;
    let retried = row(&rows, "flaky");
    assert_eq!((retried[2].as_str(), retried[7].as_str()), ("completed", "2"), "{retried:?}");
    assert!(flaky.load(Ordering::SeqCst) > asked);

    // Redis forgets the run and its jobs; the history still answers.
    let mut redis = stack.redis().await;
    let mut forgotten = 0;
    for pattern in [format!("{}:job:*", stack.key_prefix), format!("{}:run*", stack.key_prefix)] {
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut redis).await.unwrap();
        for key in keys {
            let _: () = redis::cmd("DEL").arg(&key).query_async(&mut redis).await.unwrap();
            forgotten += 1;
        }
    }
    assert!(forgotten >= 5, "the run's hash and its jobs' records: {forgotten}");
    let (status, run) = stack.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!((run["status"].as_str(), run["counts"]["completed"].as_i64()), (Some("done"), Some(3)), "{run}");
    assert_eq!(report(&stack, &run_id).await, rows);
    let (status, jobs) = stack.get(&format!("/v1/jobs?run_id={run_id}")).await;
    assert_eq!(status, 200, "{jobs}");
    let jobs = jobs["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4, "three items' jobs and the failed attempt's: {jobs:?}");
    assert!(jobs.iter().all(|job| job["run_id"] == run_id.as_str()));
    let (status, items) = stack.get(&format!("/v1/runs/{run_id}/items?status=completed&limit=2")).await;
    assert_eq!(status, 200);
    assert_eq!(items["items"].as_array().unwrap().len(), 2);
    let cursor = items["next_cursor"].as_str().unwrap();
    let (_, rest) = stack.get(&format!("/v1/runs/{run_id}/items?status=completed&limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
}
