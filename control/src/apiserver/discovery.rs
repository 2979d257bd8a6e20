//! Discovery: `/version`, `/api`, `/apis`, and the resource list of each group version, built
//! from the registry. Clients that ask for aggregated discovery get the legacy documents, which
//! kubectl and kube-rs accept as a fallback.

use axum::Json;
use bosun_api::resources::{self, Resource};
use serde_json::{Value, json};

/// The Kubernetes version Bosun's API corresponds to (within kubectl 1.32's supported skew).
pub const KUBE_MINOR: &str = "33";

pub async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0+bosun.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")),
    }))
}

pub async fn core_versions() -> Json<Value> {
    Json(core_versions_document())
}

pub fn core_versions_document() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

pub async fn groups() -> Json<Value> {
    Json(groups_document())
}

pub fn groups_document() -> Value {
    let groups: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|(group, _)| !group.is_empty())
        .map(|(group, version)| {
            let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
            json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// One API group (`/apis/apps`).
pub fn group(group: &str) -> Option<Value> {
    let (_, version) = resources::group_versions()
        .into_iter()
        .find(|(g, _)| *g == group)?;
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": [gv.clone()], "preferredVersion": gv,
    }))
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn entry(resource: &Resource) -> Value {
    json!({
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": VERBS,
        "shortNames": resource.short_names,
        "categories": resource.categories,
        "storageVersionHash": "",
    })
}

fn subresource(resource: &Resource, sub: &str, kind: &str, group: &str, verbs: &[&str]) -> Value {
    let mut entry = json!({
        "name": format!("{}/{sub}", resource.plural),
        "singularName": "",
        "namespaced": resource.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if !group.is_empty() {
        entry["group"] = json!(group);
        entry["version"] = json!("v1");
    }
    entry
}

/// The `APIResourceList` of one group version, or `None` if it is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut entries = Vec::new();
    for resource in resources::in_group_version(group, version) {
        entries.push(entry(resource));
        if resource.status {
            entries.push(subresource(
                resource,
                "status",
                resource.kind,
                "",
                &["get", "patch", "update"],
            ));
        }
        if resource.scale {
            entries.push(subresource(
                resource,
                "scale",
                "Scale",
                "autoscaling",
                &["get", "patch", "update"],
            ));
        }
        if resource.kind == "Pod" {
            entries.push(subresource(resource, "binding", "Binding", "", &["create"]));
        }
    }
    if entries.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }))
}
