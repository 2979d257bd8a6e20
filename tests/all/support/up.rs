//! `bosun up` in a test: a whole cluster in one process with a registry it trusts.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::own_blocks;
use super::{BOSUN, Registry, Server};

/// A cluster started with `bosun up` (short node timings), and a registry it trusts.
pub struct Up {
    pub server: Server,
    pub registry: Registry,
    pub dir: tempfile::TempDir,
    bridge: String,
    flags: Vec<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        self.server.kill();
        super::remove_node_network(self.dir.path(), &self.bridge, None);
    }
}

impl Up {
    pub async fn start(node: &str) -> Self {
        let registry = Registry::start().await;
        let dir = tempfile::tempdir().unwrap();
        let (pods, services) = own_blocks();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bridge = format!("bu{}x{n}", std::process::id() % 100_000);
        let flags: Vec<String> = [
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--bind-address",
            "127.0.0.1",
            "--node-name",
            node,
            "--node-ip",
            "127.0.0.1",
            "--insecure-registry",
            &registry.host,
            "--bridge",
            &bridge,
            "--cluster-cidr",
            &pods,
            "--service-cidr",
            &services,
            "--lease-duration",
            "4s",
            "--node-status-update-frequency",
            "1s",
            "--volume-sync-period",
            "1s",
            "--backoff-initial",
            "1s",
            "--backoff-max",
            "8s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = Server::up(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let up = Self {
            server,
            registry,
            dir,
            bridge,
            flags,
        };
        up.eventually("the node is Ready", || {
            let ready = up
                .kubectl(&[
                    "get",
                    "node",
                    node,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .ok()?;
            (ready == "True").then_some(())
        })
        .await;
        up
    }

    /// Stops `bosun up` as Ctrl-C would and checks that it exits cleanly.
    pub fn interrupt(&mut self) {
        let pid = self.server.child.id().to_string();
        let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.server.child.try_wait().unwrap() {
                assert!(status.success(), "bosun up exited with {status} on Ctrl-C");
                return;
            }
            assert!(Instant::now() < deadline, "bosun up did not stop on Ctrl-C");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `bosun up` again with the same flags and data directory.
    pub async fn restart(&mut self) {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        self.server = Server::up(&flags).await;
    }

    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.server.kubectl(args)
    }

    /// `bosun push guests/target/examples/NAME.wasm REGISTRY/NAME:v1 --insecure`.
    pub fn push(&self, name: &str) {
        let file = example(name);
        let image = format!("{}/{name}:v1", self.registry.host);
        let out = Command::new(BOSUN)
            .args(["push", file.to_str().unwrap(), &image, "--insecure"])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "bosun push {name} failed");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.starts_with("pushed "), "{said}");
    }

    /// `kubectl apply -f` of an example's manifest, pointed at this test's registry instead
    /// of the README's `localhost:5000`.
    pub fn apply(&self, manifest: &str) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(manifest);
        let text = std::fs::read_to_string(&path).unwrap();
        let ours = self.dir.path().join(path.file_name().unwrap());
        std::fs::write(&ours, text.replace("localhost:5000", &self.registry.host)).unwrap();
        self.kubectl(&["apply", "-f", ours.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("kubectl apply -f {manifest}: {e}"));
    }

    /// Polls `check` (every 200 ms, up to 90 s) until it gives a value.
    pub async fn eventually<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() > deadline {
                let pods = self
                    .kubectl(&["get", "pods", "-o", "wide"])
                    .unwrap_or_default();
                panic!("never: {what}\n{pods}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `kubectl logs ARGS` shows `text`; returns the logs.
    pub async fn logs_show(&self, args: &[&str], text: &str) -> String {
        let mut all = vec!["logs"];
        all.extend(args);
        self.eventually(&format!("kubectl logs {args:?} shows {text:?}"), || {
            self.kubectl(&all).ok().filter(|logs| logs.contains(text))
        })
        .await
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all).unwrap()).unwrap()
    }
}

/// `guests/target/examples/NAME.wasm`, built by scripts/guests.sh.
pub fn example(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("guests/target/examples")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/guests.sh",
        path.display()
    );
    path
}
