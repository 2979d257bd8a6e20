//! Scheduling decisions alone, in process: the filter and score plugins over a cache of 1000
//! nodes, for 10,000 pods, with each decision assumed before the next (as the scheduler does
//! while binds are in flight). No API, no store.
//!
//! Run: `cargo bench -p bosun-control --bench scheduler`. Prints a Markdown table for
//! docs/benchmarks.md. The end-to-end figure (bound pods per second through a real server) is
//! `cargo bench --bench scheduler` in the root package.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bosun_control::scheduler::algorithm::Algorithm;
use bosun_control::scheduler::cache::Cache;
use bosun_control::scheduler::pod::PodInfo;
use bosun_control::scheduler::score::Weights;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

const NODES: usize = 1000;
const PODS: usize = 10_000;

fn node(i: usize) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": format!("node-{i}"), "labels": {
                "kubernetes.io/hostname": format!("node-{i}"), "zone": format!("z{}", i % 3)}},
            "status": {
                "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }))
        .unwrap(),
    )
}

/// A pod of one of 100 ReplicaSets, requesting 100m cpu and 128 MiB.
fn pod(i: usize) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": format!("pod-{i}"), "namespace": "default", "uid": format!("u{i}"),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": format!("rs-{}", i % 100), "controller": true}]},
            "spec": {"containers": [{"name": "app", "image": "app", "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"}}}]},
        }))
        .unwrap(),
    )
}

/// Decisions per second for PODS pods on NODES nodes.
fn decisions_per_second(percentage: Option<u32>) -> f64 {
    let mut cache = Cache::default();
    for i in 0..NODES {
        cache.set_node(node(i));
    }
    let classes = HashMap::new();
    let pods: Vec<Arc<PodInfo>> = (0..PODS)
        .map(|i| Arc::new(PodInfo::new(pod(i), &classes).unwrap()))
        .collect();
    let mut algorithm = Algorithm::new(Weights::default(), percentage);
    let started = Instant::now();
    for p in &pods {
        let node = algorithm.schedule(p, &cache).expect("room for every pod");
        cache.assume(p.clone(), &node);
    }
    PODS as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    println!("| measure | result |");
    println!("|---|---|");
    for (label, percentage) in [
        ("adaptive (42% of 1000 nodes)", None),
        ("every node", Some(100)),
    ] {
        let rates: Vec<f64> = (0..3).map(|_| decisions_per_second(percentage)).collect();
        let mut sorted = rates.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "| decisions/s, {NODES} nodes, {PODS} pods, {label}, median of 3 | {:.0} |",
            sorted[1]
        );
    }
}
