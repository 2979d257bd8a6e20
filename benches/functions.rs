//! HTTP functions: the same component (examples/function-hello, a wasi:http handler built with
//! `bosun_sdk::function`) served by `wasmtime serve` 48.0.x and by a Bosun node, under the same
//! load, in one run.
//!
//! Run: `scripts/guests.sh && cargo bench --bench functions` (about five minutes; needs root,
//! `nft` and `taskset`). When `wasmtime` 48.0.x is not on the PATH (or in `~/.cargo/bin`), the
//! bench installs it first with `cargo install wasmtime-cli --version 48.0.8 --locked` (a
//! quarter of an hour). Prints Markdown tables for docs/benchmarks.md; the server's and node's
//! logs go to `$TMPDIR/bosun-bench-functions.log` and `$TMPDIR/bosun-bench-node-fn.log`.
//!
//! The load generator is this program run again as `functions load URL CONCURRENCY SECONDS`:
//! a closed loop of HTTP/1.1 keep-alive requests over CONCURRENCY connections (hyper), pinned
//! to core 0 with `taskset`, while the servers (`wasmtime serve -S cli`, `bosun server` and
//! `bosun node`) are pinned to core 1. It measures:
//! - `wasmtime serve` on loopback (the baseline);
//! - Bosun through the pod IP (host → bridge → veth → pod namespace);
//! - Bosun from inside the pod's namespace on its loopback (`ip netns exec`), so the veth's
//!   cost shows apart;
//! - Bosun through the Service's ClusterIP (the node proxy's nftables rules on top);
//! - the same component as a Function of one replica, through the node's gateway (by Host).
//!
//! each at concurrency 1, 16 and 64, `ROUNDS` times in turn, 5 s each (`BOSUN_BENCH_SECONDS`
//! changes it) after a second of warm-up, and reports requests/s, p50 and p99 (means over rounds) with ratios to
//! `wasmtime serve`. Then the memory of idle function containers: the node's resident set
//! before and after `IDLE` more replicas start, divided by `IDLE`, beside the resident set of a
//! whole idle `wasmtime serve` process.
//!
//! Last, cold starts (`BOSUN_BENCH_COLD_STARTS` times, default 200): a Function at zero (no
//! pod, no ready endpoint) gets one request through the node's function gateway, and the time
//! to the response's first byte is taken (activator, autoscaler, Deployment, scheduler, node,
//! EndpointSlice, release); beside it, the same component created as a plain pod and polled
//! until Ready. Then `HELD` requests at once to the Function at zero: how fast the activator
//! releases them once the replica is ready.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bosun_node::images::Layout;
use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const ROUNDS: usize = 3;
const CONCURRENCY: [usize; 3] = [1, 16, 64];
const IDLE: usize = 10;
/// Requests held at once by the activator in the last phase.
const HELD: usize = 500;
const BRIDGE: &str = "bfnbench";
const WASMTIME_VERSION: &str = "48.0.8";

/// One load run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("load") {
        let url = &args[2];
        let concurrency: usize = args[3].parse().expect("CONCURRENCY");
        let seconds: f64 = args[4].parse().expect("SECONDS");
        let host = args.get(5).cloned();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(load(
            url,
            concurrency,
            Duration::from_secs_f64(seconds),
            host,
        ));
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

