//! What the scheduler needs to know about a pod, computed once per pod from its spec and its
//! RuntimeClass: resource requests, host ports, node constraints, tolerations, anti-affinity.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bosun_api::labels::{Requirement, Selector};

use crate::objects::label_selector;
use k8s_openapi::api::core::v1::{
    Container, NodeSelectorTerm, Pod, PodAffinityTerm, ResourceRequirements, Toleration,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// `namespace/name`.
pub type PodKey = String;

pub fn key_of(pod: &Pod) -> PodKey {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The resources the scheduler accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.pods += other.pods;
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.pods -= other.pods;
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
            pods: self.pods.max(other.pods),
        }
    }

    /// Reads `cpu`, `memory` and `pods` from a resource list (node capacity, allocatable).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        Resources {
            milli_cpu: list.get("cpu").map(milli).unwrap_or(0),
            memory: list.get("memory").map(units).unwrap_or(0),
            pods: list.get("pods").map(units).unwrap_or(0),
        }
    }
}

/// The request used for scoring when a container asks for nothing (Kubernetes' defaults),
/// so that a node full of request-less pods does not look empty.
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// A host port a pod asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.port == other.port
            && self.protocol == other.protocol
            && (wildcard(&self.ip) || wildcard(&other.ip) || self.ip == other.ip)
    }
}

/// A required node selector term: labels and `metadata.name` both must match.
#[derive(Debug, Clone, Default)]
pub struct NodeTerm {
    pub labels: Selector,
    pub names: Selector,
}

impl NodeTerm {
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        let mut fields = BTreeMap::new();
        fields.insert("metadata.name".to_string(), name.to_string());
        self.labels.matches(labels) && self.names.matches(&fields)
    }
}

/// A required pod anti-affinity term.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// `None` (no labelSelector) matches no pod, as in Kubernetes.
    pub selector: Option<Selector>,
    /// `None`: every namespace (`namespaceSelector: {}`).
    pub namespaces: Option<Vec<String>>,
    pub topology_key: String,
}

impl AffinityTerm {
    pub fn matches(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|ns| ns.iter().any(|n| n == namespace))
            && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A pod as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub key: PodKey,
    pub namespace: String,
    pub uid: String,
    pub pod: Arc<Pod>,
    pub priority: i32,
    /// What the node must reserve (fit).
    pub requests: Resources,
    /// The same with Kubernetes' defaults for empty requests (scoring).
    pub nonzero: Resources,
    pub host_ports: Vec<HostPort>,
    /// `spec.nodeSelector` merged with the RuntimeClass's.
    pub node_selector: Selector,
    /// Required node affinity: one of the terms must match. `None`: no constraint.
    pub required_terms: Option<Vec<NodeTerm>>,
    pub preferred_terms: Vec<(i32, NodeTerm)>,
    /// The pod's tolerations and its RuntimeClass's.
    pub tolerations: Vec<Toleration>,
    pub anti_affinity: Vec<AffinityTerm>,
    /// The controlling owner (ReplicaSet, Job, …), for spreading.
    pub owner: Option<OwnerId>,
    pub labels: BTreeMap<String, String>,
}

/// An owner's uid hashed once per pod, so that counting pods per owner on each of a
/// thousand nodes does not hash strings again (a 64-bit collision is not a concern at the
/// scale of one cluster's controllers).
pub type OwnerId = u64;

pub fn owner_id(uid: &str) -> OwnerId {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut hasher);
    hasher.finish()
}

/// Why a pod cannot be scheduled as it is written (the message of its Unschedulable
/// condition).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("RuntimeClass {0:?} not found")]
    NoRuntimeClass(String),
    #[error(
        "the pod's nodeSelector {key}={pod} conflicts with RuntimeClass {class:?} ({key}={class_value})"
    )]
    SelectorConflict {
        key: String,
        pod: String,
        class: String,
        class_value: String,
    },
    #[error(transparent)]
    Selector(#[from] bosun_api::labels::Reason),
    #[error("node affinity matchFields supports only metadata.name, not {0:?}")]
    MatchField(String),
    #[error("a pod anti-affinity term needs a topologyKey")]
    NoTopologyKey,
    #[error("pod anti-affinity namespaceSelector other than {{}} is not supported")]
    NamespaceSelector,
}

