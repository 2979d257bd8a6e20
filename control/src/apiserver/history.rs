//! An hour of history per node, pod and Function, for the dashboard's charts, served read-only
//! under `bosun.dev/v1`:
//! - `NodeHistory` (`/apis/bosun.dev/v1/nodehistories[/NAME]`): CPU (cores) and memory
//!   (bytes);
//! - `PodHistory` (`…/namespaces/NS/podhistories[/NAME]`, or all namespaces): the same, summed
//!   over the pod's containers;
//! - `FunctionHistory` (`…/namespaces/NS/functionhistories[/NAME]`): requests per second, the
//!   p50 and p99 latency (seconds) of the requests answered in the step, and the replicas
//!   serving.
//!
//! The metrics scraper (`metrics::scrape_periodically`) feeds it every `--metrics-resolution`:
//! usage from the same two readings `metrics.k8s.io` uses, and the Functions' figures from the
//! differences between two readings of the nodes' `/metrics/functions`. Samples are averaged
//! into one point per minute, and an hour of points is kept: each series holds at most 61
//! points of 24 bytes, and a series that got no sample for a step (its pod or node is gone) is dropped, so
//! the memory is bounded by what runs. Like the readings, the history is each server's own:
//! after a failover, the new server's history starts where its own scraping started.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiState;
use super::status::{ApiError, ApiResult};

pub const GROUP: &str = "bosun.dev";
pub const VERSION: &str = "v1";
const API_VERSION: &str = "bosun.dev/v1";

/// What `bosun.dev/v1` serves: (plural, kind, namespaced).
pub const RESOURCES: [(&str, &str, bool); 3] = [
    ("nodehistories", "NodeHistory", false),
    ("podhistories", "PodHistory", true),
    ("functionhistories", "FunctionHistory", true),
];

const USAGE_FIELDS: &[&str] = &["cpu", "memory"];
const FUNCTION_FIELDS: &[&str] = &[
    "requestsPerSecond",
    "latencyP50Seconds",
    "latencyP99Seconds",
    "replicas",
];

/// Whose history a series is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Node(String),
    Pod(String, String),
    Function(String, String),
}

impl Subject {
    fn fields(&self) -> &'static [&'static str] {
        match self {
            Subject::Function(..) => FUNCTION_FIELDS,
            _ => USAGE_FIELDS,
        }
    }
}

/// The most fields a series has.
const FIELDS: usize = 4;

/// One step: its start (seconds since the epoch) and its fields' averages, unused fields
/// zero. Single precision is plenty for a chart, and keeps a point at 24 bytes, inline.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    start: u64,
    values: [f32; FIELDS],
}

#[derive(Debug, Default)]
struct Series {
    closed: VecDeque<Point>,
    /// The step being filled: its start, the sums and the number of samples.
    open: Option<(u64, [f64; FIELDS], u32)>,
}

impl Series {
    fn add(&mut self, at: u64, step: u64, keep: usize, values: &[f64]) {
        let start = at - at % step;
        if self.open.as_ref().is_none_or(|(open, ..)| *open != start) {
            if let Some(point) = self.current() {
                self.closed.push_back(point);
            }
            while self.closed.len() > keep {
                self.closed.pop_front();
            }
            self.open = Some((start, [0.0; FIELDS], 0));
        }
        let (_, sums, count) = self.open.as_mut().expect("opened above");
        for (sum, value) in sums.iter_mut().zip(values) {
            *sum += value;
        }
        *count += 1;
    }

    /// The open step's point so far.
    fn current(&self) -> Option<Point> {
        let (start, sums, count) = self.open.as_ref()?;
        Some(Point {
            start: *start,
            values: sums.map(|s| (s / f64::from((*count).max(1))) as f32),
        })
    }

    /// The closed points and the open one so far.
    fn points(&self) -> Vec<Point> {
        let mut points: Vec<Point> = self.closed.iter().cloned().collect();
        points.extend(self.current());
        points
    }

    fn last_start(&self) -> Option<u64> {
        self.open
            .as_ref()
            .map(|(s, ..)| *s)
            .or_else(|| self.closed.back().map(|p| p.start))
    }
}

/// One pod's function counters at a reading: requests answered, and the request-duration
/// histogram's cumulative counts by upper bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionCounters {
    pub requests: f64,
    pub buckets: BTreeMap<OrderedBound, f64>,
}

