//! The resource metrics API, `metrics.k8s.io/v1beta1`, served by every `bosun server` itself
//! (what metrics-server adds to Kubernetes): NodeMetrics and PodMetrics, in discovery, with
//! get, list and label selectors, so that `kubectl top nodes` and `kubectl top pods` work with
//! nothing to install.
//!
//! Each server reads every node's `/stats/summary` (through the node port, as `pods/log`
//! does) every `--metrics-resolution` and keeps the last two readings of each node. CPU usage
//! is the rate between them (a window of one resolution, as metrics-server reports it),
//! memory the latest working set. A node, or a container, seen in fewer than two readings has
//! no metrics yet, and is left out of lists (a `get` of it is a 404), as metrics-server does;
//! a node that cannot be read loses its readings until it is read twice again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bosun_api::labels;
use bosun_api::resources::{Resource, find};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::{self, Attributes, ResourceAttributes, User};
use super::status::{ApiError, ApiResult};
use crate::store::ListRequest;

pub use bosun_api::metrics::{API_VERSION, GROUP, VERSION};

/// What `metrics.k8s.io/v1beta1` serves: (plural, kind, namespaced).
pub const RESOURCES: [(&str, &str, bool); 2] = [
    ("nodes", "NodeMetrics", false),
    ("pods", "PodMetrics", true),
];

/// A pod's containers in one reading: name, cumulative CPU time (ns) and working set (bytes).
type ContainerReadings = Vec<(String, u64, u64)>;

/// One reading of a node's summary.
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    timestamp: Timestamp,
    /// The node's cumulative CPU time (ns) and working set (bytes).
    node: Option<(u64, u64)>,
    /// Per pod (namespace, name): its containers' cumulative CPU time and working set.
    pods: HashMap<(String, String), ContainerReadings>,
}

/// CPU in nanocores and memory in bytes over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    nanocores: u64,
    memory: u64,
}

/// The last two readings of each node.
#[derive(Default)]
pub struct Readings {
    nodes: Mutex<HashMap<String, (Reading, Option<Reading>)>>,
}

impl Readings {
    fn record(&self, node: &str, reading: Reading) {
        let mut nodes = self.nodes.lock().unwrap();
        let previous = nodes.remove(node).map(|(newest, _)| newest);
        nodes.insert(node.to_string(), (reading, previous));
    }

    /// Forgets a node that could not be read: stale readings would show old usage as now.
    fn forget(&self, node: &str) {
        self.nodes.lock().unwrap().remove(node);
    }

    /// Forgets the nodes not in `live`.
    fn retain(&self, live: &[String]) {
        self.nodes
            .lock()
            .unwrap()
            .retain(|name, _| live.contains(name));
    }

    /// The two readings of `node`, newest first, if it has two.
    fn pair(&self, node: &str) -> Option<(Reading, Reading)> {
        let nodes = self.nodes.lock().unwrap();
        let (newest, previous) = nodes.get(node)?;
        Some((newest.clone(), previous.clone()?))
    }
}

/// Reads every node's summary every `resolution`, until the task is dropped.
pub async fn scrape_periodically(state: ApiState, resolution: Duration) {
    let mut tick = tokio::time::interval(resolution.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(nodes) = node_names(&state).await else {
            continue;
        };
        state.metrics.retain(&nodes);
        let reads = nodes.iter().map(|node| {
            let state = state.clone();
            async move {
                match read_summary(&state, node).await {
                    Ok(reading) => state.metrics.record(node, reading),
                    Err(error) => {
                        tracing::debug!(node, %error.message, "cannot read the node's summary");
                        state.metrics.forget(node);
                    }
                }
            }
        });
        futures::future::join_all(reads).await;
        super::history::record_round(&state, &nodes).await;
    }
}

/// The usage of `node` and of each of its pods (summed over containers) between its last two
/// readings: (cores, bytes).
pub(crate) type Usages = (Option<(f64, f64)>, Vec<((String, String), (f64, f64))>);

