//! Prometheus metrics: the OpenFaaS watchdogs' names, labels and help texts, so
//! existing dashboards keep working, plus fwatchdog's own counters.
//!
//! The exposition is Prometheus text format 0.0.4, byte for byte the shape the peers'
//! Go client serves (`# HELP http_requests_total total HTTP requests processed`, full
//! names on `# TYPE`, histogram `_bucket`/`_sum`/`_count`). It is written here rather than
//! by a metrics crate because the one we tried emits OpenMetrics only and appends a `.`
//! to every help text. The counters are plain atomics: recording a request takes a read
//! lock and two atomic adds, and allocates nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::Method;

/// Upper bounds of the request-duration buckets, in seconds (Go's `DefBuckets`).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram of seconds over [`BUCKETS`]. For requests, one per `{code, method}`, whose
/// count is also `http_requests_total`, so the two can never disagree.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last one is above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        // Saturating float-to-int cast; a negative or NaN observation adds nothing.
        self.sum_nanos
            .fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines; returns the count.
    fn render(&self, out: &mut String, name: &str, labels: &str) -> u64 {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = match BUCKETS.get(i) {
                Some(b) => writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}"),
                None => writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                ),
            };
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {sum}");
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
        cumulative
    }
}

/// The method label: lower case, as the peers write it. Methods outside the standard
/// ones share `other`, so a client inventing methods cannot grow the label set forever.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::DELETE => "delete",
        Method::HEAD => "head",
        Method::OPTIONS => "options",
        Method::PATCH => "patch",
        Method::CONNECT => "connect",
        Method::TRACE => "trace",
        _ => "other",
    }
}

/// The hasher of the request histograms' map. Its keys are a status code and one of ten
/// fixed method labels, which no client can choose to collide, so the default SipHash
/// (a third of a request's metrics cost) buys nothing here.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// One histogram per `{code, method}`.
type RequestHistograms =
    HashMap<(u16, &'static str), Arc<Histogram>, BuildHasherDefault<KeyHasher>>;

pub struct Metrics {
    requests: RwLock<RequestHistograms>,
    pub in_flight: Gauge,
    pub auth_failures: Counter,
    pub handler_starts: Counter,
    pub handler_timeouts: Counter,
    handler_exits: Mutex<BTreeMap<i32, u64>>,
    /// Requests waiting in the `max_queue` line for a slot.
    pub queue_depth: Gauge,
    /// How long requests waited in that line.
    pub queue_wait: Histogram,
    /// Connections closed at once because `max_connections` were open.
    pub connections_rejected: Counter,
    /// The same on the metrics port, at its own fixed cap.
    pub metrics_connections_rejected: Counter,
    /// Requests `/_/ready` sent to the function at `ready_path`.
    pub ready_probe_runs: Counter,
    /// lambda mode: invocations by how they ended.
    pub lambda: Invocations,
}

/// How a Lambda invocation ended, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    /// The runtime posted a result.
    Success,
    /// The runtime posted a function error.
    Error,
    /// Its deadline came first.
    Timeout,
    /// Its runtime exited.
    Exited,
    /// Its buffered result was over `max_response_bytes`.
    TooLarge,
}

impl Invocation {
    const ALL: [(Invocation, &'static str); 5] = [
        (Invocation::Success, "success"),
        (Invocation::Error, "error"),
        (Invocation::Timeout, "timeout"),
        (Invocation::Exited, "runtime_exit"),
        (Invocation::TooLarge, "too_large"),
    ];
}

/// `fwatchdog_lambda_invocations_total{outcome}`.
#[derive(Debug, Default)]
pub struct Invocations([Counter; 5]);

impl Invocations {
    pub fn count(&self, outcome: Invocation) {
        if let Some(i) = Invocation::ALL.iter().position(|(o, _)| *o == outcome) {
            self.0[i].inc();
        }
    }

