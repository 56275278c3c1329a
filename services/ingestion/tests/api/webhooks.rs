//! Webhooks: the outbox in a real PostgreSQL, deliveries to a receiver served by the test, which
//! checks every signature itself, and the run's delivery log through the API.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use millrace_fetch::{AddressPolicy, FetchConfig, Fetcher, SystemResolver, UrlGuard};
use millrace_ingestion::webhooks::{Deliverer, DeliveryStatus, NewDelivery, Outbox, WebhookConfig, WebhookEvent};
use millrace_testkit::Postgres;
use serde_json::{Value, json};
use sha2_11::Sha256;

use crate::helpers::{assert_error, client_with_key, spawn_app_with_keys};

const SECRET: &str = "whsec-test-0123456789";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    event: String,
    delivery: String,
    content_type: String,
    signature_ok: bool,
    body: Value,
}

/// A webhook receiver: answers each request with the next scripted status (then `fallback`),
/// after `delay`, and keeps what it got. It checks each signature as a receiver would: the HMAC
/// of the raw body, recomputed here with the shared secret, compared in constant time.
struct Receiver {
    script: Mutex<VecDeque<u16>>,
    fallback: u16,
    delay: Duration,
    got: Mutex<Vec<Received>>,
    in_flight: Mutex<HashMap<String, usize>>,
    overlaps: Mutex<usize>,
}

