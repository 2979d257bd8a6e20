//! Pod start latency on a real node: `bosun server` (SQLite), `bosun node` and a local
//! registry (Debian's docker-registry), all on this machine.
//!
//! Run: `cargo bench --bench node` (about a minute). Prints a Markdown table for
//! docs/benchmarks.md.
//!
//! Measures, in one run:
//! 1. instantiate alone: the wasmtime runtime in this process starting a cached (already
//!    compiled) module that exits at once, start to exit, 1000 times;
//! 2. the baseline: create → the ADDED event of a watcher, through the API, for pods that no
//!    node takes (`nodeName` of a node that does not exist), 200 times;
//! 3. pod start: create → a watcher sees `phase: Running`, 200 pods one after another, each
//!    scheduled onto the node, its module cached, given its network namespace and IP, and
//!    started as a guest that sleeps.
//!
//! Needs root (the pods' network namespaces).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_node::runtime::wasmtime::{WasmtimeOptions, WasmtimeRuntime};
use bosun_node::runtime::{Artifact, ContainerSpec, Runtime};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use bosun_testkit::percentile;

const PODS: usize = 200;
/// The node's bridge, removed at the end.
const BRIDGE: &str = "bpbench0";

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn instantiate_alone() -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = WasmtimeRuntime::new(WasmtimeOptions {
        max_instances: 16,
        max_memory_size: 64 << 20,
        ..Default::default()
    })
    .unwrap();
    let wasm: Arc<[u8]> =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .unwrap()
            .into();
    let spec = ContainerSpec {
        name: "nop".to_string(),
        artifact: Artifact::Wasm {
            bytes: wasm,
            digest: Some("sha256:nop".to_string()),
        },
        args: vec!["nop".to_string()],
        env: Vec::new(),
        mounts: Vec::new(),
        log: dir.path().join("nop.log"),
        memory_limit: 16 << 20,
        cpu_limit_millis: None,
        network: None,
        serving: Default::default(),
    };
    // Awaited on the bench's own runtime: a `futures` executor inside it would spin, as tokio's
    // cooperative budget is only renewed between a runtime's task polls.
    runtime.start(spec.clone()).unwrap().wait().await;
    let mut times = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        runtime.start(spec.clone()).unwrap().wait().await;
        times.push(t.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// Creates `count` pods one at a time and times each from create to the first watch event
/// that `done` accepts.
/// When a watcher saw each pod reach each stage, from its create.
#[derive(Default)]
struct Stages {
    /// Bound to a node (`spec.nodeName` set by the scheduler).
    bound: Vec<Duration>,
    /// The node's first status (containers waiting in ContainerCreating).
    first_status: Vec<Duration>,
    /// Done.
    done: Vec<Duration>,
}

async fn timed_creates(
    pods: &Api<Pod>,
    count: usize,
    make: impl Fn(usize) -> serde_json::Value,
    done: impl Fn(&Pod) -> bool,
) -> Vec<Duration> {
    let mut stages = Stages::default();
    timed_stages(pods, count, make, done, &mut stages).await;
    stages.done.sort();
    stages.done
}

async fn timed_stages(
    pods: &Api<Pod>,
    count: usize,
    make: impl Fn(usize) -> serde_json::Value,
    done: impl Fn(&Pod) -> bool,
    stages: &mut Stages,
) {
    for i in 0..count {
        let pod: Pod = serde_json::from_value(make(i)).unwrap();
        let name = pod.metadata.name.clone().unwrap();
        let list = pods.list(&ListParams::default().limit(1)).await.unwrap();
        let rv = list.metadata.resource_version.unwrap();
        let params = WatchParams::default().fields(&format!("metadata.name={name}"));
        let mut watch = pods.watch(&params, &rv).await.unwrap().boxed();
        let t = Instant::now();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let (mut bound, mut first_status) = (None, None);
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
                    let seen = t.elapsed();
                    if p.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                        bound.get_or_insert(seen);
                    }
                    if p.status
                        .as_ref()
                        .is_some_and(|s| s.container_statuses.is_some())
                    {
                        first_status.get_or_insert(seen);
                    }
                    if done(&p) {
                        stages.bound.push(bound.unwrap_or(seen));
                        stages.first_status.push(first_status.unwrap_or(seen));
                        stages.done.push(seen);
                        break;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("watch ended: {other:?}"),
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (inst_p50, inst_p99) = instantiate_alone().await;

    let dir = tempfile::tempdir().unwrap();
    let registry = bosun_testkit::registry::Registry::start().await;
    let host = registry.host.clone();
    let mut server = common::server(dir.path(), &[], None);
    let mut node = common::node(
        dir.path(),
        "bench",
        &[
            "--max-pods",
            "1000",
            "--insecure-registry",
            &host,
            "--bridge",
            BRIDGE,
        ],
    );
    let client = common::client(&common::kubeconfig(dir.path())).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let image = common::push_sleeper(&host).await;
    let pod = |name: String| {
        json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": image,
                "imagePullPolicy": "IfNotPresent",
                "resources": {"limits": {"memory": "16Mi"}}}]},
        })
    };
    let running = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    // Warm up: the node registers, pulls and compiles the module once.
    let warm = timed_creates(&pods, 1, |_| pod("warm".to_string()), running).await;

    let baseline = timed_creates(
        &pods,
        PODS,
        |i| {
            let mut p = pod(format!("unbound-{i}"));
            p["spec"]["nodeName"] = json!("nowhere");
            p
        },
        |_| true,
    )
    .await;
    let mut stages = Stages::default();
    timed_stages(&pods, PODS, |i| pod(format!("p-{i}")), running, &mut stages).await;
    let Stages {
        mut bound,
        mut first_status,
        done: mut start,
    } = stages;
    for times in [&mut bound, &mut first_status, &mut start] {
        times.sort();
    }

    println!("| measure | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| instantiate a cached module and run it to exit, in process (1000 runs) | {} | {} |",
        ms(inst_p50),
        ms(inst_p99)
    );
    println!(
        "| baseline: create → ADDED seen by a watcher, pod not run ({PODS} pods) | {} | {} |",
        ms(percentile(&baseline, 0.5)),
        ms(percentile(&baseline, 0.99))
    );
    println!(
        "| pod start: create → Running seen by a watcher, cached module ({PODS} pods) | {} | {} |",
        ms(percentile(&start, 0.5)),
        ms(percentile(&start, 0.99))
    );
    println!("(first pod, with pull and compile: {})", ms(warm[0]));
    println!(
        "(pod start stages, from create, p50 / p99: bound {} / {}, the node's first status {} / {}, Running {} / {})",
        ms(percentile(&bound, 0.5)),
        ms(percentile(&bound, 0.99)),
        ms(percentile(&first_status, 0.5)),
        ms(percentile(&first_status, 0.99)),
        ms(percentile(&start, 0.5)),
        ms(percentile(&start, 0.99)),
    );

    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await;
    // The node removes the pods' network namespaces as their containers stop.
    let ipam = dir.path().join("node/network/ipam");
    let addresses_in_use = || {
        std::fs::read_dir(&ipam)
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
            .unwrap_or(0)
    };
    for _ in 0..600 {
        if addresses_in_use() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(registry);
    for child in [&mut node, &mut server] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
}
