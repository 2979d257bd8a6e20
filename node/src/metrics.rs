//! What the node measures of its containers, served on the node port:
//! - `GET /metrics/functions`: each function container's requests, in Prometheus' text
//!   format (the function autoscaler reads it), written by `prometheus-client`;
//! - `GET /metrics/resource`: CPU and memory of the node, its pods and containers, with the
//!   kubelet's metric names (`container_cpu_usage_seconds_total`,
//!   `container_memory_working_set_bytes`, `pod_…`, `node_…`), written by `prometheus-client`;
//! - `GET /stats/summary`: the same as the kubelet's Summary API JSON, for the fields that
//!   apply (cumulative CPU and working sets; no rates, which the reader computes);
//! - `GET /metrics`: the node agent's own series with the kubelet's names:
//!   `kubelet_running_pods`, `kubelet_running_containers{container_state="running"}`,
//!   `kubelet_pod_start_duration_seconds` (from the agent's first sight of a pod to its
//!   first Running status) and `kubelet_image_pull_duration_seconds` (pulls from a registry,
//!   not cache hits).
//!
//! The pod worker adds each running container to the node's [`Containers`] under its
//! namespace, pod and name, and takes it out when it ends. A function container's serving
//! loop updates its [`FunctionStats`] as requests come and go; a container's usage
//! ([`crate::runtime::Container::usage`]) is read from its runtime at scrape time. Reading
//! is a handful of atomic loads and a `/proc` read per container, so a scraper sees the state
//! of the moment, not a sample taken earlier.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::runtime::{Container, Usage};
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

/// Who a container is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerKey {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// A running container, as the node's registry holds it.
pub struct Running {
    pub handle: Arc<dyn Container>,
    pub pod_uid: String,
    pub started: SystemTime,
}

/// The node's running containers, and the agent's own measures.
#[derive(Default)]
pub struct Containers {
    running: Mutex<BTreeMap<ContainerKey, Arc<Running>>>,
    /// From the agent's first sight of a pod to its first Running status.
    pub pod_start: Histogram,
    /// Image pulls from a registry.
    pub image_pull: Histogram,
    /// Connections NetworkPolicies denied, by (namespace, pod, policy).
    policy_denials: Mutex<BTreeMap<(String, String, String), u64>>,
}

impl Containers {
    pub fn add(&self, key: ContainerKey, pod_uid: &str, handle: Arc<dyn Container>) {
        let running = Running {
            handle,
            pod_uid: pod_uid.to_string(),
            started: SystemTime::now(),
        };
        self.running.lock().unwrap().insert(key, Arc::new(running));
    }

    /// Forgets the container, unless another run of it has taken its place since.
    pub fn remove(&self, key: &ContainerKey, handle: &Arc<dyn Container>) {
        let mut running = self.running.lock().unwrap();
        if running
            .get(key)
            .is_some_and(|r| Arc::ptr_eq(&r.handle, handle))
        {
            running.remove(key);
        }
    }

