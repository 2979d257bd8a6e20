//! Pod networking end to end, with real network namespaces (the suite runs as root): a real
//! `bosun server` and `bosun node`, a real registry, and the `netcheck` guest
//! (guests/netcheck, built by scripts/guests.sh) talking TCP over wasi:sockets.
//!
//! Traffic goes only over loopback and namespaces these tests make themselves. Every cluster
//! has a pod block of its own (`--cluster-cidr`), and every node a bridge of its own.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::cluster::{
    finished, netcheck, netcheck_cluster, node_logs, own_block, own_blocks, phase, wait_for,
};
use crate::support::{Node, Registry, Server};
use bosun_node::images::Layout;
use k8s_openapi::api::core::v1::{Namespace, Node as NodeObject, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

/// A number of this test's own, for blocks and names that must not collide.
fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 40) * 4 + NEXT.fetch_add(1, Ordering::Relaxed)
}

fn netcheck_pod(name: &str, image: &str, containers: &[(&str, &[&str])], extra: Value) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(name, args)| json!({"name": name, "image": image, "args": args}))
        .collect();
    let mut pod = json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": containers},
    });
    crate::support::cluster::merge(&mut pod, extra);
    pod
}

fn status_of<'a>(pod: &'a Value, container: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .unwrap_or(&Value::Null)
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap().to_string()
}

