//! The review APIs, answered from the authorizer without storing anything:
//!
//! - `authorization.k8s.io/v1`: SelfSubjectAccessReview (`kubectl auth can-i`),
//!   SelfSubjectRulesReview (`kubectl auth can-i --list`), SubjectAccessReview and
//!   LocalSubjectAccessReview (another user's access, for those allowed to create them);
//! - `authentication.k8s.io/v1`: SelfSubjectReview (`kubectl auth whoami`).
//!
//! Each is a `create` of its own resource, authorized like any other request.

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Attributes, ResourceAttributes, User, authorize};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::{ApiState, protobuf};

pub const AUTHORIZATION: &str = "authorization.k8s.io";
pub const AUTHENTICATION: &str = "authentication.k8s.io";
pub const VERSION: &str = "v1";

/// (plural, kind, namespaced) of each review, per group.
pub const AUTHORIZATION_RESOURCES: [(&str, &str, bool); 4] = [
    (
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    ("selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
    ("selfsubjectrulesreviews", "SelfSubjectRulesReview", false),
    ("subjectaccessreviews", "SubjectAccessReview", false),
];
pub const AUTHENTICATION_RESOURCES: [(&str, &str, bool); 1] =
    [("selfsubjectreviews", "SelfSubjectReview", false)];

/// The largest review body accepted.
const MAX_BODY: usize = 256 * 1024;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceSpec {
    namespace: String,
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NonResourceSpec {
    path: String,
    verb: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AccessSpec {
    resource_attributes: Option<ResourceSpec>,
    non_resource_attributes: Option<NonResourceSpec>,
    user: String,
    groups: Vec<String>,
    uid: String,
    extra: BTreeMap<String, Vec<String>>,
    /// SelfSubjectRulesReview's.
    namespace: String,
}

/// `/apis/authorization.k8s.io/…` and `/apis/authentication.k8s.io/…`.
pub async fn serve(State(state): State<ApiState>, request: Request) -> Response {
    match answer(&state, request).await {
        Ok((status, value)) => (status, axum::Json(value)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn answer(state: &ApiState, request: Request) -> ApiResult<(StatusCode, Value)> {
    let path = request.uri().path().to_string();
    let (group, rest) = path
        .strip_prefix("/apis/")
        .and_then(|p| p.split_once('/'))
        .ok_or_else(|| ApiError::not_found_path(&path))?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, plural) = match segments.as_slice() {
        [VERSION] if request.method() == Method::GET => {
            let list = crate::apiserver::discovery::resource_list(group, VERSION)
                .ok_or_else(|| ApiError::not_found_path(&path))?;
            return Ok((StatusCode::OK, list));
        }
        [VERSION, plural] => (None, *plural),
        [VERSION, "namespaces", namespace, plural] => (Some(namespace.to_string()), *plural),
        _ => return Err(ApiError::not_found_path(&path)),
    };
    let known = match group {
        AUTHORIZATION => AUTHORIZATION_RESOURCES.iter(),
        AUTHENTICATION => AUTHENTICATION_RESOURCES.iter(),
        _ => [].iter(),
    }
    .find(|(p, ..)| *p == plural)
    .ok_or_else(|| ApiError::not_found_path(&path))?;
    let (_, kind, namespaced) = *known;
    if namespaced != namespace.is_some() {
        return Err(ApiError::not_found_path(&path));
    }
    if request.method() != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({plural}.{group}): only create"
        )));
    }
    let user = request
        .extensions()
        .get::<User>()
        .cloned()
        .ok_or_else(ApiError::unauthorized)?;
    let attributes = Attributes::Resource(ResourceAttributes {
        verb: "create",
        group,
        resource: plural,
        namespace: namespace.as_deref(),
        ..Default::default()
    });
    authorize(&*state.authorizer, &user, &attributes).await?;
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| ApiError::too_large(format!("a review is at most {MAX_BODY} bytes")))?;
    let mut object: Value = if content_type.starts_with(protobuf::MEDIA_TYPE) {
        protobuf::decode(&body, protobuf::unregistered)
            .map_err(|e| ApiError::unsupported_media_type_because(&content_type, &e.to_string()))?
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not a {kind}: {e}")))?
    };
    if !object.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body is not a {kind} object"
        )));
    }
    let spec = match object.get("spec") {
        None | Some(Value::Null) => json!({}),
        Some(spec) => spec.clone(),
    };
    let spec: AccessSpec = serde_json::from_value(spec)
        .map_err(|e| ApiError::bad_request(format!("{kind} spec: {e}")))?;
    let status = match kind {
        "SelfSubjectReview" => json!({"userInfo": user.info()}),
        "SelfSubjectRulesReview" => rules_review(state, &user, &spec.namespace).await,
        "SelfSubjectAccessReview" => access_review(state, &user, &spec, None).await?,
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let subject = User {
                name: spec.user.clone(),
                uid: spec.uid.clone(),
                groups: spec.groups.clone(),
                extra: spec.extra.clone(),
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    kind,
                    "spec.user",
                    "at least one of user or group must be specified",
                ));
            }
            access_review(state, &subject, &spec, namespace.as_deref()).await?
        }
        _ => unreachable!("every known review is answered"),
    };
    object["apiVersion"] = json!(format!("{group}/{VERSION}"));
    object["kind"] = json!(kind);
    if object.get("metadata").is_none_or(|m| !m.is_object()) {
        object["metadata"] = json!({});
    }
    object["metadata"]["creationTimestamp"] = Value::Null;
    if let Some(namespace) = &namespace {
        object["metadata"]["namespace"] = json!(namespace);
    }
    object["status"] = status;
    Ok((StatusCode::CREATED, object))
}