    /// Each running container.
    pub fn list(&self) -> Vec<(ContainerKey, Arc<Running>)> {
        let running = self.running.lock().unwrap();
        running
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    /// The stats of each running function container.
    pub fn functions(&self) -> Vec<(ContainerKey, Arc<FunctionStats>)> {
        self.list()
            .into_iter()
            .filter_map(|(key, r)| Some((key, r.handle.function_stats()?)))
            .collect()
    }

    /// The function series in Prometheus' text exposition format (0.0.4).
    pub fn render_functions(&self) -> String {
        encode(FunctionSeries(self.functions()))
    }

    /// The agent's kubelet series in Prometheus' text exposition format (0.0.4).
    /// Counts a connection of `namespace/pod` that `policy` denied.
    pub fn count_denial(&self, namespace: &str, pod: &str, policy: &str) {
        let mut denials = self.policy_denials.lock().unwrap();
        *denials
            .entry((namespace.to_string(), pod.to_string(), policy.to_string()))
            .or_default() += 1;
    }

    pub fn render_kubelet(&self) -> String {
        let running = self.list();
        let mut pods: Vec<&str> = running.iter().map(|(_, r)| r.pod_uid.as_str()).collect();
        pods.sort_unstable();
        pods.dedup();
        encode(KubeletSeries {
            pods: pods.len(),
            containers: running.len(),
            pod_start: self.pod_start.read(),
            image_pull: self.image_pull.read(),
            denials: self.policy_denials.lock().unwrap().clone(),
        })
    }
}

/// The agent's series with the kubelet's names, read at scrape time.
#[derive(Debug)]
struct KubeletSeries {
    pods: usize,
    containers: usize,
    pod_start: ([u64; BUCKETS.len() + 1], f64),
    image_pull: ([u64; BUCKETS.len() + 1], f64),
    denials: BTreeMap<(String, String, String), u64>,
}

impl Collector for KubeletSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let metric = encoder.encode_descriptor(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.pods as i64).encode(metric)?;
        let mut metric = encoder.encode_descriptor(
            "kubelet_running_containers",
            "Number of containers currently running",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.containers as i64)
            .encode(metric.encode_family(&[("container_state", "running")])?)?;
        for (name, help, (cumulative, sum)) in [
            (
                "kubelet_pod_start_duration_seconds",
                "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
                self.pod_start,
            ),
            (
                "kubelet_image_pull_duration_seconds",
                "Duration in seconds to pull an image",
                self.image_pull,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            let (total, buckets) = per_bucket(cumulative);
            metric.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)?;
        }
        let mut metric = encoder.encode_descriptor(
            "bosun_network_policy_denials",
            "Connections of the node's Wasm guests that NetworkPolicies denied",
            None,
            MetricType::Counter,
        )?;
        for ((namespace, pod, policy), count) in &self.denials {
            let labels = [
                ("namespace", namespace.as_str()),
                ("pod", pod.as_str()),
                ("policy", policy.as_str()),
            ];
            ConstCounter::new(*count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Cumulative counts as `(total, [(upper bound, count in that bucket)])`, as the encoder
/// takes them.
fn per_bucket(cumulative: [u64; BUCKETS.len() + 1]) -> (u64, Vec<(f64, u64)>) {
    let mut below = 0;
    let buckets = BUCKETS
        .iter()
        .zip(cumulative)
        .map(|(bound, up_to)| {
            let in_bucket = up_to - below;
            below = up_to;
            (*bound, in_bucket)
        })
        .collect();
    (cumulative[BUCKETS.len()], buckets)
}

/// Writes a collector's series in Prometheus' text format (0.0.4).
fn encode(collector: impl Collector) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// A container's labels: `namespace`, `pod`, `container`.
type Labels = Vec<(&'static str, String)>;

fn container_labels(key: &ContainerKey) -> Labels {
    vec![
        ("namespace", key.namespace.clone()),
        ("pod", key.pod.clone()),
        ("container", key.container.clone()),
    ]
}

/// A series' name, help, and how to read it from a container's stats.
type Series<T> = (&'static str, &'static str, fn(&FunctionStats) -> T);

/// The function containers' series, read at scrape time.
struct FunctionSeries(Vec<(ContainerKey, Arc<FunctionStats>)>);

impl std::fmt::Debug for FunctionSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FunctionSeries({} containers)", self.0.len())
    }
}

impl Collector for FunctionSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let gauges: [Series<u64>; 2] = [
            (
                "bosun_function_requests_in_flight",
                "Requests running in an instance",
                |s| s.in_flight.load(Ordering::Relaxed),
            ),
            (
                "bosun_function_requests_queued",
                "Requests waiting for a place",
                |s| s.queued.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, read) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (key, stats) in &self.0 {
                let value = i64::try_from(read(stats)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(metric.encode_family(&container_labels(key))?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "bosun_function_requests",
            "Answered requests by status class",
            None,
            MetricType::Counter,
        )?;
        for (key, stats) in &self.0 {
            for (class, count) in stats.requests.iter().enumerate() {
                let mut labels = container_labels(key);
                labels.push(("code", format!("{}xx", class + 1)));
                ConstCounter::new(count.load(Ordering::Relaxed))
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        let histograms: [Series<([u64; BUCKETS.len() + 1], f64)>; 2] = [
            (
                "bosun_function_request_duration_seconds",
                "Time from a request's arrival to its response's head",
                |s| s.duration.read(),
            ),
            (
                "bosun_function_queue_duration_seconds",
                "Time a request waited for a place",
                |s| s.queue_time.read(),
            ),
        ];
        for (name, help, read) in histograms {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (key, stats) in &self.0 {
                let (cumulative, sum) = read(stats);
                let (total, buckets) = per_bucket(cumulative);
                metric
                    .encode_family(&container_labels(key))?
                    .encode_histogram::<NoLabelSet>(sum, total, &buckets, None)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "bosun_function_instances_created",
            "Instances made (one per request run)",
            None,
            MetricType::Counter,
        )?;
        for (key, stats) in &self.0 {
            ConstCounter::new(stats.instances_created.load(Ordering::Relaxed))
                .encode(metric.encode_family(&container_labels(key))?)?;
        }
        Ok(())
    }
}

/// The usage of each running container that can tell it, and when it was read.
fn usages(containers: &Containers) -> Vec<(ContainerKey, Arc<Running>, Usage, SystemTime)> {
    containers
        .list()
        .into_iter()
        .filter_map(|(key, running)| {
            let usage = running.handle.usage()?;
            Some((key, running, usage, SystemTime::now()))
        })
        .collect()
}

/// The kubelet's resource series for the node, its pods and containers.
#[derive(Debug)]
struct Resource {
    node: Option<NodeUsage>,
    /// Each container's usage and start.
    containers: Vec<(ContainerKey, Usage, SystemTime)>,
}

impl Collector for Resource {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        type Labels = Vec<(&'static str, String)>;
        let mut series = |name: &str,
                          help: &str,
                          kind: MetricType,
                          values: Vec<(Labels, f64)>|
         -> std::fmt::Result {
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            for (labels, value) in values {
                let family = metric.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value).encode(family)?,
                    _ => ConstGauge::new(value).encode(family)?,
                }
            }
            Ok(())
        };
        if let Some(node) = &self.node {
            series(
                "node_cpu_usage_seconds",
                "Cumulative CPU time the node's CPUs spent busy, in core-seconds",
                MetricType::Counter,
                vec![(Vec::new(), node.cpu.as_secs_f64())],
            )?;
            series(
                "node_memory_working_set_bytes",
                "The node's memory in use (MemTotal - MemAvailable), in bytes",
                MetricType::Gauge,
                vec![(Vec::new(), node.memory as f64)],
            )?;
        }
        let container_labels = |key: &ContainerKey| -> Labels {
            vec![
                ("container", key.container.clone()),
                ("namespace", key.namespace.clone()),
                ("pod", key.pod.clone()),
            ]
        };
        let pod_labels = |key: &ContainerKey| -> Labels {
            vec![
                ("namespace", key.namespace.clone()),
                ("pod", key.pod.clone()),
            ]
        };
        let mut pods: BTreeMap<ContainerKey, Usage> = BTreeMap::new();
        for (key, usage, _) in &self.containers {
            let pod = ContainerKey {
                container: String::new(),
                ..key.clone()
            };
            let total = pods.entry(pod).or_default();
            total.cpu += usage.cpu;
            total.memory += usage.memory;
        }
        let each = |read: &dyn Fn(&Usage) -> f64| -> Vec<(Labels, f64)> {
            self.containers
                .iter()
                .map(|(key, usage, _)| (container_labels(key), read(usage)))
                .collect()
        };
        let each_pod = |read: &dyn Fn(&Usage) -> f64| -> Vec<(Labels, f64)> {
            pods.iter()
                .map(|(key, usage)| (pod_labels(key), read(usage)))
                .collect()
        };
        series(
            "container_cpu_usage_seconds",
            "Cumulative CPU time the container used, in core-seconds",
            MetricType::Counter,
            each(&|u| u.cpu.as_secs_f64()),
        )?;
        series(
            "container_memory_working_set_bytes",
            "The memory the container's instances hold, in bytes",
            MetricType::Gauge,
            each(&|u| u.memory as f64),
        )?;
        series(
            "container_start_time_seconds",
            "When the container started, in seconds since the epoch",
            MetricType::Gauge,
            self.containers
                .iter()
                .map(|(key, _, started)| {
                    let since = started.duration_since(UNIX_EPOCH).unwrap_or_default();
                    (container_labels(key), since.as_secs_f64())
                })
                .collect(),
        )?;
        series(
            "pod_cpu_usage_seconds",
            "Cumulative CPU time the pod's containers used, in core-seconds",
            MetricType::Counter,
            each_pod(&|u| u.cpu.as_secs_f64()),
        )?;
        series(
            "pod_memory_working_set_bytes",
            "The memory the pod's containers hold, in bytes",
            MetricType::Gauge,
            each_pod(&|u| u.memory as f64),
        )?;
        series(
            "scrape_error",
            "1 if the node's own usage could not be read, 0 otherwise.",
            MetricType::Gauge,
            vec![(Vec::new(), f64::from(u8::from(self.node.is_none())))],
        )
    }
}

impl Containers {
    /// The kubelet's `/metrics/resource` series, in Prometheus' text format (0.0.4).
    pub fn render_resource(&self) -> String {
        let resource = Resource {
            node: NodeUsage::read(),
            containers: usages(self)
                .into_iter()
                .map(|(key, running, usage, _)| (key, usage, running.started))
                .collect(),
        };
        encode(resource)
    }

    /// The kubelet's Summary API (`/stats/summary`) for the fields that apply.
    pub fn summary(&self, node_name: &str) -> serde_json::Value {
        let time = |at: SystemTime| {
            k8s_openapi::jiff::Timestamp::try_from(at)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let now = SystemTime::now();
        let node = NodeUsage::read().map(|node| {
            serde_json::json!({
                "cpu": {"time": time(now), "usageCoreNanoSeconds": nanos(node.cpu)},
                "memory": {"time": time(now), "workingSetBytes": node.memory,
                           "usageBytes": node.memory, "availableBytes": node.available},
            })
        });
        /// One pod's part of the summary, as its containers are added up.
        struct Pod {
            uid: String,
            containers: Vec<serde_json::Value>,
            usage: Usage,
            started: SystemTime,
        }
        let mut pods: BTreeMap<(String, String), Pod> = BTreeMap::new();
        for (key, running, usage, at) in usages(self) {
            let pod = pods
                .entry((key.namespace.clone(), key.pod.clone()))
                .or_insert_with(|| Pod {
                    uid: running.pod_uid.clone(),
                    containers: Vec::new(),
                    usage: Usage::default(),
                    started: running.started,
                });
            pod.containers.push(serde_json::json!({
                "name": key.container,
                "startTime": time(running.started),
                "cpu": {"time": time(at), "usageCoreNanoSeconds": nanos(usage.cpu)},
                "memory": {"time": time(at), "workingSetBytes": usage.memory, "usageBytes": usage.memory},
            }));
            pod.usage.cpu += usage.cpu;
            pod.usage.memory += usage.memory;
            pod.started = pod.started.min(running.started);
        }
        let pods: Vec<serde_json::Value> = pods
            .into_iter()
            .map(|((namespace, name), pod)| {
                serde_json::json!({
                    "podRef": {"name": name, "namespace": namespace, "uid": pod.uid},
                    "startTime": time(pod.started),
                    "containers": pod.containers,
                    "cpu": {"time": time(now), "usageCoreNanoSeconds": nanos(pod.usage.cpu)},
                    "memory": {"time": time(now), "workingSetBytes": pod.usage.memory,
                               "usageBytes": pod.usage.memory},
                })
            })
            .collect();
        let mut summary = serde_json::json!({"node": {"nodeName": node_name}, "pods": pods});
        if let Some(serde_json::Value::Object(usage)) = node {
            summary["node"]
                .as_object_mut()
                .expect("an object")
                .extend(usage);
        }
        summary
    }
}

/// The node's own use, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeUsage {
    /// CPU time its CPUs spent busy (all but idle and iowait), summed over CPUs.
    pub cpu: Duration,
    /// Memory in use: `MemTotal - MemAvailable`, in bytes.
    pub memory: u64,
    pub available: u64,
}

impl NodeUsage {
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        Self::parse(&stat, &meminfo)
    }

    fn parse(stat: &str, meminfo: &str) -> Option<Self> {
        // SAFETY: sysconf has no preconditions.
        let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
            .ok()
            .filter(|t| *t > 0)?;
        let times: Vec<u64> = stat
            .lines()
            .find(|l| l.starts_with("cpu "))?
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let busy: u64 = times
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, t)| t)
            .sum();
        let field = |name: &str| -> Option<u64> {
            let line = meminfo.lines().find(|l| l.starts_with(name))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        };
        let (total, available) = (field("MemTotal:")?, field("MemAvailable:")?);
        Some(Self {
            cpu: Duration::from_nanos(busy * (1_000_000_000 / ticks)),
            memory: total.saturating_sub(available),
            available,
        })
    }
}

/// `GET /metrics`, `/metrics/functions`, `/metrics/resource` and `/stats/summary`, for the
/// node port's router.
pub fn routes(containers: Arc<Containers>, node_name: String) -> Router {
    Router::new()
        .route("/metrics", get(kubelet))
        .route("/metrics/functions", get(functions))
        .route("/metrics/resource", get(resource))
        .route("/stats/summary", get(summary))
        .with_state((containers, Arc::new(node_name)))
}

type Shared = (Arc<Containers>, Arc<String>);

const TEXT_FORMAT: &str = "text/plain; version=0.0.4";

async fn kubelet(State((containers, _)): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        containers.render_kubelet(),
    )
}

