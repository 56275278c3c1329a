#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The fetcher against a local axum server on 127.0.0.1: size cap, time limit, redirects,
//! refusals at a redirect hop and at connect time, per-host concurrency. Names are resolved by a
//! `StaticResolver`, so no DNS query leaves the process, and every refused address is refused
//! before a connection is attempted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use millrace_fetch::{AddressPolicy, FetchConfig, FetchError, Fetcher, StaticResolver, UrlGuard};

#[derive(Default)]
struct Server {
    hits: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Server {
    fn hit(&self, uri: &Uri) {
        *self.hits.lock().unwrap().entry(uri.path().to_owned()).or_default() += 1;
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

type Shared = State<Arc<Server>>;

async fn doc(State(server): Shared, uri: Uri, Path(name): Path<String>) -> Response {
    server.hit(&uri);
    ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], format!("# {name}\n")).into_response()
}

async fn redirect(State(server): Shared, uri: Uri, Path(n): Path<u32>) -> Response {
    server.hit(&uri);
    let to = if n == 0 { "/doc/final.md".to_owned() } else { format!("../redirect/{}", n - 1) };
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

async fn to(State(server): Shared, uri: Uri, Query(query): Query<HashMap<String, String>>) -> Response {
    server.hit(&uri);
    (StatusCode::FOUND, [(header::LOCATION, query.get("location").cloned().unwrap_or_default())]).into_response()
}

async fn sized(State(server): Shared, uri: Uri, Path(n): Path<usize>) -> Response {
    server.hit(&uri);
    vec![b'a'; n].into_response()
}

/// A body without a length that never ends.
async fn endless(State(server): Shared, uri: Uri) -> Response {
    server.hit(&uri);
    let chunk = Bytes::from(vec![b'a'; 512]);
    Body::from_stream(futures::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()))).into_response()
}

async fn slow(State(server): Shared, uri: Uri) -> Response {
    server.hit(&uri);
    tokio::time::sleep(Duration::from_secs(10)).await;
    "late".into_response()
}

/// Headers at once, then a body that stalls after its first bytes.
async fn slow_body(State(server): Shared, uri: Uri) -> Response {
    server.hit(&uri);
    let stream = futures::stream::unfold(0, |step| async move {
        if step > 0 {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        Some((Ok::<_, Infallible>(Bytes::from_static(b"part")), step + 1))
    });
    Body::from_stream(stream).into_response()
}

async fn busy(State(server): Shared, uri: Uri) -> Response {
    server.hit(&uri);
    let now = server.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    server.max_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.in_flight.fetch_sub(1, Ordering::SeqCst);
    "done".into_response()
}

async fn agent(State(server): Shared, uri: Uri, headers: axum::http::HeaderMap) -> Response {
    server.hit(&uri);
    headers.get(header::USER_AGENT).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned().into_response()
}

async fn status(State(server): Shared, uri: Uri, Path(code): Path<u16>) -> Response {
    server.hit(&uri);
    StatusCode::from_u16(code).unwrap().into_response()
}

async fn spawn_server() -> (SocketAddr, Arc<Server>) {
    let server = Arc::new(Server::default());
    let router = Router::new()
        .route("/doc/{name}", get(doc))
        .route("/redirect/{n}", get(redirect))
        .route("/to", get(to))
        .route("/sized/{n}", get(sized))
        .route("/endless", get(endless))
        .route("/slow", get(slow))
        .route("/slow-body", get(slow_body))
        .route("/busy", get(busy))
        .route("/status/{code}", get(status))
        .route("/agent", get(agent))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, server)
}

fn config() -> FetchConfig {
    FetchConfig {
        max_bytes: 1000,
        timeout: Duration::from_secs(5),
        max_redirects: 3,
        per_host_concurrency: 2,
        allow_private: true,
        allow_hosts: Vec::new(),
    }
}

/// Private addresses allowed (the server is on 127.0.0.1), no names known.
fn lenient_fetcher(config: FetchConfig) -> Fetcher {
    let guard = UrlGuard::new(AddressPolicy::new(config.allow_private), Arc::new(StaticResolver::new()));
    Fetcher::with_guard(config, guard).unwrap()
}

