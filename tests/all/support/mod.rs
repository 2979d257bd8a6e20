//! Helpers for driving the real `bosun` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;

pub mod cluster;
pub mod up;

pub const BOSUN: &str = env!("CARGO_BIN_EXE_bosun");

/// Runs a command to its end: `Ok` with its stdout, or `Err` with all it printed.
pub fn run(mut command: Command) -> Result<String, String> {
    let out = command.output().expect("the command is installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// A running `bosun server`, stopped (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub kubeconfig: PathBuf,
}

impl Server {
    /// Starts `bosun server ARGS --bind-address 127.0.0.1 --port 0` (unless ARGS has its own
    /// `--bind-address`) and waits until it listens.
    pub async fn start(args: &[&str]) -> Self {
        let bind = if args.contains(&"--bind-address") {
            &[][..]
        } else {
            &["--bind-address", "127.0.0.1"][..]
        };
        let mut command = Command::new(BOSUN);
        command.arg("server").args(args).args(bind);
        Self::spawn(command, "bosun server listening on https://").await
    }

    /// A server for API-only tests: its data in `dir/data`, no scheduler (pods stay
    /// unbound), and no node.
    pub async fn without_nodes(dir: &std::path::Path) -> Self {
        Self::start(&[
            "--data-dir",
            dir.join("data").to_str().unwrap(),
            "--disable-scheduler",
        ])
        .await
    }

    /// `kubectl apply -f` of `yaml`, written to `dir/NAME.yaml`.
    pub fn apply_yaml(
        &self,
        dir: &std::path::Path,
        name: &str,
        yaml: &str,
    ) -> Result<String, String> {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        self.kubectl(&["apply", "-f", file.to_str().unwrap()])
    }

    /// Starts `bosun up ARGS --port 0 --agent-port 0` (server and node in one process) and
    /// waits until it is up.
    pub async fn up(args: &[&str]) -> Self {
        let mut command = Command::new(BOSUN);
        command.arg("up").args(args).args(["--agent-port", "0"]);
        if !args.contains(&"--function-port") {
            command.args(["--function-port", "0"]);
        }
        Self::spawn(command, "API server: https://").await
    }

    /// Runs `command --port 0` and reads the address (the line starting with `addr_prefix`)
    /// and the kubeconfig it prints.
    async fn spawn(mut command: Command, addr_prefix: &'static str) -> Self {
        let mut child = command
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn bosun");
        let stdout = child.stdout.take().unwrap();
        let (addr, kubeconfig) = tokio::task::spawn_blocking(move || {
            let mut addr = None;
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(a) = line.strip_prefix(addr_prefix) {
                    addr = Some(a.to_string());
                } else if let Some(k) = line.strip_prefix("kubeconfig: ") {
                    // Keep draining stdout so the server never blocks on a full pipe.
                    let kubeconfig = PathBuf::from(k);
                    std::thread::spawn(move || for _ in lines {});
                    return (addr.expect("address before kubeconfig"), kubeconfig);
                }
            }
            panic!("bosun exited before listening");
        })
        .await
        .unwrap();
        Self {
            child,
            addr,
            kubeconfig,
        }
    }

    /// Runs `bosun server ARGS` expecting it to fail at start; returns what it said.
    pub async fn fails(args: &[&str]) -> String {
        let mut cmd = tokio::process::Command::new(BOSUN);
        cmd.arg("server")
            .args(args)
            .args(["--bind-address", "127.0.0.1", "--port", "0"]);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("bosun server should fail promptly")
            .unwrap();
        assert!(!out.status.success(), "bosun server was expected to fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The CA certificate the kubeconfig carries.
    pub fn ca_pem(&self) -> String {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let data = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
            .expect("CA data in kubeconfig");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap(),
        )
        .unwrap()
    }

    /// The admin bearer token the kubeconfig carries.
    pub fn token(&self) -> String {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("token in kubeconfig")
            .to_string()
    }

    /// A kube-rs client using the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Runs the real kubectl with the admin kubeconfig; `Err` has what it printed.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new("kubectl");
        command.env("KUBECONFIG", &self.kubeconfig).args(args);
        run(command)
    }

    /// Binds `view` in `default` to that namespace's `default` ServiceAccount, the account
    /// of pods that name none.
    pub fn grant_default_account_view(&self) {
        self.kubectl(&[
            "create",
            "rolebinding",
            "default-view",
            "--clusterrole=view",
            "--serviceaccount=default:default",
            "-n",
            "default",
        ])
        .unwrap();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTPS client that trusts only `ca_pem`.
pub fn https_client(ca_pem: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub use bosun_testkit::postgres::{Private as PrivatePostgres, fresh_database as postgres_db};

/// One of several servers on the database `db`, with leader election fast enough for
/// fail-over tests (2 s leases). A server after the first takes the first's data directory
/// as `peer`, for its token, so that one client works with both.
pub async fn replica(db: &str, peer: Option<&std::path::Path>) -> (Server, tempfile::TempDir) {
    replica_with(db, peer, &[]).await
}

/// The same with extra flags.
pub async fn replica_with(
    db: &str,
    peer: Option<&std::path::Path>,
    extra: &[&str],
) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--datastore-endpoint",
        db,
        "--leader-elect-lease-duration",
        "2s",
        "--leader-elect-renew-deadline",
        "1500ms",
        "--leader-elect-retry-period",
        "250ms",
    ];
    let token = peer.map(|peer| std::fs::read_to_string(peer.join("token")).unwrap());
    if let Some(token) = &token {
        args.extend(["--token", token.trim()]);
    }
    args.extend(extra);
    (Server::start(&args).await, dir)
}
pub use bosun_testkit::unique;

/// A real OCI registry ([`bosun_testkit::registry::Registry`]) that Bosun's own client pushes
/// Wasm to.
pub struct Registry(bosun_testkit::registry::Registry);

impl std::ops::Deref for Registry {
    type Target = bosun_testkit::registry::Registry;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Registry {
    pub async fn start() -> Self {
        Self(bosun_testkit::registry::Registry::start().await)
    }

    /// A registry listening on `ip` (an address other network namespaces can reach).
    pub async fn start_on(ip: &str) -> Self {
        Self(bosun_testkit::registry::Registry::start_on(ip).await)
    }

    /// A registry that wants HTTP basic auth as `user`/`password`.
    pub async fn start_with_auth(user: &str, password: &str) -> Self {
        Self(bosun_testkit::registry::Registry::start_with_auth(user, password).await)
    }

    /// Pushes `wasm` as `REGISTRY/name` in the given layout; returns the full reference.
    pub async fn push(
        &self,
        name: &str,
        wasm: Vec<u8>,
        layout: bosun_node::images::Layout,
    ) -> String {
        self.push_as(name, wasm, layout, None).await
    }

    pub async fn push_as(
        &self,
        name: &str,
        wasm: Vec<u8>,
        layout: bosun_node::images::Layout,
        credential: Option<&bosun_node::images::Credential>,
    ) -> String {
        let image = format!("{}/{name}", self.host);
        bosun_node::images::push(&image, wasm, layout, true, credential)
            .await
            .unwrap();
        image
    }
}

/// A running `bosun node` against `server`, stopped (SIGKILL) when dropped. Each has a bridge
/// of its own (`--bridge`), and dropping it removes the bridge and its pods' network
/// namespaces, which a killed agent leaves behind.
pub struct Node {
    pub child: Child,
    pub name: String,
    pub dir: tempfile::TempDir,
    pub bridge: String,
    launch: Launch,
}

/// How a node's process is started.
#[derive(Clone)]
struct Launch {
    /// How it gets its certificate: `--kubeconfig FILE`, or `--server URL --token TOKEN`.
    credentials: Vec<String>,
    registry: String,
    node_ip: String,
    /// A command the agent runs under (`ip netns exec HOST`, `setpriv …`).
    wrapper: Vec<String>,
    /// The flags it was started with (a restart keeps them).
    args: Vec<String>,
}

impl Node {
    /// Starts `bosun node` named `name` with short back-offs and lease times (tests only),
    /// trusting `registry` over plain HTTP; `args` are added.
    pub fn start(server: &Server, name: &str, registry: &Registry, args: &[&str]) -> Self {
        Self::start_under(
            server.kubeconfig.clone(),
            name,
            &registry.host,
            "127.0.0.1",
            &[],
            args,
        )
    }

    /// Starts `bosun node` as [`Node::start`] does, joining with the cluster token
    /// (`--server URL --token TOKEN`) instead of a kubeconfig.
    pub fn join(
        server: &Server,
        name: &str,
        registry: &Registry,
        token: &str,
        args: &[&str],
    ) -> Self {
        let credentials = vec![
            "--server".to_string(),
            format!("https://{}", server.addr),
            "--token".to_string(),
            token.to_string(),
        ];
        Self::start_with(credentials, name, &registry.host, "127.0.0.1", &[], args)
    }

    /// Starts the agent under `wrapper` (a command prefix, such as `ip netns exec HOST`), with
    /// its own kubeconfig and address.
    pub fn start_under(
        kubeconfig: PathBuf,
        name: &str,
        registry: &str,
        node_ip: &str,
        wrapper: &[&str],
        args: &[&str],
    ) -> Self {
        let credentials = vec!["--kubeconfig".into(), kubeconfig.display().to_string()];
        Self::start_with(credentials, name, registry, node_ip, wrapper, args)
    }

    fn start_with(
        credentials: Vec<String>,
        name: &str,
        registry: &str,
        node_ip: &str,
        wrapper: &[&str],
        args: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let launch = Launch {
            credentials,
            registry: registry.to_string(),
            node_ip: node_ip.to_string(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        let bridge = format!("bt{}x{}", std::process::id() % 100_000, unique());
        let child = Self::spawn(&launch, name, dir.path(), &bridge, &[]);
        Self {
            child,
            name: name.to_string(),
            dir,
            bridge,
            launch,
        }
    }

    fn spawn(
        launch: &Launch,
        name: &str,
        dir: &std::path::Path,
        bridge: &str,
        args: &[&str],
    ) -> Child {
        let mut command = match launch.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BOSUN);
                c
            }
            None => Command::new(BOSUN),
        };
        command
            .arg("node")
            .args(&launch.credentials)
            .args(["--name", name, "--node-ip", &launch.node_ip, "--port", "0"])
            .arg("--data-dir")
            .arg(dir)
            .args(["--insecure-registry", &launch.registry, "--bridge", bridge])
            .args([
                "--lease-duration",
                "4s",
                "--node-status-update-frequency",
                "1s",
            ])
            .args(["--backoff-initial", "1s", "--backoff-max", "8s"])
            .args(["--volume-sync-period", "1s"])
            .args(&launch.args)
            .args(args)
            // Nodes share the host's ports: the function gateway only where a test asks.
            .args(
                (!launch.args.iter().any(|a| a == "--function-port")
                    && !args.contains(&"--function-port"))
                .then_some(["--function-port", "0"])
                .into_iter()
                .flatten(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn bosun node")
    }

    /// Kills the agent (its containers die with it) and starts it again on the same data, with
    /// the flags it had and `args`.
    pub fn restart(&mut self, args: &[&str]) {
        self.kill();
        self.child = Self::spawn(
            &self.launch,
            &self.name,
            self.dir.path(),
            &self.bridge,
            args,
        );
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The pod UIDs holding addresses on this node (its IPAM records).
    pub fn address_records(&self) -> Vec<(String, String)> {
        address_records(self.dir.path())
    }

    /// The wrapper's `ip netns exec HOST` namespace, if the agent runs in one.
    fn host_netns(&self) -> Option<&str> {
        match self.launch.wrapper.as_slice() {
            [ip, netns, exec, host, ..] if ip == "ip" && netns == "netns" && exec == "exec" => {
                Some(host)
            }
            _ => None,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        remove_node_network(self.dir.path(), &self.bridge, self.host_netns());
    }
}

/// (address, pod UID) of the IPAM records in a node's data directory.
pub fn address_records(data_dir: &std::path::Path) -> Vec<(String, String)> {
    let dir = data_dir.join("network/ipam");
    let mut records: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let ip = e.file_name().to_string_lossy().into_owned();
                    ip.parse::<std::net::Ipv4Addr>().ok()?;
                    Some((ip, std::fs::read_to_string(e.path()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    records.sort();
    records
}

/// Removes what a stopped node left on the host: its pods' namespaces, its bridge (and with
/// it the routes to its pod and Service blocks, which later tests' blocks may overlap) and
/// its service-proxy table.
pub fn remove_node_network(data_dir: &std::path::Path, bridge: &str, host_netns: Option<&str>) {
    for (_, uid) in address_records(data_dir) {
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("bosun-{uid}")])
            .stderr(Stdio::null())
            .status();
    }
    let mut del = Command::new("ip");
    if let Some(host) = host_netns {
        del.args(["-n", host]);
    }
    let _ = del
        .args(["link", "del", bridge])
        .stderr(Stdio::null())
        .status();
    if host_netns.is_none() {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &format!("{bridge}-proxy")])
            .stderr(Stdio::null())
            .status();
    }
}