/// The load generator: prints `rps=… p50_us=… p99_us=… errors=…`. Requests carry `Host:
/// host`, else the URL's authority.
async fn load(url: &str, concurrency: usize, duration: Duration, host: Option<String>) {
    let uri: hyper::Uri = url.parse().expect("a URL");
    let authority = uri.authority().expect("a host and port").clone();
    let address: SocketAddr = authority.as_str().parse().expect("an IP address and port");
    let warm = Instant::now() + Duration::from_secs(1);
    let end = warm + duration;
    let workers = (0..concurrency).map(|_| {
        let uri = uri.clone();
        let host = host.clone().unwrap_or_else(|| authority.to_string());
        tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            'connect: while Instant::now() < end {
                let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let io = hyper_util::rt::TokioIo::new(stream);
                let Ok((mut sender, connection)) =
                    hyper::client::conn::http1::handshake::<_, Empty<hyper::body::Bytes>>(io).await
                else {
                    errors += 1;
                    continue;
                };
                tokio::spawn(connection);
                while Instant::now() < end {
                    let request = hyper::Request::get(uri.clone())
                        .header(hyper::header::HOST, &host)
                        .body(Empty::new())
                        .unwrap();
                    let started = Instant::now();
                    let answered = match sender.send_request(request).await {
                        Ok(response) => {
                            let ok = response.status() == 200;
                            response.into_body().collect().await.is_ok() && ok
                        }
                        Err(_) => false,
                    };
                    if !answered {
                        errors += 1;
                        continue 'connect;
                    }
                    if started >= warm {
                        latencies.push(started.elapsed().as_micros() as u32);
                    }
                }
            }
            (latencies, errors)
        })
    });
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in futures::future::join_all(workers).await {
        let (mine, failed) = worker.unwrap();
        latencies.extend(mine);
        errors += failed;
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "rps={:.1} p50_us={} p99_us={} errors={errors}",
        latencies.len() as f64 / duration.as_secs_f64(),
        at(0.5),
        at(0.99)
    );
}

/// Where a load goes: its label in the tables, the network namespace it runs in (else the
/// host's), its URL, and the Host it names (else the URL's).
struct Target {
    label: &'static str,
    netns: Option<String>,
    url: String,
    host: Option<String>,
}

/// Runs the load generator on core 0, in the target's namespace if it has one.
fn run_load(target: &Target, concurrency: usize) -> Figures {
    let (netns, url) = (target.netns.as_deref(), target.url.as_str());
    let exe = std::env::current_exe().unwrap();
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "taskset", "-c", "0"]);
            c
        }
        None => {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]);
            c
        }
    };
    let out = command
        .arg(exe)
        .args(["load", url, &concurrency.to_string(), &seconds()])
        .args(target.host.iter())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "load {url}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |key: &str| -> f64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    Figures {
        rps: get("rps="),
        p50_us: get("p50_us="),
        p99_us: get("p99_us="),
        errors: get("errors="),
    }
}

/// How long each load runs, in seconds: `BOSUN_BENCH_SECONDS`, else 5.
fn seconds() -> String {
    std::env::var("BOSUN_BENCH_SECONDS").unwrap_or_else(|_| "5".to_string())
}