async fn functions(State((containers, _)): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        containers.render_functions(),
    )
}

async fn resource(State((containers, _)): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        containers.render_resource(),
    )
}

async fn summary(State((containers, node)): State<Shared>) -> impl IntoResponse {
    axum::Json(containers.summary(&node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Exit;

    /// A container that reports what it is given (the logic above the runtime seam).
    struct Reporting {
        stats: Option<Arc<FunctionStats>>,
        usage: Usage,
    }

    #[async_trait::async_trait]
    impl Container for Reporting {
        fn terminate(&self) {}
        fn kill(&self) {}
        fn is_finished(&self) -> bool {
            false
        }
        async fn wait(&self) -> Exit {
            Exit::completed()
        }
        fn function_stats(&self) -> Option<Arc<FunctionStats>> {
            self.stats.clone()
        }
        fn usage(&self) -> Option<Usage> {
            Some(self.usage)
        }
    }

    fn key(pod: &str, container: &str) -> ContainerKey {
        ContainerKey {
            namespace: "default".to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
        }
    }

    fn reporting(
        stats: Option<Arc<FunctionStats>>,
        cpu_ms: u64,
        memory: u64,
    ) -> Arc<dyn Container> {
        Arc::new(Reporting {
            stats,
            usage: Usage {
                cpu: Duration::from_millis(cpu_ms),
                memory,
            },
        })
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
        let containers = Containers::default();
        let stats = Arc::new(FunctionStats::default());
        stats.in_flight.store(2, Ordering::Relaxed);
        stats.answered(200);
        stats.answered(204);
        stats.answered(503);
        stats.instances_created.store(3, Ordering::Relaxed);
        stats.duration.observe(Duration::from_millis(2));
        let function = reporting(Some(stats.clone()), 0, 0);
        containers.add(key("a\"b", "fn"), "u1", function.clone());
        containers.add(key("plain", "app"), "u2", reporting(None, 0, 0));
        let text = containers.render_functions();
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
        assert!(!text.contains("plain"), "only function containers: {text}");
        assert!(!text.contains(".."), "help ends in one period: {text}");

        // A newer run of the container is not forgotten when the old one ends.
        let newer = reporting(Some(Arc::new(FunctionStats::default())), 0, 0);
        containers.add(key("a\"b", "fn"), "u1", newer.clone());
        containers.remove(&key("a\"b", "fn"), &function);
        assert_eq!(containers.functions().len(), 1);
        containers.remove(&key("a\"b", "fn"), &newer);
        assert!(containers.functions().is_empty());
        assert!(!containers.render_functions().contains("pod="));
    }

    /// The kubelet's names, per container and summed per pod, beside the node's own.
    #[test]
    fn resource_series_name_containers_pods_and_the_node() {
        let containers = Containers::default();
        containers.add(key("web", "app"), "u1", reporting(None, 1500, 4 << 20));
        containers.add(key("web", "side"), "u1", reporting(None, 500, 1 << 20));
        let text = containers.render_resource();
        for line in [
            r#"container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"} 1.5"#,
            r#"container_memory_working_set_bytes{container="side",namespace="default",pod="web"} 1048576.0"#,
            r#"pod_cpu_usage_seconds_total{namespace="default",pod="web"} 2.0"#,
            r#"pod_memory_working_set_bytes{namespace="default",pod="web"} 5242880.0"#,
            "# TYPE node_cpu_usage_seconds_total counter",
            "scrape_error 0.0",
        ] {
            assert!(text.lines().any(|t| t == line), "no {line:?} in\n{text}");
        }
        let summary = containers.summary("n1");
        assert_eq!(summary["node"]["nodeName"], "n1");
        assert!(
            summary["node"]["memory"]["workingSetBytes"]
                .as_u64()
                .unwrap()
                > 0
        );
        let pod = &summary["pods"][0];
        assert_eq!(pod["podRef"]["uid"], "u1");
        assert_eq!(pod["cpu"]["usageCoreNanoSeconds"], 2_000_000_000u64);
        assert_eq!(pod["containers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn the_nodes_use_is_read_from_proc() {
        let stat = "cpu  100 0 50 1000 20 5 5 0 0 0\ncpu0 100 0 50 1000 20 5 5 0 0 0\n";
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n";
        let usage = NodeUsage::parse(stat, meminfo).unwrap();
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(usage.cpu, Duration::from_secs(160) / ticks as u32);
        assert_eq!((usage.memory, usage.available), (600 * 1024, 400 * 1024));
        assert!(NodeUsage::read().is_some());
    }
}