fn pod_ip(pod: &Value) -> String {
    pod["status"]["podIP"].as_str().unwrap_or("").to_string()
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_exists(uid: &str) -> bool {
    std::path::Path::new(&format!("/run/netns/bosun-{uid}")).exists()
}

/// The interfaces on a node's bridge (in `host`, or in this namespace).
fn bridge_ports(bridge: &str, host: Option<&str>) -> usize {
    let mut args = vec![];
    if let Some(host) = host {
        args.extend(["-n", host]);
    }
    args.extend(["-o", "link", "show", "master", bridge]);
    run("ip", &args).lines().count()
}

async fn eventually(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_containers_of_a_pod_share_localhost_and_the_pods_namespace() {
    let (c, image, block) = netcheck_cluster("net-pair").await;
    let name = c
        .create(netcheck_pod(
            "pair",
            &image,
            &[
                ("server", &["listen", "127.0.0.1:18731"]),
                ("client", &["connect", "127.0.0.1:18731", "hi"]),
            ],
            json!({}),
        ))
        .await;
    let p = c
        .wait(&name, "had its client finish", |p| {
            status_of(p, "client")["state"]["terminated"].is_object()
        })
        .await;
    let uid = uid(&p);
    assert_eq!(
        status_of(&p, "client")["state"]["terminated"]["exitCode"],
        0,
        "client log: {}",
        node_logs(&c.node, &uid, "client")
    );
    assert!(node_logs(&c.node, &uid, "client").contains("answer: pong hi"));
    assert!(node_logs(&c.node, &uid, "server").contains("listening on 127.0.0.1:18731"));

    // The pod has an address of the node's block, and the listener lives in its namespace.
    let ip: std::net::Ipv4Addr = pod_ip(&p).parse().unwrap();
    let block: bosun_api::cidr::Ipv4Cidr = block.parse().unwrap();
    assert!(block.contains(ip), "{ip} is not in {block}");
    assert_ne!(p["status"]["podIP"], p["status"]["hostIP"]);
    let inside = run(
        "ip",
        &["netns", "exec", &format!("bosun-{uid}"), "ss", "-ltn"],
    );
    assert!(inside.contains("127.0.0.1:18731"), "{inside}");
    assert!(!run("ss", &["-ltn"]).contains("127.0.0.1:18731"));
    let eth0 = run(
        "ip",
        &[
            "-n",
            &format!("bosun-{uid}"),
            "-o",
            "-4",
            "addr",
            "show",
            "dev",
            "eth0",
        ],
    );
    assert!(eth0.contains(&format!("inet {ip}/24")), "{eth0}");

    // Deleting the pod removes its namespace, its veth and its address.
    c.pods
        .delete(&name, &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    eventually("the pod's namespace is gone", || !netns_exists(&uid)).await;
    eventually("its address is free", || {
        c.node.address_records().is_empty()
    })
    .await;
    assert_eq!(bridge_ports(&c.node.bridge, None), 0);
}

#[tokio::test]
async fn pods_reach_each_other_by_ip_also_from_another_namespace() {
    let (c, image, _) = netcheck_cluster("net-pods").await;
    let b = c
        .create(netcheck_pod(
            "b",
            &image,
            &[("main", &["listen", "0.0.0.0:8080"])],
            json!({}),
        ))
        .await;
    let pb = c
        .wait(&b, "listened", |p| {
            status_of(p, "main")["state"]["running"].is_object() && !pod_ip(p).is_empty()
        })
        .await;
    let target = format!("{}:8080", pod_ip(&pb));

    let a = c
        .create(netcheck_pod(
            "a",
            &image,
            &[("main", &["connect", &target, "from-a"])],
            json!({}),
        ))
        .await;
    let pa = c.wait(&a, "finished", finished).await;
    let log_a = node_logs(&c.node, &uid(&pa), "main");
    assert_eq!(phase(&pa), "Succeeded", "{log_a}");
    assert!(log_a.contains("answer: pong from-a"), "{log_a}");
    assert_ne!(pod_ip(&pa), pod_ip(&pb));

    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
        )
        .await
        .unwrap();
    let other: Api<Pod> = Api::namespaced(c.client.clone(), "other");
    let pod: Pod = serde_json::from_value(netcheck_pod(
        "c",
        &image,
        &[("main", &["connect", &target, "from-c"])],
        json!({}),
    ))
    .unwrap();
    other.create(&PostParams::default(), &pod).await.unwrap();
    let pc = wait_for(&other, "c", "finished", finished).await;
    let log_c = node_logs(&c.node, &uid(&pc), "main");
    assert!(log_c.contains("answer: pong from-c"), "{log_c}");

    // The listener saw both by their own addresses.
    let log_b = node_logs(&c.node, &uid(&pb), "main");
    assert!(log_b.contains(&format!("from {}:", pod_ip(&pa))), "{log_b}");
    assert!(log_b.contains(&format!("from {}:", pod_ip(&pc))), "{log_b}");
}

#[tokio::test]
async fn a_killed_agent_finds_its_pods_networks_again_and_removes_the_gone_ones() {
    let (mut c, image, _) = netcheck_cluster("net-restart").await;
    let keep = c
        .create(netcheck_pod(
            "keep",
            &image,
            &[("main", &["listen", "0.0.0.0:8080"])],
            json!({"spec": {"restartPolicy": "Always"}}),
        ))
        .await;
    let gone = c
        .create(netcheck_pod(
            "gone",
            &image,
            &[("main", &["listen", "0.0.0.0:8080"])],
            json!({}),
        ))
        .await;
    let running = |p: &Value| status_of(p, "main")["state"]["running"].is_object();
    let before = c.wait(&keep, "ran", running).await;
    let gone_pod = c.wait(&gone, "ran", running).await;
    let (keep_uid, gone_uid) = (uid(&before), uid(&gone_pod));
    assert_eq!(c.node.address_records().len(), 2);

    // kill -9; a pod is deleted for good while the agent is away.
    c.node.kill();
    c.pods
        .delete(&gone, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    c.node_restart_with(&[]);

    let after = c
        .wait(&keep, "restarted by the new agent", |p| {
            status_of(p, "main")["restartCount"] == 1 && running(p)
        })
        .await;
    assert_eq!(pod_ip(&after), pod_ip(&before), "the same address");
    eventually("the gone pod's namespace is removed", || {
        !netns_exists(&gone_uid)
    })
    .await;
    assert!(netns_exists(&keep_uid), "the live pod keeps its namespace");
    let records = c.node.address_records();
    assert_eq!(records, vec![(pod_ip(&before), keep_uid.clone())]);
    assert_eq!(
        bridge_ports(&c.node.bridge, None),
        1,
        "one veth, no leftovers"
    );

    // The restarted listener answers on the same address.
    let client = c
        .create(netcheck_pod(
            "client",
            &image,
            &[(
                "main",
                &["connect", &format!("{}:8080", pod_ip(&after)), "again"],
            )],
            json!({}),
        ))
        .await;
    let p = c.wait(&client, "finished", finished).await;
    let log = node_logs(&c.node, &uid(&p), "main");
    assert!(log.contains("answer: pong again"), "{log}");
}

/// A network namespace of the test's own, joined to this one by a veth: `198.18.N.1` inside,
/// `198.18.N.254` here (198.18.0.0/15 is set aside for tests like these, RFC 2544); removed
/// when dropped. Like a network outside the cluster, it has no route to the pods' addresses.
struct Outside {
    name: String,
    ip: String,
    /// The node's address on the link.
    node_side: String,
}

impl Outside {
    fn new() -> Self {
        let n = unique() % 250;
        let name = format!("bosun-test-out{n}");
        let (inner, outer) = (format!("bto{n}i"), format!("bto{n}o"));
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let _ = Command::new("ip").args(["link", "del", &outer]).status();
        run("ip", &["netns", "add", &name]);
        run(
            "ip",
            &[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &name,
            ],
        );
        run(
            "ip",
            &["addr", "add", &format!("198.18.{n}.254/24"), "dev", &outer],
        );
        run("ip", &["link", "set", &outer, "up"]);
        for cmd in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &format!("198.18.{n}.1/24"), "dev", &inner],
            vec!["link", "set", &inner, "up"],
        ] {
            let mut args = vec!["-n", name.as_str()];
            args.extend(cmd);
            run("ip", &args);
        }
        Self {
            name,
            ip: format!("198.18.{n}.1"),
            node_side: format!("198.18.{n}.254"),
        }
    }

    /// A TCP listener inside that answers each line and prints where each connection came
    /// from; killed when dropped (so a failing test does not leave it behind).
    fn listen(&self, port: u16) -> KillOnDrop {
        let script = format!(
            "import socket, sys\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{ip}', {port})); s.listen(); print('ready', flush=True)\n\
             while True:\n\
             \x20   c, addr = s.accept(); print('from', addr[0], flush=True)\n\
             \x20   line = c.makefile().readline(); c.sendall(b'pong ' + line.encode()); c.close()\n",
            ip = self.ip
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        let mut out = BufReader::new(child.stdout.as_mut().unwrap());
        out.read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready");
        KillOnDrop(child)
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test]
async fn guests_reach_outside_the_cluster_only_when_the_pod_allows_egress() {
    let (c, image, block) = netcheck_cluster("net-policy").await;
    let outside = Outside::new();
    let mut listener = outside.listen(9000);
    let target = format!("{}:9000", outside.ip);

    let closed = c
        .create(netcheck_pod(
            "closed",
            &image,
            &[("main", &["connect", &target, "closed"])],
            json!({}),
        ))
        .await;
    let p = c.wait(&closed, "finished", finished).await;
    let log = node_logs(&c.node, &uid(&p), "main");
    assert_eq!(phase(&p), "Failed", "{log}");
    assert!(log.contains("PermissionDenied"), "{log}");

    // Binding an address that is not the pod's own is refused by the policy too (not by the
    // kernel, which would say the address is not available).
    let foreign = block.replace(".0.0/16", ".0.250:80");
    let bind = c
        .create(netcheck_pod(
            "bind",
            &image,
            &[("main", &["bind", &foreign])],
            json!({}),
        ))
        .await;
    let p = c.wait(&bind, "finished", finished).await;
    let log = node_logs(&c.node, &uid(&p), "main");
    assert_eq!(phase(&p), "Failed", "{log}");
    assert!(log.contains("PermissionDenied"), "{log}");

    let open = c
        .create(netcheck_pod(
            "open",
            &image,
            &[("main", &["connect", &target, "open"])],
            json!({"metadata": {"annotations": {"bosun.dev/egress": "allow"}}}),
        ))
        .await;
    let p = c.wait(&open, "finished", finished).await;
    let log = node_logs(&c.node, &uid(&p), "main");
    assert!(log.contains("answer: pong open"), "{log}");

    // The listener saw exactly one connection: the allowed pod's, masqueraded as the node (the
    // outside has no route to the pod's own address, so without it no answer would come).
    let _ = listener.0.kill();
    let mut seen = String::new();
    let mut out = BufReader::new(listener.0.stdout.take().unwrap());
    while out.read_line(&mut seen).unwrap_or(0) > 0 {}
    let _ = listener.0.wait();
    assert_eq!(seen.trim(), format!("from {}", outside.node_side), "{seen}");
    assert!(!pod_ip(&p).is_empty());
}

#[tokio::test]
async fn without_network_privileges_pods_share_the_nodes_network_and_the_node_says_so() {
    let block = own_block();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--cluster-cidr",
        &block,
    ])
    .await;
    let registry = Registry::start().await;
    let image = registry
        .push("netcheck:v1", netcheck(), Layout::ComponentV0)
        .await;
    let node = Node::start_under(
        server.kubeconfig.clone(),
        "net-unprivileged",
        &registry.host,
        "127.0.0.1",
        &[
            "setpriv",
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
        ],
        &["--cluster-cidr", &block],
    );
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(netcheck_pod(
        "shared",
        &image,
        &[("main", &["bind", "127.0.0.1:0"])],
        json!({}),
    ))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_for(&pods, "shared", "finished", finished).await;
    let log = node_logs(&node, &uid(&p), "main");
    assert_eq!(phase(&p), "Succeeded", "{log}");
    assert!(log.contains("bound 127.0.0.1:"), "{log}");
    assert_eq!(pod_ip(&p), "127.0.0.1", "the node's address");
    assert!(node.address_records().is_empty());

    let nodes: Api<NodeObject> = Api::all(client.clone());
    let n = serde_json::to_value(nodes.get("net-unprivileged").await.unwrap()).unwrap();
    let condition = n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "bosun.dev/PodNetworkUnavailable")
        .cloned()
        .unwrap_or_else(|| panic!("no pod network condition: {:#}", n["status"]));
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "HostNetworkFallback");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("Operation not permitted"),
        "{condition}"
    );
    let ready = n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "the node is still Ready");

    let events = server
        .kubectl(&["get", "events", "-A", "-o", "json"])
        .unwrap();
    assert!(events.contains("HostNetworkFallback"), "{events}");
    drop(node);
}