/// A histogram bound that sorts (`+Inf` last).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderedBound(pub f64);

impl Eq for OrderedBound {}

impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The histories, and what the Functions' rates are computed from.
pub struct History {
    step: Duration,
    keep: usize,
    series: Mutex<HashMap<Subject, Series>>,
    /// Each function pod's counters at the previous reading, and when.
    previous: Mutex<HashMap<(String, String), (SystemTime, FunctionCounters)>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new(Duration::from_secs(60), Duration::from_secs(3600))
    }
}

impl History {
    /// Points of `step`, kept for `span`.
    pub fn new(step: Duration, span: Duration) -> Self {
        let step = step.max(Duration::from_secs(1));
        Self {
            keep: (span.as_secs() / step.as_secs()).max(1) as usize,
            step,
            series: Mutex::new(HashMap::new()),
            previous: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a sample of `subject`'s fields at `at`.
    pub fn record(&self, subject: Subject, at: SystemTime, values: &[f64]) {
        let at = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut series = self.series.lock().unwrap();
        series
            .entry(subject)
            .or_default()
            .add(at, self.step.as_secs(), self.keep, values);
    }

    /// Drops the series that got no sample in the last step before `now` (what they
    /// described is gone), and the counters of pods not in `live_pods`.
    pub fn prune(&self, now: SystemTime, live_pods: &[(String, String)]) {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let step = self.step.as_secs();
        let current = now - now % step;
        self.series
            .lock()
            .unwrap()
            .retain(|_, s| s.last_start().is_some_and(|start| start + step >= current));
        self.previous
            .lock()
            .unwrap()
            .retain(|pod, _| live_pods.contains(pod));
    }

    /// Records each Function's figures from its pods' counters read at `at`: rates and
    /// latency quantiles over the time since the previous reading of each pod.
    pub fn record_functions(
        &self,
        at: SystemTime,
        functions: &[(String, String)],
        pods: &BTreeMap<(String, String), (String, FunctionCounters)>,
    ) {
        struct Sum {
            requests: f64,
            seconds: f64,
            buckets: BTreeMap<OrderedBound, f64>,
            replicas: f64,
        }
        let mut sums: HashMap<(String, String), Sum> = functions
            .iter()
            .map(|f| {
                let sum = Sum {
                    requests: 0.0,
                    seconds: 0.0,
                    buckets: BTreeMap::new(),
                    replicas: 0.0,
                };
                (f.clone(), sum)
            })
            .collect();
        let mut previous = self.previous.lock().unwrap();
        for ((namespace, pod), (function, counters)) in pods {
            let key = (namespace.clone(), pod.clone());
            let before = previous.insert(key, (at, counters.clone()));
            let Some(sum) = sums.get_mut(&(namespace.clone(), function.clone())) else {
                continue;
            };
            sum.replicas += 1.0;
            let Some((then, old)) = before else {
                continue;
            };
            let seconds = at.duration_since(then).unwrap_or_default().as_secs_f64();
            // A counter that went down belongs to a restarted container: no difference.
            if seconds <= 0.0 || counters.requests < old.requests {
                continue;
            }
            sum.requests += counters.requests - old.requests;
            sum.seconds = sum.seconds.max(seconds);
            for (bound, count) in &counters.buckets {
                let was = old.buckets.get(bound).copied().unwrap_or(0.0);
                *sum.buckets.entry(*bound).or_default() += (count - was).max(0.0);
            }
        }
        drop(previous);
        for ((namespace, name), sum) in sums {
            let rps = if sum.seconds > 0.0 {
                sum.requests / sum.seconds
            } else {
                0.0
            };
            let buckets: Vec<(f64, f64)> = sum.buckets.iter().map(|(b, c)| (b.0, *c)).collect();
            let p50 = bosun_api::promtext::quantile(0.5, &buckets).unwrap_or(0.0);
            let p99 = bosun_api::promtext::quantile(0.99, &buckets).unwrap_or(0.0);
            self.record(
                Subject::Function(namespace, name),
                at,
                &[rps, p50, p99, sum.replicas],
            );
        }
    }

    fn document(&self, subject: &Subject, kind: &str) -> Option<Value> {
        let series = self.series.lock().unwrap();
        let points = series.get(subject)?.points();
        let fields = subject.fields();
        let points: Vec<Value> = points
            .iter()
            .map(|p| {
                let mut point = serde_json::Map::new();
                let time = UNIX_EPOCH + Duration::from_secs(p.start);
                point.insert("time".into(), json!(bosun_api::time::rfc3339(time)));
                for (field, value) in fields.iter().zip(&p.values) {
                    point.insert(field.to_string(), json!(f64::from(*value)));
                }
                Value::Object(point)
            })
            .collect();
        let metadata = match subject {
            Subject::Node(name) => json!({"name": name}),
            Subject::Pod(namespace, name) | Subject::Function(namespace, name) => {
                json!({"name": name, "namespace": namespace})
            }
        };
        Some(json!({
            "kind": kind, "apiVersion": API_VERSION, "metadata": metadata,
            "step": format!("{}s", self.step.as_secs()),
            "fields": fields,
            "points": points,
        }))
    }

    /// The subjects of a resource, in a namespace or all, sorted.
    fn subjects(&self, plural: &str, namespace: Option<&str>) -> Vec<Subject> {
        let series = self.series.lock().unwrap();
        let mut found: Vec<Subject> = series
            .keys()
            .filter(|s| match (plural, s) {
                ("nodehistories", Subject::Node(_)) => true,
                ("podhistories", Subject::Pod(ns, _))
                | ("functionhistories", Subject::Function(ns, _)) => {
                    namespace.is_none_or(|n| n == ns)
                }
                _ => false,
            })
            .cloned()
            .collect();
        found.sort();
        found
    }
}

/// After each round of readings: records every node's and pod's usage, reads the nodes'
/// function counters and records every Function's figures, and drops what is gone.
pub async fn record_round(state: &ApiState, nodes: &[String]) {
    let now = SystemTime::now();
    let history = &state.history;
    let mut live_pods = Vec::new();
    for node in nodes {
        let Some((node_usage, pods)) = super::metrics::usages(&state.metrics, node) else {
            continue;
        };
        if let Some((cpu, memory)) = node_usage {
            history.record(Subject::Node(node.clone()), now, &[cpu, memory]);
        }
        for ((namespace, name), (cpu, memory)) in pods {
            history.record(
                Subject::Pod(namespace.clone(), name.clone()),
                now,
                &[cpu, memory],
            );
            live_pods.push((namespace, name));
        }
    }
    match function_counters(state, nodes).await {
        Ok((functions, pods)) => {
            history.record_functions(now, &functions, &pods);
            live_pods.extend(pods.into_keys());
        }
        Err(error) => tracing::debug!(%error.message, "cannot read the Functions' figures"),
    }
    history.prune(now, &live_pods);
}

/// Every Function, and each function pod's counters (with its Function's name) as its node
/// reports them.
async fn function_counters(
    state: &ApiState,
    nodes: &[String],
) -> ApiResult<(
    Vec<(String, String)>,
    BTreeMap<(String, String), (String, FunctionCounters)>,
)> {
    use bosun_api::function::FUNCTION_LABEL;
    let list = |plural: &'static str, group: &'static str, version: &'static str, labels: &str| {
        let resource = bosun_api::resources::find(group, version, plural).expect("registered");
        let request = crate::store::ListRequest {
            resource: resource.storage_name(),
            labels: bosun_api::labels::Selector::parse(labels).expect("a valid selector"),
            ..Default::default()
        };
        async move {
            state
                .store
                .list(&request)
                .await
                .map_err(|e| ApiError::from_store(e, resource, ""))
        }
    };
    let functions = list("functions", "serving.bosun.dev", "v1", "").await?;
    let functions: Vec<(String, String)> = functions
        .items
        .iter()
        .filter_map(|o| {
            let meta = &o.value["metadata"];
            Some((
                meta["namespace"].as_str()?.into(),
                meta["name"].as_str()?.into(),
            ))
        })
        .collect();
    if functions.is_empty() {
        return Ok((functions, BTreeMap::new()));
    }
    let pods = list("pods", "", "v1", FUNCTION_LABEL).await?;
    let mut function_of: HashMap<(String, String), String> = HashMap::new();
    let mut hosts: Vec<String> = Vec::new();
    for pod in &pods.items {
        let meta = &pod.value["metadata"];
        let (Some(namespace), Some(name), Some(function)) = (
            meta["namespace"].as_str(),
            meta["name"].as_str(),
            meta["labels"][FUNCTION_LABEL].as_str(),
        ) else {
            continue;
        };
        function_of.insert((namespace.into(), name.into()), function.into());
        if let Some(node) = pod.value["spec"]["nodeName"].as_str()
            && nodes.iter().any(|n| n == node)
            && !hosts.iter().any(|h| h == node)
        {
            hosts.push(node.into());
        }
    }
    let texts =
        futures::future::join_all(hosts.iter().map(|node| read_functions(state, node))).await;
    let mut counters: BTreeMap<(String, String), (String, FunctionCounters)> = BTreeMap::new();
    for text in texts.into_iter().flatten() {
        for sample in bosun_api::promtext::samples(&text) {
            let (Some(namespace), Some(pod)) = (sample.label("namespace"), sample.label("pod"))
            else {
                continue;
            };
            let key = (namespace.to_string(), pod.to_string());
            let Some(function) = function_of.get(&key) else {
                continue;
            };
            let entry = counters
                .entry(key)
                .or_insert_with(|| (function.clone(), FunctionCounters::default()));
            match sample.name.as_str() {
                "bosun_function_requests_total" => entry.1.requests += sample.value,
                "bosun_function_request_duration_seconds_bucket" => {
                    if let Some(bound) = sample.label("le").and_then(|le| match le {
                        "+Inf" => Some(f64::INFINITY),
                        other => other.parse().ok(),
                    }) {
                        *entry.1.buckets.entry(OrderedBound(bound)).or_default() += sample.value;
                    }
                }
                _ => {}
            }
        }
    }
    Ok((functions, counters))
}

/// A node's `/metrics/functions`, or None if it cannot be read.
async fn read_functions(state: &ApiState, node: &str) -> Option<String> {
    let (client, url) = super::nodes::endpoint(state, node).await.ok()?;
    let url = url.join("metrics/functions").ok()?;
    let response = client
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    match response {
        Ok(response) => response.text().await.ok(),
        Err(error) => {
            tracing::debug!(%error, node, "cannot read the node's function metrics");
            None
        }
    }
}

/// A history resource's (plural, namespace, name).
type Named<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// What a `bosun.dev/v1` path names: None for the resource list.
fn parse_path(path: &str) -> Option<Option<Named<'_>>> {
    let rest = path.strip_prefix("/apis/bosun.dev/v1")?;
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let known = |plural: &str, namespaced: bool| {
        RESOURCES
            .iter()
            .any(|(p, _, n)| *p == plural && (!namespaced || *n))
    };
    let found = match parts.as_slice() {
        [] => return Some(None),
        [plural] if known(plural, false) => (*plural, None, None),
        [plural, name] if known(plural, false) => (*plural, None, Some(*name)),
        ["namespaces", ns, plural] if known(plural, true) => (*plural, Some(*ns), None),
        ["namespaces", ns, plural, name] if known(plural, true) => {
            (*plural, Some(*ns), Some(*name))
        }
        _ => return None,
    };
    Some(Some(found))
}

