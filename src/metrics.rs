//! Prometheus metrics (§9.2): the OpenFaaS watchdogs' names, labels and help texts, so
//! existing dashboards keep working, plus fwatchdog's own counters.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub code: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExitLabels {
    pub code: String,
}

const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RequestLabels, Histogram>,
    pub in_flight: Gauge,
    pub auth_failures: Counter,
    pub handler_starts: Counter,
    pub handler_timeouts: Counter,
    pub handler_exits: Family<ExitLabels, Counter>,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS.into_iter())
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let in_flight = Gauge::default();
        let auth_failures = Counter::default();
        let handler_starts = Counter::default();
        let handler_timeouts = Counter::default();
        let handler_exits = Family::<ExitLabels, Counter>::default();
        registry.register(
            "http_requests",
            "total HTTP requests processed",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Seconds spent serving HTTP requests.",
            duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "total HTTP requests in-flight",
            in_flight.clone(),
        );
        registry.register(
            "fwatchdog_auth_failures",
            "Requests refused because the API key was missing or wrong.",
            auth_failures.clone(),
        );
        registry.register(
            "fwatchdog_handler_starts",
            "Handler processes started.",
            handler_starts.clone(),
        );
        registry.register(
            "fwatchdog_handler_timeouts",
            "Handler runs killed at exec_timeout.",
            handler_timeouts.clone(),
        );
        registry.register(
            "fwatchdog_handler_exits",
            "Handler processes that ended, by exit code (128+N for signal N).",
            handler_exits.clone(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            duration,
            in_flight,
            auth_failures,
            handler_starts,
            handler_timeouts,
            handler_exits,
        })
    }

    /// Counts one finished function request.
    pub fn observe(&self, method: &http::Method, code: u16, took: Duration) {
        let labels = RequestLabels {
            code: code.to_string(),
            method: method.as_str().to_ascii_lowercase(),
        };
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    pub fn handler_exit(&self, code: i32) {
        self.handler_exits
            .get_or_create(&ExitLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
