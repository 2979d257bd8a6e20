//! OpenAPI v3 discovery: `/openapi/v3` lists a document per group version, and each document
//! describes the operations of that group version's resources, with the Kubernetes extensions
//! clients read (`x-kubernetes-group-version-kind`, `x-kubernetes-action`) and the query
//! parameters the server honours.
//!
//! This is what kubectl's validation needs: seeing `fieldValidation` on a kind's PATCH
//! operation, it leaves validation to the server (`fieldValidation=Strict`, checked in
//! admission) instead of downloading schemas.
//!
//! `components.schemas` has the type schemas, generated from the k8s-openapi types (their
//! `schemars` implementations, with the field descriptions of the Kubernetes API) under
//! Kubernetes' names (`io.k8s.api.apps.v1.Deployment`); each kind's schema carries
//! `x-kubernetes-group-version-kind`, which is how `kubectl explain` finds it. The documents
//! are made once per process.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::Path;
use bosun_api::resources::{self, Resource};
use k8s_openapi::schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::kinds;
use super::status::ApiError;

/// (group, version) → (document, hash).
type Documents = BTreeMap<(&'static str, &'static str), (Arc<Value>, String)>;

/// Every group version's document and its hash, made on first use.
fn documents() -> &'static Documents {
    static DOCUMENTS: OnceLock<Documents> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        resources::group_versions()
            .into_iter()
            .map(|(group, version)| {
                let document = document(group, version);
                let hash = hash(&document);
                ((group, version), (Arc::new(document), hash))
            })
            .collect()
    })
}

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
    for ((group, version), (_, hash)) in documents() {
        let path = doc_path(group, version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    Json(json!({"paths": paths}))
}

pub async fn group_version(Path(path): Path<String>) -> Result<Json<Arc<Value>>, ApiError> {
    let parts: Vec<&str> = path.split('/').collect();
    let (group, version) = match parts.as_slice() {
        ["api", version] => ("", *version),
        ["apis", group, version] => (*group, *version),
        _ => return Err(ApiError::not_found_path(&path)),
    };
    documents()
        .iter()
        .find(|((g, v), _)| *g == group && *v == version)
        .map(|(_, (document, _))| Json(document.clone()))
        .ok_or_else(|| ApiError::not_found_path(&path))
}

/// The type schemas of a group version's kinds and of everything they contain, by
/// Kubernetes' schema names, each kind's with its `x-kubernetes-group-version-kind`.
fn schemas(group: &str, version: &str) -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds_by_name = Vec::new();
    for resource in resources::in_group_version(group, version) {
        let name = kinds::for_resource(resource)
            .object_type()
            .add_schema(&mut generator);
        kinds_by_name.push((name, resource));
    }
    let mut schemas = generator.take_definitions(true);
    for (name, schema) in schemas.iter_mut() {
        add_patch_strategy(name, schema);
    }
    for (name, resource) in kinds_by_name {
        if let Some(Value::Object(schema)) = schemas.get_mut(&name) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": resource.group, "version": resource.version, "kind": resource.kind}]),
            );
        }
    }
    schemas
}

/// `x-kubernetes-patch-strategy: merge` and `x-kubernetes-patch-merge-key` on the list
/// fields whose elements a strategic merge patch merges by key (the keys `patch.rs` uses), as
/// Kubernetes' own documents have them.
fn add_patch_strategy(definition: &str, schema: &mut Value) {
    // patch.rs tells a Service's ports from a container's by their parent field.
    let parent = if definition.ends_with(".ServiceSpec") {
        "spec"
    } else {
        ""
    };
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    for (field, property) in properties.iter_mut() {
        let of_objects = property["type"] == "array" && property["items"].get("$ref").is_some();
        if let (true, Some(key)) = (of_objects, super::patch::merge_key(parent, field)) {
            property["x-kubernetes-patch-strategy"] = json!("merge");
            property["x-kubernetes-patch-merge-key"] = json!(key);
        }
    }
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
        "components": {"schemas": schemas(group, version)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_schemas_with_their_group_version_kind_and_merge_keys() {
        let apps = document("apps", "v1");
        let schemas = &apps["components"]["schemas"];
        let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        let strategy = &schemas["io.k8s.api.apps.v1.DeploymentStrategy"];
        assert!(
            strategy["properties"]["type"]["description"]
                .as_str()
                .unwrap()
                .contains("Recreate")
        );
        let pod_spec = &schemas["io.k8s.api.core.v1.PodSpec"];
        assert_eq!(
            pod_spec["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        let container = &schemas["io.k8s.api.core.v1.Container"];
        assert_eq!(
            container["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        // Nested types are referenced, not inlined, and every reference resolves.
        let text = apps.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(
                schemas.get(name).is_some(),
                "{name} is referenced but missing"
            );
        }
        let core = document("", "v1");
        assert_eq!(
            core["components"]["schemas"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]
                ["x-kubernetes-patch-merge-key"],
            "port"
        );
    }
}