/// Two "hosts" (network namespaces joined by a bridge here, `198.19.N.0/24`), each running a
/// node agent; the server and the registry listen where both can reach them.
struct TwoHosts {
    lan: String,
    hosts: [String; 2],
    gateway: String,
    ips: [String; 2],
}

impl TwoHosts {
    fn new() -> Self {
        let n = unique() % 250;
        let lan = format!("btlan{n}");
        let gateway = format!("198.19.{n}.254");
        let _ = Command::new("ip").args(["link", "del", &lan]).status();
        run("ip", &["link", "add", &lan, "type", "bridge"]);
        run(
            "ip",
            &["addr", "add", &format!("{gateway}/24"), "dev", &lan],
        );
        run("ip", &["link", "set", &lan, "up"]);
        let mut hosts = [String::new(), String::new()];
        let mut ips = [String::new(), String::new()];
        for i in 0..2 {
            let host = format!("bosun-test-host{n}-{i}");
            let ip = format!("198.19.{n}.{}", i + 1);
            let outer = format!("bth{n}x{i}");
            let _ = Command::new("ip").args(["netns", "del", &host]).status();
            run("ip", &["netns", "add", &host]);
            run(
                "ip",
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", "lan0", "netns", &host,
                ],
            );
            run("ip", &["link", "set", &outer, "master", &lan, "up"]);
            for cmd in [
                vec!["link", "set", "lo", "up"],
                vec!["addr", "add", &format!("{ip}/24"), "dev", "lan0"],
                vec!["link", "set", "lan0", "up"],
            ] {
                let mut args = vec!["-n", host.as_str()];
                args.extend(cmd);
                run("ip", &args);
            }
            hosts[i] = host;
            ips[i] = ip;
        }
        Self {
            lan,
            hosts,
            gateway,
            ips,
        }
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", host]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.lan]).status();
    }
}

