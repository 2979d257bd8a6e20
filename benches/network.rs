//! The pod network: setup time per pod, and TCP round trips between Wasm guests, beside a
//! plain loopback round trip between two host processes, all in one run. Needs root (it makes
//! network namespaces) and the guests (`scripts/guests.sh`).
//!
//! Run: `cargo bench --bench network` (about a minute after the build). Prints a Markdown
//! table for docs/benchmarks.md.
//!
//! 1. setup: `Network::attach` for a new pod (address, namespace, veth pair) and
//!    `detach`, 100 pods one after another, on a bridge of the benchmark's own;
//! 2. round trips of one line over TCP, 5000 per run, measured inside the client:
//!    - baseline: two host processes on 127.0.0.1 (this benchmark and a copy of itself, the
//!      same Rust code as the guest compiled for the host);
//!    - two Wasm containers of one pod over the pod's `localhost`;
//!    - two Wasm pods on one node, pod IP to pod IP through the bridge;
//! 3. connection setup (connect, one line each way, close), 2000 per round, between two Wasm
//!    pods, with 100 NetworkPolicies selecting the server (the one that allows the client
//!    last) beside the same without policies, in alternating rounds.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_api::cluster::Blocks;
use bosun_api::netpol::Policy;
use bosun_node::network::netpol::{NetworkPolicies, PodInfo};
use bosun_node::network::{Network, NetworkConfig, PodNetwork};
use bosun_node::runtime::wasmtime::{WasmtimeOptions, WasmtimeRuntime};
use bosun_node::runtime::{self, Artifact, Container, ContainerSpec, Runtime};
use bosun_testkit::percentile;

const SETUPS: usize = 100;
const CALLS: usize = 2000;
const POLICIES: usize = 100;
const ROUND_TRIPS: usize = 5000;
const BRIDGE: &str = "bnbench0";
const ECHO_ENV: &str = "BOSUN_BENCH_ECHO";

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn us(ns: u128) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

/// The echo server of the baseline, in the child process: answers each line with "pong …",
/// as the guest's `listen` does.
fn echo_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    let (stream, _) = listener.accept().unwrap();
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        (&stream)
            .write_all(format!("pong {line}").as_bytes())
            .unwrap();
        line.clear();
    }
}

/// p50 and p99 of `ROUND_TRIPS` round trips between this process and a copy of it.
fn host_round_trips() -> (u128, u128) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ECHO_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    let stream = TcpStream::connect(("127.0.0.1", port.trim().parse::<u16>().unwrap())).unwrap();
    let mut reader = BufReader::new(&stream);
    let mut answer = String::new();
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let start = Instant::now();
        (&stream).write_all(b"p\n").unwrap();
        answer.clear();
        reader.read_line(&mut answer).unwrap();
        times.push(start.elapsed());
    }
    drop(reader);
    drop(stream);
    let _ = child.wait();
    times.sort();
    (
        percentile(&times, 0.5).as_nanos(),
        percentile(&times, 0.99).as_nanos(),
    )
}

struct Guests {
    runtime: WasmtimeRuntime,
    wasm: Arc<[u8]>,
    dir: tempfile::TempDir,
}