pub(crate) fn usages(readings: &Readings, node: &str) -> Option<Usages> {
    let (newest, previous) = readings.pair(node)?;
    let window = window(&newest, &previous);
    let cores = |rate: Rate| (rate.nanocores as f64 / 1e9, rate.memory as f64);
    let node_usage = newest
        .node
        .zip(previous.node)
        .and_then(|(now, before)| rate(now, before, window))
        .map(cores);
    let mut pods = Vec::new();
    for (pod, containers) in &newest.pods {
        let Some(before) = previous.pods.get(pod) else {
            continue;
        };
        let mut sum = (0.0, 0.0);
        for (container, cpu, memory) in containers {
            let Some((_, old_cpu, old_memory)) = before.iter().find(|(c, ..)| c == container)
            else {
                continue;
            };
            if let Some(rate) = rate((*cpu, *memory), (*old_cpu, *old_memory), window) {
                let (c, m) = cores(rate);
                sum = (sum.0 + c, sum.1 + m);
            }
        }
        pods.push((pod.clone(), sum));
    }
    Some((node_usage, pods))
}

async fn node_names(state: &ApiState) -> ApiResult<Vec<String>> {
    let nodes = find("", "v1", "nodes").expect("nodes are registered");
    let list = state
        .store
        .list(&ListRequest {
            resource: nodes.storage_name(),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::from_store(e, nodes, ""))?;
    Ok(list
        .items
        .iter()
        .filter_map(|o| o.value["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

async fn read_summary(state: &ApiState, node: &str) -> ApiResult<Reading> {
    let (client, url) = super::nodes::endpoint(state, node).await?;
    let url = url
        .join("stats/summary")
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let summary: Value = client
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| ApiError::unavailable(format!("cannot reach node {node}: {e}")))?
        .json()
        .await
        .map_err(|e| ApiError::unavailable(format!("node {node}'s summary: {e}")))?;
    Ok(parse_summary(&summary))
}

fn parse_summary(summary: &Value) -> Reading {
    let usage = |v: &Value| -> Option<(u64, u64)> {
        Some((
            v["cpu"]["usageCoreNanoSeconds"].as_u64()?,
            v["memory"]["workingSetBytes"].as_u64()?,
        ))
    };
    let mut pods = HashMap::new();
    for pod in summary["pods"].as_array().into_iter().flatten() {
        let (Some(namespace), Some(name)) = (
            pod["podRef"]["namespace"].as_str(),
            pod["podRef"]["name"].as_str(),
        ) else {
            continue;
        };
        let containers = pod["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let (cpu, memory) = usage(c)?;
                Some((c["name"].as_str()?.to_string(), cpu, memory))
            })
            .collect();
        pods.insert((namespace.to_string(), name.to_string()), containers);
    }
    Reading {
        at: Instant::now(),
        timestamp: Timestamp::now(),
        node: usage(&summary["node"]),
        pods,
    }
}

/// The rate of a cumulative CPU time between two readings, and the newer working set.
fn rate(newer: (u64, u64), older: (u64, u64), window: Duration) -> Option<Rate> {
    let used = newer.0.checked_sub(older.0)?;
    let nanos = window.as_nanos().max(1);
    Some(Rate {
        nanocores: u64::try_from(u128::from(used) * 1_000_000_000 / nanos).ok()?,
        memory: newer.1,
    })
}

fn usage(rate: Rate) -> Value {
    json!({"cpu": format!("{}n", rate.nanocores), "memory": format!("{}Ki", rate.memory / 1024)})
}

fn window(newest: &Reading, previous: &Reading) -> Duration {
    newest.at.duration_since(previous.at)
}

fn seconds(window: Duration) -> String {
    format!("{}s", window.as_secs_f64().round().max(1.0))
}

/// The NodeMetrics of `node`, if it has two readings.
fn node_metrics(readings: &Readings, node: &Value) -> Option<Value> {
    let name = node["metadata"]["name"].as_str()?;
    let (newest, previous) = readings.pair(name)?;
    let window = window(&newest, &previous);
    let rate = rate(newest.node?, previous.node?, window)?;
    Some(json!({
        "kind": "NodeMetrics", "apiVersion": API_VERSION,
        "metadata": {"name": name, "labels": node["metadata"]["labels"],
                     "creationTimestamp": Timestamp::now().to_string()},
        "timestamp": newest.timestamp.to_string(),
        "window": seconds(window),
        "usage": usage(rate),
    }))
}

/// The PodMetrics of `pod`, if its node has read each of its containers twice.
fn pod_metrics(readings: &Readings, pod: &Value) -> Option<Value> {
    let namespace = pod["metadata"]["namespace"].as_str()?;
    let name = pod["metadata"]["name"].as_str()?;
    let node = pod["spec"]["nodeName"].as_str()?;
    let (newest, previous) = readings.pair(node)?;
    let key = (namespace.to_string(), name.to_string());
    let (now, before) = (newest.pods.get(&key)?, previous.pods.get(&key)?);
    let window = window(&newest, &previous);
    let mut containers = Vec::new();
    for (container, cpu, memory) in now {
        let (_, old_cpu, old_memory) = before.iter().find(|(c, ..)| c == container)?;
        let rate = rate((*cpu, *memory), (*old_cpu, *old_memory), window)?;
        containers.push(json!({"name": container, "usage": usage(rate)}));
    }
    if containers.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "PodMetrics", "apiVersion": API_VERSION,
        "metadata": {"name": name, "namespace": namespace, "labels": pod["metadata"]["labels"],
                     "creationTimestamp": Timestamp::now().to_string()},
        "timestamp": newest.timestamp.to_string(),
        "window": seconds(window),
        "containers": containers,
    }))
}

