//! Discovery: `/version`, `/api`, `/apis`, and the resource list of each group version, built
//! from the registry. `/api` and `/apis` answer with aggregated discovery
//! (`apidiscovery.k8s.io/v2`: every group's resources in one document) to clients that ask
//! for it in `Accept`, as kubectl does, and with the legacy documents otherwise.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bosun_api::resources::{self, Resource};
use serde_json::{Value, json};

use super::auth::{self, review};
use super::{history, kinds, metrics};

/// The media type of an aggregated discovery document.
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether `Accept` asks for aggregated discovery (v2; kubectl lists it first).
fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.contains(&"g=apidiscovery.k8s.io")
                && params.contains(&"v=v2")
                && params.contains(&"as=APIGroupDiscoveryList")
        })
}

fn aggregated_response(document: Value) -> Response {
    let mut response = Json(document).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(AGGREGATED));
    response
}

/// `APIGroupDiscoveryList` of the core group (`core`) or of every named group.
pub fn aggregated_document(core: bool) -> Value {
    let mut items = Vec::new();
    for (group, version) in resources::group_versions() {
        if group.is_empty() != core {
            continue;
        }
        let resources: Vec<Value> = resources::in_group_version(group, version)
            .map(|resource| {
                let subresources: Vec<Value> = kinds::subresources(resource)
                    .into_iter()
                    .map(|sub| {
                        json!({
                            "subresource": sub.name,
                            "responseKind": {"group": sub.group, "version": sub.version, "kind": sub.kind},
                            "verbs": sub.verbs,
                        })
                    })
                    .collect();
                json!({
                    "resource": resource.plural,
                    "responseKind": {"group": group, "version": version, "kind": resource.kind},
                    "scope": if resource.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": resource.singular,
                    "verbs": VERBS,
                    "shortNames": resource.short_names,
                    "categories": resource.categories,
                    "subresources": subresources,
                })
            })
            .collect();
        items.push(json!({
            "metadata": {"name": group, "creationTimestamp": null},
            "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
        }));
    }
    if !core {
        for (group, version, served, verbs) in HAND_SERVED {
            let resources: Vec<Value> = served
                .iter()
                .map(|(plural, kind, namespaced)| {
                    json!({
                        "resource": plural,
                        "responseKind": {"group": group, "version": version, "kind": kind},
                        "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": "",
                        "verbs": verbs,
                    })
                })
                .collect();
            items.push(json!({
                "metadata": {"name": group, "creationTimestamp": null},
                "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
            }));
        }
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

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

pub async fn core_versions(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated_response(aggregated_document(true));
    }
    Json(core_versions_document()).into_response()
}

pub fn core_versions_document() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

pub async fn groups(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated_response(aggregated_document(false));
    }
    Json(groups_document()).into_response()
}

pub fn groups_document() -> Value {
    let groups: Vec<Value> = resources::group_versions()
        .into_iter()
        .chain(HAND_SERVED.iter().map(|(g, v, ..)| (*g, *v)))
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
        .chain(HAND_SERVED.iter().map(|(g, v, ..)| (*g, *v)))
        .find(|(g, _)| *g == group)?;
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": [gv.clone()], "preferredVersion": gv,
    }))
}

/// The groups served by hand rather than from the registry: read-only `metrics.k8s.io` and
/// Bosun's history (`bosun.dev`), and the create-only reviews of `authorization.k8s.io` and
/// `authentication.k8s.io`, with their (plural, kind, namespaced) resources and verbs.
type HandServedGroup = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, bool)],
    &'static [&'static str],
);
const HAND_SERVED: [HandServedGroup; 4] = [
    (
        metrics::GROUP,
        metrics::VERSION,
        &metrics::RESOURCES,
        READ_ONLY_VERBS,
    ),
    (
        history::GROUP,
        history::VERSION,
        &BOSUN_RESOURCES,
        READ_ONLY_VERBS,
    ),
    (
        review::AUTHORIZATION,
        review::VERSION,
        &review::AUTHORIZATION_RESOURCES,
        CREATE_ONLY_VERBS,
    ),
    (
        review::AUTHENTICATION,
        review::VERSION,
        &review::AUTHENTICATION_RESOURCES,
        CREATE_ONLY_VERBS,
    ),
];
const READ_ONLY_VERBS: &[&str] = &["get", "list"];
/// `bosun.dev/v1`: the histories, and the namespaces the caller may use (list only).
const BOSUN_RESOURCES: [(&str, &str, bool); 4] = [
    history::RESOURCES[0],
    history::RESOURCES[1],
    history::RESOURCES[2],
    (auth::namespaces::PLURAL, "Namespace", false),
];
const CREATE_ONLY_VERBS: &[&str] = &["create"];

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

fn subresource_entry(resource: &Resource, sub: &kinds::Subresource) -> Value {
    let mut entry = json!({
        "name": format!("{}/{}", resource.plural, sub.name),
        "singularName": "",
        "namespaced": resource.namespaced,
        "kind": sub.kind,
        "verbs": sub.verbs,
    });
    // Legacy discovery names the group only when it differs from the list's.
    if sub.group != resource.group {
        entry["group"] = json!(sub.group);
        entry["version"] = json!(sub.version);
    }
    entry
}

/// The `APIResourceList` of one group version, or `None` if it is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut entries = Vec::new();
    for (_, _, served, verbs) in HAND_SERVED
        .iter()
        .filter(|(g, v, ..)| (*g, *v) == (group, version))
    {
        entries.extend(served.iter().map(|(plural, kind, namespaced)| {
            json!({"name": plural, "singularName": "", "namespaced": namespaced,
                   "kind": kind, "verbs": verbs})
        }));
    }
    for resource in resources::in_group_version(group, version) {
        entries.push(entry(resource));
        for sub in kinds::subresources(resource) {
            entries.push(subresource_entry(resource, &sub));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_is_asked_for_in_accept() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_aggregated(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
            ),
        );
        assert!(wants_aggregated(&headers));
    }

    #[test]
    fn the_aggregated_document_lists_every_group_with_its_resources() {
        let named = aggregated_document(false);
        let apps = named["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deployments = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(deployments["shortNames"], json!(["deploy"]));
        let subresources: Vec<&str> = deployments["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subresource"].as_str().unwrap())
            .collect();
        assert_eq!(subresources, ["status", "scale"]);
        let core = aggregated_document(true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let pods = &core["items"][0]["versions"][0]["resources"][1];
        assert_eq!(pods["resource"], "pods");
        assert_eq!(pods["subresources"][1]["subresource"], "binding");
    }
}
