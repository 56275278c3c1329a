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

/// One webhook delivery as the receiver got it.
#[derive(Debug, Clone)]
struct Delivery {
    event: String,
    signature: String,
    body: Vec<u8>,
}

/// A webhook receiver on a free loopback port: records every POST and answers 200.
async fn receiver() -> (u16, Arc<std::sync::Mutex<Vec<Delivery>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let deliveries = Arc::new(std::sync::Mutex::new(Vec::new()));
    let received = deliveries.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buffer = [0u8; 8192];
                // Read the head, then the body its content-length announces.
                let (head, length) = loop {
                    let n = socket.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buffer[..n]);
                    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&data[..end]).to_string();
                        let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
                        data.drain(..end + 4);
                        break (head, length);
                    }
                };
                while data.len() < length {
                    let n = socket.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buffer[..n]);
                }
                received.lock().unwrap().push(Delivery {
                    event: header(&head, "x-millrace-event").unwrap_or_default(),
                    signature: header(&head, "x-millrace-signature").unwrap_or_default(),
                    body: data,
                });
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    (port, deliveries)
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2_11::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_crawl_run_through_the_api_reports_pages_taken_and_skipped_and_calls_its_webhook() {
    let site = millrace_testkit::TestSite::start_with(millrace_testkit::SiteOptions {
        sections: 2,
        pages_per_section: 3,
        slow: Duration::from_millis(200),
        big_bytes: 64 * 1024,
    })
    .unwrap();
    let (hook_port, deliveries) = receiver().await;
    let stack = Stack::start(
        StackOptions::default()
            .env("MILLRACE_FETCH_ALLOW_HOSTS", format!("{},127.0.0.1:{hook_port}", site.host_port()))
            .env("MILLRACE_CRAWL_HOST_RPM", 6000)
            .env("MILLRACE_WEBHOOK_POLL_MS", 100),
    )
    .await
    .unwrap();
    let secret = "s3cret-of-the-run";
    let (status, accepted, _) = stack
        .post(
            "/v1/runs",
            &json!({"name": "site", "collection": "web",
                "crawl": {"url": site.url("/"), "max_pages": 1000, "max_depth": 3},
                "webhook": {"url": format!("http://127.0.0.1:{hook_port}/hook"), "secret": secret,
                            "events": ["run.completed", "job.completed", "job.failed"]}}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap().to_owned();
    let run = wait_for_run(&stack, &run_id, |run| run["status"] == "done").await;
    assert_eq!(run["kind"], "crawl");

    // Every HTML page of the site was taken and completed; the rest skipped, each with why.
    let rows = report(&stack, &run_id).await;
    let by_url = |path: &str| rows.iter().find(|row| row[0] == site.url(path)).cloned();
    for page in site.html_pages() {
        let row = by_url(&page).unwrap_or_else(|| panic!("no row of {page}: {rows:?}"));
        assert_eq!((row[2].as_str(), row[3].as_str()), ("completed", "200"), "{page}: {row:?}");
    }
    for (path, reason, http_status) in [
        ("/private/1", "robots", ""),
        ("/missing/1", "status", "404"),
        ("/logo.png", "content_type", "200"),
        ("/dup", "canonical", "200"),
        ("/loop/a", "too_many_redirects", ""),
    ] {
        let row = by_url(path).unwrap_or_else(|| panic!("no row of {path}: {rows:?}"));
        assert_eq!(row[2], "skipped", "{path}: {row:?}");
        assert!(row[9].starts_with(reason), "{path} skipped as {:?}, not {reason}", row[9]);
        assert_eq!(row[3], http_status, "{path}: {row:?}");
    }
    let taken = rows.iter().filter(|row| row[2] == "completed").count() as i64;
    assert_eq!(run["counts"]["completed"].as_i64(), Some(taken), "{run}");
    assert!(run["skipped"].as_array().unwrap().iter().any(|s| s["reason"].as_str().unwrap().starts_with("robots")));
    let (_, skipped) = stack.get(&format!("/v1/runs/{run_id}/items?status=skipped&limit=1000")).await;
    let skipped = skipped["items"].as_array().unwrap().len();
    assert_eq!(rows.len(), taken as usize + skipped + rows.iter().filter(|r| r[2] == "failed").count(), "{rows:?}");

    // The webhook: one job event per finished job and one run.completed, each signed.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = deliveries.lock().unwrap().clone();
        if got.iter().any(|d| d.event == "run.completed")
            && got.iter().filter(|d| d.event.starts_with("job.")).count() as i64 >= taken
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "webhooks never arrived: {} so far", got.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = deliveries.lock().unwrap().clone();
    for delivery in &got {
        assert_eq!(delivery.signature, signature(secret, &delivery.body), "a delivery of {}", delivery.event);
        let body: Value = serde_json::from_slice(&delivery.body).unwrap();
        if delivery.event == "run.completed" {
            assert_eq!(body["run_id"], run_id.as_str());
            assert_eq!(body["counts"]["completed"].as_i64(), Some(taken), "{body}");
        } else {
            assert_eq!(
                (body["event"].as_str(), body["run_id"].as_str()),
                (Some(delivery.event.as_str()), Some(run_id.as_str()))
            );
            assert!(body["job"]["job_id"].is_string());
        }
    }
    assert_eq!(got.iter().filter(|d| d.event == "run.completed").count(), 1);
    let completed: std::collections::BTreeSet<String> = got
        .iter()
        .filter(|d| d.event == "job.completed")
        .map(|d| serde_json::from_slice::<Value>(&d.body).unwrap()["job"]["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(completed.len() as i64, taken, "one job.completed per page taken");
    assert!(site.hits("/private/1") == 0, "robots.txt is honoured");
}