/// What a `metrics.k8s.io` path names.
#[derive(Debug, PartialEq, Eq)]
enum Path<'a> {
    /// `/apis/metrics.k8s.io/v1beta1`: the resource list.
    Resources,
    /// `nodes` or `pods`, in a namespace or all, one by name or all.
    Objects {
        plural: &'a str,
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    },
}

fn parse_path<'a>(path: &'a str) -> Option<Path<'a>> {
    let rest = path.strip_prefix("/apis/metrics.k8s.io/v1beta1")?;
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let objects = |plural: &'a str, namespace: Option<&'a str>, name: Option<&'a str>| {
        RESOURCES
            .iter()
            .any(|(p, _, namespaced)| *p == plural && (namespace.is_none() || *namespaced))
            .then_some(Path::Objects {
                plural,
                namespace,
                name,
            })
    };
    match parts.as_slice() {
        [] => Some(Path::Resources),
        [plural] => objects(plural, None, None),
        [plural, name] => objects(plural, None, Some(name)),
        ["namespaces", namespace, plural] => objects(plural, Some(namespace), None),
        ["namespaces", namespace, plural, name] => objects(plural, Some(namespace), Some(name)),
        _ => None,
    }
}

/// The caller of a read of a hand-served, read-only resource (`group`'s `plural`): only GET
/// is served.
pub(crate) fn reader(request: &Request, group: &str, plural: &str) -> ApiResult<User> {
    if request.method() != axum::http::Method::GET {
        return Err(ApiError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on {plural}.{group}"),
        ));
    }
    request
        .extensions()
        .get::<User>()
        .cloned()
        .ok_or_else(ApiError::unauthorized)
}

