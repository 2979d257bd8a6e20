//! Pods: defaults and validation of a pod spec (shared with the workload kinds' templates),
//! the `binding` and `log` subresources, deletion that waits for the pod's node, and the
//! columns of `kubectl get pods`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bosun_api::names;
use k8s_openapi::api::core::v1;
use serde_json::{Value, json};

use super::{
    Cell, Column, KindStrategy, ObjectType, Subresource, Typed, cause, col, ensure_object, items,
    set_default, wide,
};
use crate::apiserver::ApiState;
use crate::apiserver::read::get;
use crate::apiserver::request::Target;
use crate::apiserver::rest::guaranteed_update;
use crate::apiserver::status::{ApiError, ApiResult, Cause};

pub struct Pod;

static TYPE: Typed<v1::Pod> = Typed::new();

impl KindStrategy for Pod {
    fn object_type(&self) -> &dyn ObjectType {
        &TYPE
    }

    fn defaults(&self, object: &mut Value, creating: bool) {
        ensure_object(object, "/spec");
        if let Some(spec) = object.get_mut("spec") {
            spec_defaults(spec);
        }
        if creating {
            ensure_object(object, "/status");
            set_default(object, "/status/phase", json!("Pending"));
        }
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        if let Some(spec) = object.get("spec") {
            validate_spec(spec, "spec", causes);
        }
    }

    fn subresources(&self) -> &'static [Subresource] {
        &[
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"],
                writes: &[],
            },
            Subresource {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get"],
                writes: &[],
            },
        ]
    }

    /// A pod bound to a node, deleted with a grace period, is removed by its node once its
    /// containers have stopped (the node deletes it with a zero grace period), as the kubelet
    /// does.
    fn awaits_others(&self, pod: &Value) -> bool {
        pod.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
            && pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("READY", "string", Cell::Computed(ready)),
            col("STATUS", "string", Cell::Computed(status)),
            col("RESTARTS", "string", Cell::Computed(restarts)),
            wide("IP", "string", Cell::Field("/status/podIP")),
            wide("NODE", "string", Cell::Field("/spec/nodeName")),
        ];
        COLUMNS
    }
}

fn ready(pod: &Value) -> Value {
    let total = items(pod, "/spec/containers").len();
    let ready = items(pod, "/status/containerStatuses")
        .iter()
        .filter(|s| s["ready"] == json!(true))
        .count();
    json!(format!("{ready}/{total}"))
}

fn status(pod: &Value) -> Value {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return json!("Terminating");
    }
    let reason = items(pod, "/status/containerStatuses")
        .into_iter()
        .find_map(|s| {
            s.pointer("/state/waiting/reason")
                .or_else(|| s.pointer("/state/terminated/reason"))
                .and_then(Value::as_str)
        });
    json!(
        reason
            .or_else(|| pod.pointer("/status/reason").and_then(Value::as_str))
            .or_else(|| pod.pointer("/status/phase").and_then(Value::as_str))
            .unwrap_or("Unknown")
    )
}

fn restarts(pod: &Value) -> Value {
    let restarts: i64 = items(pod, "/status/containerStatuses")
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    json!(restarts.to_string())
}

/// The defaults of a pod spec (a Pod's `spec`, or a template's `spec`).
pub(super) fn spec_defaults(spec: &mut Value) {
    set_default(spec, "/restartPolicy", json!("Always"));
    set_default(spec, "/terminationGracePeriodSeconds", json!(30));
    set_default(spec, "/dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "/schedulerName", json!("default-scheduler"));
    set_default(spec, "/securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers {
                let image = container.get("image").and_then(Value::as_str).unwrap_or("");
                let tag = image.rsplit('/').next().unwrap_or("");
                let policy =
                    if image.contains('@') || (tag.contains(':') && !tag.ends_with(":latest")) {
                        "IfNotPresent"
                    } else {
                        "Always"
                    };
                set_default(container, "/imagePullPolicy", json!(policy));
                set_default(
                    container,
                    "/terminationMessagePath",
                    json!("/dev/termination-log"),
                );
                set_default(container, "/terminationMessagePolicy", json!("File"));
                set_default(container, "/resources", json!({}));
                if let Some(Value::Array(ports)) = container.get_mut("ports") {
                    for port in ports {
                        set_default(port, "/protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// The checks of a pod spec at `path` (`spec`, `spec.template.spec`).
pub(super) fn validate_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut seen = Vec::new();
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        causes.push(cause(&format!("{path}.containers"), "Required value"));
    }
    for list in ["initContainers", "containers"] {
        for (i, container) in items(spec, &format!("/{list}")).into_iter().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            let name = container.get("name").and_then(Value::as_str).unwrap_or("");
            if let Err(reason) = names::check_dns1123_label(name) {
                causes.push(cause(
                    &format!("{at}.name"),
                    format!("Invalid value: {name:?}: {reason}"),
                ));
            } else if seen.contains(&name) {
                causes.push(cause(
                    &format!("{at}.name"),
                    format!("Duplicate value: {name:?}"),
                ));
            }
            seen.push(name);
            // A Wasm guest is no process tree: there is nothing to run a command in. Linux
            // containers (the runc RuntimeClass) can have them.
            let wasm = spec.get("runtimeClassName").and_then(Value::as_str) != Some("runc");
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                if wasm && container.pointer(&format!("/{probe}/exec")).is_some() {
                    causes.push(cause(
                        &format!("{at}.{probe}.exec"),
                        "Forbidden: exec probes have no meaning for Wasm containers (there is \
                         no process to run a command in); use httpGet or tcpSocket",
                    ));
                }
            }
            if container
                .get("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(cause(&format!("{at}.image"), "Required value"));
            }
            for kind in ["limits", "requests"] {
                if let Some(Value::Object(quantities)) =
                    container.pointer(&format!("/resources/{kind}"))
                {
                    for (resource, q) in quantities {
                        let text = q
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| q.to_string());
                        if bosun_api::quantity::parse(&text).is_err() {
                            causes.push(cause(&format!("{at}.resources.{kind}[{resource}]"), format!("Invalid value: {text:?}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")));
                        }
                    }
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str)
        && !matches!(policy, "Always" | "OnFailure" | "Never")
    {
        causes.push(cause(&format!("{path}.restartPolicy"), format!("Unsupported value: {policy:?}: supported values: \"Always\", \"OnFailure\", \"Never\"")));
    }
}

/// `POST pods/{name}/binding`: sets the pod's node, as the scheduler asks. The Binding's uid
/// must be the pod's; a pod already bound or being deleted is a conflict.
pub async fn bind(state: &ApiState, target: &Target, body: Value) -> ApiResult<Response> {
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("a Binding needs target.name"))?;
    let uid = body
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty());
    guaranteed_update!(target, bind_once(state, target, node, uid))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ),
    )
        .into_response())
}

