//! NodeRestriction, as upstream's: what the Node authorizer lets a node write
//! (`auth/node.rs`), narrowed to the node's own objects. A node (`system:node:NAME` in
//! `system:nodes`) may
//! - create, change and delete only its own Node object, and not the labels under
//!   `node-restriction.kubernetes.io/` (which administrators use to pick nodes a node cannot
//!   claim to be);
//! - write the status of, and delete, only pods bound to it; it creates no pods (Bosun has no
//!   static pods, so no mirror pods either);
//! - create only its own Lease;
//! - set a Function's activation annotation (the gateway wakes a Function at zero replicas)
//!   and change nothing else of it;
//! - ask for ServiceAccount tokens only bound to a pod bound to it ([`check_token_request`]).

use serde_json::Value;

use super::{Operation, Plugin, Request};
use crate::apiserver::auth::{User, node};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::store::Store;

/// Labels a node may not set on itself.
const RESTRICTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";

pub struct NodeRestriction;

#[async_trait::async_trait]
impl Plugin for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    async fn validate(&self, _store: &dyn Store, request: &Request<'_>) -> ApiResult<()> {
        let Some(node) = node::identity(request.user) else {
            return Ok(());
        };
        match (request.resource.group, request.resource.plural) {
            ("", "pods") => pod(node, request),
            ("", "nodes") => node_object(node, request),
            (bosun_api::function::GROUP, "functions") => function(node, request),
            ("coordination.k8s.io", "leases")
                if request.operation == Operation::Create
                    && (request.namespace != Some(node::LEASE_NAMESPACE)
                        || request.name != node) =>
            {
                Err(forbidden(
                    request,
                    "can only access node lease with the same name as the requesting node",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Upstream's admission Forbidden: `pods "web" is forbidden: WHY`.
fn forbidden(request: &Request<'_>, why: impl Into<String>) -> ApiError {
    let resource = request.resource;
    let qualified = if resource.group.is_empty() {
        resource.plural.to_string()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    };
    ApiError::forbidden_on(
        format!(
            "{qualified} {:?} is forbidden: {}",
            request.name,
            why.into()
        ),
        resource.group,
        resource.plural,
        request.name,
    )
}

fn node_name_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn pod(node: &str, request: &Request<'_>) -> ApiResult<()> {
    match (request.operation, request.subresource) {
        (Operation::Create, None) => Err(forbidden(
            request,
            format!("node {node:?} can only create mirror pods, and Bosun has none"),
        )),
        (Operation::Update, Some("status")) => {
            let bound = request.old.map(node_name_of).unwrap_or_default();
            if bound == node {
                Ok(())
            } else {
                Err(forbidden(
                    request,
                    format!(
                        "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                    ),
                ))
            }
        }
        (Operation::Delete, None) => {
            if node_name_of(request.object) == node {
                Ok(())
            } else {
                Err(forbidden(
                    request,
                    format!("node {node:?} can only delete pods with spec.nodeName set to itself"),
                ))
            }
        }
        (operation, subresource) => Err(forbidden(
            request,
            format!(
                "unexpected operation {operation:?}{} on pods by node {node:?}",
                subresource.map(|s| format!(" of {s}")).unwrap_or_default()
            ),
        )),
    }
}

fn node_object(node: &str, request: &Request<'_>) -> ApiResult<()> {
    if request.name != node {
        return Err(forbidden(
            request,
            format!(
                "node {node:?} is not allowed to modify node {:?}",
                request.name
            ),
        ));
    }
    if request.operation == Operation::Delete {
        return Ok(());
    }
    let labels = |object: Option<&Value>| -> Vec<(String, String)> {
        object
            .and_then(|o| o.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .filter(|(k, _)| k.starts_with(RESTRICTED_LABEL_PREFIX))
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (new, old) = (labels(Some(&*request.object)), labels(request.old));
    let mut changed: Vec<&str> = new
        .iter()
        .filter(|label| !old.contains(label))
        .chain(old.iter().filter(|label| !new.contains(label)))
        .map(|(k, _)| k.as_str())
        .collect();
    changed.sort();
    changed.dedup();
    if changed.is_empty() {
        Ok(())
    } else {
        Err(forbidden(
            request,
            format!("is not allowed to modify labels: {}", changed.join(", ")),
        ))
    }
}

/// A node wakes a Function at zero replicas through its activation annotation, and changes
/// nothing else of it.
fn function(node: &str, request: &Request<'_>) -> ApiResult<()> {
    let without_activation = |object: &Value| {
        let mut object = object.clone();
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            for volatile in ["resourceVersion", "managedFields", "generation"] {
                metadata.remove(volatile);
            }
            if let Some(annotations) = metadata
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                annotations.remove(bosun_api::function::ACTIVATION_ANNOTATION);
                if annotations.is_empty() {
                    metadata.remove("annotations");
                }
            }
        }
        object
    };
    let only_activation = request.operation == Operation::Update
        && request.subresource.is_none()
        && request
            .old
            .is_some_and(|old| without_activation(old) == without_activation(request.object));
    if only_activation {
        Ok(())
    } else {
        Err(forbidden(
            request,
            format!(
                "node {node:?} may only set a Function's {} annotation",
                bosun_api::function::ACTIVATION_ANNOTATION
            ),
        ))
    }
}

/// A node asks for a token of a ServiceAccount only bound to a pod bound to it (`pod` is the
/// bound object when it is a pod).
pub fn check_token_request(
    user: &User,
    account: &str,
    bound_kind: Option<&str>,
    pod: Option<&Value>,
) -> ApiResult<()> {
    let Some(node) = node::identity(user) else {
        return Ok(());
    };
    let why = match (bound_kind, pod) {
        (Some("Pod"), Some(pod)) if node_name_of(pod) == node => return Ok(()),
        (Some("Pod"), _) => "node requested token bound to a pod scheduled on a different node",
        _ => "node requested token not bound to a pod",
    };
    Err(ApiError::forbidden_on(
        format!("serviceaccounts {account:?} is forbidden: {why}"),
        "",
        "serviceaccounts",
        account,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(
        plural: &str,
        group: &str,
        name: &str,
        old: &Value,
        new: Value,
        check: fn(&str, &Request<'_>) -> ApiResult<()>,
    ) -> ApiResult<()> {
        let user = User::new("system:node:a", [node::NODES_GROUP.to_string()]);
        let resource = bosun_api::resources::lookup(plural)
            .filter(|r| r.group == group)
            .expect("registered");
        let mut object = new;
        let request = Request {
            operation: Operation::Update,
            resource,
            subresource: None,
            namespace: Some("default"),
            name,
            user: &user,
            object: &mut object,
            old: Some(old),
            dry_run: false,
        };
        check("a", &request)
    }

    #[test]
    fn a_node_only_sets_a_functions_activation() {
        let old =
            json!({"metadata": {"name": "f", "resourceVersion": "7"}, "spec": {"image": "x"}});
        let woken = json!({"metadata": {"name": "f", "resourceVersion": "7",
            "annotations": {bosun_api::function::ACTIVATION_ANNOTATION: "now"}},
            "spec": {"image": "x"}});
        let group = bosun_api::function::GROUP;
        assert!(update("functions", group, "f", &old, woken, function).is_ok());
        let changed = json!({"metadata": {"name": "f"}, "spec": {"image": "evil"}});
        let refused = update("functions", group, "f", &old, changed, function).unwrap_err();
        assert!(
            refused.message.contains("may only set"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_node_changes_only_its_own_node_and_not_restricted_labels() {
        let old = json!({"metadata": {"name": "a"}});
        let labelled = json!({"metadata": {"name": "a", "labels": {"x": "y"}}});
        assert!(update("nodes", "", "a", &old, labelled.clone(), node_object).is_ok());
        assert!(update("nodes", "", "b", &old, labelled, node_object).is_err());
        let restricted = json!({"metadata": {"name": "a", "labels": {"node-restriction.kubernetes.io/zone": "z"}}});
        assert!(update("nodes", "", "a", &old, restricted, node_object).is_err());
    }
}
