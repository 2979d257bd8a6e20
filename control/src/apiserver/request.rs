//! What a request asks for: the target its path names ([`parse`]), the verb RBAC sees
//! ([`verb`]), and its list and watch options as typed structs, read from the query string.
//!
//! Paths: `/api/v1/...` and `/apis/{group}/{version}/...`, then `{plural}[/{name}[/{sub}]]` for
//! cluster-scoped resources (or all namespaces), or `namespaces/{ns}/{plural}[/{name}[/{sub}]]`.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::Method;
use bosun_api::resources::{self, Resource};
use bosun_api::{fields, labels};
use serde_json::Value;

use super::discovery;
use super::status::{ApiError, ApiResult};
use crate::store::Key;

/// A request's query parameters, decoded.
pub type Query = HashMap<String, String>;

/// Decodes a query string (`application/x-www-form-urlencoded`).
pub fn query(text: Option<&str>) -> Query {
    form_urlencoded::parse(text.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// What a request path names.
#[derive(Debug)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// For `proxy`, what follows it (`nodes/{name}/proxy/metrics/functions`: `metrics/functions`).
    pub proxy_path: Option<String>,
}

impl Target {
    pub fn key(&self, name: &str) -> Key {
        Key::new(
            self.resource.storage_name(),
            self.namespace.clone().unwrap_or_default(),
            name,
        )
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// What a path under `/api` or `/apis` names: a discovery document or a resource target.
#[derive(Debug)]
pub enum Parsed {
    Document(Value),
    Target(Target),
}

/// Parses the part after `/api` or `/apis`.
pub fn parse(core: bool, rest: &str) -> ApiResult<Parsed> {
    let not_found = || ApiError::not_found_path(rest);
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, parts) = match (core, parts.as_slice()) {
        (true, []) => return Ok(Parsed::Document(discovery::core_versions_document())),
        (true, [version, rest @ ..]) => ("", *version, rest),
        (false, []) => return Ok(Parsed::Document(discovery::groups_document())),
        (false, [group]) => {
            return discovery::group(group)
                .map(Parsed::Document)
                .ok_or_else(not_found);
        }
        (false, [group, version, rest @ ..]) => (*group, *version, rest),
    };
    if parts.is_empty() {
        return discovery::resource_list(group, version)
            .map(Parsed::Document)
            .ok_or_else(not_found);
    }
    let lookup = |plural: &str| resources::find(group, version, plural).ok_or_else(not_found);
    let owned = |s: &&str| s.to_string();
    let target = match parts {
        ["namespaces", ns, plural, tail @ ..]
            if resources::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            Target {
                resource: lookup(plural)?,
                namespace: Some(ns.to_string()),
                name: tail.first().map(owned),
                subresource: tail.get(1).map(owned),
                proxy_path: proxy_path(tail),
            }
        }
        [plural, tail @ ..] => Target {
            resource: lookup(plural)?,
            namespace: None,
            name: tail.first().map(owned),
            subresource: tail.get(1).map(owned),
            proxy_path: proxy_path(tail),
        },
        [] => unreachable!("checked above"),
    };
    let too_deep = target.proxy_path.is_none()
        && (parts.len() > 5 || (target.namespace.is_none() && parts.len() > 3));
    let needs_namespace =
        target.resource.namespaced && target.namespace.is_none() && target.name.is_some();
    if too_deep || needs_namespace {
        return Err(not_found());
    }
    Ok(Parsed::Target(target))
}

/// The path after `{name}/proxy/`, if `tail` is one.
fn proxy_path(tail: &[&str]) -> Option<String> {
    match tail {
        [_, "proxy", rest @ ..] => Some(rest.join("/")),
        _ => None,
    }
}

/// The verb RBAC would see for a request.
pub fn verb(method: &Method, target: &Target, query: &Query) -> &'static str {
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    resource_verb(method, target.name.is_some(), watching)
}

/// The verb of a request on a resource: by its method, whether it names one object, and
/// whether it watches.
pub fn resource_verb(method: &Method, named: bool, watching: bool) -> &'static str {
    match (method.as_str(), named) {
        ("GET", _) if watching => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// How to list: `labelSelector`, `fieldSelector`, `limit`, `continue`, and the revision to
/// read at (`resourceVersion` with `resourceVersionMatch=Exact`).
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: labels::Selector,
    pub fields: fields::Selector,
    /// At most this many items (0: no limit).
    pub limit: usize,
    pub continue_token: Option<String>,
    pub revision: Option<i64>,
}

impl ListOptions {
    pub fn from_query(resource: &Resource, query: &Query) -> ApiResult<Self> {
        let (labels, fields) = selectors(resource, query)?;
        let limit = match query.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            None => 0,
        };
        let exact = query.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
        Ok(Self {
            labels,
            fields,
            limit,
            continue_token: query.get("continue").filter(|c| !c.is_empty()).cloned(),
            revision: if exact {
                revision(query.get("resourceVersion"))?
            } else {
                None
            },
        })
    }
}

