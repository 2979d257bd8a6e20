//! What an object uses of a ResourceQuota, as upstream's quota evaluators measure it: the
//! usage of one object, whether a quota applies to it (its hard resources and its scopes), the
//! compute values a quota requires pods to set, and the sum over a namespace. The quota
//! admission (`apiserver/admission/quota.rs`) charges creates with it, and the quota
//! controller (`controllers/resourcequota.rs`) recomputes `status.used` with it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use bosun_api::quantity;
use bosun_api::resources::Resource;
use serde_json::Value;

/// An amount of one quota resource, in thousandths so that sums are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    pub milli: i64,
    /// Printed with binary suffixes (`64Mi`) where it divides evenly.
    pub binary: bool,
}

impl Amount {
    pub fn count(n: i64) -> Self {
        Self {
            milli: n * 1000,
            binary: false,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(Self {
            milli: quantity::milli(text).ok()?,
            binary: quantity::is_binary(text),
        })
    }

    fn plus(self, other: Self) -> Self {
        Self {
            milli: self.milli + other.milli,
            binary: self.binary || other.binary,
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quantity::format_milli(self.milli, self.binary))
    }
}

/// A resource list: quota resource name → amount.
pub type Usage = BTreeMap<String, Amount>;

/// `a + b`, key by key.
pub fn add(a: &Usage, b: &Usage) -> Usage {
    let mut sum = a.clone();
    for (key, amount) in b {
        let entry = sum.entry(key.clone()).or_insert(Amount {
            milli: 0,
            binary: amount.binary,
        });
        *entry = entry.plus(*amount);
    }
    sum
}

/// `a - b`, key by key (the change an update makes).
pub fn subtract(a: &Usage, b: &Usage) -> Usage {
    let negated = b
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Amount {
                    milli: -v.milli,
                    binary: v.binary,
                },
            )
        })
        .collect();
    add(a, &negated)
}

/// A resource list read from JSON (`spec.hard`, `status.used`); values that do not parse are
/// left out (the strategy refuses them in a quota's spec).
pub fn read(list: &Value) -> Usage {
    list.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), Amount::parse(v.as_str()?)?)))
        .collect()
}

/// A resource list as JSON.
pub fn write(usage: &Usage) -> Value {
    Value::Object(
        usage
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect(),
    )
}

/// `k=v,k=v` in key order, as upstream's messages print resource lists.
pub fn pretty(usage: &Usage) -> String {
    usage
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The quota resource that counts every object of `resource`: `count/pods`,
/// `count/deployments.apps`.
pub fn count_name(resource: &Resource) -> String {
    if resource.group.is_empty() {
        format!("count/{}", resource.plural)
    } else {
        format!("count/{}.{}", resource.plural, resource.group)
    }
}

/// The old names some core kinds are also counted under.
fn legacy_count(resource: &Resource) -> Option<&'static str> {
    if !resource.group.is_empty() {
        return None;
    }
    match resource.plural {
        "configmaps"
        | "secrets"
        | "replicationcontrollers"
        | "resourcequotas"
        | "persistentvolumeclaims" => Some(resource.plural),
        _ => None,
    }
}

const POD_RESOURCES: [&str; 11] = [
    "pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "count/pods",
];

/// The compute resources a quota makes every container of a pod set.
const REQUIRED_OF_CONTAINERS: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

const SERVICE_RESOURCES: [&str; 4] = [
    "services",
    "services.nodeports",
    "services.loadbalancers",
    "count/services",
];

fn is_pods(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.plural == "pods"
}

fn is_services(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.plural == "services"
}

/// Whether `key` of a quota's `hard` is something objects of `resource` use.
pub fn tracks(resource: &Resource, key: &str) -> bool {
    if is_pods(resource) {
        return POD_RESOURCES.contains(&key) || key.starts_with("requests.hugepages-");
    }
    if is_services(resource) {
        return SERVICE_RESOURCES.contains(&key);
    }
    key == count_name(resource) || legacy_count(resource) == Some(key)
}

