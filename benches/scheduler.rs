//! Scheduler end to end, `scheduler_perf`-like: 1000 fake nodes and 10,000 pending pods in a
//! real `bosun server` on PostgreSQL, then a server with the scheduler binds them all.
//!
//! Run: `cargo bench --bench scheduler` (starts its own PostgreSQL through
//! `scripts/postgres.sh`; about a minute). Prints a Markdown table for docs/benchmarks.md.
//!
//! Phases:
//! 1. A server with `--disable-scheduler` takes the 1000 Node objects and the 10,000 pods
//!    from 16 concurrent clients. That create rate is the baseline, measured in the same run.
//! 2. That server stops and one with the scheduler (the default) starts on the same database.
//!    A watcher through the API counts pods as their binding lands. Bound pods per second is
//!    reported from the server's start (leader election and the scheduler's initial list
//!    included) and over the binding itself (first bind to last).
//! 3. A final list checks that all 10,000 bindings are persisted, and counts the Events the
//!    scheduler wrote.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const NODES: usize = 1000;
const PODS: usize = 10_000;
const CLIENTS: usize = 16;

fn stop(mut child: Child) {
    // SIGINT: a clean shutdown, as Ctrl-C.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// A server of the database at `url`, with data in `dir`.
fn server(dir: &Path, url: &str, extra: &[&str]) -> Child {
    common::server(
        dir,
        &[&["--datastore-endpoint", url][..], extra].concat(),
        None,
    )
}

fn node(i: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i}"), "labels": {"kubernetes.io/hostname": format!("node-{i}")}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }))
    .unwrap()
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": "default",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("rs-{}", i % 100),
                "uid": format!("rs-uid-{}", i % 100), "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
    }))
    .unwrap()
}

/// Creates `count` objects from CLIENTS concurrent clients; returns objects per second.
async fn create_all<K, F>(api: Api<K>, count: usize, make: F) -> f64
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(usize) -> K + Send + Sync + Copy + 'static,
{
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &make(i)).await.unwrap() }
        })
        .buffer_unordered(CLIENTS)
        .for_each(|_| async {})
        .await;
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let pg = bosun_testkit::postgres::Private::start();
    let url = pg.url.clone();
    let data = dir.path();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let first = server(data, &url, &["--disable-scheduler"]);
    let (node_rate, pod_rate) = runtime.block_on(async {
        let client = common::client(&common::kubeconfig(data)).await;
        let nodes = create_all(Api::<Node>::all(client.clone()), NODES, node).await;
        let pods = create_all(Api::<Pod>::namespaced(client, "default"), PODS, pod).await;
        (nodes, pods)
    });
    stop(first);

    let started = Instant::now();
    let second = server(data, &url, &[]);
    let (first_bound, last_bound, persisted, events) = runtime.block_on(async {
        let client = common::client(&common::kubeconfig(data)).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let list = pods
            .list_metadata(&ListParams::default().limit(1))
            .await
            .unwrap();
        let mut version = list.metadata.resource_version.unwrap();
        let mut bound = std::collections::HashSet::new();
        let mut first_bound = None;
        while bound.len() < PODS {
            let mut stream = pods
                .watch(&WatchParams::default().timeout(290), &version)
                .await
                .unwrap()
                .boxed();
            while let Some(event) = stream.try_next().await.unwrap() {
                match event {
                    WatchEvent::Modified(p) | WatchEvent::Added(p) => {
                        version = p.metadata.resource_version.clone().unwrap();
                        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                            first_bound.get_or_insert_with(Instant::now);
                            bound.insert(p.metadata.name.unwrap());
                        }
                    }
                    WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                    WatchEvent::Deleted(_) => {}
                    WatchEvent::Error(e) => panic!("watch failed: {e:?}"),
                }
                if bound.len() == PODS {
                    break;
                }
            }
        }
        let last_bound = Instant::now();
        let all = pods.list(&ListParams::default()).await.unwrap();
        let persisted = all
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        let events = Api::<Event>::namespaced(client, "default")
            .list_metadata(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        (first_bound.unwrap(), last_bound, persisted, events)
    });
    stop(second);
    drop(pg);

    let overall = PODS as f64 / last_bound.duration_since(started).as_secs_f64();
    let binding = (PODS - 1) as f64 / last_bound.duration_since(first_bound).as_secs_f64();
    println!("| measure | result | beside baseline |");
    println!("|---|---|---|");
    println!("| API create, Node objects, {CLIENTS} clients | {node_rate:.0} objects/s | |");
    println!(
        "| API create, pods, {CLIENTS} clients (baseline) | {pod_rate:.0} pods/s | baseline |"
    );
    println!(
        "| bound pods/s, from server start (election, initial list included) | {overall:.0} pods/s | {:.0}% of create |",
        overall / pod_rate * 100.0
    );
    println!(
        "| bound pods/s, first bind to last | {binding:.0} pods/s | {:.0}% of create |",
        binding / pod_rate * 100.0
    );
    println!("| bindings persisted (list after the run) | {persisted}/{PODS} | |");
    println!("| Events written by the scheduler (rate limited, repeats aggregated) | {events} | |");
}
