//! The controllers at work on real nodes: `bosun server` (SQLite), `bosun node`s and a local
//! registry, all on this machine.
//!
//! Run: `cargo bench --bench controllers` (a few minutes; needs root for the pods' network
//! namespaces). `BOSUN_BENCH_TIMELINE=1` also prints when the pods of the baseline and of
//! the scale-up were created, bound and Ready. Prints a Markdown table for docs/benchmarks.md; the server's log goes to
//! `$TMPDIR/bosun-bench-controllers.log`.
//!
//! Measures, in one run:
//! 1. the baseline: 199 bare pods created at once through the API (16 requests in flight),
//!    until all are Running: what the node and scheduler cost without any controller;
//! 2. scale-up: `kubectl scale deployment --replicas=200` from 1 (the module cached) until the
//!    Deployment reports 200 available;
//! 3. node loss: two nodes, a Deployment of 20 spread over them, `kill -9` of one agent, until
//!    20 pods are ready on the other, with `--node-monitor-grace-period 3s`,
//!    `--node-monitor-period 250ms` and `--default-unreachable-toleration-seconds 0`; the
//!    baseline beside it is the grace period itself.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const REPLICAS: usize = 200;
const SPREAD: usize = 20;

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A node `name` that reports often and gives up its lease quickly.
fn node(dir: &std::path::Path, name: &str, registry: &str) -> Child {
    let bridge = format!("bc{name}");
    common::node(
        dir,
        name,
        &[
            "--max-pods",
            "250",
            "--insecure-registry",
            registry,
            "--bridge",
            &bridge,
            "--lease-duration",
            "2s",
            "--node-status-update-frequency",
            "1s",
        ],
    )
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out: {what}");
}

/// When each pod labelled `app=<app>` was first seen, bound to a node and Ready, from a
/// watch started at `start`: the stages of a scale-up, for `BOSUN_BENCH_TIMELINE=1`.
#[derive(Default)]
struct Timeline {
    seen: std::collections::HashMap<String, [Option<Duration>; 3]>,
}

fn follow(pods: Api<Pod>, app: &str, start: Instant) -> std::sync::Arc<std::sync::Mutex<Timeline>> {
    use kube::runtime::{WatchStreamExt, watcher};
    let timeline = std::sync::Arc::new(std::sync::Mutex::new(Timeline::default()));
    let state = timeline.clone();
    let config = watcher::Config::default().labels(&format!("app={app}"));
    tokio::spawn(async move {
        let mut events = watcher(pods, config).applied_objects().boxed();
        while let Some(Ok(pod)) = events.next().await {
            let at = start.elapsed();
            let mut t = state.lock().unwrap();
            let stages = t
                .seen
                .entry(pod.metadata.name.clone().unwrap())
                .or_default();
            let bound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some();
            for (stage, reached) in stages.iter_mut().zip([true, bound, ready(&pod)]) {
                if reached && stage.is_none() {
                    *stage = Some(at);
                }
            }
        }
    });
    timeline
}

/// `stage: first / 50% / last` of the pods that reached each stage.
fn print_timeline(what: &str, timeline: &Timeline) {
    for (i, stage) in ["created", "bound", "ready"].iter().enumerate() {
        let mut times: Vec<Duration> = timeline.seen.values().filter_map(|s| s[i]).collect();
        times.sort();
        if let (Some(first), Some(last)) = (times.first(), times.last()) {
            eprintln!(
                "{what}: {stage} {} pods: first {}, median {}, last {}",
                times.len(),
                secs(*first),
                secs(times[times.len() / 2]),
                secs(*last)
            );
        }
    }
}