/// Every internal address refused except the test server's 127.0.0.1, names from `resolver`.
fn strict_fetcher(resolver: Arc<StaticResolver>) -> Fetcher {
    let policy = AddressPolicy::new(false).exempt(IpAddr::from([127, 0, 0, 1]));
    Fetcher::with_guard(FetchConfig { allow_private: false, ..config() }, UrlGuard::new(policy, resolver)).unwrap()
}

fn refused_reason(result: Result<millrace_fetch::Fetched, FetchError>) -> String {
    match result {
        Err(FetchError::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_document_comes_with_its_type_final_url_and_file_name() {
    let (addr, _) = spawn_server().await;
    let fetched = lenient_fetcher(config()).fetch(&format!("http://{addr}/doc/Guide%20One.md?v=2")).await.unwrap();
    assert_eq!(fetched.bytes, b"# Guide One.md\n");
    assert_eq!(fetched.content_type.as_deref(), Some("text/markdown; charset=utf-8"));
    assert_eq!(fetched.final_url.as_str(), format!("http://{addr}/doc/Guide%20One.md?v=2"));
    assert_eq!(fetched.file_name.as_deref(), Some("Guide One.md"));
    assert_eq!(fetched.redirects, 0);
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    let (addr, server) = spawn_server().await;
    let fetcher = lenient_fetcher(config());
    let fetched = fetcher.fetch(&format!("http://{addr}/redirect/2")).await.unwrap();
    assert_eq!(fetched.redirects, 3);
    assert_eq!(fetched.final_url.as_str(), format!("http://{addr}/doc/final.md"));
    assert_eq!(fetched.file_name.as_deref(), Some("final.md"));

    let err = fetcher.fetch(&format!("http://{addr}/redirect/3")).await.unwrap_err();
    assert_eq!(err, FetchError::TooManyRedirects { limit: 3 });
    assert!(!err.is_retryable());
    assert_eq!(server.hits("/redirect/0"), 2, "the fourth redirect is not followed");

    let none = lenient_fetcher(FetchConfig { max_redirects: 0, ..config() });
    assert_eq!(
        none.fetch(&format!("http://{addr}/redirect/0")).await.unwrap_err(),
        FetchError::TooManyRedirects { limit: 0 }
    );
}

#[tokio::test]
async fn bodies_past_the_cap_are_refused() {
    let (addr, _) = spawn_server().await;
    let fetcher = lenient_fetcher(config());
    assert_eq!(fetcher.fetch(&format!("http://{addr}/sized/1000")).await.unwrap().bytes.len(), 1000);
    // Announced by Content-Length: refused before the body is read.
    let err = fetcher.fetch(&format!("http://{addr}/sized/1001")).await.unwrap_err();
    assert_eq!(err, FetchError::TooLarge { limit: 1000 });
    assert!(!err.is_retryable());
    // No length, no end: reading stops at the cap.
    let started = Instant::now();
    assert_eq!(
        fetcher.fetch(&format!("http://{addr}/endless")).await.unwrap_err(),
        FetchError::TooLarge { limit: 1000 }
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn the_whole_fetch_is_bounded_in_time() {
    let (addr, _) = spawn_server().await;
    let limit = Duration::from_millis(300);
    let fetcher = lenient_fetcher(FetchConfig { timeout: limit, ..config() });
    for path in ["/slow", "/slow-body"] {
        let started = Instant::now();
        let err = fetcher.fetch(&format!("http://{addr}{path}")).await.unwrap_err();
        assert_eq!(err, FetchError::Timeout { limit }, "{path}");
        assert!(err.is_retryable());
        assert!(started.elapsed() < Duration::from_secs(3), "{path}: {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn a_redirect_to_a_refused_address_is_refused_at_the_hop() {
    let (addr, server) = spawn_server().await;
    // A public-looking name that points into the private network.
    let resolver = Arc::new(StaticResolver::new().with("docs.example.com", [IpAddr::from([10, 0, 0, 5])]));
    let fetcher = strict_fetcher(resolver.clone());
    let port = addr.port();

    let reason = refused_reason(
        fetcher.fetch(&format!("http://{addr}/to?location=http://docs.example.com:{port}/doc/secret.md")).await,
    );
    assert!(reason.contains("docs.example.com resolves to 10.0.0.5, a private address"), "{reason}");
    assert!(reason.contains("after 1 redirect"), "{reason}");
    assert_eq!(resolver.lookups("docs.example.com"), 1, "refused by the connect-time resolver");
    assert_eq!(server.hits("/doc/secret.md"), 0);

    for (location, expected) in [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://[::ffff:10.0.0.1]/", "::ffff:10.0.0.1 is an IPv4-mapped form of 10.0.0.1, a private address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is a cloud metadata address"),
        ("file:///etc/passwd", "the scheme \"file\" is not allowed"),
        ("http://127.0.0.2/", "127.0.0.2 is a loopback address"),
    ] {
        let reason = refused_reason(fetcher.fetch(&format!("http://{addr}/to?location={location}")).await);
        assert!(reason.contains(expected), "{location}: {reason}");
        assert!(reason.starts_with(&format!("redirect from http://{addr}/to")), "{reason}");
    }
    assert_eq!(resolver.lookups("metadata.google.internal"), 0, "refused by name, never looked up");
}

#[tokio::test]
async fn a_name_rebound_after_the_check_is_refused_at_connect_time() {
    let (addr, server) = spawn_server().await;
    let resolver = Arc::new(
        StaticResolver::new()
            .with("rebind.example.com", [IpAddr::from([93, 184, 216, 34])])
            .with("rebind.example.com", [IpAddr::from([10, 0, 0, 9])]),
    );
    let fetcher = strict_fetcher(resolver.clone());
    let url = format!("http://rebind.example.com:{}/doc/a.md", addr.port());
    fetcher.check(&url).await.unwrap();
    let reason = refused_reason(fetcher.fetch(&url).await);
    assert_eq!(reason, "rebind.example.com resolves to 10.0.0.9, a private address");
    assert_eq!(resolver.lookups("rebind.example.com"), 2);
    assert_eq!(server.total_hits(), 0);
}

#[tokio::test]
async fn internal_addresses_are_refused_unless_allowed() {
    let (addr, server) = spawn_server().await;
    let strict = Fetcher::with_guard(
        FetchConfig { allow_private: false, ..config() },
        UrlGuard::new(AddressPolicy::new(false), Arc::new(StaticResolver::new())),
    )
    .unwrap();
    let url = format!("http://{addr}/doc/a.md");
    assert_eq!(refused_reason(strict.fetch(&url).await), "127.0.0.1 is a loopback address");
    assert_eq!(
        strict.check(&url).await.unwrap_err(),
        FetchError::Refused { reason: "127.0.0.1 is a loopback address".into() }
    );
    assert_eq!(server.total_hits(), 0);
    lenient_fetcher(config()).fetch(&url).await.unwrap();
    assert_eq!(server.total_hits(), 1);
}

#[tokio::test]
async fn the_allowlist_lets_one_host_and_port_through_and_no_other() {
    let (addr, server) = spawn_server().await;
    let (other, other_server) = spawn_server().await;
    let resolver = Arc::new(
        StaticResolver::new()
            .with("site.test", [IpAddr::from([127, 0, 0, 1])])
            .with("elsewhere.test", [IpAddr::from([127, 0, 0, 1])]),
    );
    let config = FetchConfig {
        allow_private: false,
        allow_hosts: vec![addr.to_string(), format!("site.test:{}", addr.port())],
        ..config()
    };
    let fetcher =
        Fetcher::with_guard(config.clone(), UrlGuard::new(AddressPolicy::from_config(&config), resolver)).unwrap();
    let fetched = fetcher.fetch(&format!("http://{addr}/doc/a.md")).await.unwrap();
    assert_eq!((fetched.bytes.as_slice(), fetched.status), (&b"# a.md\n"[..], 200));
    // By name: checked on the URL (name and port), then at connect time (the name's addresses).
    fetcher.check(&format!("http://site.test:{}/doc/b.md", addr.port())).await.unwrap();
    fetcher.fetch(&format!("http://site.test:{}/doc/b.md", addr.port())).await.unwrap();
    assert_eq!(server.total_hits(), 2);

    // The same address on another port, another name on the same port: refused.
    let url = format!("http://{other}/doc/a.md");
    assert_eq!(refused_reason(fetcher.fetch(&url).await), "127.0.0.1 is a loopback address");
    assert!(fetcher.check(&url).await.is_err());
    let url = format!("http://elsewhere.test:{}/doc/a.md", addr.port());
    assert_eq!(refused_reason(fetcher.fetch(&url).await), "elsewhere.test resolves to 127.0.0.1, a loopback address");
    // A redirect from the allowed host to one that is not: refused at the hop.
    let reason = refused_reason(fetcher.fetch(&format!("http://{addr}/to?location=http://{other}/doc/x.md")).await);
    assert!(reason.contains("127.0.0.1 is a loopback address"), "{reason}");
    assert!(reason.starts_with("redirect from"), "{reason}");
    assert_eq!(other_server.total_hits(), 0);
    assert_eq!(server.hits("/doc/x.md"), 0);

    // Read from MILLRACE_FETCH_ALLOW_HOSTS by `Fetcher::from_settings`, with the system resolver.
    let settings = millrace_common::Settings::from_pairs([("FETCH_ALLOW_HOSTS", addr.to_string())]);
    let from_env = Fetcher::from_settings(&settings).unwrap();
    from_env.fetch(&format!("http://{addr}/doc/c.md")).await.unwrap();
    assert!(from_env.fetch(&format!("http://{other}/doc/c.md")).await.is_err());
}

#[tokio::test]
async fn a_user_agent_can_be_given_per_fetch() {
    let (addr, _) = spawn_server().await;
    let fetcher = lenient_fetcher(config());
    let url = format!("http://{addr}/agent");
    let own = fetcher.fetch(&url).await.unwrap();
    assert!(String::from_utf8(own.bytes).unwrap().starts_with("millrace-fetch/"));
    let crawler = fetcher.fetch_as(&url, Some("millrace-crawler/1.0 (+https://example.com/bot)")).await.unwrap();
    assert_eq!(crawler.bytes, b"millrace-crawler/1.0 (+https://example.com/bot)");
}

#[tokio::test]
async fn one_host_gets_at_most_its_concurrency() {
    let (addr, server) = spawn_server().await;
    let fetcher = lenient_fetcher(config());
    let url = format!("http://{addr}/busy");
    let started = Instant::now();
    let results = futures::future::join_all((0..6).map(|_| fetcher.fetch(&url))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.max_in_flight.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= Duration::from_millis(850), "three rounds of two: {:?}", started.elapsed());
}

#[tokio::test]
async fn statuses_and_network_failures_say_whether_to_retry() {
    let (addr, _) = spawn_server().await;
    let fetcher = lenient_fetcher(config());
    let err = fetcher.fetch(&format!("http://{addr}/status/404")).await.unwrap_err();
    assert_eq!(err, FetchError::Status(404));
    assert!(!err.is_retryable());
    let err = fetcher.fetch(&format!("http://{addr}/status/503")).await.unwrap_err();
    assert_eq!(err, FetchError::Status(503));
    assert!(err.is_retryable());

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = fetcher.fetch(&format!("http://{closed}/doc/a.md")).await.unwrap_err();
    assert!(matches!(err, FetchError::Network(_)), "{err:?}");
    assert!(err.is_retryable());
    let err = fetcher.fetch(&format!("http://nowhere.example:{}/a", closed.port())).await.unwrap_err();
    assert!(matches!(&err, FetchError::Network(message) if message.contains("does not resolve")), "{err:?}");
}
