//! Pod garbage collection, as kube-controller-manager's PodGC does, every
//! `--pod-gc-period`:
//! - a pod bound to a node that does not exist (checked again with a fresh read, so a node
//!   that is just registering is not mistaken) is marked Failed (reason NodeLost) and deleted
//!   at once: no node will ever confirm that it stopped;
//! - when more than `--terminated-pod-gc-threshold` finished (Succeeded or Failed) pods
//!   exist, the oldest are deleted down to the threshold.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::ControllersConfig;

/// Runs until the client is gone.
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let mut tick = tokio::time::interval(config.pod_gc_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = collect(&client, config.terminated_pod_gc_threshold).await {
            tracing::warn!(%error, "pod garbage collection");
        }
    }
}

async fn collect(client: &kube::Client, threshold: usize) -> Result<(), kube::Error> {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let nodes: HashSet<String> = nodes_api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    for pod in &pods {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if node.is_empty() || nodes.contains(node) || nodes_api.get_opt(node).await?.is_some() {
            continue;
        }
        delete_orphan(client, pod, node).await?;
    }
    let mut finished: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ) && p.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if finished.len() > threshold {
        finished.sort_by_key(|p| p.metadata.creation_timestamp.clone());
        let surplus = finished.len() - threshold;
        for pod in finished.into_iter().take(surplus) {
            let api: Api<Pod> =
                Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(pod = %pod.name_any(), "deleted a terminated pod beyond the threshold")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Fails a pod whose node is gone, then deletes it without waiting for that node.
async fn delete_orphan(client: &kube::Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    if !finished {
        let patch = json!({"status": {
            "phase": "Failed",
            "reason": "NodeLost",
            "message": format!("node {node} which was running pod {name} does not exist"),
        }});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let mut force = DeleteParams::default().grace_period(0);
    force.preconditions = Some(kube::api::Preconditions {
        uid: pod.metadata.uid.clone(),
        resource_version: None,
    });
    match api.delete(&name, &force).await {
        Ok(_) => {
            tracing::info!(pod = %name, %node, "deleted a pod whose node is gone");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