    pub fn get(&self, outcome: Invocation) -> u64 {
        Invocation::ALL
            .iter()
            .position(|(o, _)| *o == outcome)
            .map_or(0, |i| self.0[i].get())
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            requests: RwLock::default(),
            in_flight: Gauge::default(),
            auth_failures: Counter::default(),
            handler_starts: Counter::default(),
            handler_timeouts: Counter::default(),
            handler_exits: Mutex::default(),
            queue_depth: Gauge::default(),
            queue_wait: Histogram::default(),
            connections_rejected: Counter::default(),
            metrics_connections_rejected: Counter::default(),
            ready_probe_runs: Counter::default(),
            lambda: Invocations::default(),
        })
    }

    /// Counts one finished function request.
    pub fn observe(&self, method: &Method, code: u16, took: Duration) {
        let key = (code, method_label(method));
        if let Some(s) = self
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            s.observe(took.as_secs_f64());
            return;
        }
        self.requests
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Counts one handler that ended with `code` (128 + N for signal N).
    pub fn handler_exit(&self, code: i32) {
        *self
            .handler_exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// The text exposition format, families in name order as the Go client sorts them:
    /// fwatchdog's own ([`OWN`]), then the peers' request families.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        for (name, help, kind, samples) in OWN {
            head(&mut out, name, help, kind);
            let _ = match samples {
                Samples::Count(value) => writeln!(out, "{name} {}", value(self)),
                Samples::Level(value) => writeln!(out, "{name} {}", value(self)),
                Samples::Lines(write) => {
                    write(self, name, &mut out);
                    Ok(())
                }
            };
        }
        self.render_requests(&mut out);
        out
    }

    /// `http_request_duration_seconds`, `http_requests_in_flight` and
    /// `http_requests_total`, the last counted from the first's histograms so that the
    /// two always agree.
    fn render_requests(&self, out: &mut String) {
        let mut series: Vec<((u16, &str), Arc<Histogram>)> = self
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, s)| (*k, s.clone()))
            .collect();
        series.sort_by(|a, b| (a.0 .0.to_string(), a.0 .1).cmp(&(b.0 .0.to_string(), b.0 .1)));
        let name = "http_request_duration_seconds";
        head(
            out,
            name,
            "Seconds spent serving HTTP requests.",
            "histogram",
        );
        let mut totals = Vec::with_capacity(series.len());
        for ((code, method), s) in &series {
            let labels = format!("code=\"{code}\",method=\"{method}\"");
            let count = s.render(out, name, &labels);
            totals.push((labels, count));
        }
        let name = "http_requests_in_flight";
        head(out, name, "total HTTP requests in-flight", "gauge");
        let _ = writeln!(out, "{name} {}", self.in_flight.get());
        let name = "http_requests_total";
        head(out, name, "total HTTP requests processed", "counter");
        for (labels, n) in totals {
            let _ = writeln!(out, "{name}{{{labels}}} {n}");
        }
    }

    fn connections_rejected_lines(&self, name: &str, out: &mut String) {
        let main = self.connections_rejected.get();
        let metrics = self.metrics_connections_rejected.get();
        let _ = writeln!(out, "{name}{{port=\"main\"}} {main}");
        let _ = writeln!(out, "{name}{{port=\"metrics\"}} {metrics}");
    }

    fn lambda_lines(&self, name: &str, out: &mut String) {
        for (i, (_, label)) in Invocation::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{outcome=\"{label}\"}} {}",
                self.lambda.0[i].get()
            );
        }
    }

    fn handler_exits_lines(&self, name: &str, out: &mut String) {
        let exits = self.handler_exits.lock().unwrap_or_else(|e| e.into_inner());
        for (code, n) in exits.iter() {
            let _ = writeln!(out, "{name}{{code=\"{code}\"}} {n}");
        }
    }
}

/// How a family's samples are written.
enum Samples {
    /// One unlabelled counter sample.
    Count(fn(&Metrics) -> u64),
    /// One unlabelled gauge sample.
    Level(fn(&Metrics) -> i64),
    /// Labelled samples or a histogram, given the family's name.
    Lines(fn(&Metrics, &str, &mut String)),
}