fn invalid(kind: &str, field: &str, message: &str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{kind}.{AUTHORIZATION} is invalid: {field}: Invalid value: {message}"),
    );
    error.details = Some(json!({
        "kind": kind,
        "group": AUTHORIZATION,
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
    }));
    error
}

/// The status of an access review of `user` (in `namespace` for a local one, whose spec must
/// then name that namespace or none).
async fn access_review(
    state: &ApiState,
    user: &User,
    spec: &AccessSpec,
    local_namespace: Option<&str>,
) -> ApiResult<Value> {
    let kind = "SubjectAccessReview";
    let attributes = match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(r), None) => {
            if let Some(local) = local_namespace
                && !r.namespace.is_empty()
                && r.namespace != local
            {
                return Err(invalid(
                    "LocalSubjectAccessReview",
                    "spec.resourceAttributes.namespace",
                    "must match metadata.namespace",
                ));
            }
            let namespace = local_namespace.unwrap_or(&r.namespace);
            Attributes::Resource(ResourceAttributes {
                verb: &r.verb,
                group: &r.group,
                resource: &r.resource,
                subresource: Some(r.subresource.as_str()).filter(|s| !s.is_empty()),
                namespace: Some(namespace).filter(|s| !s.is_empty()),
                name: Some(r.name.as_str()).filter(|s| !s.is_empty()),
            })
        }
        (None, Some(n)) if local_namespace.is_none() => Attributes::NonResource {
            verb: &n.verb,
            path: &n.path,
        },
        _ => {
            return Err(invalid(
                kind,
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
    };
    let decision = state.authorizer.authorize(user, &attributes).await;
    let mut status = json!({"allowed": decision.allowed()});
    if let super::Decision::Deny(_) = decision {
        status["denied"] = json!(true);
    }
    if !decision.reason().is_empty() {
        status["reason"] = json!(decision.reason());
    }
    Ok(status)
}

/// The status of a rules review: the rules as upstream splits them, resource and
/// non-resource.
async fn rules_review(state: &ApiState, user: &User, namespace: &str) -> Value {
    let rules = state.authorizer.rules(user, namespace).await;
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules.rules {
        if !rule.non_resource_urls.is_empty() {
            non_resource_rules.push(json!({
                "verbs": rule.verbs,
                "nonResourceURLs": rule.non_resource_urls,
            }));
        }
        if !rule.resources.is_empty() {
            let mut entry = json!({
                "verbs": rule.verbs,
                "apiGroups": rule.api_groups,
                "resources": rule.resources,
            });
            if !rule.resource_names.is_empty() {
                entry["resourceNames"] = json!(rule.resource_names);
            }
            resource_rules.push(entry);
        }
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": rules.incomplete,
    });
    if !rules.errors.is_empty() {
        status["evaluationError"] = json!(rules.errors.join(", "));
    }
    status
}