/// A cluster over [`TwoHosts`]: the server and the registry (with netcheck) listen where both
/// hosts reach them, and each host runs a node agent (`host0`, `host1`). `flags` go to the
/// server and the nodes alike.
struct LanCluster {
    nodes: Vec<Node>,
    _server: Server,
    image: String,
    pods: Api<Pod>,
    client: kube::Client,
    _registry: Registry,
    _data: tempfile::TempDir,
}

async fn lan_cluster(lan: &TwoHosts, flags: &[&str]) -> LanCluster {
    let data = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--data-dir",
        data.path().to_str().unwrap(),
        "--bind-address",
        "0.0.0.0",
        "--tls-san",
        &lan.gateway,
    ];
    args.extend(flags);
    let server = Server::start(&args).await;
    // The agents reach the server and the registry over the hosts' network.
    let port = server.addr.rsplit_once(':').unwrap().1.to_string();
    let kubeconfig = data.path().join("lan.kubeconfig");
    let text = std::fs::read_to_string(&server.kubeconfig).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.split_once("server: ") {
            Some((indent, _)) => format!("{indent}server: https://{}:{port}\n", lan.gateway),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&kubeconfig, text).unwrap();
    let registry = Registry::start_on(&lan.gateway).await;
    let image = registry
        .push("netcheck:v1", netcheck(), Layout::ComponentV0)
        .await;
    let nodes: Vec<Node> = (0..2)
        .map(|i| {
            Node::start_under(
                kubeconfig.clone(),
                &format!("host{i}"),
                &registry.host,
                &lan.ips[i],
                &["ip", "netns", "exec", &lan.hosts[i]],
                flags,
            )
        })
        .collect();
    let client = server.client().await;
    LanCluster {
        nodes,
        _server: server,
        image,
        pods: Api::namespaced(client.clone(), "default"),
        client,
        _registry: registry,
        _data: data,
    }
}