/// fwatchdog's own families, in name order: name, help, type, samples.
const OWN: &[(&str, &str, &str, Samples)] = &[
    (
        "fwatchdog_auth_failures_total",
        "Requests refused because the API key was missing or wrong.",
        "counter",
        Samples::Count(|m| m.auth_failures.get()),
    ),
    (
        "fwatchdog_connections_rejected_total",
        "Connections closed as soon as they were accepted because the port's connection cap was reached.",
        "counter",
        Samples::Lines(Metrics::connections_rejected_lines),
    ),
    (
        "fwatchdog_handler_exits_total",
        "Handler processes that exited, by exit code (128+N for signal N).",
        "counter",
        Samples::Lines(Metrics::handler_exits_lines),
    ),
    (
        "fwatchdog_handler_starts_total",
        "Handler processes started.",
        "counter",
        Samples::Count(|m| m.handler_starts.get()),
    ),
    (
        "fwatchdog_handler_timeouts_total",
        "Handler runs stopped at exec_timeout or write_timeout.",
        "counter",
        Samples::Count(|m| m.handler_timeouts.get()),
    ),
    (
        "fwatchdog_lambda_invocations_total",
        "lambda mode: invocations by outcome (success, error, timeout, runtime_exit, too_large).",
        "counter",
        Samples::Lines(Metrics::lambda_lines),
    ),
    (
        "fwatchdog_log_lines_dropped_total",
        "Log lines dropped because stderr was not read fast enough.",
        "counter",
        Samples::Count(|_| crate::logging::dropped_lines()),
    ),
    (
        "fwatchdog_queue_depth",
        "Requests waiting in the max_queue line for a max_inflight slot.",
        "gauge",
        Samples::Level(|m| m.queue_depth.get()),
    ),
    (
        "fwatchdog_queue_wait_seconds",
        "Seconds requests waited in the max_queue line.",
        "histogram",
        Samples::Lines(|m, name, out| {
            m.queue_wait.render(out, name, "");
        }),
    ),
    (
        "fwatchdog_ready_probe_runs_total",
        "Readiness requests sent to the function at ready_path (concurrent probes share one).",
        "counter",
        Samples::Count(|m| m.ready_probe_runs.get()),
    ),
];

fn head(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_families_are_in_name_order_before_the_peers() {
        let names: Vec<&str> = OWN.iter().map(|f| f.0).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert!(names.iter().all(|n| *n < "http_request_duration_seconds"));
    }

    #[test]
    fn renders_the_peer_names_and_help() {
        let m = Metrics::new();
        m.observe(&Method::GET, 200, Duration::from_millis(3));
        m.observe(&Method::GET, 200, Duration::from_millis(30));
        m.observe(
            &Method::from_bytes(b"BREW").expect("method"),
            418,
            Duration::ZERO,
        );
        m.in_flight.inc();
        m.handler_exit(0);
        m.handler_exit(137);
        let out = m.render();
        for want in [
            "# HELP http_requests_total total HTTP requests processed\n# TYPE http_requests_total counter\n",
            "# HELP http_request_duration_seconds Seconds spent serving HTTP requests.\n# TYPE http_request_duration_seconds histogram\n",
            "# HELP http_requests_in_flight total HTTP requests in-flight\n# TYPE http_requests_in_flight gauge\nhttp_requests_in_flight 1\n",
            "http_requests_total{code=\"200\",method=\"get\"} 2\n",
            "http_requests_total{code=\"418\",method=\"other\"} 1\n",
            "http_request_duration_seconds_bucket{code=\"200\",method=\"get\",le=\"0.005\"} 1\n",
            "http_request_duration_seconds_bucket{code=\"200\",method=\"get\",le=\"0.025\"} 1\n",
            "http_request_duration_seconds_bucket{code=\"200\",method=\"get\",le=\"0.05\"} 2\n",
            "http_request_duration_seconds_bucket{code=\"200\",method=\"get\",le=\"+Inf\"} 2\n",
            "http_request_duration_seconds_sum{code=\"200\",method=\"get\"} 0.033\n",
            "http_request_duration_seconds_count{code=\"200\",method=\"get\"} 2\n",
            "fwatchdog_handler_exits_total{code=\"137\"} 1\n",
            "fwatchdog_handler_starts_total 0\n",
            "# TYPE fwatchdog_connections_rejected_total counter\nfwatchdog_connections_rejected_total{port=\"main\"} 0\n",
            "# TYPE fwatchdog_ready_probe_runs_total counter\nfwatchdog_ready_probe_runs_total 0\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        assert!(!out.contains("# EOF"));
    }
}
