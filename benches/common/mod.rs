//! What the end-to-end benchmarks share beyond `bosun-testkit`: child processes, an API client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The `bosun` binary this bench was built with.
pub const BOSUN: &str = env!("CARGO_BIN_EXE_bosun");

/// A preview 1 command that sleeps for an hour (poll_oneoff on the monotonic clock).
pub const SLEEPER: &str = r#"(module
    (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")
        (i32.store8 (i32.const 8) (i32.const 0))
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 3600000000000))
        (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

/// Waits until the child prints a line starting with `prefix`, then drains its output.
pub fn spawn_lines(mut child: Child, prefix: &str) -> Child {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .find(|l| l.as_ref().is_ok_and(|l| l.starts_with(prefix)));
    assert!(started.is_some(), "the process did not start");
    std::thread::spawn(move || for _ in lines {});
    child
}

/// Starts `bosun server` on a loopback port with its data in `dir/server` and `args`; returns
/// once it has written its kubeconfig. Its log goes to `log` in the temporary directory, if
/// named.
pub fn server(dir: &Path, args: &[&str], log: Option<&str>) -> Child {
    let stderr = match log {
        Some(name) => Stdio::from(std::fs::File::create(std::env::temp_dir().join(name)).unwrap()),
        None => Stdio::null(),
    };
    spawn_lines(
        Command::new(BOSUN)
            .args(["server", "--bind-address", "127.0.0.1", "--port", "0"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.join("server"))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap(),
        "kubeconfig: ",
    )
}

/// The admin kubeconfig of the server started by [`server`] in `dir`.
pub fn kubeconfig(dir: &Path) -> PathBuf {
    dir.join("server/admin.kubeconfig")
}

/// What an admin kubeconfig says: the server's URL, its CA (PEM) and the admin's token.
pub struct Admin {
    pub server: String,
    pub ca_pem: Vec<u8>,
    pub token: String,
}

impl Admin {
    pub fn read(kubeconfig: &Path) -> Self {
        use base64::Engine as _;
        let text = std::fs::read_to_string(kubeconfig).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name:?} in {}", kubeconfig.display()))
                .to_string()
        };
        Self {
            server: field("server: "),
            ca_pem: base64::engine::general_purpose::STANDARD
                .decode(field("certificate-authority-data: "))
                .unwrap(),
            token: field("token: "),
        }
    }

    /// An HTTPS client that trusts the server's CA, keeping up to 64 idle connections.
    pub fn https_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem).unwrap())
            .pool_max_idle_per_host(64)
            .build()
            .unwrap()
    }
}

/// Starts `bosun node` `name` for the server in `dir`, with its data in `dir/name` and `args`;
/// returns once it runs. Its log goes to `bosun-bench-node-<name>.log` in the temporary
/// directory.
pub fn node(dir: &Path, name: &str, args: &[&str]) -> Child {
    let log = std::env::temp_dir().join(format!("bosun-bench-node-{name}.log"));
    spawn_lines(
        Command::new(BOSUN)
            .args([
                "node",
                "--name",
                name,
                "--node-ip",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .args(args)
            .args(
                (!args.contains(&"--function-port"))
                    .then_some(["--function-port", "0"])
                    .into_iter()
                    .flatten(),
            )
            .arg("--kubeconfig")
            .arg(kubeconfig(dir))
            .arg("--data-dir")
            .arg(dir.join(name))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
        "bosun node",
    )
}

/// Pushes [`SLEEPER`] to the registry at `host` as `sleeper:v1`; returns the reference.
pub async fn push_sleeper(host: &str) -> String {
    let image = format!("{host}/sleeper:v1");
    bosun_node::images::push(
        &image,
        wat::parse_str(SLEEPER).unwrap(),
        bosun_node::images::Layout::ConfigV0,
        true,
        None,
    )
    .await
    .unwrap();
    image
}

/// A client of the server whose admin kubeconfig is `kubeconfig`.
pub async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Polls `check` until it has a value (two minutes at most).
pub async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out: {what}");
}

/// Creates a Deployment `name` of `replicas` pods (label `app: NAME`) running `container` on
/// port 8080, and a Service `name` on port 80 in front of them; returns its cluster IP.
pub async fn deploy_behind_service(
    client: &kube::Client,
    name: &str,
    replicas: i32,
    container: serde_json::Value,
) -> String {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [container]},
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap()
}
