//! LimitRanger, as upstream's: a new pod's containers get the `default` limits and
//! `defaultRequest` requests of the `Container` items of its namespace's LimitRanges where
//! they set none (the pod is annotated `kubernetes.io/limit-ranger` with what was set), then
//! every item's `min`, `max` and `maxLimitRequestRatio` are checked, per container for
//! `Container` items and over the pod's sums for `Pod` items, with upstream's messages:
//! `pods "p" is forbidden: maximum memory usage per Container is 512Mi, but limit is 1Gi`.
//! A Wasm container's memory limit is what it can really use, so these bounds hold exactly.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Operation, Plugin, Request};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::store::{ListRequest, Store};

const ANNOTATION: &str = "kubernetes.io/limit-ranger";
const CONTAINERS: [(&str, &str); 2] = [
    ("containers", "container"),
    ("initContainers", "init container"),
];

pub struct LimitRanger;

#[async_trait::async_trait]
impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    async fn admit(&self, store: &dyn Store, request: &mut Request<'_>) -> ApiResult<()> {
        if !applies(request) {
            return Ok(());
        }
        let items = items(store, request.namespace).await?;
        set_defaults(request.object, &items);
        Ok(())
    }

    async fn validate(&self, store: &dyn Store, request: &Request<'_>) -> ApiResult<()> {
        if !applies(request) {
            return Ok(());
        }
        let items = items(store, request.namespace).await?;
        let errors = violations(request.object, &items);
        match errors.len() {
            0 => Ok(()),
            1 => Err(forbidden(request, &errors[0])),
            _ => Err(forbidden(request, &format!("[{}]", errors.join(", ")))),
        }
    }
}

/// Pods, when created (their containers' resources never change afterwards).
fn applies(request: &Request<'_>) -> bool {
    request.operation == Operation::Create && request.subresource.is_none() && request.is("", "Pod")
}

fn forbidden(request: &Request<'_>, why: &str) -> ApiError {
    ApiError::forbidden_by(request.resource, request.name, why)
}

