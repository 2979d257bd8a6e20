//! Node lifecycle: notices nodes that stopped renewing their Lease, taints them, and evicts
//! their pods, as kube-controller-manager's node lifecycle controller and taint manager do.
//!
//! - A node whose Lease in `kube-node-lease` has not changed for `--node-monitor-grace-period`
//!   (as this controller observed it, by its own clock, so clock skew does not matter) gets
//!   its conditions set to `Unknown` (reason NodeStatusUnknown) and the taint
//!   `node.kubernetes.io/unreachable:NoExecute`. A node that reports `Ready=False` gets
//!   `node.kubernetes.io/not-ready:NoExecute`. A node that is Ready again loses both.
//! - NoExecute taints evict pods: a pod that does not tolerate one is deleted at once; one
//!   that tolerates it for `tolerationSeconds` is deleted that long after the taint was added
//!   (admission gives every pod such tolerations, `--default-unreachable-toleration-seconds`).
//!   An evicted pod on an unreachable node stays Terminating until its node confirms or is
//!   deleted, but it no longer counts for its ReplicaSet, which replaces it elsewhere. When
//!   the node comes back, its agent sees the deletion and stops the pod.
//!
//! Nodes are checked every `--node-monitor-period`.

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::time::Instant;

use super::ControllersConfig;
use crate::events::{Recorder, reference};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// When this controller last saw each node's heartbeat change.
struct Heartbeat {
    renew: Option<String>,
    seen: Instant,
}

/// Runs until the client is gone.
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let recorder = Recorder::start(client.clone(), "node-controller", config.events.clone());
    let (nodes, nodes_writer) = reflector::store::<Node>();
    let (leases, leases_writer) = reflector::store::<Lease>();
    let node_stream = reflector::reflector(
        nodes_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| async {});
    let lease_stream = reflector::reflector(
        leases_writer,
        watcher(
            Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| async {});
    tokio::spawn(node_stream);
    tokio::spawn(lease_stream);
    if nodes.wait_until_ready().await.is_err() || leases.wait_until_ready().await.is_err() {
        return;
    }
    let mut heartbeats: HashMap<String, Heartbeat> = HashMap::new();
    let mut tick = tokio::time::interval(config.node_monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = monitor(
            &client,
            &recorder,
            &config,
            &nodes,
            &leases,
            &mut heartbeats,
        )
        .await
        {
            tracing::warn!(%error, "node lifecycle");
        }
    }
}

async fn monitor(
    client: &kube::Client,
    recorder: &Recorder,
    config: &ControllersConfig,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    heartbeats: &mut HashMap<String, Heartbeat>,
) -> Result<(), kube::Error> {
    let now = Instant::now();
    let nodes_now = nodes.state();
    heartbeats.retain(|name, _| nodes_now.iter().any(|n| n.name_any() == *name));
    let node_api: Api<Node> = Api::all(client.clone());
    for node in &nodes_now {
        let name = node.name_any();
        let renew = leases
            .state()
            .iter()
            .find(|l| l.name_any() == name)
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
            .map(|t| t.0.to_string());
        let beat = heartbeats.entry(name.clone()).or_insert(Heartbeat {
            renew: renew.clone(),
            seen: now,
        });
        if beat.renew != renew {
            beat.renew = renew;
            beat.seen = now;
        }
        let silent = now.duration_since(beat.seen) > config.node_monitor_grace_period;
        let ready = ready_status(node);
        if silent && ready.as_deref() != Some("Unknown") {
            mark_unknown(&node_api, node).await?;
            recorder.normal(
                reference(node.as_ref()),
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            );
            tracing::info!(node = %name, "node stopped renewing its lease");
        }
        let wanted = if silent {
            Some(UNREACHABLE)
        } else if ready.as_deref() == Some("False") {
            Some(NOT_READY)
        } else if ready.as_deref() == Some("True") {
            None
        } else {
            // Unknown but renewing again: wait for the node to report.
            taint_key(node)
        };
        set_taint(&node_api, node, wanted).await?;
    }
    evict(client, recorder, &nodes_now).await
}

/// The status of the node's Ready condition (`True`, `False`, `Unknown`), if it has one.
pub(crate) fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// The lifecycle taint the node has now, if any.
fn taint_key(node: &Node) -> Option<&'static str> {
    let taints = node.spec.as_ref()?.taints.as_ref()?;
    [UNREACHABLE, NOT_READY].into_iter().find(|k| {
        taints
            .iter()
            .any(|t| t.key == *k && t.effect == "NoExecute")
    })
}