/// The runtime a pod gets without `runtimeClassName`.
pub const DEFAULT_RUNTIME: &str = "wasmtime";

impl PodInfo {
    /// Computes a pod's scheduling facts. Fails (with a message for the pod's condition) when
    /// its RuntimeClass does not exist or a selector in it is malformed.
    pub fn new(
        pod: Arc<Pod>,
        runtime_classes: &HashMap<String, RuntimeClass>,
    ) -> Result<Self, SpecError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let class = match spec.runtime_class_name.as_deref() {
            None | Some("") => None,
            Some(name) => Some(
                runtime_classes
                    .get(name)
                    .ok_or_else(|| SpecError::NoRuntimeClass(name.to_string()))?,
            ),
        };
        let handler = class.map(|c| c.handler.as_str()).unwrap_or(DEFAULT_RUNTIME);
        // A wasm container's memory limit caps its linear memory, so the node must reserve
        // the limit; a Linux container reserves its request, as in Kubernetes.
        let reserve_limit = handler != "runc";

        let containers: Vec<&Container> = spec.containers.iter().collect();
        let mut app = Resources::default();
        let mut app_nonzero = Resources::default();
        for c in &containers {
            app.add(&container_requests(c, reserve_limit, false));
            app_nonzero.add(&container_requests(c, reserve_limit, true));
        }
        // Init containers the Kubernetes way: restartable ones (sidecars) run alongside the
        // app and add up; each ordinary one runs alone beside the sidecars started before it.
        let mut sidecars = Resources::default();
        let mut sidecars_nonzero = Resources::default();
        let mut init_peak = Resources::default();
        let mut init_peak_nonzero = Resources::default();
        for c in spec.init_containers.iter().flatten() {
            let r = container_requests(c, reserve_limit, false);
            let n = container_requests(c, reserve_limit, true);
            if c.restart_policy.as_deref() == Some("Always") {
                sidecars.add(&r);
                sidecars_nonzero.add(&n);
                init_peak = init_peak.max(sidecars);
                init_peak_nonzero = init_peak_nonzero.max(sidecars_nonzero);
            } else {
                let mut alone = sidecars;
                alone.add(&r);
                let mut alone_nonzero = sidecars_nonzero;
                alone_nonzero.add(&n);
                init_peak = init_peak.max(alone);
                init_peak_nonzero = init_peak_nonzero.max(alone_nonzero);
            }
        }
        app.add(&sidecars);
        app_nonzero.add(&sidecars_nonzero);
        let mut requests = app.max(init_peak);
        let mut nonzero = app_nonzero.max(init_peak_nonzero);
        let overhead = spec
            .overhead
            .as_ref()
            .or_else(|| class.and_then(|c| c.overhead.as_ref()?.pod_fixed.as_ref()));
        if let Some(overhead) = overhead {
            let o = Resources::from_list(overhead);
            requests.add(&o);
            nonzero.add(&o);
        }
        requests.pods = 1;
        nonzero.pods = 1;

        let host_ports = containers
            .iter()
            .chain(
                spec.init_containers
                    .iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.unwrap_or(0) > 0)
            .map(|p| HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                ip: p.host_ip.clone().unwrap_or_default(),
                port: p.host_port.unwrap_or(0),
            })
            .collect();

        let mut node_selector: BTreeMap<String, String> =
            spec.node_selector.clone().unwrap_or_default();
        let mut tolerations = spec.tolerations.clone().unwrap_or_default();
        if let Some(scheduling) = class.and_then(|c| c.scheduling.as_ref()) {
            for (k, v) in scheduling.node_selector.iter().flatten() {
                match node_selector.get(k) {
                    Some(existing) if existing != v => {
                        return Err(SpecError::SelectorConflict {
                            key: k.clone(),
                            pod: existing.clone(),
                            class: class
                                .and_then(|c| c.metadata.name.clone())
                                .unwrap_or_default(),
                            class_value: v.clone(),
                        });
                    }
                    _ => {
                        node_selector.insert(k.clone(), v.clone());
                    }
                }
            }
            tolerations.extend(scheduling.tolerations.iter().flatten().cloned());
        }
        let node_selector = Selector::from_match_labels(
            node_selector.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );

        let affinity = spec.affinity.clone().unwrap_or_default();
        let node_affinity = affinity.node_affinity.unwrap_or_default();
        let required_terms = node_affinity
            .required_during_scheduling_ignored_during_execution
            .map(|required| {
                required
                    .node_selector_terms
                    .iter()
                    .map(node_term)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let preferred_terms = node_affinity
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .map(|p| Ok((p.weight, node_term(&p.preference)?)))
            .collect::<Result<Vec<_>, SpecError>>()?;

        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let anti_affinity = affinity
            .pod_anti_affinity
            .and_then(|a| a.required_during_scheduling_ignored_during_execution)
            .unwrap_or_default()
            .iter()
            .map(|t| affinity_term(t, &namespace))
            .collect::<Result<Vec<_>, _>>()?;

        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| owner_id(&o.uid));

        Ok(Self {
            key: key_of(&pod),
            namespace,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            requests,
            nonzero,
            host_ports,
            node_selector,
            required_terms,
            preferred_terms,
            tolerations,
            anti_affinity,
            owner,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            pod,
        })
    }
}

