//! The service proxy's cost: the same client calling three echo replicas through their
//! Service's cluster IP and calling one replica's pod IP directly, in one run, and how long an
//! endpoint change takes to reach the node's rules.
//!
//! Run: `scripts/guests.sh && cargo bench --bench services` (a minute or two; needs root and
//! `nft`). Prints a Markdown table for docs/benchmarks.md; the server's log goes to
//! `$TMPDIR/bosun-bench-services.log`.
//!
//! Measures, on one node (`bosun server` on SQLite, `bosun node`, a local registry):
//! 1. calls: a netcheck client pod makes `CALLS` calls, each a new TCP connection, one line and
//!    its answer: requests/s and per-call p50/p99, through `clusterIP:80` and to `podIP:8080`,
//!    alternating, `ROUNDS` times each;
//! 2. round trips on one connection (`PINGS` lines): p50/p99 through the cluster IP and
//!    direct (after the first packet, conntrack carries the connection);
//! 3. endpoint changes: the Deployment scaled 3 → 4 → 3, `CHANGES` times: from the moment
//!    this program's watch sees the EndpointSlice change to the moment `nft list table` shows
//!    the node's rules changed (polled; the poll's own time is printed as the resolution);
//! 4. NetworkPolicy propagation: a client pod calls one replica without pause while a policy
//!    denying the replicas' ingress is created, `CHANGES` times: from just before the create
//!    to the first refused call in the client's log (the node's timestamp of that line), then
//!    the policy is deleted and the calls succeed again.

mod common;

use std::process::Command;
use std::time::Instant;

use bosun_node::images::Layout;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use bosun_testkit::percentile;
use k8s_openapi::jiff::Timestamp;

const CALLS: usize = 2000;
const ROUNDS: usize = 3;
const PINGS: usize = 5000;
const CHANGES: usize = 10;
const BRIDGE: &str = "bsvcbench";

/// Runs a netcheck client pod to its end and returns its log.
async fn client(pods: &Api<Pod>, name: &str, image: &str, args: &[&str]) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": image, "args": args}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    common::until(&format!("{name} finished"), async || {
        let phase = pods.get(name).await.ok()?.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(())
    })
    .await;
    let log = pods.logs(name, &LogParams::default()).await.unwrap();
    pods.delete(name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    log
}

/// `KEY p50=… p99=… [elapsed=…]` from a netcheck log, in nanoseconds.
fn figures(log: &str, key: &str) -> (u64, u64, u64) {
    let line = log
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {log}"));
    let get = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (get("p50="), get("p99="), get("elapsed="))
}

