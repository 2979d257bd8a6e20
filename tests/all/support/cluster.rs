//! A one-node cluster for end-to-end tests: a server, a registry and a node, with helpers to
//! create pods and wait for their status.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use bosun_node::images::Layout;
use bosun_testkit::wasm::command;

use super::{Node, Registry, Server};

/// Fields drop in order: the node stops before the server and the registry.
pub struct Cluster {
    pub node: Node,
    pub server: Server,
    pub registry: Registry,
    pub pods: Api<Pod>,
    pub client: kube::Client,
}

/// A server, a registry and one node named `node`.
pub async fn cluster(node: &str) -> Cluster {
    cluster_with(node, &[], &[]).await
}

/// The same with extra flags for the server and the node. Without `--cluster-cidr` among the
/// server's flags, the cluster gets blocks no other cluster of this test process has
/// ([`own_blocks`]): the areas' tests run at the same time, each cluster with its bridge.
pub async fn cluster_with(node: &str, server_args: &[&str], node_args: &[&str]) -> Cluster {
    let data = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--data-dir",
        data.path().to_str().unwrap(),
        "--pod-initial-backoff",
        "100ms",
        "--pod-max-backoff",
        "1s",
    ];
    let (pods, services) = own_blocks();
    if !server_args.contains(&"--cluster-cidr") {
        args.extend(["--cluster-cidr", &pods, "--service-cidr", &services]);
    }
    args.extend(server_args);
    let server = Server::start(&args).await;
    std::mem::forget(data);
    let registry = Registry::start().await;
    let node = Node::start(&server, node, &registry, node_args);
    let client = server.client().await;
    let pods = Api::namespaced(client.clone(), "default");
    Cluster {
        server,
        registry,
        node,
        pods,
        client,
    }
}

impl Cluster {
    /// Restarts the node agent with extra flags.
    pub fn node_restart_with(&mut self, args: &[&str]) {
        self.node.restart(args);
    }

    pub async fn create(&self, pod: Value) -> String {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        let created = self
            .pods
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        created.metadata.name.unwrap()
    }

    /// Pushes a preview 1 command whose `_start` runs `body` (see [`command`]) as `tag`;
    /// returns the image reference.
    pub async fn push_command(&self, tag: &str, body: &str) -> String {
        self.registry
            .push(tag, command(body), Layout::ConfigV0)
            .await
    }

    /// Deletes the pod and waits until it is gone; panics if that takes `limit`, else returns
    /// how long it took.
    pub async fn delete_and_wait(&self, name: &str, limit: Duration, what: &str) -> Duration {
        let asked = Instant::now();
        self.pods
            .delete(name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
        while self.pods.get_opt(name).await.unwrap().is_some() {
            assert!(asked.elapsed() < limit, "{what}: pod {name} still there");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        asked.elapsed()
    }

    /// Waits (up to a minute) until `ok` holds for the pod; panics with its status if not.
    pub async fn wait(&self, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        wait_for(&self.pods, name, what, ok).await
    }
}

/// Waits (up to a minute) until `ok` holds for the pod `name` of `pods`; panics with its
/// status if not.
pub async fn wait_for(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(pod) = pods.get(name).await {
            last = serde_json::to_value(&pod).unwrap();
            if ok(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pod {name} never {what}: {:#}", last["status"]);
}

/// Whether the pod has finished (Succeeded or Failed).
pub fn finished(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

pub fn pod(name: &str, image: &str, extra: Value) -> Value {
    let mut pod = json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image}],
        },
    });
    merge(&mut pod, extra);
    pod
}

pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

pub fn container(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

/// The contents (CRI log lines' messages) of every log the node keeps for `container` of the
/// pod with `uid`, concatenated.
pub fn node_logs(node: &Node, uid: &str, container: &str) -> String {
    let dir = node
        .dir
        .path()
        .join("pods")
        .join(uid)
        .join("logs")
        .join(container);
    let mut out = String::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let entry = bosun_node::logs::parse(line).expect("CRI log line");
            out.push_str(entry.content);
            out.push('\n');
        }
    }
    out
}

/// The netcheck guest (guests/netcheck, a wasm32-wasip2 command component built by
/// scripts/guests.sh): TCP listen, connect, bind, ping and a small HTTP server.
pub fn netcheck() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/target/wasm32-wasip2/release/netcheck.wasm"
    );
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{path}: {e} (build the guests first: scripts/guests.sh, which scripts/test.sh runs)"
        )
    })
}

/// A pod block (`--cluster-cidr`) no other cluster of this test process has, so that the
/// host's routes to the pods of concurrent tests never overlap.
pub fn own_block() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "10.{}.0.0/16",
        100 + (std::process::id() % 25 * 6 + n) % 150
    )
}

/// A pod block and a Service block no other cluster of this test process has: the halves of
/// an [`own_block`].
pub fn own_blocks() -> (String, String) {
    let block = own_block();
    let prefix = block.trim_end_matches(".0.0/16");
    (format!("{prefix}.0.0/17"), format!("{prefix}.128.0/17"))
}

/// A cluster with a pod block of its own ([`own_block`], given to the server and the node),
/// and the netcheck image pushed: (cluster, image, block).
pub async fn netcheck_cluster(node: &str) -> (Cluster, String, String) {
    let block = own_block();
    let (c, image) = netcheck_cluster_with(node, &["--cluster-cidr", &block]).await;
    (c, image, block)
}

/// A cluster whose server gets `flags` (its node learns the blocks from it), and the netcheck
/// image pushed.
pub async fn netcheck_cluster_with(node: &str, flags: &[&str]) -> (Cluster, String) {
    let c = cluster_with(node, flags, &[]).await;
    let image = c
        .registry
        .push(
            "netcheck:v1",
            netcheck(),
            bosun_node::images::Layout::ComponentV0,
        )
        .await;
    (c, image)
}