impl Guests {
    fn start(&self, name: &str, args: &[&str], pod: &PodNetwork) -> Arc<dyn Container> {
        let mut argv = vec!["netcheck".to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        self.runtime
            .start(ContainerSpec {
                name: name.to_string(),
                artifact: Artifact::Wasm {
                    bytes: self.wasm.clone(),
                    digest: Some("sha256:netcheck".to_string()),
                },
                args: argv,
                env: Vec::new(),
                mounts: Vec::new(),
                log: self.dir.path().join(format!("{name}.log")),
                memory_limit: 64 << 20,
                cpu_limit_millis: None,
                network: Some(runtime::PodNetwork {
                    netns: pod.netns.clone(),
                    ip: pod.ip,
                    egress: false,
                    namespace: "default".to_string(),
                }),
                serving: Default::default(),
            })
            .unwrap()
    }

    /// The client's `rtt_ns p50=… p99=…` line, as (p50, p99).
    fn round_trips(&self, client: &str) -> (u128, u128) {
        self.read(client, "rtt_ns")
    }

    /// The client's `<prefix> p50=… p99=…` line, as (p50, p99).
    fn read(&self, client: &str, prefix: &str) -> (u128, u128) {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{client}.log"))).unwrap();
        let line = text
            .lines()
            .filter_map(bosun_node::logs::parse)
            .map(|e| e.content.to_string())
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in the log: {text}"));
        let field = |name: &str| -> u128 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap()
                .parse()
                .unwrap()
        };
        (field("p50="), field("p99="))
    }
}