fn container_requests(c: &Container, reserve_limit: bool, nonzero: bool) -> Resources {
    let empty = ResourceRequirements::default();
    let r = c.resources.as_ref().unwrap_or(&empty);
    let request = |name: &str| r.requests.as_ref().and_then(|l| l.get(name));
    let limit = |name: &str| r.limits.as_ref().and_then(|l| l.get(name));
    // An unset request defaults to the limit, as the API server's defaulting does.
    let mut cpu = request("cpu").or(limit("cpu")).map(milli).unwrap_or(0);
    let mut memory = if reserve_limit {
        limit("memory")
            .or(request("memory"))
            .map(units)
            .unwrap_or(0)
    } else {
        request("memory")
            .or(limit("memory"))
            .map(units)
            .unwrap_or(0)
    };
    if nonzero {
        if cpu == 0 {
            cpu = DEFAULT_MILLI_CPU;
        }
        if memory == 0 {
            memory = DEFAULT_MEMORY;
        }
    }
    Resources {
        milli_cpu: cpu,
        memory,
        pods: 0,
    }
}

/// A quantity in thousandths (cpu), rounded up as Kubernetes does.
fn milli(q: &Quantity) -> i64 {
    bosun_api::quantity::parse(&q.0)
        .map(|v| (v * 1000.0).ceil() as i64)
        .unwrap_or(0)
}

/// A quantity in whole units (bytes, pods), rounded up.
fn units(q: &Quantity) -> i64 {
    bosun_api::quantity::parse(&q.0)
        .map(|v| v.ceil() as i64)
        .unwrap_or(0)
}

fn node_term(term: &NodeSelectorTerm) -> Result<NodeTerm, SpecError> {
    let mut out = NodeTerm::default();
    for e in term.match_expressions.iter().flatten() {
        out.labels.push(Requirement::from_operator(
            &e.key,
            &e.operator,
            e.values.as_deref().unwrap_or_default(),
        )?);
    }
    for e in term.match_fields.iter().flatten() {
        if e.key != "metadata.name" {
            return Err(SpecError::MatchField(e.key.clone()));
        }
        out.names.push(Requirement::from_operator(
            &e.key,
            &e.operator,
            e.values.as_deref().unwrap_or_default(),
        )?);
    }
    Ok(out)
}

fn affinity_term(term: &PodAffinityTerm, own_namespace: &str) -> Result<AffinityTerm, SpecError> {
    if term.topology_key.is_empty() {
        return Err(SpecError::NoTopologyKey);
    }
    let namespaces = match (&term.namespaces, &term.namespace_selector) {
        (_, Some(ns))
            if ns.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && ns.match_expressions.as_ref().is_none_or(|m| m.is_empty()) =>
        {
            None
        }
        (_, Some(_)) => {
            return Err(SpecError::NamespaceSelector);
        }
        (Some(list), None) if !list.is_empty() => Some(list.clone()),
        _ => Some(vec![own_namespace.to_string()]),
    };
    Ok(AffinityTerm {
        selector: term
            .label_selector
            .as_ref()
            .map(label_selector)
            .transpose()?,
        namespaces,
        topology_key: term.topology_key.clone(),
    })
}
