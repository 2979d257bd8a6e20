//! What the node measures of its function containers, kept in memory as atomics and served on
//! the node port in Prometheus' text format at `GET /metrics/functions`.
//!
//! A function container's serving loop updates its [`FunctionStats`] as requests come and go;
//! the pod worker adds the stats to the node's [`Functions`] under the container's namespace,
//! pod and name while the container runs. Reading is a handful of atomic loads, so a scraper
//! (the autoscaler) sees the state of the moment, not a sample taken earlier.
//!
//! The node's probes (`User-Agent: kube-probe/…`) are served but not counted.
//!
//! Series, each labelled `namespace`, `pod` and `container`:
//! - `bosun_function_requests_in_flight` (gauge): requests running in an instance;
//! - `bosun_function_requests_queued` (gauge): requests waiting for a place;
//! - `bosun_function_requests_total{code="2xx"}` (counter): answered requests by status class,
//!   including those the node answered itself (413, 503, 504);
//! - `bosun_function_request_duration_seconds` (histogram): from arrival to the response's
//!   head, queueing included;
//! - `bosun_function_queue_duration_seconds` (histogram): time spent waiting for a place, for
//!   requests that got one;
//! - `bosun_function_instances_created_total` (counter): instances made for requests, one per
//!   request run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Upper bounds of the histograms' buckets, in seconds (`+Inf` is implied).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// A histogram of durations with [`BUCKETS`], updated without a lock.
#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Cumulative counts per bucket (the last is the total), and the sum in seconds.
    pub fn read(&self) -> ([u64; BUCKETS.len() + 1], f64) {
        let mut counts = [0; BUCKETS.len() + 1];
        let mut total = 0;
        for (count, bucket) in counts.iter_mut().zip(&self.buckets) {
            total += bucket.load(Ordering::Relaxed);
            *count = total;
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (counts, sum)
    }
}

/// The measures of one function container.
#[derive(Default)]
pub struct FunctionStats {
    pub in_flight: AtomicU64,
    pub queued: AtomicU64,
    /// Answered requests by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub requests: [AtomicU64; 5],
    pub duration: Histogram,
    pub queue_time: Histogram,
    pub instances_created: AtomicU64,
}

impl FunctionStats {
    /// Counts an answered request by its status code.
    pub fn answered(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// Who a function container is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FunctionKey {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// The node's running function containers and their stats.
#[derive(Default)]
pub struct Functions {
    running: Mutex<BTreeMap<FunctionKey, Arc<FunctionStats>>>,
}

impl Functions {
    pub fn add(&self, key: FunctionKey, stats: Arc<FunctionStats>) {
        self.running.lock().unwrap().insert(key, stats);
    }

    /// Forgets the container, unless another run of it has taken its place since.
    pub fn remove(&self, key: &FunctionKey, stats: &Arc<FunctionStats>) {
        let mut running = self.running.lock().unwrap();
        if running.get(key).is_some_and(|s| Arc::ptr_eq(s, stats)) {
            running.remove(key);
        }
    }

    /// The stats of each running function container.
    pub fn list(&self) -> Vec<(FunctionKey, Arc<FunctionStats>)> {
        let running = self.running.lock().unwrap();
        running
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }

    /// All series in Prometheus' text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let running = self.list();
        let mut out = String::new();
        let gauge =
            |out: &mut String, name: &str, help: &str, read: &dyn Fn(&FunctionStats) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                for (key, stats) in &running {
                    let _ = writeln!(out, "{name}{{{}}} {}", labels(key), read(stats));
                }
            };
        gauge(
            &mut out,
            "bosun_function_requests_in_flight",
            "Requests running in an instance.",
            &|s| s.in_flight.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "bosun_function_requests_queued",
            "Requests waiting for a place.",
            &|s| s.queued.load(Ordering::Relaxed),
        );
        let name = "bosun_function_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Answered requests by status class.\n# TYPE {name} counter"
        );
        for (key, stats) in &running {
            for (class, count) in stats.requests.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{{},code=\"{}xx\"}} {}",
                    labels(key),
                    class + 1,
                    count.load(Ordering::Relaxed)
                );
            }
        }
        let histogram = |out: &mut String,
                         name: &str,
                         help: &str,
                         read: &dyn Fn(&FunctionStats) -> &Histogram| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (key, stats) in &running {
                let labels = labels(key);
                let (counts, sum) = read(stats).read();
                for (bound, count) in BUCKETS.iter().zip(counts) {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
                }
                let total = counts[BUCKETS.len()];
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
                let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
            }
        };
        histogram(
            &mut out,
            "bosun_function_request_duration_seconds",
            "Time from a request's arrival to its response's head.",
            &|s| &s.duration,
        );
        histogram(
            &mut out,
            "bosun_function_queue_duration_seconds",
            "Time a request waited for a place.",
            &|s| &s.queue_time,
        );
        let name = "bosun_function_instances_created_total";
        let _ = writeln!(
            out,
            "# HELP {name} Instances made (one per request run).\n# TYPE {name} counter"
        );
        for (key, stats) in &running {
            let _ = writeln!(
                out,
                "{name}{{{}}} {}",
                labels(key),
                stats.instances_created.load(Ordering::Relaxed)
            );
        }
        out
    }
}