#[tokio::main]
async fn main() {
    if std::env::var_os(ECHO_ENV).is_some() {
        echo_server();
        return;
    }
    let wasm: Arc<[u8]> = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/target/wasm32-wasip2/release/netcheck.wasm"
    ))
    .expect("the guests (scripts/guests.sh)")
    .into();
    let dir = tempfile::tempdir().unwrap();
    let blocks = Blocks {
        cluster_cidr: "10.199.0.0/16".parse().unwrap(),
        service_cidr: "10.198.0.0/16".parse().unwrap(),
    };
    let config = NetworkConfig {
        bridge: BRIDGE.to_string(),
        cluster_cidr: blocks.cluster_cidr,
        service_cidr: blocks.service_cidr,
        dir: dir.path().join("network"),
    };
    let network = Network::start(
        config,
        Ipv4Addr::LOCALHOST,
        "10.199.0.0/24".parse().unwrap(),
    )
    .expect("the pod network (run as root)");

    let mut attach = Vec::new();
    let mut detach = Vec::new();
    for i in 0..SETUPS {
        let uid = format!("bench-{}-{i}", std::process::id());
        let t = Instant::now();
        network.attach(&uid, false, &[]).await.unwrap();
        attach.push(t.elapsed());
        let t = Instant::now();
        network.detach(&uid).await;
        detach.push(t.elapsed());
    }
    attach.sort();
    detach.sort();

    let host = host_round_trips();
    let guests = Guests {
        runtime: WasmtimeRuntime::new(WasmtimeOptions {
            sockets: blocks,
            ..Default::default()
        })
        .unwrap(),
        wasm,
        dir: tempfile::tempdir().unwrap(),
    };
    let count = ROUND_TRIPS.to_string();
    let (a, b) = (
        network.attach("bench-a", false, &[]).await.unwrap(),
        network.attach("bench-b", false, &[]).await.unwrap(),
    );
    let server = guests.start("local-server", &["listen", "127.0.0.1:7000"], &a);
    let client = guests.start("local-client", &["ping", "127.0.0.1:7000", &count], &a);
    assert_eq!(client.wait().await.code, 0);
    server.kill();
    let local = guests.round_trips("local-client");
    let server = guests.start("pod-server", &["listen", "0.0.0.0:7001"], &b);
    let target = format!("{}:7001", b.ip);
    let client = guests.start("pod-client", &["ping", &target, &count], &a);
    assert_eq!(client.wait().await.code, 0);
    server.kill();
    let pods = guests.round_trips("pod-client");

    // Connection setup without policies, and with 100 selecting the server, the last of
    // which allows the client (every check reads them all).
    let (policies, _denials) = NetworkPolicies::new();
    let app = |name: &str| BTreeMap::from([("app".to_string(), name.to_string())]);
    let pod = |name: &str, labels| PodInfo {
        namespace: "default".into(),
        name: name.into(),
        uid: name.into(),
        labels,
        ports: Vec::new(),
    };
    policies.set(
        HashMap::from([
            (a.ip, pod("client", app(&format!("client-{}", POLICIES - 1)))),
            (b.ip, pod("server", app("server"))),
        ]),
        HashMap::new(),
        (0..POLICIES)
            .map(|n| {
                let object = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("p{n}"), "namespace": "default"},
                    "spec": {"podSelector": {"matchLabels": {"app": "server"}},
                             "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": format!("client-{n}")}}}],
                                          "ports": [{"port": 7002}]}]}
                }))
                .unwrap();
                Policy::compile(&object).unwrap()
            })
            .collect(),
    );
    let enforced = Guests {
        runtime: WasmtimeRuntime::new(WasmtimeOptions {
            sockets: blocks,
            policies: Some(Arc::new(policies)),
            ..Default::default()
        })
        .unwrap(),
        wasm: guests.wasm.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let server = guests.start("calls-server", &["listen", "0.0.0.0:7002"], &b);
    let target = format!("{}:7002", b.ip);
    let calls = CALLS.to_string();
    let (mut open, mut policed) = (Vec::new(), Vec::new());
    for round in 0..3 {
        for (set, out, kind) in [
            (&guests, &mut open, "open"),
            (&enforced, &mut policed, "policed"),
        ] {
            let name = format!("calls-{kind}-{round}");
            let client = set.start(&name, &["calls", &target, &calls], &a);
            assert_eq!(client.wait().await.code, 0);
            let log = std::fs::read_to_string(set.dir.path().join(format!("{name}.log"))).unwrap();
            assert!(log.contains(&format!("calls ok={CALLS} failed=0")), "{log}");
            out.push(set.read(&name, "call_ns"));
        }
    }
    server.kill();
    let median = |v: &mut Vec<(u128, u128)>, p99: bool| {
        let mut xs: Vec<u128> = v.iter().map(|(a, b)| if p99 { *b } else { *a }).collect();
        xs.sort();
        xs[xs.len() / 2]
    };
    let (open_p50, open_p99) = (median(&mut open, false), median(&mut open, true));
    let (policed_p50, policed_p99) = (median(&mut policed, false), median(&mut policed, true));
    network.detach("bench-a").await;
    network.detach("bench-b").await;
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();

    println!("| measure | p50 | p99 | p50 / baseline |");
    println!("|---|---|---|---|");
    println!(
        "| pod network setup: address, namespace, veth pair ({SETUPS} pods) | {} | {} | |",
        ms(percentile(&attach, 0.5)),
        ms(percentile(&attach, 0.99))
    );
    println!(
        "| pod network teardown ({SETUPS} pods) | {} | {} | |",
        ms(percentile(&detach, 0.5)),
        ms(percentile(&detach, 0.99))
    );
    println!(
        "| baseline: TCP round trip, two host processes on 127.0.0.1 ({ROUND_TRIPS}) | {} | {} | 1 |",
        us(host.0),
        us(host.1)
    );
    println!(
        "| TCP round trip, two Wasm containers of one pod over localhost ({ROUND_TRIPS}) | {} | {} | {:.2} |",
        us(local.0),
        us(local.1),
        local.0 as f64 / host.0 as f64
    );
    println!(
        "| TCP round trip, two Wasm pods on one node, pod IP to pod IP ({ROUND_TRIPS}) | {} | {} | {:.2} |",
        us(pods.0),
        us(pods.1),
        pods.0 as f64 / host.0 as f64
    );
    println!(
        "| connection setup (connect, a line each way, close), two Wasm pods, no NetworkPolicy ({CALLS}, median of 3 rounds) | {} | {} | baseline of the next row |",
        us(open_p50),
        us(open_p99)
    );
    println!(
        "| the same with {POLICIES} NetworkPolicies selecting the server | {} | {} | p99 {:.2}× (target ≤ 1.2×) |",
        us(policed_p50),
        us(policed_p99),
        policed_p99 as f64 / open_p99 as f64
    );
}
