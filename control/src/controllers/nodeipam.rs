//! Node IPAM: every Node gets a `spec.podCIDR` (and `podCIDRs`), the lowest free block of
//! `--node-cidr-mask-size` in `--cluster-cidr`, as kube-controller-manager's range allocator
//! does. The node agent takes its pods' IPs from that block.
//!
//! Blocks that nodes already have (given by this controller or by hand) are never handed out
//! again while the node exists; a deleted node's block is free again. When the cluster CIDR is
//! full, the node gets a `CIDRNotAvailable` Warning Event and waits for a block to free up.

use std::collections::{BTreeMap, BTreeSet};

use bosun_api::cidr::Ipv4Cidr;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::ControllersConfig;
use crate::events::{Recorder, reference};

/// What the controller knows of one node.
#[derive(Debug, Clone)]
struct Known {
    node: Node,
    /// The block in `spec.podCIDR`, if it is a valid one.
    cidr: Option<Ipv4Cidr>,
}

/// Runs until the watch ends (never, with a live client).
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let nodes: Api<Node> = Api::all(client.clone());
    let recorder = Recorder::start(client, "node-ipam-controller", config.events.clone());
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    // Nodes listed so far in a (re)list, swapped in at its end.
    let mut listing: Option<BTreeMap<String, Known>> = None;
    let mut ready = false;
    let stream = watcher(nodes.clone(), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(node)) => {
                if let Some(listing) = listing.as_mut() {
                    listing.insert(node.name_any(), known_of(node));
                }
            }
            Ok(watcher::Event::InitDone) => {
                known = listing.take().unwrap_or_default();
                ready = true;
            }
            Ok(watcher::Event::Apply(node)) => {
                known.insert(node.name_any(), known_of(node));
            }
            Ok(watcher::Event::Delete(node)) => {
                known.remove(&node.name_any());
            }
            Err(error) => {
                tracing::warn!(%error, "watching nodes");
                continue;
            }
        }
        if ready {
            allocate(&nodes, &recorder, &config, &mut known).await;
        }
    }
}

fn known_of(node: Node) -> Known {
    let cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(|c| c.parse().ok());
    Known { node, cidr }
}

fn has_pod_cidr(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty())
}

/// Gives a block to every node that has none.
async fn allocate(
    nodes: &Api<Node>,
    recorder: &Recorder,
    config: &ControllersConfig,
    known: &mut BTreeMap<String, Known>,
) {
    let waiting: Vec<String> = known
        .iter()
        .filter(|(_, k)| !has_pod_cidr(&k.node))
        .map(|(name, _)| name.clone())
        .collect();
    for name in waiting {
        let used: BTreeSet<Ipv4Cidr> = known.values().filter_map(|k| k.cidr).collect();
        let Some(block) = free_block(config.cluster_cidr, config.node_cidr_mask_size, &used) else {
            let node = &known[&name].node;
            tracing::warn!(node = %name, cluster_cidr = %config.cluster_cidr, "no pod CIDR left");
            recorder.warning(
                reference(node),
                "CIDRNotAvailable",
                format!(
                    "Node {name} status is now: CIDRNotAvailable (no /{} block left in {})",
                    config.node_cidr_mask_size, config.cluster_cidr
                ),
            );
            continue;
        };
        let patch = serde_json::json!({
            "spec": { "podCIDR": block.to_string(), "podCIDRs": [block.to_string()] }
        });
        match nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(node) => {
                tracing::info!(node = %name, pod_cidr = %block, "assigned a pod CIDR");
                known.insert(name, known_of(node));
            }
            // Gone meanwhile, or a conflict: the watch brings the news and another pass.
            Err(error) => tracing::warn!(node = %name, %error, "cannot assign a pod CIDR"),
        }
    }
}

/// The lowest block of length `mask` in `cluster` that overlaps none of `used`.
fn free_block(cluster: Ipv4Cidr, mask: u8, used: &BTreeSet<Ipv4Cidr>) -> Option<Ipv4Cidr> {
    (0..cluster.subnet_count(mask))
        .filter_map(|i| cluster.subnet(mask, i))
        .find(|block| !used.iter().any(|u| u.overlaps(block)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(blocks: &[&str]) -> BTreeSet<Ipv4Cidr> {
        blocks.iter().map(|b| b.parse().unwrap()).collect()
    }

    #[test]
    fn lowest_free_block_around_used_ones() {
        let cluster: Ipv4Cidr = "10.88.0.0/16".parse().unwrap();
        assert_eq!(
            free_block(cluster, 24, &set(&[])).unwrap().to_string(),
            "10.88.0.0/24"
        );
        assert_eq!(
            free_block(cluster, 24, &set(&["10.88.0.0/24", "10.88.2.0/24"]))
                .unwrap()
                .to_string(),
            "10.88.1.0/24"
        );
        // A hand-set block of another size still counts.
        assert_eq!(
            free_block(cluster, 24, &set(&["10.88.0.0/23"]))
                .unwrap()
                .to_string(),
            "10.88.2.0/24"
        );
        // Blocks outside the cluster CIDR do not matter.
        assert_eq!(
            free_block(cluster, 24, &set(&["10.1.0.0/24"]))
                .unwrap()
                .to_string(),
            "10.88.0.0/24"
        );
    }

    #[test]
    fn none_when_full() {
        let cluster: Ipv4Cidr = "10.88.0.0/23".parse().unwrap();
        assert_eq!(
            free_block(cluster, 24, &set(&["10.88.0.0/24", "10.88.1.0/24"])),
            None
        );
    }
}
