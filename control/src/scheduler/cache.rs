//! The scheduler's view of the cluster: every node with what is allocated on it, counting
//! pods the watch has confirmed and pods the scheduler has *assumed* (decided, bind in
//! flight). Assuming is what keeps two quick decisions from booking the same room twice
//! between a bind and its confirmation by the watch; a failed bind is forgotten.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint};

use super::pod::{HostPort, OwnerId, PodInfo, PodKey, Resources};

/// Hashes an [`OwnerId`], which is already a hash, by passing it through.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One node and what the scheduler has placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    /// `None` while only pods bound to it are known (the node object has not arrived, or
    /// has been deleted); such entries are never scheduled to.
    pub node: Option<Arc<Node>>,
    pub labels: BTreeMap<String, String>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub nonzero_requested: Resources,
    pub unschedulable: bool,
    pub ready: bool,
    pub taints: Vec<Taint>,
    pub pods: Vec<Arc<PodInfo>>,
    pub used_ports: Vec<HostPort>,
    /// Pods per controlling owner, for spreading.
    pub owners: HashMap<OwnerId, u32, BuildHasherDefault<IdHasher>>,
}

/// Kubernetes' kubelet default when a node does not say how many pods it takes.
const DEFAULT_MAX_PODS: i64 = 110;

impl NodeInfo {
    fn empty(name: &str) -> Self {
        Self {
            name: name.to_string(),
            node: None,
            labels: BTreeMap::new(),
            allocatable: Resources::default(),
            requested: Resources::default(),
            nonzero_requested: Resources::default(),
            unschedulable: true,
            ready: false,
            taints: Vec::new(),
            pods: Vec::new(),
            used_ports: Vec::new(),
            owners: HashMap::default(),
        }
    }

    fn set_node(&mut self, node: Arc<Node>) {
        let status = node.status.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        let list = status.allocatable.as_ref().or(status.capacity.as_ref());
        let mut allocatable = list.map(Resources::from_list).unwrap_or_default();
        if list.is_none_or(|l| !l.contains_key("pods")) {
            allocatable.pods = DEFAULT_MAX_PODS;
        }
        self.allocatable = allocatable;
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        self.unschedulable = spec.unschedulable.unwrap_or(false);
        self.taints = spec.taints.unwrap_or_default();
        self.ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        self.node = Some(node);
    }

    fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.nonzero_requested.add(&pod.nonzero);
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if let Some(owner) = &pod.owner {
            *self.owners.entry(*owner).or_default() += 1;
        }
        self.pods.push(pod);
    }

    fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let index = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(index);
        self.requested.sub(&pod.requests);
        self.nonzero_requested.sub(&pod.nonzero);
        for port in &pod.host_ports {
            if let Some(i) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(i);
            }
        }
        if let Some(owner) = &pod.owner
            && let Some(count) = self.owners.get_mut(owner)
        {
            *count -= 1;
            if *count == 0 {
                self.owners.remove(owner);
            }
        }
        Some(pod)
    }

    /// What the filters read of the node itself (not of its pods).
    fn filter_facts(
        &self,
    ) -> (
        bool,
        Resources,
        BTreeMap<String, String>,
        bool,
        bool,
        Vec<Taint>,
    ) {
        (
            self.node.is_some(),
            self.allocatable,
            self.labels.clone(),
            self.unschedulable,
            self.ready,
            self.taints.clone(),
        )
    }

    /// The value of a topology label on this node; `kubernetes.io/hostname` falls back to
    /// the node's name.
    pub fn topology_value(&self, key: &str) -> Option<&str> {
        match self.labels.get(key) {
            Some(v) => Some(v),
            None if key == "kubernetes.io/hostname" => Some(&self.name),
            None => None,
        }
    }
}

/// Where a pod sits in the cache.
#[derive(Debug, Clone)]
struct Placement {
    node: String,
    assumed: bool,
}

/// Nodes (in a stable order, so that the search can rotate through them) and placed pods.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<PodKey, Placement>,
    /// How many placed pods carry required anti-affinity terms; while zero the symmetric
    /// anti-affinity check is skipped.
    anti_affinity_pods: usize,
}

impl Cache {
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// Nodes that exist (have a Node object).
    pub fn node_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.node.is_some()).count()
    }

    pub fn anti_affinity_pods(&self) -> usize {
        self.anti_affinity_pods
    }

    fn entry(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.nodes.push(NodeInfo::empty(name));
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    /// Adds or replaces a node; returns whether anything the filters look at changed (so
    /// that heartbeats do not wake every unschedulable pod).
    pub fn set_node(&mut self, node: Arc<Node>) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let entry = self.entry(&name);
        let before = entry.filter_facts();
        entry.set_node(node);
        before != entry.filter_facts()
    }

    /// Forgets a node object; pods still bound to it keep their entry until they go.
    pub fn remove_node(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if self.nodes[i].pods.is_empty() {
            self.drop_entry(i);
        } else {
            let entry = &mut self.nodes[i];
            entry.node = None;
            entry.unschedulable = true;
            entry.ready = false;
        }
    }

    fn drop_entry(&mut self, i: usize) {
        let name = self.nodes[i].name.clone();
        self.nodes.swap_remove(i);
        self.index.remove(&name);
        if i < self.nodes.len() {
            self.index.insert(self.nodes[i].name.clone(), i);
        }
    }

    pub fn contains_pod(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// Records a decision before its bind is confirmed.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.place(pod, node, true);
    }

    /// A bind that failed: give the room back.
    pub fn forget(&mut self, key: &str) {
        if self.is_assumed(key) {
            self.remove_pod(key);
        }
    }

    /// A pod the watch reports bound to `node` (confirming an assumption, or anyone's bind).
    pub fn add_bound(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.place(pod, node, false);
    }

    fn place(&mut self, pod: Arc<PodInfo>, node: &str, assumed: bool) {
        let key = pod.key.clone();
        self.remove_pod(&key);
        if !pod.anti_affinity.is_empty() {
            self.anti_affinity_pods += 1;
        }
        self.entry(node).add_pod(pod);
        self.pods.insert(
            key,
            Placement {
                node: node.to_string(),
                assumed,
            },
        );
    }

    /// Removes a placed pod; returns whether it held room on a node.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(placement) = self.pods.remove(key) else {
            return false;
        };
        let Some(&i) = self.index.get(&placement.node) else {
            return false;
        };
        if let Some(pod) = self.nodes[i].remove_pod(key)
            && !pod.anti_affinity.is_empty()
        {
            self.anti_affinity_pods -= 1;
        }
        if self.nodes[i].node.is_none() && self.nodes[i].pods.is_empty() {
            self.drop_entry(i);
        }
        true
    }

    /// Keys of every placed pod (for a resync after a re-list).
    pub fn pod_keys(&self) -> Vec<PodKey> {
        self.pods.keys().cloned().collect()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| n.name.clone())
            .collect()
    }
}