/// What `object`, of `resource`, uses. A pod that has finished (Succeeded or Failed), or whose
/// grace period after deletion has run out, uses only its `count/pods`, as upstream counts.
pub fn usage(resource: &Resource, object: &Value, now: SystemTime) -> Usage {
    let mut usage = Usage::new();
    usage.insert(count_name(resource), Amount::count(1));
    if let Some(legacy) = legacy_count(resource) {
        usage.insert(legacy.to_string(), Amount::count(1));
    }
    if is_pods(resource) && pod_is_live(object, now) {
        usage.insert("pods".into(), Amount::count(1));
        for (kind, prefix, alias) in [
            ("requests", "requests.", true),
            ("limits", "limits.", false),
        ] {
            for (name, amount) in pod_total(object, kind) {
                if alias && matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    usage.insert(name.clone(), amount);
                }
                usage.insert(format!("{prefix}{name}"), amount);
            }
        }
    }
    if is_services(resource) {
        let ports = object["spec"]["ports"].as_array().map_or(0, Vec::len) as i64;
        let kind = object["spec"]["type"].as_str().unwrap_or("ClusterIP");
        let node_ports = match kind {
            "NodePort" => ports,
            "LoadBalancer" if object["spec"]["allocateLoadBalancerNodePorts"] != false => ports,
            _ => 0,
        };
        usage.insert("services".into(), Amount::count(1));
        usage.insert("services.nodeports".into(), Amount::count(node_ports));
        usage.insert(
            "services.loadbalancers".into(),
            Amount::count((kind == "LoadBalancer") as i64),
        );
    }
    usage
}

/// Whether a pod still holds its compute quota.
fn pod_is_live(pod: &Value, now: SystemTime) -> bool {
    if matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    ) {
        return false;
    }
    let deleted = pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(bosun_api::time::parse_rfc3339);
    let grace = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_u64);
    match (deleted, grace) {
        (Some(deleted), Some(grace)) => now <= deleted + Duration::from_secs(grace),
        _ => true,
    }
}

/// A container's requests or limits.
fn container_list(container: &Value, kind: &str) -> Usage {
    read(&container["resources"][kind])
}

/// A pod's requests or limits: the sum over its containers, or the largest init container's
/// when that is more, plus the pod's overhead.
fn pod_total(pod: &Value, kind: &str) -> Usage {
    let containers = |field: &str| pod["spec"][field].as_array().cloned().unwrap_or_default();
    let mut total = Usage::new();
    for container in containers("containers") {
        total = add(&total, &container_list(&container, kind));
    }
    for init in containers("initContainers") {
        for (name, amount) in container_list(&init, kind) {
            let entry = total.entry(name).or_insert(amount);
            if entry.milli < amount.milli {
                *entry = amount;
            }
        }
    }
    add(&total, &read(&pod["spec"]["overhead"]))
}

/// Whether a pod has no requests or limits at all (its QoS class is BestEffort).
fn best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|field| {
        pod["spec"][*field]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| {
                ["requests", "limits"].iter().all(|kind| {
                    c["resources"][*kind]
                        .as_object()
                        .is_none_or(|l| !l.contains_key("cpu") && !l.contains_key("memory"))
                })
            })
    })
}

/// One scope of a quota, as a selector requirement (`spec.scopes` entries are `Exists`).
#[derive(Debug, Clone)]
struct Scope {
    name: String,
    operator: String,
    values: Vec<String>,
}

/// A ResourceQuota, read once: what it limits, what its status says is used, and its scopes.
#[derive(Debug, Clone)]
pub struct Quota {
    pub name: String,
    /// The revision it was read at (its resourceVersion).
    pub revision: i64,
    pub hard: Usage,
    pub used: Usage,
    scopes: Vec<Scope>,
    /// The object as read.
    pub object: Value,
}