#[tokio::test]
async fn a_pod_reaches_a_pod_on_another_node_through_the_routes_between_nodes() {
    let lan = TwoHosts::new();
    let block = own_block();
    let cluster = lan_cluster(&lan, &["--cluster-cidr", &block]).await;
    let (nodes, pods, image) = (&cluster.nodes, &cluster.pods, &cluster.image);
    let server_pod: Pod = serde_json::from_value(netcheck_pod(
        "far",
        image,
        &[("main", &["listen", "0.0.0.0:8080"])],
        json!({"spec": {"nodeName": "host1"}}),
    ))
    .unwrap();
    pods.create(&PostParams::default(), &server_pod)
        .await
        .unwrap();
    let far = wait_for(pods, "far", "listened", |p| {
        status_of(p, "main")["state"]["running"].is_object() && !pod_ip(p).is_empty()
    })
    .await;
    let target = format!("{}:8080", pod_ip(&far));
    let client_pod: Pod = serde_json::from_value(netcheck_pod(
        "near",
        image,
        &[("main", &["connect", &target, "across"])],
        json!({"spec": {"nodeName": "host0"}}),
    ))
    .unwrap();
    pods.create(&PostParams::default(), &client_pod)
        .await
        .unwrap();
    let near = wait_for(pods, "near", "finished", finished).await;
    let log = node_logs(&nodes[0], &uid(&near), "main");
    assert!(log.contains("answer: pong across"), "{log}");
    // Different blocks, and each host routes the other's block via the other's address.
    let (near_ip, far_ip) = (pod_ip(&near), pod_ip(&far));
    assert_ne!(
        near_ip.rsplit_once('.').unwrap().0,
        far_ip.rsplit_once('.').unwrap().0
    );
    let routes = run("ip", &["-n", &lan.hosts[0], "route", "show", "proto", "98"]);
    assert!(routes.contains(&format!("via {}", lan.ips[1])), "{routes}");
    assert_eq!(bridge_ports(&nodes[0].bridge, Some(&lan.hosts[0])), 1);
    drop(cluster);
}

