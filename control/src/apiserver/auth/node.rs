//! The Node authorizer, as upstream's: a node's credential (`system:node:NAME` in
//! `system:nodes`) may read the Secrets, ConfigMaps and PersistentVolumeClaims of the pods
//! bound to it, ask for tokens of their ServiceAccounts, and keep its own Lease, and nothing
//! else of those kinds; for everything else it holds the static rules of the `system:node`
//! role ([`rules`]), what a node agent needs. NodeRestriction admission
//! (`admission/noderestriction.rs`) then narrows the writes to the node's own objects.
//!
//! Which objects a node's pods use is a graph kept in memory from a watch of the pods
//! (through [`crate::store::follow`]), never read per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::rbac::rules;
use super::{Attributes, Authorizer, Decision, PolicyRule, Rules, User};
use crate::store::{self, Key, Object, Store};

/// Nodes' group, and the prefix of their user names.
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The namespace of the nodes' Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is, if its credential is a node's.
pub fn identity(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    (user.in_group(NODES_GROUP) && !name.is_empty()).then_some(name)
}

/// What a node may do whatever pods it has: the rules of the `system:node` ClusterRole.
pub fn rules() -> Vec<PolicyRule> {
    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            api_groups: groups.iter().map(|g| g.to_string()).collect(),
            resources: resources.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }
    }
    const READ: &[&str] = &["get", "list", "watch"];
    vec![
        // Its Node object and status (NodeRestriction: its own only).
        rule(
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
            &[""],
            &["nodes"],
        ),
        rule(&["get", "patch", "update"], &[""], &["nodes/status"]),
        // Its pods: read, report status, delete once stopped (NodeRestriction: its own).
        rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
        rule(&["get", "patch", "update"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        // What the service proxy, the resolver and the function gateway follow.
        rule(READ, &[""], &["services", "endpoints"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
        // What NetworkPolicy enforcement follows (the node is its own network plugin).
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["networking.k8s.io"], &["networkpolicies"]),
        // The gateway wakes a Function that has no replica (its activation annotation).
        rule(
            &["get", "list", "watch", "patch"],
            &[bosun_api::function::GROUP],
            &["functions"],
        ),
        rule(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        // Its client certificate, and its renewal.
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        rule(
            &["create"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests/selfnodeclient"],
        ),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Vertex {
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

type Used = (Vertex, String, String);

#[derive(Default)]
struct Graph {
    /// Node → (kind, namespace, name) → how many of its pods use it.
    by_node: HashMap<String, HashMap<Used, usize>>,
    /// Pod (namespace, name) → its node and what it uses, to undo on change.
    pods: HashMap<(String, String), (String, Vec<Used>)>,
}

impl Graph {
    fn remove_pod(&mut self, pod: &(String, String)) {
        let Some((node, used)) = self.pods.remove(pod) else {
            return;
        };
        if let Some(counts) = self.by_node.get_mut(&node) {
            for object in used {
                if let Some(count) = counts.get_mut(&object) {
                    *count -= 1;
                    if *count == 0 {
                        counts.remove(&object);
                    }
                }
            }
            if counts.is_empty() {
                self.by_node.remove(&node);
            }
        }
    }

    fn set_pod(&mut self, namespace: &str, name: &str, value: Option<&Value>) {
        let pod = (namespace.to_string(), name.to_string());
        self.remove_pod(&pod);
        let Some(value) = value else { return };
        let Some(node) = value
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            return;
        };
        let used = uses(namespace, value);
        let counts = self.by_node.entry(node.to_string()).or_default();
        for object in &used {
            *counts.entry(object.clone()).or_default() += 1;
        }
        self.pods.insert(pod, (node.to_string(), used));
    }

    fn related(&self, node: &str, object: &Used) -> bool {
        self.by_node
            .get(node)
            .is_some_and(|objects| objects.contains_key(object))
    }
}

/// The objects a pod in `namespace` names: its ServiceAccount, its volumes' Secrets,
/// ConfigMaps and claims (projected ones too), its containers' `env` and `envFrom`
/// sources, and its image pull secrets.
fn uses(namespace: &str, pod: &Value) -> Vec<Used> {
    let spec = &pod["spec"];
    let mut used = Vec::new();
    let mut add = |kind: Vertex, name: Option<&str>| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            let object = (kind, namespace.to_string(), name.to_string());
            if !used.contains(&object) {
                used.push(object);
            }
        }
    };
    let text = |value: &Value, pointer: &str| -> Option<String> {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    add(
        Vertex::ServiceAccount,
        Some(spec["serviceAccountName"].as_str().unwrap_or("default")),
    );
    let list = |value: &Value| value.as_array().cloned().unwrap_or_default();
    for volume in list(&spec["volumes"]) {
        add(
            Vertex::Secret,
            text(&volume, "/secret/secretName").as_deref(),
        );
        add(
            Vertex::ConfigMap,
            text(&volume, "/configMap/name").as_deref(),
        );
        add(
            Vertex::Claim,
            text(&volume, "/persistentVolumeClaim/claimName").as_deref(),
        );
        for source in list(&volume["projected"]["sources"]) {
            add(Vertex::Secret, text(&source, "/secret/name").as_deref());
            add(
                Vertex::ConfigMap,
                text(&source, "/configMap/name").as_deref(),
            );
        }
    }
    for field in ["initContainers", "containers", "ephemeralContainers"] {
        for container in list(&spec[field]) {
            for var in list(&container["env"]) {
                add(
                    Vertex::Secret,
                    text(&var, "/valueFrom/secretKeyRef/name").as_deref(),
                );
                add(
                    Vertex::ConfigMap,
                    text(&var, "/valueFrom/configMapKeyRef/name").as_deref(),
                );
            }
            for from in list(&container["envFrom"]) {
                add(Vertex::Secret, text(&from, "/secretRef/name").as_deref());
                add(
                    Vertex::ConfigMap,
                    text(&from, "/configMapRef/name").as_deref(),
                );
            }
        }
    }
    for secret in list(&spec["imagePullSecrets"]) {
        add(Vertex::Secret, text(&secret, "/name").as_deref());
    }
    used
}

/// The authorizer, over the graph a watch of the pods keeps.
pub struct NodeAuthorizer {
    graph: RwLock<Graph>,
    rules: Vec<PolicyRule>,
}

const PODS: &str = "pods";

impl store::follow::Sink for NodeAuthorizer {
    fn reset(&self, _resource: &str, objects: &[Object]) {
        let mut graph = Graph::default();
        for object in objects {
            graph.set_pod(&object.key.namespace, &object.key.name, Some(&object.value));
        }
        *self.graph.write().expect("the node graph is not poisoned") = graph;
    }

    fn apply(&self, _resource: &str, key: &Key, value: Option<&Value>) {
        self.graph
            .write()
            .expect("the node graph is not poisoned")
            .set_pod(&key.namespace, &key.name, value);
    }
}

impl NodeAuthorizer {
    /// Reads every pod, then follows them.
    pub async fn start(store: Arc<dyn Store>) -> store::Result<Arc<Self>> {
        let authorizer = Arc::new(Self {
            graph: Default::default(),
            rules: rules(),
        });
        store::follow::follow(store, &[PODS], &authorizer).await?;
        Ok(authorizer)
    }

    fn decide_related(&self, node: &str, kind: Vertex, attributes: &Attributes<'_>) -> Decision {
        let Attributes::Resource(r) = attributes else {
            return Decision::NoOpinion(String::new());
        };
        let verb_ok = match kind {
            Vertex::ServiceAccount => r.verb == "create" && r.subresource == Some("token"),
            _ => r.verb == "get" && r.subresource.is_none(),
        };
        if !verb_ok {
            return Decision::NoOpinion(format!(
                "can only {} on this object",
                if kind == Vertex::ServiceAccount {
                    "create tokens"
                } else {
                    "get individual resources"
                }
            ));
        }
        let (Some(namespace), Some(name)) = (r.namespace.filter(|n| !n.is_empty()), r.name) else {
            return Decision::NoOpinion("can only access namespaced objects by name".into());
        };
        let object = (kind, namespace.to_string(), name.to_string());
        let related = self
            .graph
            .read()
            .expect("the node graph is not poisoned")
            .related(node, &object);
        if related {
            Decision::Allow(String::new())
        } else {
            Decision::NoOpinion(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }
}

#[async_trait::async_trait]
impl Authorizer for NodeAuthorizer {
    async fn authorize(&self, user: &User, attributes: &Attributes<'_>) -> Decision {
        let Some(node) = identity(user) else {
            return Decision::NoOpinion(String::new());
        };
        if let Attributes::Resource(r) = attributes {
            match (r.group, r.resource) {
                ("", "secrets") => return self.decide_related(node, Vertex::Secret, attributes),
                ("", "configmaps") => {
                    // Every node reads the cluster's blocks.
                    if r.verb == "get"
                        && r.subresource.is_none()
                        && r.namespace == Some(bosun_api::cluster::NAMESPACE)
                        && r.name == Some(bosun_api::cluster::NAME)
                    {
                        return Decision::Allow(String::new());
                    }
                    return self.decide_related(node, Vertex::ConfigMap, attributes);
                }
                ("", "persistentvolumeclaims") => {
                    return self.decide_related(node, Vertex::Claim, attributes);
                }
                ("", "serviceaccounts") if r.subresource == Some("token") => {
                    return self.decide_related(node, Vertex::ServiceAccount, attributes);
                }
                ("coordination.k8s.io", "leases") => {
                    let verbs = ["get", "create", "update", "patch", "delete"];
                    let own = r.namespace == Some(LEASE_NAMESPACE)
                        && (r.verb == "create" || r.name == Some(node));
                    return if own && verbs.contains(&r.verb) && r.subresource.is_none() {
                        Decision::Allow(String::new())
                    } else {
                        Decision::NoOpinion(
                            "can only access node lease with the same name as the requesting node"
                                .to_string(),
                        )
                    };
                }
                _ => {}
            }
        }
        if self
            .rules
            .iter()
            .any(|rule| rules::allows(rule, attributes))
        {
            Decision::Allow(String::new())
        } else {
            Decision::NoOpinion(String::new())
        }
    }

    async fn rules(&self, user: &User, _namespace: &str) -> Rules {
        if identity(user).is_none() {
            return Rules::default();
        }
        // The graph's grants are per object: not listed, so the list is incomplete.
        Rules {
            rules: self.rules.clone(),
            incomplete: true,
            errors: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::auth::ResourceAttributes;
    use crate::store::follow::Sink as _;
    use serde_json::json;

    fn node(name: &str) -> User {
        User::new(format!("system:node:{name}"), [NODES_GROUP.to_string()])
    }

    fn authorizer() -> NodeAuthorizer {
        NodeAuthorizer {
            graph: Default::default(),
            rules: rules(),
        }
    }

    fn get(resource: &str, namespace: &str, name: &str) -> ResourceAttributes<'static> {
        ResourceAttributes {
            verb: "get",
            resource: Box::leak(resource.to_string().into_boxed_str()),
            namespace: Some(Box::leak(namespace.to_string().into_boxed_str())),
            name: Some(Box::leak(name.to_string().into_boxed_str())),
            ..Default::default()
        }
    }

    fn allowed(a: &NodeAuthorizer, user: &User, r: ResourceAttributes<'_>) -> bool {
        futures::executor::block_on(a.authorize(user, &Attributes::Resource(r))).allowed()
    }

    #[test]
    fn a_node_reads_what_its_pods_use_and_nothing_else() {
        let a = authorizer();
        let pod = json!({"spec": {
            "nodeName": "a",
            "serviceAccountName": "runner",
            "volumes": [
                {"name": "s", "secret": {"secretName": "vol-secret"}},
                {"name": "p", "projected": {"sources": [{"configMap": {"name": "projected-cm"}}]}},
            ],
            "containers": [{"name": "c",
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "env-cm"}}]}],
        }});
        a.apply("pods", &Key::new("pods", "team", "web"), Some(&pod));
        let (node_a, node_b) = (node("a"), node("b"));
        for (resource, name) in [
            ("secrets", "vol-secret"),
            ("secrets", "env-secret"),
            ("configmaps", "projected-cm"),
            ("configmaps", "env-cm"),
        ] {
            assert!(allowed(&a, &node_a, get(resource, "team", name)), "{name}");
            assert!(!allowed(&a, &node_b, get(resource, "team", name)), "{name}");
            assert!(
                !allowed(&a, &node_a, get(resource, "other", name)),
                "{name}"
            );
        }
        assert!(!allowed(&a, &node_a, get("secrets", "team", "unused")));
        let list = ResourceAttributes {
            verb: "list",
            ..get("secrets", "team", "vol-secret")
        };
        assert!(!allowed(&a, &node_a, list));
        let token = ResourceAttributes {
            verb: "create",
            subresource: Some("token"),
            ..get("serviceaccounts", "team", "runner")
        };
        assert!(allowed(&a, &node_a, token));
        assert!(!allowed(&a, &node_b, token));

        // The pod moves on (deleted): its objects are no longer the node's.
        a.apply("pods", &Key::new("pods", "team", "web"), None);
        assert!(!allowed(&a, &node_a, get("secrets", "team", "vol-secret")));
        assert!(a.graph.read().unwrap().by_node.is_empty());
    }

    #[test]
    fn leases_are_the_nodes_own_and_other_users_get_no_opinion() {
        let a = authorizer();
        let lease = |verb: &'static str, name: &'static str| ResourceAttributes {
            verb,
            group: "coordination.k8s.io",
            resource: "leases",
            namespace: Some(LEASE_NAMESPACE),
            name: Some(name),
            ..Default::default()
        };
        assert!(allowed(&a, &node("a"), lease("update", "a")));
        assert!(!allowed(&a, &node("a"), lease("update", "b")));
        // Not a node without the group.
        let impostor = User::new("system:node:a", []);
        assert!(!allowed(&a, &impostor, lease("update", "a")));
        assert!(!allowed(&a, &impostor, get("nodes", "", "a")));
        assert!(allowed(&a, &node("a"), get("nodes", "", "b")));
    }
}
