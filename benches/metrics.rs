//! What metrics collection costs: pod start and the API's create rate with the server's
//! scraping off (`--metrics-resolution 0`, the baseline), on at the default 15 s, and every
//! second (fifteen times the default rate), alternated twice in one run (a few pods keep
//! running, so the scraper has usage to read); and the memory an hour of history takes per
//! 1000 pods.
//!
//! Run: `cargo bench --bench metrics` (about three minutes after the build; needs root for the
//! pods' network namespaces). Prints a Markdown table for docs/benchmarks.md.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bosun_control::apiserver::history::{History, Subject};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use bosun_testkit::percentile;

/// Pods started one after another per round.
const STARTS: usize = 100;
/// Pods created (and not run) per round for the create rate, with this many in flight.
const CREATES: usize = 600;
const IN_FLIGHT: usize = 16;
const BRIDGE: &str = "bmbench0";

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Round {
    start_p50: Duration,
    start_p99: Duration,
    creates_per_second: f64,
}

/// One server and node with `resolution`, measured.
async fn round(resolution: &str, host: &str, image: &str) -> Round {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::server(dir.path(), &["--metrics-resolution", resolution], None);
    let mut node = common::node(
        dir.path(),
        "mbench",
        &[
            "--max-pods",
            "1000",
            "--insecure-registry",
            host,
            "--bridge",
            BRIDGE,
        ],
    );
    let client = common::client(&common::kubeconfig(dir.path())).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: String| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "main", "image": image,
                "imagePullPolicy": "IfNotPresent",
                "resources": {"limits": {"memory": "16Mi"}}}]},
        }))
        .unwrap()
    };
    // Warm: the node registers, pulls and compiles once; a few pods run throughout so that
    // the scraper has usage to read.
    for i in 0..5 {
        start_one(&pods, pod(format!("warm-{i}"))).await;
    }
    let mut starts = Vec::new();
    for i in 0..STARTS {
        starts.push(start_one(&pods, pod(format!("p-{i}"))).await);
    }
    starts.sort();

    let began = Instant::now();
    futures::stream::iter(0..CREATES)
        .map(|i| {
            let pods = pods.clone();
            let mut unbound = pod(format!("c-{i}"));
            unbound.spec.as_mut().unwrap().node_name = Some("nowhere".into());
            async move { pods.create(&PostParams::default(), &unbound).await.unwrap() }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|_| async {})
        .await;
    let creates_per_second = CREATES as f64 / began.elapsed().as_secs_f64();

    for child in [&mut node, &mut server] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
    // The node's pod namespaces and veths go with the bridge; pods are not cleaned up one by
    // one, so the next round starts from a fresh data directory.
    Round {
        start_p50: percentile(&starts, 0.5),
        start_p99: percentile(&starts, 0.99),
        creates_per_second,
    }
}

/// Creates `pod` and times it until a watcher sees it Running.
async fn start_one(pods: &Api<Pod>, pod: Pod) -> Duration {
    let name = pod.metadata.name.clone().unwrap();
    let list = pods.list(&ListParams::default().limit(1)).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut watch = pods.watch(&params, &rv).await.unwrap().boxed();
    let t = Instant::now();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)))
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") =>
            {
                return t.elapsed();
            }
            Some(Ok(_)) => {}
            other => panic!("watch ended: {other:?}"),
        }
    }
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// KiB of resident memory that a full hour of history for `pods` pods takes (one sample a
/// second, so every point of the hour exists).
fn history_kib(pods: usize) -> u64 {
    let history = Arc::new(History::default());
    let before = rss_kib();
    let start = SystemTime::now();
    for second in (0..3600).step_by(15) {
        let at = start + Duration::from_secs(second);
        for i in 0..pods {
            history.record(
                Subject::Pod("default".into(), format!("pod-{i}")),
                at,
                &[0.25, 16.0 * 1024.0 * 1024.0],
            );
        }
    }
    let after = rss_kib();
    drop(history);
    after.saturating_sub(before)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = bosun_testkit::registry::Registry::start().await;
    let host = registry.host.clone();
    let image = common::push_sleeper(&host).await;

    let mut rounds = Vec::new();
    for resolution in ["0", "1s", "15s", "0", "1s", "15s"] {
        rounds.push((resolution, round(resolution, &host, &image).await));
    }
    let history_10k = history_kib(10_000);

    println!("| collection | pod start p50 | p99 | creates/s | beside off (same triple) |");
    println!("|---|---|---|---|---|");
    for triple in rounds.chunks(3) {
        let off = &triple[0].1;
        for (resolution, r) in triple {
            let label = match *resolution {
                "0" => "off (`--metrics-resolution 0`)",
                "1s" => "on, every second",
                _ => "on, every 15 s (the default)",
            };
            let ratio = if *resolution == "0" {
                "1".to_string()
            } else {
                format!(
                    "start p99 {:.2}×, creates/s {:.2}×",
                    r.start_p99.as_secs_f64() / off.start_p99.as_secs_f64(),
                    r.creates_per_second / off.creates_per_second
                )
            };
            println!(
                "| {label} | {} | {} | {:.0} | {ratio} |",
                ms(r.start_p50),
                ms(r.start_p99),
                r.creates_per_second
            );
        }
    }
    println!(
        "(history: an hour of points for 10000 pods takes {} KiB of resident memory, {:.0} KiB per 1000 pods)",
        history_10k,
        history_10k as f64 / 10.0
    );
    drop(registry);
}