/// How to watch: the selectors, where to start (`resourceVersion`; none, or
/// `sendInitialEvents=true`, starts with the current state), `timeoutSeconds` and bookmarks.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub labels: labels::Selector,
    pub fields: fields::Selector,
    pub resource_version: Option<i64>,
    pub timeout: Duration,
    pub bookmarks: bool,
    pub send_initial: bool,
}

/// The longest a watch stays open without `timeoutSeconds` (Kubernetes picks 30–60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

impl WatchOptions {
    pub fn from_query(resource: &Resource, query: &Query) -> ApiResult<Self> {
        let (labels, fields) = selectors(resource, query)?;
        Ok(Self {
            labels,
            fields,
            resource_version: revision(query.get("resourceVersion"))?,
            timeout: query
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs),
            bookmarks: query
                .get("allowWatchBookmarks")
                .is_some_and(|b| b == "true"),
            send_initial: query.get("sendInitialEvents").is_some_and(|b| b == "true"),
        })
    }

    /// The list a watch starts with: the same selectors, the whole current state.
    pub fn initial_list(&self) -> ListOptions {
        ListOptions {
            labels: self.labels.clone(),
            fields: self.fields.clone(),
            ..ListOptions::default()
        }
    }
}

fn selectors(
    resource: &Resource,
    query: &Query,
) -> ApiResult<(labels::Selector, fields::Selector)> {
    let labels = labels::Selector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = fields::Selector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    for requirement in fields.requirements() {
        if !resource.supports_field(&requirement.field) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                requirement.field
            )));
        }
    }
    Ok((labels, fields))
}

/// A `resourceVersion` parameter; none (or `0`) is `None`.
fn revision(text: Option<&String>) -> ApiResult<Option<i64>> {
    match text.map(String::as_str) {
        None | Some("") | Some("0") => Ok(None),
        Some(rv) => rv
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(core: bool, path: &str) -> Target {
        match parse(core, path).unwrap() {
            Parsed::Target(target) => target,
            Parsed::Document(d) => panic!("{path} is a document: {d}"),
        }
    }

    #[test]
    fn paths_name_their_targets() {
        let t = target(true, "/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (
                t.resource.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = target(true, "/v1/pods");
        assert_eq!(
            (t.resource.plural, t.namespace, t.name),
            ("pods", None, None)
        );
        let t = target(true, "/v1/namespaces/default");
        assert_eq!(
            (t.resource.plural, t.name.as_deref()),
            ("namespaces", Some("default"))
        );
        let t = target(true, "/v1/namespaces/kube-system/status");
        assert_eq!(
            (
                t.resource.plural,
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("namespaces", Some("kube-system"), Some("status"))
        );
        let t = target(false, "/apps/v1/namespaces/a/deployments/d/scale");
        assert_eq!(
            (t.resource.kind, t.subresource.as_deref()),
            ("Deployment", Some("scale"))
        );
        let t = target(true, "/v1/nodes/n1");
        assert_eq!((t.resource.kind, t.name.as_deref()), ("Node", Some("n1")));
        let t = target(true, "/v1/nodes/n1/proxy/metrics/functions");
        assert_eq!(
            (t.subresource.as_deref(), t.proxy_path.as_deref()),
            (Some("proxy"), Some("metrics/functions"))
        );
        assert!(parse(true, "/v1/nodes/n1/status/extra").is_err());
        assert!(parse(true, "/v1/widgets").is_err());
        assert!(
            parse(true, "/v1/pods/web").is_err(),
            "a namespaced object needs its namespace"
        );
        assert!(parse(false, "/apps/v2/deployments").is_err());
    }

    #[test]
    fn query_strings_are_decoded() {
        let q = query(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1"));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
    }

    #[test]
    fn list_and_watch_options_are_typed() {
        let pods = resources::find("", "v1", "pods").unwrap();
        let q = query(Some(
            "labelSelector=app%3Dweb&fieldSelector=spec.nodeName%3Dn1&limit=10&resourceVersion=7&resourceVersionMatch=Exact",
        ));
        let list = ListOptions::from_query(pods, &q).unwrap();
        assert_eq!((list.limit, list.revision), (10, Some(7)));
        let not_exact = ListOptions::from_query(pods, &query(Some("resourceVersion=7"))).unwrap();
        assert_eq!(
            not_exact.revision, None,
            "only an Exact match reads at a revision"
        );
        assert!(ListOptions::from_query(pods, &query(Some("limit=x"))).is_err());
        assert!(
            ListOptions::from_query(pods, &query(Some("fieldSelector=spec.containers%3Dx")))
                .is_err()
        );
        let watch = WatchOptions::from_query(
            pods,
            &query(Some(
                "watch=1&resourceVersion=5&timeoutSeconds=3&allowWatchBookmarks=true",
            )),
        )
        .unwrap();
        assert_eq!(watch.resource_version, Some(5));
        assert_eq!(watch.timeout, Duration::from_secs(3));
        assert!(watch.bookmarks && !watch.send_initial);
        assert!(WatchOptions::from_query(pods, &query(Some("resourceVersion=abc"))).is_err());
    }
}
