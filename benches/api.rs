//! API benchmark: a real `bosun server` (SQLite) driven over HTTPS.
//!
//! Run: `cargo bench --bench api` (BOSUN_BENCH_SECONDS sets each phase's length, default 10).
//! Prints a Markdown table for docs/benchmarks.md. The baseline, measured in the same run, is an
//! HTTPS round trip that reaches no store (`GET /healthz`) through the same TLS and HTTP stack.
//! The quota phase compares pod creates in a namespace with a ResourceQuota (pods, memory)
//! against the same creates in one without, in alternating rounds.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CLIENTS: usize = 8;

fn seconds() -> u64 {
    std::env::var("BOSUN_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

struct Target {
    client: reqwest::Client,
    base: String,
    token: String,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// Requests per second by CLIENTS closed-loop clients, each running `request(n)`.
async fn throughput<F, Fut>(request: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs(seconds());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                request(c, n).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": "x".repeat(200)}})
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "registry.invalid/app:v1",
                    "resources": {"requests": {"memory": "2Mi"}, "limits": {"memory": "2Mi"}}}]}})
}

/// Pod creates per second into `namespace`, names prefixed with `round`.
async fn pod_creates(target: &Arc<Target>, namespace: &'static str, round: usize) -> f64 {
    let t = target.clone();
    throughput(move |c, n| {
        let t = t.clone();
        async move {
            let r = t
                .client
                .post(format!("{}/api/v1/namespaces/{namespace}/pods", t.base))
                .bearer_auth(&t.token)
                .json(&pod(&format!("r{round}-c{c}-{n}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        }
    })
    .await
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_bosun"))
        .args([
            "server",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--bind-address",
            "127.0.0.1",
            "--port",
            "0",
            "--disable-scheduler",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .find_map(|l| {
            l.ok()?
                .strip_prefix("bosun server listening on https://")
                .map(String::from)
        })
        .expect("server address");
    std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(Duration::from_millis(300));
    let admin = common::Admin::read(&dir.path().join("admin.kubeconfig"));
    let target = Arc::new(Target {
        client: admin.https_client(),
        base: format!("https://{addr}"),
        token: admin.token,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = vec![
        "| measure | result | beside baseline |".to_string(),
        "|---|---|---|".to_string(),
    ];
    runtime.block_on(async {
        let t = target.clone();
        let health = throughput(move |_, _| {
            let t = t.clone();
            async move {
                let r = t.client.get(format!("{}/healthz", t.base)).send().await.unwrap();
                assert!(r.status().is_success());
            }
        })
        .await;
        rows.push(format!("| HTTPS GET /healthz, {CLIENTS} clients (baseline: no store) | {health:.0} req/s | baseline |"));

        let t = target.clone();
        let creates = throughput(move |c, n| {
            let t = t.clone();
            async move {
                let r = t.client.post(format!("{}/api/v1/namespaces/default/configmaps", t.base))
                    .bearer_auth(&t.token).json(&configmap(&format!("c{c}-{n}"))).send().await.unwrap();
                assert_eq!(r.status(), 201);
            }
        })
        .await;
        rows.push(format!("| create ConfigMap, {CLIENTS} clients | {creates:.0} req/s | {:.0}% of baseline |", 100.0 * creates / health));

        let t = target.clone();
        let gets = throughput(move |c, n| {
            let t = t.clone();
            async move {
                let r = t.client.get(format!("{}/api/v1/namespaces/default/configmaps/c{c}-{}", t.base, n % 50))
                    .bearer_auth(&t.token).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }
        })
        .await;
        rows.push(format!("| get ConfigMap, {CLIENTS} clients | {gets:.0} req/s | {:.0}% of baseline |", 100.0 * gets / health));

        // Open loop: 100 writes/s, each its own request; latency of every one.
        let mut ticker = tokio::time::interval(Duration::from_millis(10));
        let mut tasks = Vec::new();
        for n in 0..(100 * seconds()) {
            ticker.tick().await;
            let t = target.clone();
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let r = t.client.post(format!("{}/api/v1/namespaces/default/configmaps", t.base))
                    .bearer_auth(&t.token).json(&configmap(&format!("open-{n}"))).send().await.unwrap();
                assert_eq!(r.status(), 201);
                start.elapsed()
            }));
        }
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.push(t.await.unwrap());
        }
        latencies.sort();
        rows.push(format!(
            "| create at 100 writes/s (open loop) | p50 {:.2} ms, p99 {:.2} ms | target p99 ≤ 25 ms |",
            pct(&latencies, 0.5),
            pct(&latencies, 0.99)
        ));

        // Pods with and without a quota on their namespace, in alternating rounds.
        for (namespace, quota) in [("quota-off", None), ("quota-on", Some(json!({
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
            "spec": {"hard": {"pods": "1000000", "requests.memory": "1Ti", "limits.memory": "1Ti"}}})))]
        {
            let r = target.client.post(format!("{}/api/v1/namespaces", target.base))
                .bearer_auth(&target.token).json(&json!({"metadata": {"name": namespace}})).send().await.unwrap();
            assert_eq!(r.status(), 201);
            if let Some(quota) = quota {
                let r = target.client.post(format!("{}/api/v1/namespaces/{namespace}/resourcequotas", target.base))
                    .bearer_auth(&target.token).json(&quota).send().await.unwrap();
                assert_eq!(r.status(), 201);
            }
        }
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for round in 0..4 {
            off.push(pod_creates(&target, "quota-off", round).await);
            on.push(pod_creates(&target, "quota-on", round).await);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        rows.push(format!(
            "| create Pod, {CLIENTS} clients, namespace without a quota (4 rounds) | {:.0} req/s | baseline of the next row |",
            mean(&off)
        ));
        rows.push(format!(
            "| create Pod, {CLIENTS} clients, namespace with a ResourceQuota (4 rounds, alternating) | {:.0} req/s | {:.2}× (target ≥ 0.8×) |",
            mean(&on),
            mean(&on) / mean(&off)
        ));
        let r = target.client.get(format!("{}/api/v1/namespaces/quota-on/resourcequotas/q", target.base))
            .bearer_auth(&target.token).send().await.unwrap();
        let quota: Value = r.json().await.unwrap();
        let r = target.client.get(format!("{}/api/v1/namespaces/quota-on/pods", target.base))
            .bearer_auth(&target.token).send().await.unwrap();
        let listed: Value = r.json().await.unwrap();
        let pods = listed["items"].as_array().unwrap().len();
        assert_eq!(quota["status"]["used"]["pods"], pods.to_string(), "the quota counts every pod");
    });
    let _ = server.kill();
    let _ = server.wait();
    println!("\n{}", rows.join("\n"));
}