/// The `spec.limits` items of every LimitRange in `namespace`.
async fn items(store: &dyn Store, namespace: Option<&str>) -> ApiResult<Vec<Value>> {
    let listed = store
        .list(&ListRequest {
            resource: "limitranges".into(),
            namespace: namespace.map(str::to_string),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(listed
        .items
        .into_iter()
        .flat_map(|range| {
            range.value["spec"]["limits"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect())
}

fn resources_of<'a>(item: &'a Value, field: &str) -> BTreeMap<&'a str, &'a str> {
    item[field]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        .collect()
}

/// Fills the containers' missing limits and requests from the `Container` items' `default`
/// and `defaultRequest`, and notes what it set in the annotation.
fn set_defaults(pod: &mut Value, items: &[Value]) {
    let mut limits = Map::new();
    let mut requests = Map::new();
    for item in items.iter().filter(|i| i["type"] == "Container") {
        for (k, v) in resources_of(item, "default") {
            limits.insert(k.to_string(), json!(v));
        }
        for (k, v) in resources_of(item, "defaultRequest") {
            requests.insert(k.to_string(), json!(v));
        }
    }
    if limits.is_empty() && requests.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (field, what) in CONTAINERS {
        let Some(containers) = pod["spec"][field].as_array_mut() else {
            continue;
        };
        for container in containers {
            let name = container["name"].as_str().unwrap_or_default().to_string();
            if !container["resources"].is_object() {
                container["resources"] = json!({});
            }
            let resources = &mut container["resources"];
            for (kind, defaults, noun) in [
                ("requests", &requests, "request"),
                ("limits", &limits, "limit"),
            ] {
                if !resources[kind].is_object() {
                    resources[kind] = json!({});
                }
                let set = resources[kind].as_object_mut().expect("an object");
                let mut added: Vec<&str> = Vec::new();
                for (k, v) in defaults {
                    if !set.contains_key(k) {
                        set.insert(k.clone(), v.clone());
                        added.push(k);
                    }
                }
                if !added.is_empty() {
                    added.sort();
                    notes.push(format!("{} {noun} for {what} {name}", added.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() {
        let metadata = &mut pod["metadata"];
        if !metadata["annotations"].is_object() {
            metadata["annotations"] = json!({});
        }
        metadata["annotations"][ANNOTATION] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

/// A resource list read as numbers, with the text each was given as (for messages).
type Amounts = BTreeMap<String, (f64, String)>;

fn amounts(value: &Value) -> Amounts {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let text = v.as_str()?;
            Some((
                k.clone(),
                (bosun_api::quantity::parse(text).ok()?, text.to_string()),
            ))
        })
        .collect()
}

/// A pod's requests or limits as a whole: the sum over its containers, or the largest init
/// container's when that is more (init containers run one at a time, before the others). A
/// resource some container does not set is absent from the sum.
fn pod_amounts(pod: &Value, kind: &str) -> Amounts {
    let list = |field: &str| -> Vec<Amounts> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| amounts(&c["resources"][kind]))
            .collect()
    };
    let containers = list("containers");
    let mut total = Amounts::new();
    if let Some(first) = containers.first() {
        for key in first.keys() {
            if containers.iter().all(|c| c.contains_key(key)) {
                let sum: f64 = containers.iter().map(|c| c[key].0).sum();
                total.insert(key.clone(), (sum, sum_text(key, sum)));
            }
        }
    }
    for init in list("initContainers") {
        for (key, (value, text)) in init {
            if total.get(&key).is_some_and(|(sum, _)| *sum < value) {
                total.insert(key, (value, text));
            }
        }
    }
    total
}

/// Every way the pod breaks the items' `min`, `max` and `maxLimitRequestRatio`, in
/// upstream's words.
fn violations(pod: &Value, items: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    for item in items {
        let kind = item["type"].as_str().unwrap_or_default();
        let mut check = |requests: &Amounts, limits: &Amounts| {
            for (resource, enforced) in resources_of(item, "min") {
                errors.extend(min(kind, resource, enforced, requests, limits));
            }
            for (resource, enforced) in resources_of(item, "max") {
                errors.extend(max(kind, resource, enforced, requests, limits));
            }
            for (resource, enforced) in resources_of(item, "maxLimitRequestRatio") {
                errors.extend(ratio(kind, resource, enforced, requests, limits));
            }
        };
        match kind {
            "Container" => {
                for (field, _) in CONTAINERS {
                    for container in pod["spec"][field].as_array().into_iter().flatten() {
                        let resources = &container["resources"];
                        check(
                            &amounts(&resources["requests"]),
                            &amounts(&resources["limits"]),
                        );
                    }
                }
            }
            "Pod" => check(&pod_amounts(pod, "requests"), &pod_amounts(pod, "limits")),
            _ => {}
        }
    }
    errors
}

/// A sum as upstream prints it: CPU in whole cores or millicores, others as a plain number.
fn sum_text(resource: &str, sum: f64) -> String {
    if resource == "cpu" {
        let milli = (sum * 1000.0).round() as i64;
        if milli % 1000 == 0 {
            (milli / 1000).to_string()
        } else {
            format!("{milli}m")
        }
    } else {
        format!("{}", sum.round() as i64)
    }
}

fn value(text: &str) -> f64 {
    bosun_api::quantity::parse(text).unwrap_or(0.0)
}

fn min(
    kind: &str,
    resource: &str,
    enforced: &str,
    requests: &Amounts,
    limits: &Amounts,
) -> Option<String> {
    let floor = value(enforced);
    let Some((request, request_text)) = requests.get(resource) else {
        return Some(format!(
            "minimum {resource} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if *request < floor {
        return Some(format!(
            "minimum {resource} usage per {kind} is {enforced}, but request is {request_text}"
        ));
    }
    match limits.get(resource) {
        Some((limit, limit_text)) if *limit < floor => Some(format!(
            "minimum {resource} usage per {kind} is {enforced}, but limit is {limit_text}"
        )),
        _ => None,
    }
}

fn max(
    kind: &str,
    resource: &str,
    enforced: &str,
    requests: &Amounts,
    limits: &Amounts,
) -> Option<String> {
    let ceiling = value(enforced);
    let Some((limit, limit_text)) = limits.get(resource) else {
        return Some(format!(
            "maximum {resource} usage per {kind} is {enforced}.  No limit is specified"
        ));
    };
    if *limit > ceiling {
        return Some(format!(
            "maximum {resource} usage per {kind} is {enforced}, but limit is {limit_text}"
        ));
    }
    match requests.get(resource) {
        Some((request, request_text)) if *request > ceiling => Some(format!(
            "maximum {resource} usage per {kind} is {enforced}, but request is {request_text}"
        )),
        _ => None,
    }
}

fn ratio(
    kind: &str,
    resource: &str,
    enforced: &str,
    requests: &Amounts,
    limits: &Amounts,
) -> Option<String> {
    let request = requests.get(resource).map(|r| r.0).filter(|r| *r != 0.0);
    let limit = limits.get(resource).map(|l| l.0).filter(|l| *l != 0.0);
    let Some(request) = request else {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
        ));
    };
    let Some(limit) = limit else {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
        ));
    };
    let observed = limit / request;
    (observed > value(enforced)).then(|| {
        format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but provided ratio is {observed:.6}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "web", "resources": resources},
        ]}})
    }

    #[test]
    fn defaults_fill_what_a_container_does_not_set_and_say_so() {
        let items = vec![json!({"type": "Container",
            "default": {"memory": "256Mi", "cpu": "500m"},
            "defaultRequest": {"memory": "128Mi", "cpu": "100m"}})];
        let mut p = pod(json!({"limits": {"memory": "64Mi"}}));
        set_defaults(&mut p, &items);
        let resources = &p["spec"]["containers"][0]["resources"];
        assert_eq!(
            resources["limits"],
            json!({"memory": "64Mi", "cpu": "500m"})
        );
        assert_eq!(
            resources["requests"],
            json!({"memory": "128Mi", "cpu": "100m"})
        );
        assert_eq!(
            p["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container web; cpu limit for container web"
        );
    }

    #[test]
    fn bounds_and_ratios_are_refused_in_upstreams_words() {
        let items = vec![json!({"type": "Container",
            "min": {"memory": "32Mi"}, "max": {"memory": "512Mi"},
            "maxLimitRequestRatio": {"cpu": "2"}})];
        let errors = violations(
            &pod(json!({"requests": {"memory": "16Mi", "cpu": "100m"},
                        "limits": {"memory": "1Gi", "cpu": "400m"}})),
            &items,
        );
        assert_eq!(
            errors,
            [
                "minimum memory usage per Container is 32Mi, but request is 16Mi",
                "maximum memory usage per Container is 512Mi, but limit is 1Gi",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000",
            ]
        );
        let errors = violations(&pod(json!({})), &items);
        assert_eq!(
            errors,
            [
                "minimum memory usage per Container is 32Mi.  No request is specified",
                "maximum memory usage per Container is 512Mi.  No limit is specified",
                "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0",
            ]
        );
        assert!(
            violations(
                &pod(json!({"requests": {"memory": "64Mi", "cpu": "1"},
                        "limits": {"memory": "512Mi", "cpu": "2"}})),
                &items
            )
            .is_empty()
        );
    }

    #[test]
    fn pod_items_bound_the_sum_of_the_containers() {
        let items = vec![json!({"type": "Pod", "max": {"memory": "100Mi"}})];
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "60Mi"}}},
            {"name": "b", "resources": {"limits": {"memory": "60Mi"}}},
        ]}});
        let errors = violations(&two, &items);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0],
            "maximum memory usage per Pod is 100Mi, but limit is 125829120"
        );
    }
}