fn labels(key: &FunctionKey) -> String {
    format!(
        "namespace=\"{}\",pod=\"{}\",container=\"{}\"",
        escape(&key.namespace),
        escape(&key.pod),
        escape(&key.container)
    )
}

/// A label value as the text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics/functions`, for the node port's router.
pub fn routes(functions: Arc<Functions>) -> Router {
    Router::new()
        .route("/metrics/functions", get(serve))
        .with_state(functions)
}

async fn serve(State(functions): State<Arc<Functions>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        functions.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pod: &str) -> FunctionKey {
        FunctionKey {
            namespace: "default".to_string(),
            pod: pod.to_string(),
            container: "fn".to_string(),
        }
    }

    #[test]
    fn histograms_are_cumulative_and_sum_what_they_saw() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let (counts, sum) = h.read();
        assert_eq!(counts[0], 1, "0.1 ms is in the first bucket");
        assert_eq!(counts[3], 2, "3 ms is at most 5 ms");
        assert_eq!(counts[BUCKETS.len() - 1], 2, "100 s is past the last bound");
        assert_eq!(counts[BUCKETS.len()], 3);
        assert!((sum - 100.0031).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn the_text_has_each_series_for_each_running_function() {
        let functions = Functions::default();
        let stats = Arc::new(FunctionStats::default());
        stats.in_flight.store(2, Ordering::Relaxed);
        stats.answered(200);
        stats.answered(204);
        stats.answered(503);
        stats.instances_created.store(3, Ordering::Relaxed);
        stats.duration.observe(Duration::from_millis(2));
        functions.add(key("a\"b"), stats.clone());
        let text = functions.render();
        let l = r#"namespace="default",pod="a\"b",container="fn""#;
        for line in [
            format!("bosun_function_requests_in_flight{{{l}}} 2"),
            format!("bosun_function_requests_queued{{{l}}} 0"),
            format!("bosun_function_requests_total{{{l},code=\"2xx\"}} 2"),
            format!("bosun_function_requests_total{{{l},code=\"5xx\"}} 1"),
            format!("bosun_function_request_duration_seconds_bucket{{{l},le=\"0.001\"}} 0"),
            format!("bosun_function_request_duration_seconds_bucket{{{l},le=\"0.0025\"}} 1"),
            format!("bosun_function_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 1"),
            format!("bosun_function_request_duration_seconds_count{{{l}}} 1"),
            format!("bosun_function_queue_duration_seconds_count{{{l}}} 0"),
            format!("bosun_function_instances_created_total{{{l}}} 3"),
            "# TYPE bosun_function_request_duration_seconds histogram".to_string(),
        ] {
            assert!(text.lines().any(|t| t == line), "no {line:?} in\n{text}");
        }

        // A newer run of the container is not forgotten when the old one ends.
        let newer = Arc::new(FunctionStats::default());
        functions.add(key("a\"b"), newer.clone());
        functions.remove(&key("a\"b"), &stats);
        assert_eq!(functions.list().len(), 1);
        functions.remove(&key("a\"b"), &newer);
        assert!(functions.list().is_empty());
        assert!(!functions.render().contains("pod="));
    }
}
