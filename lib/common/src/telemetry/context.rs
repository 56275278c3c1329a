//! How one job stays one trace across processes: the W3C `traceparent` travels in HTTP
//! headers, in gRPC metadata (a client interceptor puts it in, the server's span takes it out)
//! and in a field of every stream entry. Span names and attributes follow the OpenTelemetry
//! semantic conventions for HTTP, RPC and messaging.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The stream entry field that carries the trace context of the span that enqueued it.
pub const TRACEPARENT_FIELD: &str = "traceparent";

/// The W3C `traceparent` of the current span, if it has a valid context.
pub fn traceparent() -> Option<String> {
    let cx = Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace id (32 hex digits) of the current span, if it has a valid context.
pub fn trace_id() -> Option<String> {
    let cx = Span::current().context();
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

/// The remote context a `traceparent` value names; an invalid value gives an empty context.
pub fn remote_context(traceparent: &str) -> Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` a child of `parent` when that is a valid remote context (else `span` stays a
/// root, or the child of what is current).
pub fn set_parent(span: &Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        // Fails only if the span is disabled (filtered out), when there is nothing to link.
        let _ = span.set_parent(parent);
    }
}

/// Records the time a stream entry waited in its queue as a span of its own, from `enqueued`
/// (its id's timestamp) to now, a sibling of the span that then processes it.
pub fn record_queue_wait(parent: &Context, stream: &str, group: &str, enqueued: SystemTime) {
    let tracer = opentelemetry::global::tracer(super::TRACER_NAME);
    let waited = SystemTime::now().duration_since(enqueued).unwrap_or(Duration::ZERO);
    let mut span = tracer
        .span_builder(format!("wait {stream}"))
        .with_kind(SpanKind::Consumer)
        .with_start_time(enqueued)
        .with_attributes([
            KeyValue::new("messaging.system", "redis"),
            KeyValue::new("messaging.destination.name", stream.to_owned()),
            KeyValue::new("messaging.consumer.group.name", group.to_owned()),
            KeyValue::new("millrace.queue.wait_ms", waited.as_millis() as i64),
        ])
        .start_with_context(&tracer, parent);
    opentelemetry::trace::Span::end(&mut span);
}

/// When a Redis stream entry was added, from its id (`<ms>-<seq>`).
pub fn stream_entry_time(id: &str) -> Option<SystemTime> {
    let millis: u64 = id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

/// A channel to another millrace service that sends the caller's trace context along.
pub type GrpcChannel = InterceptedService<Channel, PropagateContext>;

/// Puts the current span's context into each outgoing gRPC request's metadata. Tonic calls it
/// while polling the caller's future, so the caller's span is current.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateContext;

impl tonic::service::Interceptor for PropagateContext {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let cx = Span::current().context();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(request.metadata_mut()));
        }
        Ok(request)
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), tonic::metadata::MetadataValue::try_from(value))
        {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

fn context_from_headers(headers: &axum::http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The server span of one gRPC call (for tonic's `Server::trace_fn`), a child of the caller's
/// span when its metadata carries one. Health checks and reflection get none.
pub fn grpc_server_span(request: &axum::http::Request<()>) -> Span {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    if service.starts_with("grpc.") {
        return Span::none();
    }
    let span = tracing::info_span!(
        "grpc",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    set_parent(&span, context_from_headers(request.headers()));
    span
}

/// Axum middleware: a server span per HTTP request (not for `/healthz`, `/readyz` and
/// `/metrics`), named by method and route, a child of the caller's span when the request
/// carries a `traceparent`.
pub async fn http_server_span(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let path = request.uri().path();
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return next.run(request).await;
    }
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| path.to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
    );
    set_parent(&span, context_from_headers(request.headers()));
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_give_their_enqueue_time() {
        let at = stream_entry_time("1700000000123-4").unwrap();
        assert_eq!(at.duration_since(UNIX_EPOCH).unwrap(), Duration::from_millis(1_700_000_000_123));
        assert!(stream_entry_time("not-an-id").is_none());
    }

    #[test]
    fn a_traceparent_round_trips_through_a_remote_context() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = remote_context(header);
        let span = cx.span();
        let context = span.span_context();
        assert!(context.is_valid() && context.is_remote() && context.is_sampled());
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!remote_context("garbage").span().span_context().is_valid());
    }
}