impl Quota {
    pub fn read(object: Value) -> Self {
        let mut scopes: Vec<Scope> = object["spec"]["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| Scope {
                name: s.to_string(),
                operator: "Exists".to_string(),
                values: Vec::new(),
            })
            .collect();
        for expression in object["spec"]["scopeSelector"]["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let text = |f: &str| expression[f].as_str().unwrap_or_default().to_string();
            scopes.push(Scope {
                name: text("scopeName"),
                operator: text("operator"),
                values: expression["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
            });
        }
        Self {
            name: object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            revision: object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0),
            hard: read(&object["spec"]["hard"]),
            used: read(&object["status"]["used"]),
            scopes,
            object,
        }
    }

    /// The keys of `hard` that objects of `resource` use.
    pub fn limited(&self, resource: &Resource) -> BTreeSet<String> {
        let mut keys: BTreeSet<String> = self
            .hard
            .keys()
            .filter(|k| tracks(resource, k))
            .cloned()
            .collect();
        // A BestEffort pod has no compute usage: such a quota limits only the number of pods.
        if self.scopes.iter().any(|s| s.name == "BestEffort") {
            keys.retain(|k| k == "pods" || k == "count/pods");
        }
        keys
    }

    /// Whether the quota applies to `object`: it limits something objects of `resource` use,
    /// and the object is in every one of its scopes (only pods have scopes; a scoped quota
    /// applies to nothing else).
    pub fn applies(&self, resource: &Resource, object: &Value) -> bool {
        if !self.hard.keys().any(|k| tracks(resource, k)) {
            return false;
        }
        self.scopes.is_empty()
            || is_pods(resource)
                && self
                    .scopes
                    .iter()
                    .all(|s| in_scope(object, &s.name, &s.operator, &s.values))
    }

    /// The usage of every object in `objects` (of `resource`) that the quota applies to,
    /// over the resources it limits.
    pub fn total<'a>(
        &self,
        resource: &Resource,
        objects: impl IntoIterator<Item = &'a Value>,
        now: SystemTime,
    ) -> Usage {
        let limited = self.limited(resource);
        let mut sum: Usage = limited
            .iter()
            .map(|k| (k.clone(), Amount::count(0)))
            .collect();
        for object in objects {
            if self.applies(resource, object) {
                sum = add(&sum, &mask(&usage(resource, object, now), &limited));
            }
        }
        sum
    }

    /// The resources its limits count: what a recount lists.
    pub fn counted_resources(&self) -> Vec<&'static Resource> {
        bosun_api::resources::RESOURCES
            .iter()
            .filter(|r| r.namespaced && self.hard.keys().any(|k| tracks(r, k)))
            .collect()
    }
}

/// Whether a pod is in one scope.
fn in_scope(pod: &Value, scope: &str, operator: &str, values: &[String]) -> bool {
    let deadline = pod["spec"]["activeDeadlineSeconds"].as_i64();
    let terminating = deadline.is_some_and(|d| d >= 0);
    let inside = match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => {
            let class = pod["spec"]["priorityClassName"]
                .as_str()
                .unwrap_or_default();
            return match operator {
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            };
        }
        "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
        _ => false,
    };
    match operator {
        "DoesNotExist" | "NotIn" => !inside,
        _ => inside,
    }
}

/// Whether a pod's affinity terms reach into other namespaces.
fn cross_namespace_affinity(pod: &Value) -> bool {
    let affinity = &pod["spec"]["affinity"];
    let terms = ["podAffinity", "podAntiAffinity"]
        .into_iter()
        .flat_map(|a| {
            [
                "requiredDuringSchedulingIgnoredDuringExecution",
                "preferredDuringSchedulingIgnoredDuringExecution",
            ]
            .into_iter()
            .flat_map(move |when| affinity[a][when].as_array().cloned().unwrap_or_default())
        });
    terms.into_iter().any(|term| {
        let term = term.get("podAffinityTerm").unwrap_or(&term).clone();
        term.get("namespaceSelector").is_some()
            || term["namespaces"].as_array().is_some_and(|n| !n.is_empty())
    })
}

/// The compute resources among `limited` that some container of the pod does not set, sorted:
/// a quota on compute requires every container to state it.
pub fn missing(limited: &BTreeSet<String>, pod: &Value) -> Vec<String> {
    let required: BTreeSet<&str> = limited
        .iter()
        .map(String::as_str)
        .filter(|k| REQUIRED_OF_CONTAINERS.contains(k))
        .collect();
    let mut missing = BTreeSet::new();
    for field in ["containers", "initContainers"] {
        for container in pod["spec"][field].as_array().into_iter().flatten() {
            let requests = container_list(container, "requests");
            let limits = container_list(container, "limits");
            for key in &required {
                let set = match key.split_once('.') {
                    Some(("limits", name)) => limits.contains_key(name),
                    Some((_, name)) => requests.contains_key(name),
                    None => requests.contains_key(*key),
                };
                if !set {
                    missing.insert(key.to_string());
                }
            }
        }
    }
    missing.into_iter().collect()
}

