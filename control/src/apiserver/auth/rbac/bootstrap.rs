//! The bootstrap policy: the ClusterRoles and ClusterRoleBindings every cluster starts with,
//! reconciled at each server start as upstream's `bootstrappolicy` is. A missing object is
//! created; an existing one keeps what users added and gets what it lacks (rules, subjects,
//! aggregation), unless its `rbac.authorization.kubernetes.io/autoupdate` annotation is
//! `"false"`.
//!
//! - `cluster-admin` (bound to `system:masters`), and the aggregated user-facing roles
//!   `admin` ⊃ `edit` ⊃ `view`, filled by the aggregation controller from the ClusterRoles
//!   labelled `rbac.authorization.k8s.io/aggregate-to-*` (`system:aggregate-to-*` here, and
//!   any a user adds);
//! - `system:discovery`, `system:basic-user` and `system:public-info-viewer` for every
//!   authenticated user;
//! - `system:kube-scheduler` and `system:kube-controller-manager`, the least the components
//!   running under those identities need.
//! - `system:node` (what the Node authorizer grants nodes, unbound as upstream's), and what
//!   joining and renewing nodes need: `system:node-bootstrapper` and the `nodeclient`
//!   approval for the cluster token's `system:bootstrappers`, `selfnodeclient` for
//!   `system:nodes`.

use serde_json::{Value, json};

use crate::apiserver::admission;
use crate::store::{self, Key, Store};

pub const SCHEDULER: &str = "system:kube-scheduler";
pub const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const AGGREGATE_TO: &str = "rbac.authorization.k8s.io/aggregate-to-";

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn cluster_role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/bootstrapping"] = json!("rbac-defaults");
    json!({
        "metadata": {"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}},
        "rules": rules,
    })
}

fn aggregated(name: &str, labels: Value) -> Value {
    let mut role = cluster_role(name, labels, Vec::new());
    role["aggregationRule"] = json!({
        "clusterRoleSelectors": [{"matchLabels": {format!("{AGGREGATE_TO}{name}"): "true"}}],
    });
    role
}

