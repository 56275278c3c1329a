//! The OTLP exporter as the services use it: a collector that is wrong or down is reported once
//! in the logs (and its recovery once), not once per batch of spans.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

#[derive(Debug)]
pub(super) struct ReportOnce<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
}

impl<E> ReportOnce<E> {
    pub(super) fn new(inner: E, endpoint: String) -> Self {
        Self { inner, endpoint, failing: AtomicBool::new(false) }
    }

    /// Notes how an export went; logs only when that changes.
    fn observe(&self, result: &OTelSdkResult) {
        match result {
            Err(err) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                endpoint = %self.endpoint,
                error = %err,
                "cannot export spans; they are dropped until the collector answers (reported once)"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "span export works again");
            }
            _ => {}
        }
    }
}

impl<E: SpanExporter> SpanExporter for ReportOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.observe(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