/// Sets every condition the node reports to Unknown.
async fn mark_unknown(api: &Api<Node>, node: &Node) -> Result<(), kube::Error> {
    let now = Time(Timestamp::now());
    let conditions: Vec<_> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            if c.status != "Unknown" {
                c.last_transition_time = Some(now.clone());
            }
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
            c
        })
        .collect();
    let patch = json!({"status": {"conditions": conditions}});
    match api
        .patch_status(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the node's lifecycle NoExecute taint `wanted` (or none).
async fn set_taint(api: &Api<Node>, node: &Node, wanted: Option<&str>) -> Result<(), kube::Error> {
    if taint_key(node) == wanted {
        return Ok(());
    }
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !(t.effect == "NoExecute" && (t.key == UNREACHABLE || t.key == NOT_READY)))
        .collect();
    if let Some(key) = wanted {
        taints.push(Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(Timestamp::now())),
            value: None,
        });
    }
    let patch = json!({
        "metadata": {"resourceVersion": node.resource_version()},
        "spec": {"taints": taints},
    });
    match api
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Changed meanwhile (a status write): the next tick sees the new node.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Evicts pods from nodes with NoExecute taints once their tolerations run out.
async fn evict(
    client: &kube::Client,
    recorder: &Recorder,
    nodes: &[std::sync::Arc<Node>],
) -> Result<(), kube::Error> {
    let tainted: HashMap<String, Vec<Taint>> = nodes
        .iter()
        .filter_map(|n| {
            let taints: Vec<Taint> = n
                .spec
                .as_ref()?
                .taints
                .as_ref()?
                .iter()
                .filter(|t| t.effect == "NoExecute")
                .cloned()
                .collect();
            (!taints.is_empty()).then(|| (n.name_any(), taints))
        })
        .collect();
    // Without NoExecute taints there is nothing to evict (and no need to list every pod).
    if tainted.is_empty() {
        return Ok(());
    }
    let pods: Api<Pod> = Api::all(client.clone());
    let now = Timestamp::now();
    for pod in pods.list(&ListParams::default()).await?.items {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() || node.is_empty() {
            continue;
        }
        let namespaced: Api<Pod> =
            Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let Some(taints) = tainted.get(&node) else {
            continue;
        };
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if finished || !due(&pod, taints, now) {
            continue;
        }
        match namespaced
            .delete(&pod.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %pod.name_any(), %node, "evicted from a tainted node");
                recorder.normal(
                    reference(&pod),
                    "TaintManagerEviction",
                    format!(
                        "Marking for deletion Pod {}/{}",
                        pod.namespace().unwrap_or_default(),
                        pod.name_any()
                    ),
                );
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether the pod must go now: a NoExecute taint it does not tolerate, or one it tolerates
/// for a time that has run out since the taint was added.
fn due(pod: &Pod, taints: &[Taint], now: Timestamp) -> bool {
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    taints.iter().any(|taint| {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return true;
        }
        // The shortest bounded toleration counts; an unbounded one keeps the pod forever.
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            return false;
        }
        let seconds = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .min()
            .unwrap_or(0)
            .max(0);
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        now.duration_since(added).as_secs() >= seconds
    })
}

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = toleration
        .key
        .as_deref()
        .is_none_or(|k| k.is_empty() || k == taint.key);
    let value_ok = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    };
    effect_ok && key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}], "tolerations": tolerations},
        }))
        .unwrap()
    }

    fn taint(key: &str, added: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(added.parse().unwrap())),
            value: None,
        }
    }

    #[test]
    fn eviction_waits_for_the_shortest_toleration() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let unreachable = [taint(UNREACHABLE, "2026-01-01T00:00:30Z")];
        // No toleration: at once.
        assert!(due(&pod(json!([])), &unreachable, now));
        // 300 s of toleration, 30 s elapsed: not yet.
        let default = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert!(!due(&default, &unreachable, now));
        // 0 s: at once.
        let impatient = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0}]),
        );
        assert!(due(&impatient, &unreachable, now));
        // Tolerating forever.
        let forever = pod(json!([{"operator": "Exists"}]));
        assert!(!due(&forever, &unreachable, now));
        // Tolerating another taint does not help.
        let other = pod(json!([{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"}]));
        assert!(due(&other, &unreachable, now));
    }
}
