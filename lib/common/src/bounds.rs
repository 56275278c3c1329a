//! Bounds on every server, applied once here for all six services: a deadline on the time to a
//! response's headers, a limit on requests in flight that sheds the excess at once (503 and
//! `Retry-After`) instead of queueing it, and a default body limit. Health, readiness and
//! metrics stay outside the bounds, so an overloaded replica still reports itself.
//!
//! Why these answers: a request past its deadline gets 504 `deadline_exceeded` (the shared
//! code's status, as Google's APIs map DEADLINE_EXCEEDED; 408 would say the *client* was too
//! slow to send), a shed request 503 `unavailable` with `Retry-After: 1`, as the queue-full
//! refusal of the ingestion service does. Both are retryable. The deadline covers the time to
//! the headers only: tower's timeout wraps the handler's future, which ends when the response
//! starts, so a Server-Sent Events stream or a streamed chat answer is not cut, and neither
//! holds a concurrency permit while it streams (those are bounded by their own caps).

use std::sync::Arc;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};

use crate::config::ServerLimits;
use crate::error::{ApiError, ErrorCode};

/// Paths never shed nor timed out: a replica under load must still say it is alive and be
/// scraped (readiness checks carry their own 2 s timeout).
pub const UNBOUNDED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Seconds a shed caller is asked to wait: requests are short, a slot frees within one.
const SHED_RETRY_AFTER_SECS: u64 = 1;

/// Counts requests refused by these bounds, by `reason` (`overloaded`, `timeout`).
pub const REQUESTS_REFUSED: &str = "millrace_http_requests_refused_total";

/// `router` with the bounds applied to every route but [`UNBOUNDED_PATHS`].
pub fn http(router: Router, limits: &ServerLimits) -> Router {
    let in_flight = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    // Outermost first: errors become JSON answers; a request finding no free permit is shed
    // rather than waiting for one; the deadline runs while the permit is held.
    let bounded = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(refusal))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(in_flight))
        .timeout(limits.request_timeout)
        .service(router.clone());
    let mut app = Router::new();
    for path in UNBOUNDED_PATHS {
        // As a plain service: axum refuses a `Router` there (it would have it nested).
        app = app.route_service(path, router.clone().into_service::<axum::body::Body>());
    }
    // A route's own `DefaultBodyLimit` (the ingestion service's documents) is applied after
    // this one and wins.
    app.fallback_service(bounded).layer(DefaultBodyLimit::max(limits.max_body_bytes))
}

async fn refusal(err: BoxError) -> Response {
    let (reason, error) = if err.is::<tower::load_shed::error::Overloaded>() {
        (
            "overloaded",
            ApiError::unavailable("too many requests in flight on this replica; retry shortly")
                .with_retry_after(SHED_RETRY_AFTER_SECS),
        )
    } else if err.is::<tower::timeout::error::Elapsed>() {
        ("timeout", ApiError::new(ErrorCode::DeadlineExceeded, "the request took longer than this service allows"))
    } else {
        ("error", ApiError::internal(format!("request failed: {err}")))
    };
    tracing::warn!(reason, error = %err, "request refused by the server's bounds");
    metrics::counter!(REQUESTS_REFUSED, "reason" => reason).increment(1);
    error.into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode, header};
    use axum::routing::{get, post};
    use tokio::sync::Notify;
    use tower::ServiceExt as _;

    use super::*;

    fn limits(max_concurrent_requests: usize, request_timeout: Duration) -> ServerLimits {
        ServerLimits { max_concurrent_requests, request_timeout, max_body_bytes: 16, ..ServerLimits::DEFAULT }
    }

    async fn json(response: Response) -> (StatusCode, Option<String>, serde_json::Value) {
        let status = response.status();
        let retry = response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, retry, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    fn get_req(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_request_past_the_limit_is_shed_with_json_and_retry_after_while_health_still_answers() {
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let (r, e) = (release.clone(), entered.clone());
        let router = Router::new()
            .route(
                "/slow",
                get(move || {
                    let (r, e) = (r.clone(), e.clone());
                    async move {
                        e.notify_one();
                        r.notified().await;
                        "done"
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok" }));
        let app = http(router, &limits(1, Duration::from_secs(10)));
        let first = tokio::spawn(app.clone().oneshot(get_req("/slow")));
        entered.notified().await;

        let second = tokio::time::timeout(Duration::from_secs(5), app.clone().oneshot(get_req("/slow")))
            .await
            .expect("a request past the limit is answered at once, not queued");
        let (status, retry, body) = json(second.unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "unavailable");
        let health = app.clone().oneshot(get_req("/healthz")).await.unwrap();
        assert_eq!(health.status(), StatusCode::OK, "health is never shed");

        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
        // The permit came back.
        let again = tokio::spawn(app.clone().oneshot(get_req("/slow")));
        entered.notified().await;
        release.notify_one();
        assert_eq!(again.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_slow_handler_gets_a_json_504_but_a_streamed_body_outlives_the_deadline() {
        let router = Router::new()
            .route(
                "/stuck",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "never"
                }),
            )
            .route(
                "/stream",
                get(|| async {
                    let chunks = futures::stream::unfold(0u8, |n| async move {
                        if n == 3 {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'x'])), n + 1))
                    });
                    Body::from_stream(chunks)
                }),
            );
        let app = http(router, &limits(8, Duration::from_millis(150)));
        let (status, _, body) = json(app.clone().oneshot(get_req("/stuck")).await.unwrap()).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error"]["code"], "deadline_exceeded");

        let response = app.oneshot(get_req("/stream")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // 300 ms of body, twice the deadline.
        assert_eq!(to_bytes(response.into_body(), 1024).await.unwrap().as_ref(), b"xxx");
    }

    #[tokio::test]
    async fn a_body_past_the_default_limit_is_refused_unless_the_route_sets_its_own() {
        let read = |body: axum::body::Bytes| async move { body.len().to_string() };
        let router =
            Router::new().route("/small", post(read)).route("/large", post(read).layer(DefaultBodyLimit::max(64)));
        let app = http(router, &limits(8, Duration::from_secs(10)));
        let post_req = |path: &str| Request::post(path).body(Body::from(vec![b'a'; 32])).unwrap();
        let small = app.clone().oneshot(post_req("/small")).await.unwrap();
        assert_eq!(small.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let large = app.oneshot(post_req("/large")).await.unwrap();
        assert_eq!(large.status(), StatusCode::OK);
    }
}