/// `GET /apis/bosun.dev/v1/...`.
pub async fn serve(State(state): State<ApiState>, request: Request) -> Response {
    match answer(&state, request).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn answer(state: &ApiState, request: Request) -> ApiResult<Value> {
    let path = request.uri().path().to_string();
    let parsed = parse_path(&path).ok_or_else(|| ApiError::not_found_path(&path))?;
    let Some((plural, namespace, name)) = parsed else {
        return Ok(super::discovery::resource_list(GROUP, VERSION).expect("served"));
    };
    let user = super::metrics::reader(&request, GROUP, plural)?;
    super::metrics::authorize_read(state, user, GROUP, plural, namespace, name).await?;
    let kind = RESOURCES
        .iter()
        .find(|(p, ..)| *p == plural)
        .map(|(_, kind, _)| *kind)
        .expect("parsed");
    let history = &state.history;
    if let Some(name) = name {
        let subject = match (plural, namespace) {
            ("nodehistories", _) => Subject::Node(name.into()),
            ("podhistories", Some(ns)) => Subject::Pod(ns.into(), name.into()),
            (_, Some(ns)) => Subject::Function(ns.into(), name.into()),
            _ => return Err(ApiError::not_found_path(&path)),
        };
        return history.document(&subject, kind).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "NotFound",
                format!("{plural}.{GROUP} {name:?} not found"),
            )
        });
    }
    let items: Vec<Value> = history
        .subjects(plural, namespace)
        .iter()
        .filter_map(|s| history.document(s, kind))
        .collect();
    Ok(json!({
        "kind": format!("{kind}List"), "apiVersion": API_VERSION,
        "metadata": {}, "items": items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    #[test]
    fn samples_average_into_steps_and_an_hour_is_kept() {
        let history = History::new(Duration::from_secs(60), Duration::from_secs(3600));
        let node = Subject::Node("n1".into());
        history.record(node.clone(), at(0), &[1.0, 100.0]);
        history.record(node.clone(), at(30), &[3.0, 300.0]);
        history.record(node.clone(), at(61), &[5.0, 500.0]);
        let doc = history.document(&node, "NodeHistory").unwrap();
        let points = doc["points"].as_array().unwrap();
        assert_eq!(points.len(), 2, "{doc}");
        assert_eq!(points[0]["cpu"], 2.0);
        assert_eq!(points[0]["memory"], 200.0);
        assert_eq!(points[1]["cpu"], 5.0);
        // Two hours of samples keep an hour of points, plus the open one.
        for minute in 2..120 {
            history.record(node.clone(), at(minute * 60), &[1.0, 1.0]);
        }
        let doc = history.document(&node, "NodeHistory").unwrap();
        assert_eq!(doc["points"].as_array().unwrap().len(), 61);
        // A series with no sample for a step is dropped.
        history.prune(at(119 * 60 + 5), &[]);
        assert!(history.document(&node, "NodeHistory").is_some());
        history.prune(at(121 * 60 + 5), &[]);
        assert!(history.document(&node, "NodeHistory").is_none());
    }

    #[test]
    fn function_rates_and_quantiles_come_from_counter_differences() {
        let history = History::default();
        let function = ("default".to_string(), "hello".to_string());
        let counters = |requests: f64, fast: f64| FunctionCounters {
            requests,
            buckets: [
                (OrderedBound(0.01), fast),
                (OrderedBound(0.1), requests),
                (OrderedBound(f64::INFINITY), requests),
            ]
            .into_iter()
            .collect(),
        };
        let pods = |c: FunctionCounters| {
            BTreeMap::from([(
                ("default".to_string(), "hello-1".to_string()),
                ("hello".to_string(), c),
            )])
        };
        history.record_functions(
            at(0),
            std::slice::from_ref(&function),
            &pods(counters(10.0, 10.0)),
        );
        // 100 more requests in 10 s, all of them under 10 ms.
        history.record_functions(
            at(10),
            std::slice::from_ref(&function),
            &pods(counters(110.0, 110.0)),
        );
        let doc = history
            .document(
                &Subject::Function(function.0.clone(), function.1.clone()),
                "FunctionHistory",
            )
            .unwrap();
        let point = &doc["points"][0];
        // The step's average: 0 (no previous reading), then 10 requests/s.
        assert_eq!(point["requestsPerSecond"], 5.0);
        assert_eq!(point["replicas"], 1.0);
        let p99 = point["latencyP99Seconds"].as_f64().unwrap();
        assert!(p99 > 0.0 && p99 <= 0.01, "{doc}");
    }

    #[test]
    fn paths_name_the_three_resources() {
        assert_eq!(parse_path("/apis/bosun.dev/v1"), Some(None));
        assert_eq!(
            parse_path("/apis/bosun.dev/v1/nodehistories/n1"),
            Some(Some(("nodehistories", None, Some("n1"))))
        );
        assert_eq!(
            parse_path("/apis/bosun.dev/v1/namespaces/a/functionhistories"),
            Some(Some(("functionhistories", Some("a"), None)))
        );
        assert_eq!(
            parse_path("/apis/bosun.dev/v1/namespaces/a/nodehistories"),
            None
        );
        assert_eq!(parse_path("/apis/bosun.dev/v1/other"), None);
    }
}
