//! OpenAPI v3 discovery: `/openapi/v3` lists a document per group version, and each document
//! describes the operations of that group version's resources, with the Kubernetes extensions
//! clients read (`x-kubernetes-group-version-kind`, `x-kubernetes-action`) and the query
//! parameters the server honours.
//!
//! This is what kubectl's validation needs: seeing `fieldValidation` on a kind's PATCH
//! operation, it leaves validation to the server (`fieldValidation=Strict`, checked in
//! admission) instead of downloading schemas. The documents do not carry the type schemas yet,
//! so `kubectl explain` has nothing to show.

use axum::Json;
use axum::extract::Path;
use bosun_api::resources::{self, Resource};
use serde_json::{Map, Value, json};

use super::status::ApiError;

fn doc_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A content hash of a document, so clients can cache it (kubectl keys its cache on it).
fn hash(value: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(serde_json::to_vec(value).expect("serializable"));
    digest.iter().take(16).map(|b| format!("{b:02X}")).collect()
}

pub async fn index() -> Json<Value> {
    let mut paths = Map::new();
    for (group, version) in resources::group_versions() {
        let path = doc_path(group, version);
        let document = document(group, version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash(&document))}),
        );
    }
    Json(json!({"paths": paths}))
}

pub async fn group_version(Path(path): Path<String>) -> Result<Json<Value>, ApiError> {
    let parts: Vec<&str> = path.split('/').collect();
    let (group, version) = match parts.as_slice() {
        ["api", version] => ("", *version),
        ["apis", group, version] => (*group, *version),
        _ => return Err(ApiError::not_found_path(&path)),
    };
    if resources::in_group_version(group, version).next().is_none() {
        return Err(ApiError::not_found_path(&path));
    }
    Ok(Json(document(group, version)))
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string"}, "uniqueItems": true})
}

fn operation(resource: &Resource, action: &str, params: &[Value]) -> Value {
    json!({
        "description": format!("{action} {}", resource.kind),
        "operationId": format!("{action}{}", resource.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
    })
}

fn document(group: &str, version: &str) -> Value {
    let write_params = [
        query(
            "dryRun",
            "When present, modifications are not persisted (All).",
        ),
        query("fieldManager", "The name of the actor making the change."),
        query(
            "fieldValidation",
            "Ignore, Warn or Strict: what to do with unknown or duplicate fields.",
        ),
    ];
    let mut patch_params = write_params.to_vec();
    patch_params.push(query("force", "Force a server-side apply over conflicts."));
    let list_params = [
        query("labelSelector", "Select objects by label."),
        query("fieldSelector", "Select objects by field."),
        query("limit", "Most items to return."),
        query("continue", "Continue a paginated list."),
        query("resourceVersion", "List or watch from this revision."),
        query(
            "resourceVersionMatch",
            "How resourceVersion applies to a list.",
        ),
        query("watch", "Stream changes."),
        query("allowWatchBookmarks", "Send bookmark events."),
        query("timeoutSeconds", "End the watch after this many seconds."),
    ];
    let mut paths = Map::new();
    for resource in resources::in_group_version(group, version) {
        let base = format!("/{}", doc_path(group, version));
        let collection = if resource.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", resource.plural)
        } else {
            format!("{base}/{}", resource.plural)
        };
        paths.insert(
            collection.clone(),
            json!({
                "get": operation(resource, "list", &list_params),
                "post": operation(resource, "post", &write_params),
                "delete": operation(resource, "deletecollection", &list_params),
            }),
        );
        let item = json!({
            "get": operation(resource, "get", &[]),
            "put": operation(resource, "put", &write_params),
            "patch": operation(resource, "patch", &patch_params),
            "delete": operation(resource, "delete", &[query("gracePeriodSeconds", "Seconds before the object is deleted."), query("propagationPolicy", "Orphan, Background or Foreground.")]),
        });
        paths.insert(format!("{collection}/{{name}}"), item);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Bosun", "version": format!("v1.{}.0", super::discovery::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": {}},
    })
}