/// `usage` restricted to `keys`.
pub fn mask(usage: &Usage, keys: &BTreeSet<String>) -> Usage {
    usage
        .iter()
        .filter(|(k, _)| keys.contains(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> &'static Resource {
        bosun_api::resources::find("", "v1", "pods").unwrap()
    }

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": resources},
            {"name": "b", "resources": resources},
        ]}})
    }

    #[test]
    fn a_pod_uses_the_sum_of_its_containers() {
        let pod = pod(json!({"requests": {"cpu": "250m", "memory": "64Mi"},
                             "limits": {"memory": "64Mi"}}));
        let usage = usage(pods(), &pod, SystemTime::now());
        let text: BTreeMap<_, _> = usage
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_string()))
            .collect();
        assert_eq!(text["pods"], "1");
        assert_eq!(text["count/pods"], "1");
        assert_eq!(text["requests.cpu"], "500m");
        assert_eq!(text["cpu"], "500m");
        assert_eq!(text["requests.memory"], "128Mi");
        assert_eq!(text["limits.memory"], "128Mi");
        assert!(!text.contains_key("limits.cpu"));
    }

    #[test]
    fn finished_pods_keep_only_their_object_count() {
        let mut pod = pod(json!({}));
        pod["status"] = json!({"phase": "Succeeded"});
        let usage = usage(pods(), &pod, SystemTime::now());
        assert_eq!(usage.keys().collect::<Vec<_>>(), ["count/pods"]);
    }

    #[test]
    fn scopes_select_pods() {
        let quota =
            |scopes: Value| Quota::read(json!({"spec": {"hard": {"pods": "1"}, "scopes": scopes}}));
        let best_effort = pod(json!({}));
        let burstable = pod(json!({"requests": {"cpu": "1"}}));
        let mut terminating = best_effort.clone();
        terminating["spec"]["activeDeadlineSeconds"] = json!(30);
        assert!(quota(json!(["BestEffort"])).applies(pods(), &best_effort));
        assert!(!quota(json!(["BestEffort"])).applies(pods(), &burstable));
        assert!(quota(json!(["NotBestEffort"])).applies(pods(), &burstable));
        assert!(quota(json!(["Terminating"])).applies(pods(), &terminating));
        assert!(!quota(json!(["Terminating"])).applies(pods(), &best_effort));
        assert!(quota(json!(["NotTerminating"])).applies(pods(), &best_effort));
        let by_class = Quota::read(
            json!({"spec": {"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}}),
        );
        let mut high = best_effort.clone();
        high["spec"]["priorityClassName"] = json!("high");
        assert!(by_class.applies(pods(), &high));
        assert!(!by_class.applies(pods(), &best_effort));
        let services = bosun_api::resources::find("", "v1", "services").unwrap();
        let scoped =
            Quota::read(json!({"spec": {"hard": {"services": "1"}, "scopes": ["BestEffort"]}}));
        assert!(!scoped.applies(services, &json!({"spec": {}})));
    }

    #[test]
    fn compute_quotas_name_what_containers_leave_out() {
        let limited: BTreeSet<String> = ["pods", "requests.cpu", "limits.memory"]
            .map(String::from)
            .into();
        let pod = pod(json!({"requests": {"cpu": "1"}}));
        assert_eq!(missing(&limited, &pod), ["limits.memory"]);
    }

    #[test]
    fn services_count_their_node_ports() {
        let services = bosun_api::resources::find("", "v1", "services").unwrap();
        let service =
            json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        let usage = usage(services, &service, SystemTime::now());
        assert_eq!(usage["services.nodeports"], Amount::count(2));
        assert_eq!(usage["services.loadbalancers"], Amount::count(1));
        assert_eq!(usage["count/services"], Amount::count(1));
    }
}