/// Lets `user` read `group`'s `plural` if the authorizer allows them to `get` it (one by
/// name) or `list` it.
pub(crate) async fn authorize_read(
    state: &ApiState,
    user: User,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> ApiResult<()> {
    let verb = if name.is_some() { "get" } else { "list" };
    let attributes = Attributes::Resource(ResourceAttributes {
        verb,
        group,
        resource: plural,
        subresource: None,
        namespace,
        name,
    });
    auth::authorize(&*state.authorizer, &user, &attributes).await
}

/// `GET /apis/metrics.k8s.io/v1beta1/...`.
pub async fn serve(State(state): State<ApiState>, request: Request) -> Response {
    match answer(&state, request).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn answer(state: &ApiState, request: Request) -> ApiResult<Value> {
    let path = request.uri().path().to_string();
    let query = super::request::query(request.uri().query());
    let parsed = parse_path(&path).ok_or_else(|| ApiError::not_found_path(&path))?;
    let Path::Objects {
        plural,
        namespace,
        name,
    } = parsed
    else {
        return Ok(super::discovery::resource_list(GROUP, VERSION).expect("served"));
    };
    let user = reader(&request, GROUP, plural)?;
    authorize_read(state, user, GROUP, plural, namespace, name).await?;
    let objects: &Resource = find("", "v1", plural).expect("nodes and pods are registered");
    let selector = match query.get("labelSelector") {
        Some(text) => labels::Selector::parse(text)
            .map_err(|e| ApiError::bad_request(format!("labelSelector {text:?}: {e}")))?,
        None => labels::Selector::default(),
    };
    let listed = state
        .store
        .list(&ListRequest {
            resource: objects.storage_name(),
            namespace: namespace.map(str::to_string),
            labels: selector,
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::from_store(e, objects, ""))?;
    let metrics = |object: &Value| match plural {
        "nodes" => node_metrics(&state.metrics, object),
        _ => pod_metrics(&state.metrics, object),
    };
    let kind = RESOURCES
        .iter()
        .find(|(p, ..)| *p == plural)
        .map(|(_, kind, _)| *kind)
        .expect("parsed");
    if let Some(name) = name {
        return listed
            .items
            .iter()
            .filter(|o| o.value["metadata"]["name"] == name)
            .find_map(|o| metrics(&o.value))
            .ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{plural}.{GROUP} {name:?} not found"),
                )
            });
    }
    let items: Vec<Value> = listed
        .items
        .iter()
        .filter_map(|o| metrics(&o.value))
        .collect();
    Ok(json!({
        "kind": format!("{kind}List"), "apiVersion": API_VERSION,
        "metadata": {}, "items": items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_two_resources() {
        assert_eq!(
            parse_path("/apis/metrics.k8s.io/v1beta1"),
            Some(Path::Resources)
        );
        assert_eq!(
            parse_path("/apis/metrics.k8s.io/v1beta1/namespaces/a/pods/p"),
            Some(Path::Objects {
                plural: "pods",
                namespace: Some("a"),
                name: Some("p")
            })
        );
        assert_eq!(
            parse_path("/apis/metrics.k8s.io/v1beta1/nodes"),
            Some(Path::Objects {
                plural: "nodes",
                namespace: None,
                name: None
            })
        );
        assert_eq!(
            parse_path("/apis/metrics.k8s.io/v1beta1/namespaces/a/nodes"),
            None
        );
        assert_eq!(parse_path("/apis/metrics.k8s.io/v1beta1/secrets"), None);
    }

    /// Two readings a second apart: a container that used half a second of CPU runs at
    /// 500m; a container or node read once has no metrics yet.
    #[test]
    fn usage_is_the_rate_between_the_last_two_readings() {
        let readings = Readings::default();
        let reading = |cpu: u64, memory: u64, containers: Vec<(&str, u64)>| Reading {
            at: Instant::now(),
            timestamp: Timestamp::now(),
            node: Some((cpu, memory)),
            pods: HashMap::from([(
                ("default".to_string(), "web".to_string()),
                containers
                    .into_iter()
                    .map(|(c, cpu)| (c.to_string(), cpu, 2 << 20))
                    .collect(),
            )]),
        };
        let node = json!({"metadata": {"name": "n1"}});
        let pod = json!({"metadata": {"name": "web", "namespace": "default"},
                         "spec": {"nodeName": "n1"}});
        readings.record(
            "n1",
            reading(10_000_000_000, 1 << 30, vec![("app", 1_000_000_000)]),
        );
        assert_eq!(
            node_metrics(&readings, &node),
            None,
            "one reading is not a rate"
        );
        let mut second = reading(
            12_000_000_000,
            1 << 30,
            vec![("app", 1_500_000_000), ("late", 10)],
        );
        second.at = readings.pair_newest_at("n1") + Duration::from_secs(1);
        readings.record("n1", second);
        let metrics = node_metrics(&readings, &node).unwrap();
        assert_eq!(metrics["usage"]["cpu"], "2000000000n");
        assert_eq!(metrics["usage"]["memory"], "1048576Ki");
        assert_eq!(metrics["window"], "1s");
        // A container seen once has no rate yet, and with it the pod.
        assert_eq!(pod_metrics(&readings, &pod), None);
        let mut third = reading(
            13_000_000_000,
            1 << 30,
            vec![("app", 2_000_000_000), ("late", 100_000_010)],
        );
        third.at = readings.pair_newest_at("n1") + Duration::from_secs(1);
        readings.record("n1", third);
        let metrics = pod_metrics(&readings, &pod).unwrap();
        assert_eq!(metrics["containers"][0]["usage"]["cpu"], "500000000n");
        assert_eq!(metrics["containers"][1]["usage"]["cpu"], "100000000n");
        assert_eq!(metrics["containers"][1]["usage"]["memory"], "2048Ki");
        // A node that cannot be read shows nothing rather than its last usage.
        readings.forget("n1");
        assert_eq!(node_metrics(&readings, &node), None);
        readings.record("n1", reading(1, 1, vec![]));
        readings.retain(&[]);
        assert!(readings.nodes().is_empty());
    }

    impl Readings {
        fn pair_newest_at(&self, node: &str) -> Instant {
            self.nodes.lock().unwrap()[node].0.at
        }

        fn nodes(&self) -> Vec<String> {
            self.nodes.lock().unwrap().keys().cloned().collect()
        }
    }
}