/// A Service whose only endpoint is on the other node: a pod reaches it by name, and its node
/// port answers from either host's own network namespace, on that host's address.
#[tokio::test]
async fn services_reach_endpoints_on_other_nodes_and_node_ports_answer_on_every_node() {
    let lan = TwoHosts::new();
    let (pod_block, service_block) = own_blocks();
    let cluster = lan_cluster(
        &lan,
        &[
            "--cluster-cidr",
            &pod_block,
            "--service-cidr",
            &service_block,
        ],
    )
    .await;
    let far: Pod = serde_json::from_value(netcheck_pod(
        "far",
        &cluster.image,
        &[("main", &["listen", "0.0.0.0:8080"])],
        json!({
            "metadata": {"labels": {"app": "far"}},
            "spec": {"nodeName": "host1", "containers": [{
                "name": "main",
                "image": cluster.image,
                "args": ["listen", "0.0.0.0:8080"],
                "env": [{"name": "POD_NAME", "value": "far"}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }]},
        }),
    ))
    .unwrap();
    cluster
        .pods
        .create(&PostParams::default(), &far)
        .await
        .unwrap();
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(cluster.client.clone(), "default");
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "far"},
        "spec": {"type": "NodePort", "selector": {"app": "far"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let node_port = service.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    let far = wait_for(&cluster.pods, "far", "ready", |p| {
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    })
    .await;
    // Host0's proxy knows the endpoint on host1 before the client starts.
    let far_ip = pod_ip(&far);
    let table = format!("{}-proxy", cluster.nodes[0].bridge);
    eventually("host0's rules naming the endpoint on host1", || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lan.hosts[0],
                "nft",
                "list",
                "table",
                "ip",
                &table,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{far_ip}:8080"))
    })
    .await;
    let near: Pod = serde_json::from_value(netcheck_pod(
        "near",
        &cluster.image,
        &[("main", &["connect", "far:80", "across"])],
        json!({"spec": {"nodeName": "host0"}}),
    ))
    .unwrap();
    cluster
        .pods
        .create(&PostParams::default(), &near)
        .await
        .unwrap();
    let near = wait_for(&cluster.pods, "near", "finished", finished).await;
    let log = node_logs(&cluster.nodes[0], &uid(&near), "main");
    assert!(log.contains("answer: pong across from far"), "{log}");
    // From each host itself, on its own address: host0 has no endpoint and forwards.
    for (host, ip) in lan.hosts.iter().zip(&lan.ips) {
        let script = format!("exec 3<>/dev/tcp/{ip}/{node_port}; echo hello >&3; head -n1 <&3");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", host, "timeout", "5", "bash", "-c", &script])
                .output()
                .unwrap();
            let answer = String::from_utf8_lossy(&out.stdout);
            if answer.contains("pong hello from far") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{host} {ip}:{node_port}: {answer} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(cluster);
}

#[tokio::test]
async fn host_ports_are_forwarded_from_the_node_and_host_network_pods_use_the_nodes() {
    let (c, image, _) = netcheck_cluster("net-ports").await;
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = c
        .create(netcheck_pod(
            "web",
            &image,
            &[("main", &["listen", "0.0.0.0:8080"])],
            json!({"spec": {"containers": [{"name": "main", "image": image,
                "args": ["listen", "0.0.0.0:8080"],
                "ports": [{"containerPort": 8080, "hostPort": host_port}]}]}}),
        ))
        .await;
    let p = c
        .wait(&name, "listened", |p| {
            status_of(p, "main")["state"]["running"].is_object()
        })
        .await;
    // From this (the node's) namespace, through the node's port, to the pod's.
    let answer = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = (|| -> std::io::Result<String> {
                let stream = std::net::TcpStream::connect(("127.0.0.1", host_port))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                (&stream).write_all(b"through the node\n")?;
                let mut answer = String::new();
                BufReader::new(&stream).read_line(&mut answer)?;
                Ok(answer)
            })();
            match attempt {
                Ok(answer) if !answer.is_empty() => return answer,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                other => panic!("no answer through hostPort {host_port}: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(answer.trim(), "pong through the node");
    let log = node_logs(&c.node, &uid(&p), "main");
    assert!(
        log.contains("from 10."),
        "the node's forwarder connected to the pod IP: {log}"
    );
    c.pods
        .delete(&name, &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    eventually("the node's port is free again", || {
        std::net::TcpListener::bind(("0.0.0.0", host_port)).is_ok()
    })
    .await;

    // A UDP hostPort: datagrams to the node's port reach the pod, and its answers come back.
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = c
        .create(netcheck_pod(
            "echo",
            &image,
            &[("main", &["udp-echo", "0.0.0.0:5353"])],
            json!({"spec": {"containers": [{"name": "main", "image": image,
                "args": ["udp-echo", "0.0.0.0:5353"],
                "ports": [{"containerPort": 5353, "hostPort": udp_port, "protocol": "UDP"}]}]}}),
        ))
        .await;
    c.wait(&name, "echoing", |p| {
        status_of(p, "main")["state"]["running"].is_object()
    })
    .await;
    let answer = tokio::task::spawn_blocking(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(("127.0.0.1", udp_port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 1500];
        loop {
            // A datagram sent before the guest listens is lost: send again until answered.
            let _ = socket.send(b"over udp");
            match socket.recv(&mut buf) {
                Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(_) if Instant::now() < deadline => {}
                Err(e) => panic!("no answer through UDP hostPort {udp_port}: {e}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(answer.starts_with("pong over udp"), "{answer}");
    c.pods
        .delete(&name, &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    eventually("the node's UDP port is free again", || {
        std::net::UdpSocket::bind(("0.0.0.0", udp_port)).is_ok()
    })
    .await;

    let host = c
        .create(netcheck_pod(
            "on-the-node",
            &image,
            &[("main", &["bind", "127.0.0.1:0"])],
            json!({"spec": {"hostNetwork": true}}),
        ))
        .await;
    let p = c.wait(&host, "finished", finished).await;
    assert_eq!(phase(&p), "Succeeded");
    assert_eq!(p["status"]["podIP"], p["status"]["hostIP"]);
    assert!(!netns_exists(&uid(&p)));
}

/// NetworkPolicies through the real kubectl: applied, listed with their pod selector,
/// described, and refused with field paths when a block or a port is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_are_served_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::without_nodes(dir.path()).await;
    let apply = |name: &str, yaml: &str| server.apply_yaml(dir.path(), name, yaml);
    apply(
        "db",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: db\nspec:\n  podSelector:\n    matchLabels: {app: db}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: web}}\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n    ports:\n    - port: 5432\n  egress:\n  - to:\n    - namespaceSelector: {}\n",
    )
    .unwrap();
    let listed = server.kubectl(&["get", "netpol"]).unwrap();
    let row: Vec<&str> = listed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["db", "app=db"], "{listed}");
    let stored: Value = serde_json::from_str(
        &server
            .kubectl(&["get", "networkpolicy", "db", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(stored["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
    let described = server
        .kubectl(&["describe", "networkpolicy", "db"])
        .unwrap();
    assert!(described.contains("PodSelector:     app=db"), "{described}");
    assert!(described.contains("10.1.0.0/16"), "{described}");

    let said = apply(
        "bad",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: bad\nspec:\n  podSelector: {}\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/40}\n    ports:\n    - {port: 90, endPort: 80}\n",
    )
    .unwrap_err();
    for expected in [
        r#"spec.egress[0].to[0].ipBlock.cidr: Invalid value: "10.0.0.0/40": must be a valid CIDR value"#,
        "spec.egress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
    ] {
        assert!(said.contains(expected), "{expected}: {said}");
    }
}

/// Runs a netcheck client in `namespace` that sends `name` to `target`; its phase and log.
async fn call_from(
    c: &crate::support::cluster::Cluster,
    namespace: &str,
    name: &str,
    image: &str,
    target: &str,
) -> (String, String) {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), namespace);
    let pod: Pod = serde_json::from_value(netcheck_pod(
        name,
        image,
        &[("main", &["connect", target, name])],
        json!({"metadata": {"labels": {"app": "client"}}}),
    ))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let done = wait_for(&pods, name, "finished", finished).await;
    (
        phase(&done).to_string(),
        node_logs(&c.node, &uid(&done), "main"),
    )
}

/// Clients from `namespace` until one gets `want` (the node applies a policy change to the
/// next connection, once its watch has the change); the last client's name.
async fn until_calls(
    c: &crate::support::cluster::Cluster,
    namespace: &str,
    prefix: &str,
    image: &str,
    target: &str,
    allowed: bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        let name = format!("{prefix}-{n}");
        let (phase, log) = call_from(c, namespace, &name, image, target).await;
        let answered = log.contains(&format!("answer: pong {name}"));
        if allowed && answered {
            return name;
        }
        if !allowed && phase == "Failed" && log.contains("PermissionDenied") {
            return name;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never {}: {log}",
            if allowed { "answered" } else { "refused" }
        );
    }
    unreachable!()
}

/// NetworkPolicies enforced at Wasm guests' sockets: a namespace isolated to itself refuses
/// another namespace's guest (which gets `access-denied` and an Event saying why) and keeps
/// its own; a default deny isolates; an ipBlock egress rule lets a guest out again; removing
/// the policies restores traffic.
#[tokio::test]
async fn network_policies_isolate_wasm_guests_and_say_so() {
    use k8s_openapi::api::core::v1::Event;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let (c, image, _) = netcheck_cluster("net-netpol").await;
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    for name in ["team-a", "team-b"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let team_a: Api<Pod> = Api::namespaced(c.client.clone(), "team-a");
    let server: Pod = serde_json::from_value(netcheck_pod(
        "server",
        &image,
        &[("main", &["listen", "0.0.0.0:8080"])],
        json!({"metadata": {"labels": {"app": "server"}}}),
    ))
    .unwrap();
    team_a
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
    let server = wait_for(&team_a, "server", "listening", |p| {
        status_of(p, "main")["state"]["running"].is_object() && !pod_ip(p).is_empty()
    })
    .await;
    let server_ip = pod_ip(&server);
    let target = format!("{server_ip}:8080");
    until_calls(&c, "team-b", "before", &image, &target, true).await;

    let policies: Api<NetworkPolicy> = Api::namespaced(c.client.clone(), "team-a");
    let policy = |name: &str, spec: Value| -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    policies
        .create(
            &PostParams::default(),
            &policy(
                "same-namespace",
                json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
            ),
        )
        .await
        .unwrap();
    let refused = until_calls(&c, "team-b", "stranger", &image, &target, false).await;
    until_calls(&c, "team-a", "neighbour", &image, &target, true).await;
    let events: Api<Event> = Api::namespaced(c.client.clone(), "team-b");
    let deadline = Instant::now() + Duration::from_secs(30);
    let note = loop {
        let found = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("NetworkPolicyDenied")
                    && e.involved_object.name.as_deref() == Some(refused.as_str())
            });
        if let Some(event) = found {
            break event.message.unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no NetworkPolicyDenied event for {refused}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        note,
        format!(
            "connection from team-b/{refused} to {target} (pod team-a/server) denied by NetworkPolicy team-a/same-namespace"
        )
    );
    // And the node counts it.
    let metrics = c
        .server
        .kubectl(&["get", "--raw", "/api/v1/nodes/net-netpol/proxy/metrics"])
        .unwrap();
    let counted = format!(
        "bosun_network_policy_denials_total{{namespace=\"team-b\",pod=\"{refused}\",policy=\"team-a/same-namespace\"}} 1"
    );
    assert!(metrics.contains(&counted), "{counted}\n{metrics}");

    // A default deny of both directions isolates the namespace's own guests too; an egress
    // rule by address block lets them reach the server again.
    policies
        .create(
            &PostParams::default(),
            &policy(
                "deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            ),
        )
        .await
        .unwrap();
    until_calls(&c, "team-a", "denied", &image, &target, false).await;
    policies
        .create(
            &PostParams::default(),
            &policy(
                "to-server",
                json!({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                       "egress": [{"to": [{"ipBlock": {"cidr": format!("{server_ip}/32")}}], "ports": [{"port": 8080}]}]}),
            ),
        )
        .await
        .unwrap();
    until_calls(&c, "team-a", "block", &image, &target, true).await;

    // Without the policies, the other namespace gets through again.
    for name in ["same-namespace", "deny-all", "to-server"] {
        policies
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    until_calls(&c, "team-b", "after", &image, &target, true).await;
}

/// Lines added to the machine's /etc/hosts (the node's resolver reads it), removed on drop.
struct Hosts(Vec<String>);

impl Hosts {
    fn add(entries: &[(&str, &str)]) -> Self {
        let lines: Vec<String> = entries
            .iter()
            .map(|(ip, name)| format!("{ip} {name} # bosun-test"))
            .collect();
        let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for line in &lines {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write("/etc/hosts", text).unwrap();
        Self(lines)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string("/etc/hosts") {
            let kept: String = text
                .lines()
                .filter(|l| !self.0.iter().any(|added| added == l))
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write("/etc/hosts", kept);
        }
    }
}

/// Egress by DNS name (`bosun.dev/egress-allow-hosts`): a guest reaches an address outside
/// the cluster that it got from an allowed name, and not the same address by another name.
#[tokio::test]
async fn egress_by_name_follows_what_the_guest_resolved() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let (c, image, _) = netcheck_cluster("net-names").await;
    let outside = Outside::new();
    let _listener = outside.listen(9000);
    let id = std::process::id();
    let allowed = format!("api-{id}.egress.bosun.test");
    let other = format!("other-{id}.bosun.test");
    let _hosts = Hosts::add(&[(&outside.ip, &allowed), (&outside.ip, &other)]);
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "names"}})).unwrap(),
        )
        .await
        .unwrap();
    let policies: Api<NetworkPolicy> = Api::namespaced(c.client.clone(), "names");
    let policy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "by-name",
                     "annotations": {"bosun.dev/egress-allow-hosts": "*.egress.bosun.test"}},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]}
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    until_calls(
        &c,
        "names",
        "by-name",
        &image,
        &format!("{allowed}:9000"),
        true,
    )
    .await;
    let (phase, log) = call_from(&c, "names", "by-other", &image, &format!("{other}:9000")).await;
    assert_eq!(phase, "Failed", "{log}");
    assert!(log.contains("PermissionDenied"), "{log}");
}