fn nft_rules() -> String {
    let out = Command::new("nft")
        .args(["list", "table", "ip", &format!("{BRIDGE}-proxy")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ready_ips(slices: &[EndpointSlice]) -> Vec<String> {
    let mut ips: Vec<String> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .map(|e| e.addresses[0].clone())
        .collect();
    ips.sort();
    ips
}

fn ms(ns: f64) -> String {
    format!("{:.3} ms", ns / 1e6)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let wasm = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/target/wasm32-wasip2/release/netcheck.wasm"
    ))
    .expect("build the guests first: scripts/guests.sh");
    let dir = tempfile::tempdir().unwrap();
    let registry = bosun_testkit::registry::Registry::start().await;
    let host = registry.host.clone();
    let blocks = [
        "--cluster-cidr",
        "10.240.0.0/17",
        "--service-cidr",
        "10.240.128.0/17",
    ];
    let mut server = common::server(dir.path(), &blocks, Some("bosun-bench-services.log"));
    let kubeconfig = common::kubeconfig(dir.path());
    let node_args = [
        &["--insecure-registry", &host, "--bridge", BRIDGE][..],
        &blocks,
    ]
    .concat();
    let mut node = common::node(dir.path(), "svc", &node_args);
    let client_api = common::client(&kubeconfig).await;
    let pods: Api<Pod> = Api::namespaced(client_api.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client_api.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client_api.clone(), "default");
    let image = format!("{host}/netcheck:v1");
    bosun_node::images::push(&image, wasm, Layout::ComponentV0, true, None)
        .await
        .unwrap();

    let cluster_ip = common::deploy_behind_service(
        &client_api,
        "echo",
        3,
        json!({
            "name": "echo", "image": image, "args": ["listen", "0.0.0.0:8080"],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        }),
    )
    .await;
    // The echo Service's slices (`default` also has the `kubernetes` Service's).
    let echo_slices = ListParams::default().labels("kubernetes.io/service-name=echo");
    let endpoints = common::until("3 endpoints in the rules", async || {
        let ips = ready_ips(&slices.list(&echo_slices).await.ok()?.items);
        let rules = nft_rules();
        (ips.len() == 3 && ips.iter().all(|ip| rules.contains(&format!("{ip}:8080"))))
            .then_some(ips)
    })
    .await;
    let direct = format!("{}:8080", endpoints[0]);
    let through = format!("{cluster_ip}:80");

    // 1. New connections.
    let calls = CALLS.to_string();
    let mut results: [Vec<(u64, u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (i, target) in [&direct, &through].into_iter().enumerate() {
            let log = client(
                &pods,
                &format!("calls-{round}-{i}"),
                &image,
                &["calls", target, &calls],
            )
            .await;
            assert!(log.contains(&format!("calls ok={CALLS} failed=0")), "{log}");
            results[i].push(figures(&log, "call_ns"));
        }
    }
    // 2. One connection.
    let pings = PINGS.to_string();
    let mut rtts: [Vec<(u64, u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (i, target) in [&direct, &through].into_iter().enumerate() {
            let log = client(
                &pods,
                &format!("ping-{round}-{i}"),
                &image,
                &["ping", target, &pings],
            )
            .await;
            rtts[i].push(figures(&log, "rtt_ns"));
        }
    }

    // 3. Endpoint changes reaching the rules.
    let mut events = watcher(
        slices.clone(),
        watcher::Config::default().labels("kubernetes.io/service-name=echo"),
    )
    .applied_objects()
    .boxed();
    let mut poll_times = Vec::new();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut current = endpoints.clone();
    for change in 0..CHANGES * 2 {
        let replicas = if change % 2 == 0 { 4 } else { 3 };
        deployments
            .patch(
                "echo",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .unwrap();
        // Wait for the slice that has the change; then time the rules.
        let (seen, ips) = loop {
            let slice = events.next().await.unwrap().unwrap();
            let ips = ready_ips(std::slice::from_ref(&slice));
            if ips.len() == replicas {
                break (Instant::now(), ips);
            }
        };
        let changed: Vec<String> = if replicas == 4 {
            ips.iter()
                .filter(|ip| !current.contains(ip))
                .cloned()
                .collect()
        } else {
            current
                .iter()
                .filter(|ip| !ips.contains(ip))
                .cloned()
                .collect()
        };
        let wanted = format!("{}:8080", changed[0]);
        loop {
            let poll = Instant::now();
            let present = nft_rules().contains(&wanted);
            poll_times.push(poll.elapsed());
            if present == (replicas == 4) {
                break;
            }
        }
        let took = seen.elapsed();
        if replicas == 4 {
            added.push(took)
        } else {
            removed.push(took)
        }
        current = ips;
    }

    let mean = |v: &[(u64, u64, u64)], f: fn(&(u64, u64, u64)) -> u64| {
        v.iter().map(f).sum::<u64>() as f64 / v.len() as f64
    };
    let rate = |v: &[(u64, u64, u64)]| CALLS as f64 / (mean(v, |r| r.2) / 1e9);
    println!("| measurement | through the cluster IP | pod IP directly (baseline) | ratio |");
    println!("|---|---|---|---|");
    let (t, d) = (&results[1], &results[0]);
    println!(
        "| new connection per call: calls/s | {:.0} | {:.0} | {:.2} |",
        rate(t),
        rate(d),
        rate(t) / rate(d)
    );
    for (label, f) in [
        ("p50", (|r: &(u64, u64, u64)| r.0) as fn(&_) -> u64),
        ("p99", |r| r.1),
    ] {
        println!(
            "| new connection per call: {label} | {} | {} | {:.2} |",
            ms(mean(t, f)),
            ms(mean(d, f)),
            mean(t, f) / mean(d, f)
        );
    }
    let (t, d) = (&rtts[1], &rtts[0]);
    for (label, f) in [
        ("p50", (|r: &(u64, u64, u64)| r.0) as fn(&_) -> u64),
        ("p99", |r| r.1),
    ] {
        println!(
            "| round trip on one connection: {label} | {} | {} | {:.2} |",
            ms(mean(t, f)),
            ms(mean(d, f)),
            mean(t, f) / mean(d, f)
        );
    }
    added.sort();
    removed.sort();
    poll_times.sort();
    println!();
    println!("| endpoint change → node rules | p50 | max | n |");
    println!("|---|---|---|---|");
    for (label, times) in [("endpoint added", &added), ("endpoint removed", &removed)] {
        println!(
            "| {label} | {:.1} ms | {:.1} ms | {} |",
            percentile(times, 0.5).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
            times.len()
        );
    }
    println!(
        "| resolution (one `nft list` poll) | {:.1} ms | {:.1} ms | {} |",
        percentile(&poll_times, 0.5).as_secs_f64() * 1e3,
        poll_times.last().unwrap().as_secs_f64() * 1e3,
        poll_times.len()
    );

    // 4. NetworkPolicy propagation.
    // Enough calls to outlast the measurement (the guest keeps every call's time: 16 MB).
    let forever = "1000000".to_string();
    let caller: Pod = serde_json::from_value(json!({
        "metadata": {"name": "policy-client"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": image, "args": ["calls", &direct, &forever],
                            "resources": {"limits": {"memory": "128Mi"}}}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &caller).await.unwrap();
    common::until("the policy client running", async || {
        let phase = pods.get("policy-client").await.ok()?.status?.phase?;
        (phase == "Running").then_some(())
    })
    .await;
    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(client_api.clone(), "default");
    let deny: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "deny-echo"},
        "spec": {"podSelector": {"matchLabels": {"app": "echo"}}, "policyTypes": ["Ingress"]}
    }))
    .unwrap();
    // The client's last line: (its timestamp, the call it names); failures are all it prints.
    let last_line = async || -> Option<(Timestamp, String)> {
        let params = LogParams {
            timestamps: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        let text = pods.logs("policy-client", &params).await.ok()?;
        let (at, rest) = text.trim_end().split_once(' ')?;
        Some((at.parse().ok()?, rest.split(':').next()?.to_string()))
    };
    let mut propagation = Vec::new();
    for _ in 0..CHANGES {
        let before = last_line().await.map(|(_, call)| call);
        let written = Timestamp::now();
        policies
            .create(&PostParams::default(), &deny)
            .await
            .unwrap();
        let (refused_at, _) = common::until("a refused call", async || {
            let (at, call) = last_line().await?;
            (Some(&call) != before.as_ref()).then_some((at, call))
        })
        .await;
        propagation.push(std::time::Duration::from_nanos(
            (refused_at.as_nanosecond() - written.as_nanosecond()).max(0) as u64,
        ));
        policies
            .delete("deny-echo", &DeleteParams::default())
            .await
            .unwrap();
        // Until the refusals stop: the last line stays the same for half a second.
        let mut last = last_line().await;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let now = last_line().await;
            if now.as_ref().map(|l| &l.1) == last.as_ref().map(|l| &l.1) {
                break;
            }
            last = now;
        }
    }
    pods.delete("policy-client", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    propagation.sort();
    println!();
    println!("| NetworkPolicy write → enforced on the node | p50 | p99 | max | n |");
    println!("|---|---|---|---|---|");
    println!(
        "| deny-all ingress created → first refused connection (target p99 ≤ 1 s) | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
        percentile(&propagation, 0.5).as_secs_f64() * 1e3,
        percentile(&propagation, 0.99).as_secs_f64() * 1e3,
        propagation.last().unwrap().as_secs_f64() * 1e3,
        propagation.len()
    );

    let _ = node.kill();
    let _ = node.wait();
    let _ = server.kill();
    let _ = server.wait();
    drop(registry);
}
