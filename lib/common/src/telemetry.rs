//! Traces and structured logs, set up once per process by [`init`].
//!
//! Spans go to an OpenTelemetry collector over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the standard `OTEL_*` variables apply
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`,
//! `OTEL_SDK_DISABLED`). Export runs on the SDK's background thread with a bounded queue, so a
//! collector that is down costs dropped spans, never stalled work.
//!
//! Without an endpoint nothing is exported, but spans still get trace and span ids: the context
//! still travels from service to service (see [`context`]), so the logs of one job carry the
//! same `trace_id` in every service.
//!
//! Logs are JSON lines with `trace_id` and `span_id` when stderr is not a terminal (collectors
//! parse them), human-readable text when it is.

pub mod context;
mod export;
mod json_log;

use std::io::IsTerminal;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

pub use context::{GrpcChannel, PropagateContext};

/// The name spans are recorded under (the instrumentation scope).
pub const TRACER_NAME: &str = "millrace";

/// Keeps the tracer provider; dropping it flushes the spans not yet exported (bounded by the
/// SDK's export timeout), so `main` holds it until the service has stopped.
#[must_use = "dropping the guard at once would stop span export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("telemetry: flushing spans at shutdown failed: {err}");
        }
    }
}

/// Installs logging and tracing for `service` (e.g. `"chunking"`; spans are from
/// `millrace-chunking` unless `OTEL_SERVICE_NAME` says otherwise). Call it first thing inside
/// the Tokio runtime: the OTLP exporter needs one. An export setting that cannot work (an
/// endpoint that is not a URL) stops the process with exit code 2 and the variable's name,
/// as a bad configuration does.
pub fn init(service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let disabled = env_is("OTEL_SDK_DISABLED", "true");
    let provider = if disabled {
        None
    } else {
        match tracer_provider(service) {
            Ok(provider) => Some(provider),
            Err(err) => {
                eprintln!("configuration error: {err}");
                std::process::exit(2);
            }
        }
    };
    let otel_layer = provider.as_ref().map(|provider| {
        opentelemetry::global::set_tracer_provider(provider.clone());
        // Spans are kept at INFO whatever RUST_LOG says: the log level must not thin out traces
        // (the sampler does that). Per-span extras that cost on every span or every poll are
        // off: code location, thread, busy/idle time, and attaching the OpenTelemetry context
        // on each enter (context is read from the span itself, see `context`).
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(TRACER_NAME))
            .with_location(false)
            .with_target(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(LevelFilter::INFO)
    });
    let terminal = std::io::stderr().is_terminal();
    let text = terminal.then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = (!terminal)
        .then(|| tracing_subscriber::fmt::layer().event_format(json_log::JsonWithTrace).with_writer(std::io::stderr));
    let logs = text.map(|layer| layer.boxed()).or_else(|| json.map(|layer| layer.boxed()));
    let installed = tracing_subscriber::registry().with(otel_layer).with(logs.with_filter(filter)).try_init();
    if installed.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), exporting = exporting(), "starting");
    }
    Telemetry { provider }
}

/// Whether spans are sent to a collector.
pub fn exporting() -> bool {
    otlp_endpoint().is_some()
}

/// Where spans go, if anywhere: the traces endpoint or the general one, unless export is off.
fn otlp_endpoint() -> Option<String> {
    if env_is("OTEL_TRACES_EXPORTER", "none") || env_is("OTEL_SDK_DISABLED", "true") {
        return None;
    }
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.trim().is_empty()))
}

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
}

fn tracer_provider(service: &str) -> Result<SdkTracerProvider, String> {
    // The SDK's resource detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the
    // service's own name applies only where neither names one.
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = Resource::builder().with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named {
        resource = resource.with_service_name(format!("millrace-{service}"));
    }
    // The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if let Some(endpoint) = otlp_endpoint() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|err| format!("cannot export spans: {err}"))?;
        builder = builder.with_batch_exporter(export::ReportOnce::new(exporter, endpoint));
    }
    Ok(builder.build())
}