/// Pins every thread of `pid` (and those it starts later) to `cpu`.
fn pin(pid: u32, cpu: &str) {
    let status = Command::new("taskset")
        .args(["-a", "-c", "-p", cpu, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "taskset -p {pid}");
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// The `wasmtime` 48.0.x CLI, installed with cargo when missing.
fn wasmtime_cli() -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_string());
    let candidates = [
        "wasmtime".to_string(),
        format!("{home}/.cargo/bin/wasmtime"),
    ];
    let version = |cli: &str| {
        Command::new(cli)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    for cli in &candidates {
        if version(cli).is_some_and(|v| v.starts_with("wasmtime 48.0.")) {
            return cli.clone();
        }
    }
    eprintln!("installing wasmtime-cli {WASMTIME_VERSION} with cargo (about 15 minutes)");
    let status = Command::new("cargo")
        .args([
            "install",
            "wasmtime-cli",
            "--version",
            WASMTIME_VERSION,
            "--locked",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "cargo install wasmtime-cli failed");
    candidates[1].clone()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn bench() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let wasm_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/target/wasm32-wasip2/release/function_hello.wasm"
    );
    let wasm = std::fs::read(wasm_path).expect("build the guests first: scripts/guests.sh");
    let wasmtime = wasmtime_cli();

    // The baseline: `wasmtime serve` on loopback, on core 1.
    let serve_port = bosun_testkit::free_port();
    let mut serve = Command::new("taskset")
        .args(["-c", "1", &wasmtime, "serve", "-S", "cli", "--addr"])
        .arg(format!("127.0.0.1:{serve_port}"))
        .arg(wasm_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let serve_url = format!("http://127.0.0.1:{serve_port}/");
    common::until("wasmtime serve answers", async || {
        tokio::net::TcpStream::connect(("127.0.0.1", serve_port))
            .await
            .ok()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let serve_idle_kib = rss_kib(serve.id());

    // Bosun: server and node on core 1. A bridge left by an earlier run that was killed
    // would still hold its pods' veths and addresses.
    remove_bridge();
    let dir = tempfile::tempdir().unwrap();
    let registry = bosun_testkit::registry::Registry::start().await;
    let host = registry.host.clone();
    let blocks = [
        "--cluster-cidr",
        "10.241.0.0/17",
        "--service-cidr",
        "10.241.128.0/17",
    ];
    let mut server = common::server(dir.path(), &blocks, Some("bosun-bench-functions.log"));
    pin(server.id(), "1");
    let kubeconfig = common::kubeconfig(dir.path());
    let gateway_port = bosun_testkit::free_port().to_string();
    let node_args = [
        &["--insecure-registry", &host, "--bridge", BRIDGE][..],
        &blocks,
        &["--function-port", &gateway_port],
    ]
    .concat();
    let mut node = common::node(dir.path(), "fn", &node_args);
    pin(node.id(), "1");
    let client = common::client(&kubeconfig).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let image = format!("{host}/function-hello:v1");
    bosun_node::images::push(&image, wasm, Layout::ComponentV0, true, None)
        .await
        .unwrap();
    let cluster_ip = common::deploy_behind_service(
        &client,
        "hello",
        1,
        json!({
            "name": "hello", "image": image, "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
        }),
    )
    .await;
    let pod = common::until("the function is ready", async || {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(ready)
    })
    .await;
    let pod_ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let netns = format!("bosun-{}", pod.metadata.uid.as_deref().unwrap());
    let cluster_url = format!("http://{cluster_ip}:80/");
    common::until("the ClusterIP answers", async || {
        answers(&cluster_url, None).await
    })
    .await;

    // The same component as a Function of one replica, through the node's gateway.
    let functions: Api<bosun_api::function::Function> = Api::namespaced(client.clone(), "default");
    let warm: bosun_api::function::Function = serde_json::from_value(json!({
        "apiVersion": "serving.bosun.dev/v1", "kind": "Function",
        "metadata": {"name": "warm"},
        "spec": {"template": {"spec": {"containers": [{"name": "fn", "image": image}]}},
                 "scale": {"min": 1, "max": 1}},
    }))
    .unwrap();
    functions
        .create(&kube::api::PostParams::default(), &warm)
        .await
        .unwrap();
    let gateway_url = format!("http://127.0.0.1:{gateway_port}/");
    common::until("the Function answers through the gateway", async || {
        answers(&gateway_url, Some("warm.default.fn.local")).await
    })
    .await;

    let target = |label, netns: Option<&str>, url: String, host: Option<&str>| Target {
        label,
        netns: netns.map(str::to_string),
        url,
        host: host.map(str::to_string),
    };
    let targets = [
        target(
            "`wasmtime serve`, loopback (baseline)",
            None,
            serve_url,
            None,
        ),
        target(
            "Bosun, pod IP (veth)",
            None,
            format!("http://{pod_ip}:8080/"),
            None,
        ),
        target(
            "Bosun, pod's loopback (in its namespace)",
            Some(&netns),
            "http://127.0.0.1:8080/".to_string(),
            None,
        ),
        target("Bosun, ClusterIP (node proxy)", None, cluster_url, None),
        target(
            "Bosun, a Function through the node's gateway",
            None,
            gateway_url,
            Some("warm.default.fn.local"),
        ),
    ];
    let mut results = vec![vec![Vec::new(); CONCURRENCY.len()]; targets.len()];
    for round in 0..ROUNDS {
        for (c, concurrency) in CONCURRENCY.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                let figures = run_load(target, *concurrency);
                eprintln!(
                    "round {round} c={concurrency} {}: {figures:?}",
                    target.label
                );
                results[t][c].push(figures);
            }
        }
    }

    let mean = |runs: &[Figures], f: fn(&Figures) -> f64| {
        runs.iter().map(f).sum::<f64>() / runs.len() as f64
    };
    println!(
        "| concurrency | served by | requests/s | p50 | p99 | errors | requests/s ÷ baseline | p99 ÷ baseline |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (c, concurrency) in CONCURRENCY.iter().enumerate() {
        let base = &results[0][c];
        for (t, Target { label, .. }) in targets.iter().enumerate() {
            let runs = &results[t][c];
            let rps = mean(runs, |f| f.rps);
            let p99 = mean(runs, |f| f.p99_us);
            println!(
                "| {concurrency} | {label} | {rps:.0} | {:.3} ms | {:.3} ms | {:.0} | {:.2} | {:.2} |",
                mean(runs, |f| f.p50_us) / 1e3,
                p99 / 1e3,
                mean(runs, |f| f.errors),
                rps / mean(base, |f| f.rps),
                p99 / mean(base, |f| f.p99_us),
            );
        }
    }

    println!();
    for (c, concurrency) in CONCURRENCY.iter().enumerate() {
        let rps = |t: usize| mean(&results[t][c], |f| f.rps);
        println!(
            "- concurrency {concurrency}: requests/s through the gateway ÷ straight to the pod IP = {:.2}",
            rps(4) / rps(1)
        );
    }

    // Idle memory: the node's resident set before and after IDLE more replicas.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(node.id());
    deployments
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1 + IDLE}})),
        )
        .await
        .unwrap();
    common::until("the idle replicas are ready", async || {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let function = |p: &&Pod| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(bosun_api::function::FUNCTION_LABEL))
        };
        let replicas = list.items.iter().filter(|p| ready(p) && !function(p));
        (replicas.count() == 1 + IDLE).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(node.id());
    println!();
    println!("| idle memory | resident KiB |");
    println!("|---|---|");
    println!(
        "| one more idle function container in a Bosun node (node's growth over {IDLE} replicas ÷ {IDLE}) | {} |",
        after.saturating_sub(before) / IDLE as u64
    );
    println!("| a whole idle `wasmtime serve` process (baseline) | {serve_idle_kib} |");

    cold_starts(&client, &image, &gateway_port).await;

    let uids: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let _ = serve.kill();
    let _ = serve.wait();
    stop(&mut node);
    stop(&mut server);
    drop(registry);
    // The killed node leaves its pods' namespaces and its bridge behind.
    for uid in uids {
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("bosun-{uid}")])
            .status();
    }
    remove_bridge();
}