/// The pause between phases: `BOSUN_BENCH_SETTLE_SECONDS`, default 15.
fn settle() -> Duration {
    Duration::from_secs(
        std::env::var("BOSUN_BENCH_SETTLE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(15),
    )
}

/// Deletes every pod and waits until none is left (the node confirms each stop).
async fn clear(pods: &Api<Pod>) {
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = pods.list(&ListParams::default()).await.unwrap().items;
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for pod in &left {
                eprintln!(
                    "left: {} on {:?}, deleting since {:?}, owners {:?}",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                    pod.metadata.deletion_timestamp,
                    pod.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .map(|o| o.name.clone())
                        .collect::<Vec<_>>(),
                );
            }
            panic!("{} pods are still there", left.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn deployment(name: &str, image: &str, replicas: usize) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "main", "image": image,
                    "imagePullPolicy": "IfNotPresent", "resources": {"limits": {"memory": "16Mi"}}}]},
            },
        },
    }))
    .unwrap()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let registry = bosun_testkit::registry::Registry::start().await;
    let host = registry.host.clone();
    let mut server = common::server(
        dir.path(),
        &[
            "--node-monitor-grace-period",
            "3s",
            "--node-monitor-period",
            "250ms",
            "--default-unreachable-toleration-seconds",
            "0",
            "--pod-gc-period",
            "1s",
        ],
        Some("bosun-bench-controllers.log"),
    );
    let kubeconfig = common::kubeconfig(dir.path());
    let mut first = node(dir.path(), "one", &host);
    let client = common::client(&kubeconfig).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let image = common::push_sleeper(&host).await;

    // Warm up: one replica pulls and compiles the module.
    deployments
        .create(&PostParams::default(), &deployment("web", &image, 1))
        .await
        .unwrap();
    let available = |n: usize| {
        let deployments = deployments.clone();
        async move || {
            deployments
                .get("web")
                .await
                .ok()
                .and_then(|d| d.status?.available_replicas)
                == Some(n as i32)
        }
    };
    until("1 available", available(1)).await;

    // Baseline: the same number of bare pods, created 16 at a time, until all Running.
    let bare = |i: usize| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("bare-{i}"), "labels": {"app": "bare"}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "main", "image": image,
                "imagePullPolicy": "IfNotPresent", "resources": {"limits": {"memory": "16Mi"}}}]},
        }))
        .unwrap()
    };
    let timeline = std::env::var_os("BOSUN_BENCH_TIMELINE").is_some();
    let started = Instant::now();
    let bare_timeline = timeline.then(|| follow(pods.clone(), "bare", started));
    futures::stream::iter(1..REPLICAS)
        .map(|i| {
            let pods = pods.clone();
            let pod = bare(i);
            async move { pods.create(&PostParams::default(), &pod).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    until("bare pods running", async || {
        pods.list(&ListParams::default().labels("app=bare"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| ready(p))
            .count()
            == REPLICAS - 1
    })
    .await;
    let baseline = started.elapsed();
    if let Some(t) = bare_timeline {
        print_timeline("bare pods", &t.lock().unwrap());
    }
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default().labels("app=bare"),
        )
        .await;
    until("bare pods gone", async || {
        pods.list(&ListParams::default().labels("app=bare"))
            .await
            .unwrap()
            .items
            .is_empty()
    })
    .await;

    // The node has torn down 199 pod networks; the kernel destroys network namespaces in
    // the background, and that work would share the cores with the next phase.
    tokio::time::sleep(settle()).await;

    // Scale-up through kubectl, as a user would.
    let started = Instant::now();
    let web_timeline = timeline.then(|| follow(pods.clone(), "web", started));
    let out = Command::new("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .args(["scale", "deployment/web", &format!("--replicas={REPLICAS}")])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until("200 available", available(REPLICAS)).await;
    let scale = started.elapsed();
    if let Some(t) = web_timeline {
        print_timeline("scale-up", &t.lock().unwrap());
    }
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    clear(&pods).await;
    tokio::time::sleep(settle()).await;

    // Node loss: a second node, a Deployment spread over both, the first one killed.
    let mut second = node(dir.path(), "two", &host);
    until("two nodes ready", async || {
        Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            == 2
    })
    .await;
    deployments
        .create(
            &PostParams::default(),
            &deployment("spread", &image, SPREAD),
        )
        .await
        .unwrap();
    let on = |name: &'static str| {
        let pods = pods.clone();
        async move || {
            pods.list(&ListParams::default().labels("app=spread"))
                .await
                .unwrap()
                .items
                .iter()
                .filter(|p| {
                    ready(p) && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name)
                })
                .count()
        }
    };
    let on_one = on("one");
    let on_two = on("two");
    until("20 ready on both nodes", async || {
        on_one().await + on_two().await == SPREAD && on_one().await > 0
    })
    .await;
    let lost = on_one().await;
    let stranded: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("one"))
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let started = Instant::now();
    let _ = first.kill();
    let _ = first.wait();
    until("20 ready on the second node", async || {
        on_two().await == SPREAD
    })
    .await;
    let recovery = started.elapsed();

    println!("| measure | time | ratio |");
    println!("|---|---|---|");
    println!(
        "| baseline: {} bare pods created (16 in flight) → all Running, one node | {} | 1.00 |",
        REPLICAS - 1,
        secs(baseline)
    );
    println!(
        "| `kubectl scale deployment --replicas={REPLICAS}` from 1 → {REPLICAS} available | {} | {:.2} |",
        secs(scale),
        scale.as_secs_f64() / baseline.as_secs_f64()
    );
    println!("| baseline: node monitor grace period | 3.00 s | 1.00 |");
    println!(
        "| node loss (kill -9, {lost} of {SPREAD} pods on it) → {SPREAD} ready on the other node | {} | {:.2} |",
        secs(recovery),
        recovery.as_secs_f64() / 3.0
    );

    // Clean up: the lost node's object goes (pod GC then removes its pods), the Deployment
    // goes, and the second node stops its pods and removes their namespaces.
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .delete("one", &DeleteParams::default())
        .await
        .ok();
    deployments
        .delete("spread", &DeleteParams::background())
        .await
        .ok();
    clear(&pods).await;
    // The node removes a pod's namespace and address once its containers stopped.
    let ipam = dir.path().join("two/network/ipam");
    for _ in 0..300 {
        let in_use = std::fs::read_dir(&ipam)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .parse::<std::net::Ipv4Addr>()
                            .is_ok()
                    })
                    .count()
            })
            .unwrap_or(0);
        if in_use == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(registry);
    for child in [&mut second, &mut server] {
        let _ = child.kill();
        let _ = child.wait();
    }
    for bridge in ["bcone", "bctwo"] {
        let _ = Command::new("ip").args(["link", "del", bridge]).status();
    }
    // The killed node's pod namespaces stay behind.
    for uid in stranded {
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("bosun-{uid}")])
            .status();
    }
}