async fn bind_once(
    state: &ApiState,
    target: &Target,
    node: &str,
    uid: Option<&str>,
) -> ApiResult<()> {
    let name = target.name();
    let conflict = |message: &str| ApiError::conflict(target.resource, name, message);
    let current = get(state, target).await?;
    let current_uid = current
        .value
        .pointer("/metadata/uid")
        .and_then(Value::as_str);
    if let Some(uid) = uid
        && current_uid != Some(uid)
    {
        return Err(conflict(&format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            current_uid.unwrap_or_default()
        )));
    }
    if let Some(assigned) = current
        .value
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(conflict(&format!(
            "pod {name} is already assigned to node {assigned:?}"
        )));
    }
    if current
        .value
        .pointer("/metadata/deletionTimestamp")
        .is_some()
    {
        return Err(conflict(&format!(
            "pod {name} is being deleted, cannot be assigned to a host"
        )));
    }
    let mut bound = current.value;
    bound["spec"]["nodeName"] = json!(node);
    set_scheduled(&mut bound);
    state
        .store
        .update(&target.key(name), bound, Some(current.revision))
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, name))?;
    Ok(())
}

/// A bound pod's `PodScheduled` condition becomes True, as the Kubernetes binding does.
fn set_scheduled(pod: &mut Value) {
    let condition = json!({
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": bosun_api::time::rfc3339(std::time::SystemTime::now()),
    });
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let conditions = pod["status"]
        .as_object_mut()
        .expect("made an object above")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("made an array above");
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
    list.push(condition);
}

/// The defaults of a workload's pod template (`spec.template.spec`).
pub(super) fn template_defaults(object: &mut Value) {
    if let Some(spec) = object.pointer_mut("/spec/template/spec") {
        spec_defaults(spec);
    }
}

/// The checks of a workload's replicas, selector and pod template. `selector_required` is
/// false for kinds that generate their selector (Jobs).
pub(super) fn validate_template(object: &Value, selector_required: bool, causes: &mut Vec<Cause>) {
    if let Some(replicas) = object.pointer("/spec/replicas").and_then(Value::as_i64)
        && replicas < 0
    {
        causes.push(cause(
            "spec.replicas",
            format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let labels = object
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    match object.pointer("/spec/selector") {
        None if selector_required => causes.push(cause("spec.selector", "Required value")),
        None => {}
        Some(selector) => {
            let matches = selector
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|want| {
                    want.iter()
                        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
                });
            if !matches {
                causes.push(cause(
                    "spec.template.metadata.labels",
                    "Invalid value: `selector` does not match template `labels`",
                ));
            }
        }
    }
    match object.pointer("/spec/template/spec") {
        Some(spec) => validate_spec(spec, "spec.template.spec", causes),
        None => causes.push(cause("spec.template.spec.containers", "Required value")),
    }
}

/// The template's container names, for `-o wide`.
pub(super) fn template_containers(object: &Value) -> Value {
    template_field(object, "name")
}

/// The template's images, for `-o wide`.
pub(super) fn template_images(object: &Value) -> Value {
    template_field(object, "image")
}

fn template_field(object: &Value, field: &str) -> Value {
    super::or_none(
        items(object, "/spec/template/spec/containers")
            .into_iter()
            .filter_map(|c| c[field].as_str())
            .collect::<Vec<_>>()
            .join(","),
    )
}
