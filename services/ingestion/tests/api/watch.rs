//! Readers of job events: one blocking Redis read per watched job whatever the number of
//! readers, and caps per client (429) and in total (503), both JSON with `Retry-After`.

use std::net::IpAddr;
use std::time::Duration;

use millrace_proto::v1::WatchJobRequest;
use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::{ADMIN_KEY, TestApp, spawn_app, spawn_app_with};

/// Clients blocked in a command (XREAD BLOCK) on the app's redis-server.
async fn blocked_clients(app: &TestApp) -> u64 {
    let info: String = redis::cmd("INFO").arg("clients").query_async(&mut app.redis().await).await.unwrap();
    info.lines().find_map(|line| line.strip_prefix("blocked_clients:")).and_then(|n| n.trim().parse().ok()).unwrap()
}

/// Waits until `want` clients are blocked, or returns what it saw last.
async fn wait_blocked(app: &TestApp, want: u64) -> u64 {
    let mut seen = 0;
    for _ in 0..50 {
        seen = blocked_clients(app).await;
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// Opens the job's event stream from `from` (a local address) and checks it was accepted.
async fn open(app: &TestApp, job_id: &str, from: &str) -> Response {
    let client = reqwest::Client::builder().local_address(from.parse::<IpAddr>().unwrap()).build().unwrap();
    client.get(app.url(&format!("/v1/jobs/{job_id}/events"))).bearer_auth(ADMIN_KEY).send().await.unwrap()
}

async fn refused(response: Response, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status);
    assert!(response.headers().get("retry-after").is_some(), "a refusal says when to retry");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
}

/// Reads the SSE body until it ends; the `event:` names.
async fn kinds(response: Response) -> Vec<String> {
    let text = tokio::time::timeout(Duration::from_secs(20), response.text()).await.unwrap().unwrap();
    text.lines().filter_map(|line| line.strip_prefix("event:")).map(|k| k.trim().to_owned()).collect()
}

#[tokio::test]
async fn readers_of_one_job_share_one_blocking_read_and_all_see_its_end() {
    let app = spawn_app().await;
    let job_id = app.ingest("watched by many").await["job_id"].as_str().unwrap().to_owned();
    let mut readers = Vec::new();
    for _ in 0..5 {
        let response = open(&app, &job_id, "127.0.0.1").await;
        assert_eq!(response.status(), StatusCode::OK);
        readers.push(response);
    }
    let mut grpc = app.ingestion_grpc().await;
    let request = WatchJobRequest { job_id: job_id.clone(), after_event_id: String::new() };
    let mut watched = grpc.watch_job(request).await.unwrap().into_inner();
    assert_eq!(wait_blocked(&app, 1).await, 1, "six readers of one job, one blocking read");

    let other = app.ingest("another job").await["job_id"].as_str().unwrap().to_owned();
    let other_reader = open(&app, &other, "127.0.0.1").await;
    assert_eq!(wait_blocked(&app, 2).await, 2, "one blocking read per watched job");

    assert_eq!(app.delete(&format!("/v1/jobs/{job_id}")).await.status(), StatusCode::OK);
    for reader in readers {
        assert_eq!(kinds(reader).await, ["queued", "cancelled"]);
    }
    let mut over_grpc = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(20), watched.message()).await.unwrap().unwrap() {
        over_grpc.push(event.r#type);
    }
    assert_eq!(over_grpc, ["queued", "cancelled"]);
    // A reader that comes after the end replays the job and ends at once.
    assert_eq!(kinds(open(&app, &job_id, "127.0.0.1").await).await, ["queued", "cancelled"]);
    drop(other_reader);
}

#[tokio::test]
async fn watchers_are_capped_per_client_with_429_and_in_total_with_503() {
    let app = spawn_app_with(&[("MAX_WATCHERS", "3"), ("MAX_WATCHERS_PER_CLIENT", "2")]).await;
    let job_id = app.ingest("watched").await["job_id"].as_str().unwrap().to_owned();

    let first = open(&app, &job_id, "127.0.0.1").await;
    let second = open(&app, &job_id, "127.0.0.1").await;
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    refused(open(&app, &job_id, "127.0.0.1").await, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // Another client still has room, until the replica's total is reached.
    let third = open(&app, &job_id, "127.0.0.2").await;
    assert_eq!(third.status(), StatusCode::OK);
    refused(open(&app, &job_id, "127.0.0.2").await, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;

    // gRPC counts against the same caps (its peer is 127.0.0.1).
    let mut grpc = app.ingestion_grpc().await;
    let request = WatchJobRequest { job_id: job_id.clone(), after_event_id: String::new() };
    assert_eq!(grpc.watch_job(request.clone()).await.unwrap_err().code(), tonic::Code::ResourceExhausted);

    // A reader that goes away gives its place back.
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        let response = open(&app, &job_id, "127.0.0.1").await;
        if response.status() == StatusCode::OK {
            reopened = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "the closed stream's place was not given back");
    drop((second, third));
}

/// Found by schemathesis: `Last-Event-ID: 0` names the start of the stream, as in Redis.
#[tokio::test]
async fn last_event_id_zero_replays_from_the_start() {
    let app = spawn_app().await;
    let job_id = app.ingest("from the start").await["job_id"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&format!("/v1/jobs/{job_id}")).await.status(), StatusCode::OK);
    let response = app
        .client
        .get(app.url(&format!("/v1/jobs/{job_id}/events")))
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(kinds(response).await, ["queued", "cancelled"]);
}