fn binding(role: &str, subjects: Vec<Value>) -> Value {
    json!({
        "metadata": {
            "name": role,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {AUTOUPDATE: "true"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

fn group(name: &str) -> Value {
    json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name})
}

fn user(name: &str) -> Value {
    json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name})
}

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let to = |role: &str| json!({format!("{AGGREGATE_TO}{role}"): "true"});
    let mut roles = vec![
        cluster_role(
            "cluster-admin",
            json!({}),
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregated("admin", json!({})),
        // `edit` is part of `admin`, and `view` of `edit`, as upstream labels them.
        aggregated("edit", to("admin")),
        aggregated("view", to("edit")),
        cluster_role(
            "system:aggregate-to-admin",
            to("admin"),
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(
                    &[READ, WRITE].concat(),
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                ),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            to("edit"),
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                rule(
                    &["create"],
                    &[""],
                    &["pods/eviction", "serviceaccounts/token"],
                ),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                rule(
                    WRITE,
                    &["serving.bosun.dev"],
                    &["functions", "functions/scale"],
                ),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            to("view"),
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, &[""], &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
                rule(READ, &["events.k8s.io"], &["events"]),
                rule(
                    READ,
                    &["serving.bosun.dev"],
                    &["functions", "functions/status", "functions/scale"],
                ),
                rule(&["get", "list"], &["metrics.k8s.io"], &["pods"]),
                rule(
                    &["get", "list"],
                    &["bosun.dev"],
                    &["podhistories", "functionhistories"],
                ),
            ],
        ),
        cluster_role(
            "system:discovery",
            json!({}),
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            json!({}),
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
                rule(&["list"], &["bosun.dev"], &["accessiblenamespaces"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            json!({}),
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            SCHEDULER,
            json!({}),
            vec![
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
                rule(READ, &[""], &["pods", "nodes"]),
                rule(&["create"], &[""], &["bindings", "pods/binding"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
            ],
        ),
        cluster_role(
            CONTROLLER_MANAGER,
            json!({}),
            vec![
                // The garbage collector and the namespace controller read and delete every
                // kind; the others update what they own and its status.
                rule(
                    &[
                        "get",
                        "list",
                        "watch",
                        "patch",
                        "update",
                        "delete",
                        "deletecollection",
                    ],
                    &["*"],
                    &["*"],
                ),
                rule(
                    &["create"],
                    &[""],
                    &[
                        "pods",
                        "events",
                        "endpoints",
                        "services",
                        "serviceaccounts",
                        "configmaps",
                    ],
                ),
                rule(&["create"], &["events.k8s.io"], &["events"]),
                rule(
                    &["create"],
                    &["apps"],
                    &["deployments", "replicasets", "controllerrevisions"],
                ),
                rule(&["create"], &["batch"], &["jobs"]),
                rule(&["create"], &["discovery.k8s.io"], &["endpointslices"]),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                // The aggregation controller writes rules it does not hold itself.
                rule(
                    &["escalate"],
                    &["rbac.authorization.k8s.io"],
                    &["clusterroles"],
                ),
                // The CSR approver asks whether a node client certificate's requester may
                // have it approved, and approves it.
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                json!({
                    "verbs": ["approve"],
                    "apiGroups": ["certificates.k8s.io"],
                    "resources": ["signers"],
                    "resourceNames": [bosun_api::certificates::NODE_CLIENT_SIGNER],
                }),
                // The CSR signer.
                json!({
                    "verbs": ["sign"],
                    "apiGroups": ["certificates.k8s.io"],
                    "resources": ["signers"],
                    "resourceNames": [
                        bosun_api::certificates::CLIENT_SIGNER,
                        bosun_api::certificates::NODE_CLIENT_SIGNER,
                    ],
                }),
            ],
        ),
    ];
    roles.extend(node_roles());
    roles
}

/// What nodes need: `system:node` (the static rules of the Node authorizer, which is what
/// grants them; upstream keeps the role unbound too), what joining with the cluster token
/// allows (create CSRs, have a node client certificate approved), and renewing one's own.
fn node_roles() -> Vec<Value> {
    let node_rules = crate::apiserver::auth::node::rules()
        .into_iter()
        .map(|rule| serde_json::to_value(rule).expect("a rule serializes"))
        .collect();
    vec![
        cluster_role("system:node", json!({}), node_rules),
        cluster_role(
            NODE_BOOTSTRAPPER,
            json!({}),
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            NODE_CLIENT_APPROVAL,
            json!({}),
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            SELF_NODE_CLIENT_APPROVAL,
            json!({}),
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
    ]
}

const NODE_BOOTSTRAPPER: &str = "system:node-bootstrapper";
const NODE_CLIENT_APPROVAL: &str =
    "system:certificates.k8s.io:certificatesigningrequests:nodeclient";
const SELF_NODE_CLIENT_APPROVAL: &str =
    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient";

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", vec![group(super::super::MASTERS)]),
        binding("system:discovery", vec![group(super::super::AUTHENTICATED)]),
        binding(
            "system:basic-user",
            vec![group(super::super::AUTHENTICATED)],
        ),
        binding(
            "system:public-info-viewer",
            vec![
                group(super::super::AUTHENTICATED),
                group("system:unauthenticated"),
            ],
        ),
        binding(SCHEDULER, vec![user(SCHEDULER)]),
        binding(CONTROLLER_MANAGER, vec![user(CONTROLLER_MANAGER)]),
        binding(
            NODE_BOOTSTRAPPER,
            vec![group(crate::apiserver::auth::join::BOOTSTRAPPERS)],
        ),
        binding(
            NODE_CLIENT_APPROVAL,
            vec![group(crate::apiserver::auth::join::BOOTSTRAPPERS)],
        ),
        binding(
            SELF_NODE_CLIENT_APPROVAL,
            vec![group(crate::apiserver::auth::node::NODES_GROUP)],
        ),
    ]
}

/// Creates what is missing of the bootstrap policy and adds to existing objects what they
/// lack. Another server reconciling at the same time wins a race without harm.
pub async fn reconcile(store: &dyn Store) -> store::Result<()> {
    let kinds = [
        ("clusterroles", cluster_roles()),
        ("clusterrolebindings", cluster_role_bindings()),
    ];
    for (plural, objects) in kinds {
        let resource = bosun_api::resources::find("rbac.authorization.k8s.io", "v1", plural)
            .expect("registered");
        for mut object in objects {
            let mut strict = admission::FieldCheck::new(admission::FieldValidation::Strict);
            let wanted = object.clone();
            let name = admission::prepare_create(resource, None, &mut object, &mut strict)
                .expect("the bootstrap policy is valid");
            let key = Key::new(resource.storage_name(), "", &name);
            match store.create(&key, object).await {
                Ok(_) => {}
                Err(store::Error::AlreadyExists { .. }) => {
                    let existing = store.get(&key).await?;
                    if let Some(updated) = merged(&existing.value, &wanted) {
                        match store.update(&key, updated, Some(existing.revision)).await {
                            Ok(_) | Err(store::Error::Conflict { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// `existing` with what `wanted` has and it lacks (rules, subjects, an aggregation rule), or
/// `None` when nothing is missing or the object opted out of updates.
fn merged(existing: &Value, wanted: &Value) -> Option<Value> {
    if existing["metadata"]["annotations"][AUTOUPDATE] == "false" {
        return None;
    }
    let mut updated = existing.clone();
    let mut changed = false;
    for field in ["rules", "subjects"] {
        let Some(wanted_items) = wanted[field].as_array() else {
            continue;
        };
        if wanted.get("aggregationRule").is_some() && field == "rules" {
            // The aggregation controller owns an aggregated role's rules.
            continue;
        }
        let items = updated[field].as_array().cloned().unwrap_or_default();
        let mut items = items;
        for item in wanted_items {
            if !items.contains(item) {
                items.push(item.clone());
                changed = true;
            }
        }
        updated[field] = Value::Array(items);
    }
    if let Some(rule) = wanted.get("aggregationRule")
        && updated.get("aggregationRule") != Some(rule)
    {
        updated["aggregationRule"] = rule.clone();
        changed = true;
    }
    changed.then_some(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciling_adds_what_is_missing_and_keeps_the_rest() {
        let wanted = binding("system:discovery", vec![group("system:authenticated")]);
        let mut existing = wanted.clone();
        existing["subjects"] = json!([group("extra")]);
        let updated = merged(&existing, &wanted).unwrap();
        assert_eq!(
            updated["subjects"],
            json!([group("extra"), group("system:authenticated")])
        );
        assert!(merged(&updated, &wanted).is_none(), "nothing left to add");
        existing["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert!(merged(&existing, &wanted).is_none(), "opted out");
    }

    #[test]
    fn every_bootstrap_object_passes_validation() {
        for (plural, objects) in [
            ("clusterroles", cluster_roles()),
            ("clusterrolebindings", cluster_role_bindings()),
        ] {
            let resource =
                bosun_api::resources::find("rbac.authorization.k8s.io", "v1", plural).unwrap();
            for mut object in objects {
                let mut strict = admission::FieldCheck::new(admission::FieldValidation::Strict);
                admission::prepare_create(resource, None, &mut object, &mut strict).unwrap();
            }
        }
    }
}