impl Receiver {
    async fn start(script: &[u16], fallback: u16, delay: Duration) -> (Arc<Self>, String) {
        let receiver = Arc::new(Self {
            script: Mutex::new(script.iter().copied().collect()),
            fallback,
            delay,
            got: Mutex::default(),
            in_flight: Mutex::default(),
            overlaps: Mutex::default(),
        });
        let app = axum::Router::new().route("/hook", post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let delivery = header("x-millrace-delivery");
    {
        let mut in_flight = receiver.in_flight.lock().unwrap();
        let count = in_flight.entry(delivery.clone()).or_default();
        *count += 1;
        if *count > 1 {
            *receiver.overlaps.lock().unwrap() += 1;
        }
    }
    let signature_ok = header("x-millrace-signature")
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
        .is_some_and(|sent| {
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(&body);
            mac.verify_slice(&sent).is_ok()
        });
    receiver.got.lock().unwrap().push(Received {
        event: header("x-millrace-event"),
        delivery: delivery.clone(),
        content_type: header("content-type"),
        signature_ok,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    tokio::time::sleep(receiver.delay).await;
    *receiver.in_flight.lock().unwrap().get_mut(&delivery).unwrap() -= 1;
    let status = receiver.script.lock().unwrap().pop_front().unwrap_or(receiver.fallback);
    StatusCode::from_u16(status).unwrap()
}

async fn outbox() -> (Outbox, String) {
    let postgres = Postgres::shared().expect("postgres starts");
    let url = postgres.create_unique_database("hooks").expect("a database");
    (outbox_on(&url), url)
}

fn outbox_on(url: &str) -> Outbox {
    let tls = millrace_common::postgres::DatabaseTls::default();
    Outbox::new(millrace_common::postgres::pool("DATABASE_URL", url, &tls, 4, Duration::from_secs(5)).unwrap())
}

/// Fast retries for tests.
fn config(retry_for: Duration) -> WebhookConfig {
    WebhookConfig {
        retry_for,
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        poll: Duration::from_millis(20),
        concurrency: 8,
        lease: Duration::from_secs(30),
        retention: Duration::from_secs(30 * 86_400),
    }
}

/// A deliverer under the address rules, with the receiver at `url` (on 127.0.0.1) exempt from
/// the private-address rule by the allowlist (`MILLRACE_FETCH_ALLOW_HOSTS`) if `allowed`.
fn deliverer(outbox: &Outbox, config: WebhookConfig, url: &str, allowed: bool) -> Deliverer {
    let allow_hosts = if allowed { vec![host_port(url)] } else { Vec::new() };
    let fetch = FetchConfig { timeout: config.timeout, allow_hosts, ..FetchConfig::default() };
    let guard = UrlGuard::new(AddressPolicy::from_config(&fetch), Arc::new(SystemResolver));
    Deliverer::new(outbox.clone(), Fetcher::with_guard(fetch, guard).unwrap(), config)
}

/// `127.0.0.1:PORT` of a receiver's URL.
fn host_port(url: &str) -> String {
    let parsed = reqwest::Url::parse(url).unwrap();
    format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap())
}

fn delivery(event_id: &str, run_id: &str, url: &str) -> NewDelivery {
    NewDelivery {
        event_id: event_id.into(),
        tenant: "acme".into(),
        run_id: run_id.into(),
        event: WebhookEvent::RunCompleted,
        url: url.into(),
        secret: SECRET.into(),
        body: json!({"event": "run.completed", "run_id": run_id, "counts": {"completed": 3}}),
    }
}

/// Runs passes of `deliverer` until the run's deliveries are all delivered or failed.
async fn settle(deliverer: &Deliverer, run_id: &str, within: Duration) -> Vec<millrace_ingestion::webhooks::Delivery> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        deliverer.run_once().await.unwrap();
        let deliveries = deliverer.outbox().deliveries("acme", run_id).await.unwrap();
        if !deliveries.is_empty() && deliveries.iter().all(|d| d.status != DeliveryStatus::Pending) {
            return deliveries;
        }
        assert!(tokio::time::Instant::now() < deadline, "not settled within {within:?}: {deliveries:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_delivery_is_signed_and_enqueued_once_per_event() {
    let (outbox, _) = outbox().await;
    let (receiver, url) = Receiver::start(&[], 200, Duration::ZERO).await;
    outbox.enqueue(delivery("run.completed:r1", "r1", &url)).await.unwrap();
    // The same event seen again (a redelivered history entry) is not a second delivery.
    let mut again = delivery("run.completed:r1", "r1", &url);
    again.body = json!({"different": true});
    outbox.enqueue(again).await.unwrap();

    let deliveries =
        settle(&deliverer(&outbox, config(Duration::from_secs(60)), &url, true), "r1", Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert_eq!((d.status, d.attempts, d.last_http_status), (DeliveryStatus::Delivered, 1, Some(200)));
    assert_eq!(d.attempt_log.len(), 1);
    assert!(d.finished_at.is_some() && d.next_attempt_at.is_none());

    let got = receiver.got();
    assert_eq!(got.len(), 1);
    assert!(got[0].signature_ok, "the receiver verifies the signature");
    assert_eq!(got[0].event, "run.completed");
    assert_eq!(got[0].delivery, "run.completed:r1");
    assert_eq!(got[0].content_type, "application/json");
    assert_eq!(got[0].body, json!({"event": "run.completed", "run_id": "r1", "counts": {"completed": 3}}));
}

#[tokio::test]
async fn a_signature_under_another_secret_does_not_verify() {
    let (outbox, _) = outbox().await;
    let (receiver, url) = Receiver::start(&[], 200, Duration::ZERO).await;
    let mut wrong = delivery("run.completed:r2", "r2", &url);
    wrong.secret = "not-the-shared-secret".into();
    outbox.enqueue(wrong).await.unwrap();
    settle(&deliverer(&outbox, config(Duration::from_secs(60)), &url, true), "r2", Duration::from_secs(10)).await;
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    assert!(!got[0].signature_ok, "the receiver's check can fail");
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_three_attempts_and_one_delivery() {
    let (outbox, _) = outbox().await;
    let (receiver, url) = Receiver::start(&[500, 503], 200, Duration::ZERO).await;
    outbox.enqueue(delivery("run.completed:r3", "r3", &url)).await.unwrap();
    let deliveries =
        settle(&deliverer(&outbox, config(Duration::from_secs(60)), &url, true), "r3", Duration::from_secs(10)).await;
    let d = &deliveries[0];
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 3));
    let statuses: Vec<Option<u16>> = d.attempt_log.iter().map(|a| a.http_status).collect();
    assert_eq!(statuses, [Some(500), Some(503), Some(200)]);
    let numbers: Vec<u32> = d.attempt_log.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(d.attempt_log[0].error.as_deref().unwrap().contains("HTTP 500"));
    assert!(d.attempt_log[2].error.is_none());
    assert!(d.attempt_log.windows(2).all(|w| w[0].at <= w[1].at), "attempts in time order");

    let got = receiver.got();
    assert_eq!(got.len(), 3, "one request per attempt");
    assert!(got.iter().all(|r| r.signature_ok && r.delivery == "run.completed:r3"));
    // The body signed and sent is the same bytes every time.
    assert!(got.iter().all(|r| r.body == got[0].body));
}

#[tokio::test]
async fn a_private_target_is_refused_without_a_request_and_not_retried() {
    let (outbox, _) = outbox().await;
    let (receiver, url) = Receiver::start(&[], 200, Duration::ZERO).await;
    outbox.enqueue(delivery("run.completed:r4", "r4", &url)).await.unwrap();
    let deliveries =
        settle(&deliverer(&outbox, config(Duration::from_secs(60)), &url, false), "r4", Duration::from_secs(10)).await;
    let d = &deliveries[0];
    assert_eq!((d.status, d.attempts, d.last_http_status), (DeliveryStatus::Failed, 1, None));
    let error = d.last_error.as_deref().unwrap();
    assert!(error.contains("refused") && error.contains("127.0.0.1 is a loopback address"), "{error}");
    assert!(receiver.got().is_empty(), "nothing reached the receiver");

    // An allowlist naming another port of the same host does not let it through either.
    outbox.enqueue(delivery("run.completed:r4b", "r4b", &url)).await.unwrap();
    let elsewhere = url.replace(&host_port(&url), "127.0.0.1:9");
    let deliveries =
        settle(&deliverer(&outbox, config(Duration::from_secs(60)), &elsewhere, true), "r4b", Duration::from_secs(10))
            .await;
    assert_eq!((deliveries[0].status, deliveries[0].attempts), (DeliveryStatus::Failed, 1));
    assert!(deliveries[0].last_error.as_deref().unwrap().contains("loopback"), "{deliveries:?}");
    assert!(receiver.got().is_empty());
}

#[tokio::test]
async fn a_delivery_is_given_up_after_the_retry_window() {
    let (outbox, _) = outbox().await;
    let (receiver, url) = Receiver::start(&[], 500, Duration::ZERO).await;
    outbox.enqueue(delivery("run.completed:r5", "r5", &url)).await.unwrap();
    let window = Duration::from_millis(800);
    let started = tokio::time::Instant::now();
    let deliveries = settle(&deliverer(&outbox, config(window), &url, true), "r5", Duration::from_secs(10)).await;
    let d = &deliveries[0];
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert!(started.elapsed() >= window, "not given up before the window ends");
    // Backoff of 50, 100, 200, 200… ms (half of it jitter) fits several attempts in the window.
    assert!(d.attempts >= 3, "{d:?}");
    assert_eq!(d.attempt_log.len() as u32, d.attempts);
    assert_eq!(receiver.got().len() as u32, d.attempts);
    assert_eq!(d.last_http_status, Some(500));
}

/// Finished deliveries (delivered or given up) older than the retention go with their attempts;
/// recent ones stay, and so does a pending one however old.
#[tokio::test]
async fn finished_deliveries_past_the_retention_are_pruned_with_their_attempts() {
    let (outbox, database) = outbox().await;
    let (_receiver, url) = Receiver::start(&[], 200, Duration::ZERO).await;
    let deliverer = deliverer(&outbox, config(Duration::from_secs(60)), &url, true);
    for id in ["old-delivered", "old-failed", "new-delivered"] {
        outbox.enqueue(delivery(id, "r-prune", &url)).await.unwrap();
    }
    settle(&deliverer, "r-prune", Duration::from_secs(10)).await;
    outbox.enqueue(delivery("old-pending", "r-prune", &url)).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "UPDATE webhook_deliveries SET finished_at = now() - interval '31 days'
                 WHERE event_id IN ('old-delivered', 'old-failed');
             UPDATE webhook_deliveries SET status = 'failed' WHERE event_id = 'old-failed';
             UPDATE webhook_deliveries SET created_at = now() - interval '90 days' WHERE event_id = 'old-pending';",
        )
        .await
        .unwrap();

    assert_eq!(deliverer.prune().await.unwrap(), 2);
    let left: Vec<String> = outbox.deliveries("acme", "r-prune").await.unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(left, ["new-delivered", "old-pending"]);
    let attempts: i64 = client
        .query_one("SELECT count(*) FROM webhook_attempts WHERE event_id IN ('old-delivered', 'old-failed')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 0, "the attempts went with their deliveries");
    assert_eq!(deliverer.prune().await.unwrap(), 0, "a second pass finds nothing more");
}

#[tokio::test]
async fn two_replicas_never_make_the_same_delivery_at_once() {
    let (first, url_db) = outbox().await;
    // The second replica: its own pool on the same database.
    let second = outbox_on(&url_db);
    let (receiver, url) = Receiver::start(&[], 200, Duration::from_millis(100)).await;
    for n in 0..24 {
        first.enqueue(delivery(&format!("run.completed:x{n}"), "shared", &url)).await.unwrap();
    }
    let a = deliverer(&first, config(Duration::from_secs(60)), &url, true);
    let b = deliverer(&second, config(Duration::from_secs(60)), &url, true);
    let stop = tokio_util::sync::CancellationToken::new();
    let loops = [tokio::spawn(a.clone().run(stop.clone())), tokio::spawn(b.clone().run(stop.clone()))];
    millrace_testkit::wait_until(Duration::from_secs(20), Duration::from_millis(50), || async {
        first.deliveries("acme", "shared").await.unwrap().iter().all(|d| d.status == DeliveryStatus::Delivered)
    })
    .await
    .expect("all delivered");
    stop.cancel();
    for handle in loops {
        handle.await.unwrap();
    }
    let got = receiver.got();
    let mut ids: Vec<&str> = got.iter().map(|r| r.delivery.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (24, 24), "each delivery made exactly once");
    assert_eq!(*receiver.overlaps.lock().unwrap(), 0);
    let deliveries = first.deliveries("acme", "shared").await.unwrap();
    assert!(deliveries.iter().all(|d| d.attempts == 1 && d.attempt_log.len() == 1));
}

#[tokio::test]
async fn the_run_webhook_log_is_tenant_scoped_and_never_shows_the_secret() {
    let (receiver, url) = Receiver::start(&[502], 200, Duration::ZERO).await;
    let allowed = host_port(&url);
    let app = spawn_app_with_keys(&[
        ("FETCH_ALLOW_HOSTS", allowed.as_str()),
        ("WEBHOOK_POLL_MS", "20"),
        ("WEBHOOK_RETRY_BASE_MS", "50"),
    ])
    .await;
    let database = app.database_url.clone().unwrap();
    let (_, acme_key) = app.create_key("acme", &["read"]).await;
    let (_, other_key) = app.create_key("other", &["read"]).await;
    // The run, made through the API by a key of its tenant: its durable record says whose it is.
    let (_, acme_writer) = app.create_key("acme", &["ingest"]).await;
    let body = json!({"name": "hooks", "items": [{"document_id": "d", "content": "hello"}]});
    let response = client_with_key(Some(&acme_writer)).post(app.url("/v1/runs")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    let run_id = accepted["run_id"].as_str().unwrap().to_owned();
    let log_path = format!("/v1/runs/{run_id}/webhooks");

    // The app's own delivery loop delivers what anyone enqueues.
    outbox_on(&database).enqueue(delivery(&format!("run.completed:{run_id}"), &run_id, &url)).await.unwrap();
    let acme = client_with_key(Some(&acme_key));
    let mut log = Value::Null;
    for _ in 0..200 {
        let response = acme.get(app.url(&log_path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        log = response.json().await.unwrap();
        if log["deliveries"][0]["status"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log["deliveries"][0]["status"], "delivered", "delivered by the app: {log}");
    assert_eq!(receiver.got().len(), 2);
    assert_eq!(log["run_id"], run_id.as_str());
    let d = &log["deliveries"][0];
    assert_eq!(d["id"], format!("run.completed:{run_id}"));
    assert_eq!(d["event"], "run.completed");
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["attempt_log"][0]["http_status"], 502);
    assert!(d["attempt_log"][0]["error"].as_str().unwrap().contains("502"));
    assert_eq!(d["attempt_log"][1]["http_status"], 200);
    assert!(d["attempt_log"][1]["at"].as_str().unwrap().ends_with('Z'));
    assert!(!log.to_string().contains(SECRET), "the secret is never shown");
    assert!(d.get("secret").is_none());

    // Another tenant's run answers as a missing one does.
    let other = client_with_key(Some(&other_key));
    let response = other.get(app.url(&log_path)).send().await.unwrap();
    let (_, foreign) = assert_error(response, StatusCode::NOT_FOUND).await;
    let response = other.get(app.url("/v1/runs/run_nope/webhooks")).send().await.unwrap();
    let (_, missing) = assert_error(response, StatusCode::NOT_FOUND).await;
    assert_eq!(foreign.replace(&run_id, "X"), missing.replace("run_nope", "X"));
    // An admin names the tenant.
    let response = app.get(&format!("{log_path}?tenant=acme")).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Pages and a status filter: two more events to a target the rules refuse fail at once.
    for n in 0..2 {
        let refused = delivery(&format!("job.failed:j{n}"), &run_id, "http://127.0.0.1:9/hook");
        outbox_on(&database).enqueue(refused).await.unwrap();
    }
    let get = |query: &'static str| acme.get(app.url(&format!("{log_path}{query}"))).send();
    for _ in 0..200 {
        let page: Value = get("?status=failed").await.unwrap().json().await.unwrap();
        if page["deliveries"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed: Value = get("?status=failed").await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = failed["deliveries"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["job.failed:j0", "job.failed:j1"], "{failed}");
    assert!(failed["deliveries"][0]["last_error"].as_str().unwrap().contains("loopback"), "{failed}");
    let first: Value = get("?limit=2").await.unwrap().json().await.unwrap();
    assert_eq!(first["deliveries"].as_array().unwrap().len(), 2);
    assert_eq!(first["deliveries"][0]["id"], format!("run.completed:{run_id}"));
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let url = app.url(&format!("{log_path}?limit=2&cursor={cursor}"));
    let last: Value = acme.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(last["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(last["deliveries"][0]["id"], "job.failed:j1");
    assert!(last["next_cursor"].is_null(), "{last}");
    for (query, status) in [
        ("?status=lost", StatusCode::UNPROCESSABLE_ENTITY),
        ("?limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("?cursor=abc", StatusCode::UNPROCESSABLE_ENTITY),
        ("?secret=1", StatusCode::BAD_REQUEST),
    ] {
        assert_error(get(query).await.unwrap(), status).await;
    }
}

#[tokio::test]
async fn a_redirect_is_an_answer_not_followed() {
    let (outbox, _) = outbox().await;
    let (receiver, receiver_url) = Receiver::start(&[], 200, Duration::ZERO).await;
    let target = receiver_url.clone();
    // A receiver that sends every request elsewhere (307 keeps the method and body).
    let app = axum::Router::new().route(
        "/moved",
        post(move || {
            let target = target.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, target)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let moved = format!("http://{}/moved", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    outbox.enqueue(delivery("run.completed:r6", "r6", &moved)).await.unwrap();
    // Both are allowed, so that only not following keeps the second from being reached.
    let config = config(Duration::from_millis(300));
    let allow_hosts = vec![host_port(&moved), host_port(&receiver_url)];
    let fetch = FetchConfig { timeout: config.timeout, allow_hosts, ..FetchConfig::default() };
    let guard = UrlGuard::new(AddressPolicy::from_config(&fetch), Arc::new(SystemResolver));
    let deliverer = Deliverer::new(outbox.clone(), Fetcher::with_guard(fetch, guard).unwrap(), config);
    let deliveries = settle(&deliverer, "r6", Duration::from_secs(10)).await;
    let d = &deliveries[0];
    assert_eq!((d.status, d.last_http_status), (DeliveryStatus::Failed, Some(307)));
    assert!(d.attempt_log.iter().all(|a| a.http_status == Some(307)), "{d:?}");
    assert!(receiver.got().is_empty(), "the redirect was not followed");
}

#[tokio::test]
async fn a_lease_that_runs_out_lets_another_replica_deliver_and_the_late_one_records_nothing() {
    let (first, url_db) = outbox().await;
    let second = outbox_on(&url_db);
    // Every answer takes 600 ms; the first replica's lease is shorter, as if it had stalled.
    let (receiver, url) = Receiver::start(&[], 200, Duration::from_millis(600)).await;
    first.enqueue(delivery("run.completed:r7", "r7", &url)).await.unwrap();
    let slow = deliverer(
        &first,
        WebhookConfig { lease: Duration::from_millis(200), ..config(Duration::from_secs(60)) },
        &url,
        true,
    );
    let other = deliverer(&second, config(Duration::from_secs(60)), &url, true);
    let stalled = tokio::spawn(async move { slow.run_once().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The lease is over: the other replica claims the delivery again (attempt 2).
    assert_eq!(other.run_once().await.unwrap(), 1);
    assert_eq!(stalled.await.unwrap(), 1);
    let deliveries = first.deliveries("acme", "r7").await.unwrap();
    let d = &deliveries[0];
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 2));
    // The first replica's answer came after its lease: it recorded nothing over attempt 2.
    let attempts: Vec<u32> = d.attempt_log.iter().map(|a| a.attempt).collect();
    assert_eq!(attempts, [2]);
    // At least once: the receiver saw the event twice, under one delivery id to drop the repeat.
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.delivery == "run.completed:r7" && r.signature_ok));
}
