//! What the API server, the scheduler and the controllers read alike from Kubernetes objects:
//! label selectors, the controller reference among an object's owners, a pod's readiness, a
//! CronJob's time zone.

use bosun_api::labels::{Reason, Selector};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

/// A metav1.LabelSelector as a [`Selector`].
pub fn label_selector(selector: &LabelSelector) -> Result<Selector, Reason> {
    Selector::from_label_selector(selector)
}

/// Whether `selector` selects an object with `meta`'s labels. An empty selector selects
/// nothing here, as for workload controllers (a controller must never own every pod).
pub fn selects(selector: &Selector, meta: &ObjectMeta) -> bool {
    !selector.is_empty() && selector.matches(meta.labels.as_ref().unwrap_or(&Default::default()))
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// An owner reference naming `owner` as the controller of a dependent; the dependent blocks
/// the owner's foreground deletion.
pub fn controller_reference<K>(owner: &K) -> OwnerReference
where
    K: kube::Resource<DynamicType = ()>,
{
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A Deployment's replicas: those its spec asks for (0 when unset) and those ready.
pub fn deployment_replicas(deployment: &k8s_openapi::api::apps::v1::Deployment) -> (i32, i32) {
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(0);
    let ready = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (desired, ready)
}

/// Whether the object is marked for deletion.
pub fn deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// A pod that runs or will run: not finished, not being deleted (Kubernetes' `IsPodActive`).
pub fn pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && !deleting(&pod.metadata)
}

/// Since when the pod has been Ready, if it is.
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        ready
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Whether the pod has been Ready for at least `min_ready_seconds` at `now`; if it is ready
/// but not yet long enough, `Err` says how much longer.
pub fn pod_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Result<bool, std::time::Duration> {
    let Some(since) = pod_ready_since(pod) else {
        return Ok(false);
    };
    if min_ready_seconds <= 0 {
        return Ok(true);
    }
    let ready_for = now.duration_since(since).as_secs_f64();
    let needed = f64::from(min_ready_seconds);
    if ready_for >= needed {
        Ok(true)
    } else {
        Err(std::time::Duration::from_secs_f64(needed - ready_for))
    }
}

/// A JSON patch that sets an object's owner references to `owners` only if they are still
/// what `meta` says (and the object is still the same one): a compare-and-swap on that one
/// field, so unrelated writes (a status update) do not make it fail.
pub fn owners_patch(meta: &ObjectMeta, owners: &[OwnerReference]) -> kube::api::Patch<()> {
    let mut ops = vec![serde_json::json!({
        "op": "test", "path": "/metadata/uid", "value": meta.uid,
    })];
    match &meta.owner_references {
        Some(current) => {
            ops.push(serde_json::json!({
                "op": "test", "path": "/metadata/ownerReferences", "value": current,
            }));
            ops.push(serde_json::json!({
                "op": "replace", "path": "/metadata/ownerReferences", "value": owners,
            }));
        }
        None => ops.push(serde_json::json!({
            "op": "add", "path": "/metadata/ownerReferences", "value": owners,
        })),
    }
    json_patch(serde_json::Value::Array(ops))
}

/// A JSON patch (RFC 6902) from its operations.
pub fn json_patch(ops: serde_json::Value) -> kube::api::Patch<()> {
    kube::api::Patch::Json(serde_json::from_value(ops).expect("a valid JSON patch"))
}

/// The zone a CronJob's schedule is read in (`spec.timeZone`, from the system's zoneinfo;
/// UTC without one).
pub fn time_zone(name: Option<&str>) -> Result<jiff::tz::TimeZone, String> {
    match name {
        None | Some("") => Ok(jiff::tz::TimeZone::UTC),
        Some(name) => {
            jiff::tz::TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}"))
        }
    }
}
