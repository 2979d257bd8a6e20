//! `GET /apis/bosun.dev/v1/accessible-namespaces`: the namespaces where the caller may do
//! anything at all, as a NamespaceList (or a Table), for every authenticated user.
//! Upstream cannot answer this (kubernetes#48537): a user without `list namespaces` gets a
//! 403 from `kubectl get namespaces` and must know their namespace's name. A namespace is
//! accessible when some rule the caller holds there (through a RoleBinding, or cluster-wide)
//! names a namespaced resource, or `*`.

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bosun_api::resources::{RESOURCES, find};
use serde_json::{Value, json};

use super::{Attributes, PolicyRule, ResourceAttributes, User, authorize};
use crate::apiserver::ApiState;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::table;
use crate::store::ListRequest;

pub const PLURAL: &str = "accessiblenamespaces";

/// Whether `rule` grants something on a namespaced kind.
fn names_a_namespaced_resource(rule: &PolicyRule) -> bool {
    rule.resources.iter().any(|wanted| {
        let plural = wanted.split('/').next().unwrap_or_default();
        plural == "*"
            || RESOURCES.iter().any(|r| {
                r.namespaced
                    && r.plural == plural
                    && rule.api_groups.iter().any(|g| g == "*" || g == r.group)
            })
    })
}

pub async fn serve(State(state): State<ApiState>, request: Request) -> Response {
    match answer(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn answer(state: &ApiState, request: Request) -> ApiResult<Response> {
    let user = request
        .extensions()
        .get::<User>()
        .cloned()
        .ok_or_else(ApiError::unauthorized)?;
    if request.method() != axum::http::Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on {PLURAL}.bosun.dev: only list"
        )));
    }
    let attributes = Attributes::Resource(ResourceAttributes {
        verb: "list",
        group: "bosun.dev",
        resource: PLURAL,
        ..Default::default()
    });
    authorize(&*state.authorizer, &user, &attributes).await?;
    let namespaces = find("", "v1", "namespaces").expect("registered");
    let listed = state
        .store
        .list(&ListRequest {
            resource: namespaces.storage_name(),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::from_store(e, namespaces, ""))?;
    let mut items = Vec::new();
    for object in listed.items {
        let rules = state.authorizer.rules(&user, &object.key.name).await;
        if rules.rules.iter().any(names_a_namespaced_resource) {
            let mut value = object.value;
            value["apiVersion"] = json!("v1");
            value["kind"] = json!("Namespace");
            items.push(value);
        }
    }
    let metadata = json!({"resourceVersion": listed.revision.to_string()});
    let wants_table = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .next()
                .is_some_and(|f| f.contains("as=Table"))
        });
    let body: Value = if wants_table {
        table::from_objects(namespaces, &items, Some(metadata), table::Include::Metadata)
    } else {
        json!({"kind": "NamespaceList", "apiVersion": "v1", "metadata": metadata, "items": items})
    };
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: vec!["get".into()],
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_rules_on_namespaced_kinds_make_a_namespace_accessible() {
        assert!(names_a_namespaced_resource(&rule(&[""], &["pods"])));
        assert!(names_a_namespaced_resource(&rule(
            &["apps"],
            &["deployments/scale"]
        )));
        assert!(names_a_namespaced_resource(&rule(&["*"], &["*"])));
        assert!(!names_a_namespaced_resource(&rule(&[""], &["nodes"])));
        assert!(!names_a_namespaced_resource(&rule(
            &["authorization.k8s.io"],
            &["selfsubjectaccessreviews"]
        )));
        assert!(!names_a_namespaced_resource(&rule(&["apps"], &["pods"])));
    }
}
