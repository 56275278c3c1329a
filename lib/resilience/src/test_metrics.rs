//! A metrics recorder for unit tests: counters and gauges by `name{label=value,…}`, installed
//! on the test's thread (the tests run on tokio's current-thread runtime, so every await stays
//! on that thread).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

#[derive(Default, Clone)]
pub(crate) struct TestRecorder {
    values: Arc<Mutex<BTreeMap<String, f64>>>,
}

struct Handle {
    key: String,
    values: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl Handle {
    fn update(&self, f: impl FnOnce(&mut f64)) {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        f(values.entry(self.key.clone()).or_insert(0.0));
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.update(|v| *v += value as f64);
    }

    fn absolute(&self, value: u64) {
        self.update(|v| *v = v.max(value as f64));
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        self.update(|v| *v += value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| *v -= value);
    }

    fn set(&self, value: f64) {
        self.update(|v| *v = value);
    }
}

impl HistogramFn for Handle {
    /// Counts the observations.
    fn record(&self, _value: f64) {
        self.update(|v| *v += 1.0);
    }
}

impl TestRecorder {
    /// The value under `name{label=value,…}` (labels in the order they were given), 0 if never set.
    pub(crate) fn get(&self, key: &str) -> f64 {
        self.values.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied().unwrap_or(0.0)
    }

    /// Installs this recorder on the current thread until the guard drops.
    pub(crate) fn install(&self) -> metrics::LocalRecorderGuard<'_> {
        metrics::set_default_local_recorder(self)
    }

    fn handle(&self, key: &Key) -> Arc<Handle> {
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        Arc::new(Handle { key: format!("{}{{{}}}", key.name(), labels.join(",")), values: Arc::clone(&self.values) })
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}