/// Whether a GET of `url` (with `Host: host` if given) succeeds.
async fn answers(url: &str, host: Option<&str>) -> Option<()> {
    let mut request = reqwest::Client::new().get(url);
    if let Some(host) = host {
        request = request.header("Host", host);
    }
    let response = request.send().await.ok()?;
    response.status().is_success().then_some(())
}

fn remove_bridge() {
    let _ = Command::new("ip")
        .args(["link", "del", BRIDGE])
        .stderr(Stdio::null())
        .status();
}

/// Cold starts: a Function at zero gets one request through the node's gateway, `COLD` times
/// (`BOSUN_BENCH_COLD_STARTS`, default 200); the time to the response's first byte, beside a
/// pod of the same component created and watched to Ready, in the same run.
async fn cold_starts(client: &kube::Client, image: &str, gateway_port: &str) {
    use bosun_api::function::Function;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{DeleteParams, PostParams};
    let count: usize = std::env::var("BOSUN_BENCH_COLD_STARTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let functions: Api<Function> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    // No readiness probe: a function container is ready once its listener is bound. Scale to
    // zero is done by the bench (the autoscaler would wait an hour).
    let function: Function = serde_json::from_value(json!({
        "apiVersion": "serving.bosun.dev/v1", "kind": "Function",
        "metadata": {"name": "cold"},
        "spec": {
            "template": {"spec": {"terminationGracePeriodSeconds": 0,
                                  "containers": [{"name": "fn", "image": image}]}},
            "scale": {"max": 1, "scaleToZeroAfter": "1h"},
        },
    }))
    .unwrap();
    functions
        .create(&PostParams::default(), &function)
        .await
        .unwrap();
    common::until("the Function's Deployment", async || {
        deployments.get_opt("cold").await.ok()?
    })
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let gateway = format!("http://127.0.0.1:{gateway_port}/");
    let mut first_bytes = Vec::new();
    // At zero: no pod, no ready endpoint anywhere.
    let to_zero = async || {
        deployments
            .patch(
                "cold",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 0}})),
            )
            .await
            .unwrap();
        common::until("the Function is at zero", async || {
            let running = pods
                .list(&ListParams::default().labels("serving.bosun.dev/function=cold"))
                .await
                .ok()?
                .items
                .len();
            let ready = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=cold"))
                .await
                .ok()?
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count();
            (running == 0 && ready == 0).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for _ in 0..count {
        to_zero().await;
        let started = Instant::now();
        let response = http
            .get(&gateway)
            .header("Host", "cold.default.fn.local")
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        first_bytes.push(took);
    }
    // The activator's own cost: HELD requests at once to the Function at zero; how fast the
    // node releases them once the replica is ready (first answer to last).
    to_zero().await;
    let started = Instant::now();
    let answers = futures::future::join_all((0..HELD).map(|_| {
        let request = http.get(&gateway).header("Host", "cold.default.fn.local");
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            response.bytes().await.unwrap();
            (status, started.elapsed())
        }
    }))
    .await;
    let failed = answers.iter().filter(|(status, _)| *status != 200).count();
    let first = answers.iter().map(|(_, at)| *at).min().unwrap();
    let last = answers.iter().map(|(_, at)| *at).max().unwrap();
    // The baseline: a pod of the same component, created and watched until it is Ready.
    let mut pod_starts = Vec::new();
    for i in 0..count {
        let name = format!("plain-{i}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "fn", "image": image}]},
        }))
        .unwrap();
        let started = Instant::now();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        common::until("the pod is ready", async || {
            ready(&pods.get(&name).await.ok()?).then_some(())
        })
        .await;
        pod_starts.push(started.elapsed());
        pods.delete(&name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }
    first_bytes.sort();
    pod_starts.sort();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let p = |v: &[Duration], q: f64| bosun_testkit::percentile(v, q);
    println!();
    println!("| cold start ({count} times) | p50 | p99 | p50 ÷ baseline |");
    println!("|---|---|---|---|");
    println!(
        "| Function at zero: request → first byte, through the gateway | {} | {} | {:.2} |",
        ms(p(&first_bytes, 0.5)),
        ms(p(&first_bytes, 0.99)),
        p(&first_bytes, 0.5).as_secs_f64() / p(&pod_starts, 0.5).as_secs_f64()
    );
    println!(
        "| a pod of the same component: create → Ready (baseline, polled every 20 ms) | {} | {} | 1.00 |",
        ms(p(&pod_starts, 0.5)),
        ms(p(&pod_starts, 0.99))
    );
    println!();
    println!(
        "{HELD} requests at once to the Function at zero: first answered after {}, last after {}, {failed} failed; released at {:.0} requests/s (first to last)",
        ms(first),
        ms(last),
        (HELD - 1) as f64 / (last - first).as_secs_f64()
    );
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
