//! The examples (examples/), driven as their READMEs say: `bosun up`, `bosun push` to a
//! local registry, `kubectl apply` of the example's manifest, then what the user would look
//! at (logs, status, answers). The modules come from scripts/guests.sh, which builds them
//! from source (guests/target/examples/).

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::own_blocks;
use support::{BOSUN, Registry, Server};

/// A cluster started with `bosun up` (short node timings), and a registry it trusts.
struct Up {
    server: Server,
    registry: Registry,
    dir: tempfile::TempDir,
    flags: Vec<String>,
}

impl Up {
    async fn start(node: &str) -> Self {
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
    fn interrupt(&mut self) {
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
    async fn restart(&mut self) {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        self.server = Server::up(&flags).await;
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.server.kubectl(args)
    }

    /// `bosun push guests/target/examples/NAME.wasm REGISTRY/NAME:v1 --insecure`.
    fn push(&self, name: &str) {
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
    fn apply(&self, manifest: &str) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(manifest);
        let text = std::fs::read_to_string(&path).unwrap();
        let ours = self.dir.path().join(path.file_name().unwrap());
        std::fs::write(&ours, text.replace("localhost:5000", &self.registry.host)).unwrap();
        self.kubectl(&["apply", "-f", ours.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("kubectl apply -f {manifest}: {e}"));
    }

    /// Polls `check` (every 200 ms, up to 90 s) until it gives a value.
    async fn eventually<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
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
    async fn logs_show(&self, args: &[&str], text: &str) -> String {
        let mut all = vec!["logs"];
        all.extend(args);
        self.eventually(&format!("kubectl logs {args:?} shows {text:?}"), || {
            self.kubectl(&all).ok().filter(|logs| logs.contains(text))
        })
        .await
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all).unwrap()).unwrap()
    }
}

fn example(name: &str) -> PathBuf {
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

/// The JSON log lines in `logs` whose `msg` is `msg`.
fn log_lines(logs: &str, msg: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["msg"] == msg)
        .collect()
}

#[tokio::test]
async fn jobs_in_rust_and_c_a_cronjob_and_the_sdk_tests_run_to_completion() {
    let up = Up::start("jobs").await;
    for name in ["hello", "c-hello", "bosun-sdk-tests"] {
        up.push(name);
    }
    up.apply("examples/hello/job.yaml");
    up.apply("examples/c-hello/job.yaml");
    up.apply("examples/cron/cronjob.yaml");
    up.apply("wasm-sdk/test-pod.yaml");

    for job in ["hello", "c-hello"] {
        up.kubectl(&[
            "wait",
            "--for=condition=complete",
            &format!("job/{job}"),
            "--timeout=90s",
        ])
        .unwrap_or_else(|e| panic!("job {job} did not complete: {e}"));
    }
    let hello = up.kubectl(&["logs", "job/hello"]).unwrap();
    assert!(
        hello.starts_with("Hello, Bosun user! This is WebAssembly, run by Bosun.\n"),
        "{hello}"
    );
    let greeted = log_lines(&hello, "greeted");
    assert_eq!(greeted.len(), 1, "{hello}");
    assert_eq!(greeted[0]["level"], "INFO");
    assert_eq!(greeted[0]["node"], "jobs");
    assert!(
        greeted[0]["pod"]
            .as_str()
            .unwrap()
            .starts_with("default/hello-"),
        "{hello}"
    );
    let c = up.kubectl(&["logs", "job/c-hello"]).unwrap();
    assert!(
        c.starts_with("Hello from C on WebAssembly, pod c-hello-"),
        "{c}"
    );
    assert!(c.contains("argument 1: from\nargument 2: C\n"), "{c}");

    // wasm-sdk's unit tests, compiled to wasm, run as a pod on Bosun.
    let tests = up
        .eventually("the sdk tests finish", || {
            let pod = up.json(&["pod", "sdk-tests"]);
            let phase = pod["status"]["phase"].as_str()?.to_string();
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
        })
        .await;
    let report = up.kubectl(&["logs", "sdk-tests"]).unwrap();
    assert_eq!(tests, "Succeeded", "{report}");
    assert!(report.contains("test result: ok."), "{report}");
    assert!(!report.contains("FAILED"), "{report}");

    // The CronJob's first Job starts at the next minute.
    let job = up
        .eventually("the CronJob made a Job", || {
            let jobs = up.json(&["jobs"]);
            jobs["items"].as_array()?.iter().find_map(|j| {
                let name = j["metadata"]["name"].as_str()?;
                name.starts_with("hello-every-minute-")
                    .then(|| name.to_string())
            })
        })
        .await;
    up.kubectl(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{job}"),
        "--timeout=60s",
    ])
    .unwrap();
    let cron = up.kubectl(&["logs", &format!("job/{job}")]).unwrap();
    assert!(cron.starts_with("Hello, cron!"), "{cron}");
    let cronjob = up.json(&["cronjob", "hello-every-minute"]);
    assert!(
        cronjob["status"]["lastScheduleTime"].is_string(),
        "{cronjob:#}"
    );
}

#[tokio::test]
async fn web_answers_on_every_replica_and_rolls_to_v2_and_back() {
    let up = Up::start("web").await;
    up.push("web");
    up.apply("examples/web/deployment.yaml");
    up.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .unwrap();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Every ready replica answers on its own pod IP, naming itself and its version.
    let answers = |version: &'static str| {
        let up = &up;
        let http = http.clone();
        async move {
            let pods = up.json(&["pods", "-l", "app=web"]);
            let mut seen = Vec::new();
            for pod in pods["items"].as_array().unwrap() {
                if pod["metadata"]["deletionTimestamp"].is_string() {
                    continue;
                }
                let name = pod["metadata"]["name"].as_str().unwrap();
                let ip = pod["status"]["podIP"].as_str().unwrap();
                let body = http
                    .get(format!("http://{ip}:8080/"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                assert_eq!(body, format!("hello from {name} ({version})\n"));
                seen.push(name.to_string());
            }
            assert_eq!(seen.len(), 3, "{pods:#}");
            seen
        }
    };
    let v1 = answers("v1").await;
    let probes = up.json(&["pods", "-l", "app=web"]);
    for pod in probes["items"].as_array().unwrap() {
        assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    }

    up.kubectl(&["set", "env", "deployment/web", "VERSION=v2"])
        .unwrap();
    up.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .unwrap();
    up.eventually("only v2 replicas are left", || {
        let pods = up.json(&["pods", "-l", "app=web"]);
        (pods["items"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let v2 = answers("v2").await;
    assert!(v2.iter().all(|p| !v1.contains(p)), "{v1:?} {v2:?}");

    up.kubectl(&["rollout", "undo", "deployment/web"]).unwrap();
    up.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .unwrap();
    up.eventually("only v1 replicas are left", || {
        let pods = up.json(&["pods", "-l", "app=web"]);
        (pods["items"].as_array()?.len() == 3).then_some(())
    })
    .await;
    answers("v1").await;
    let history = up
        .kubectl(&["rollout", "history", "deployment/web"])
        .unwrap();
    assert!(history.contains('3'), "{history}");
}

#[tokio::test]
async fn config_follows_its_objects_sidecars_share_localhost_and_up_keeps_its_state() {
    let mut up = Up::start("config").await;
    up.push("config");
    up.push("sidecar");
    up.apply("examples/config/app.yaml");
    up.apply("examples/sidecar/pod.yaml");

    let logs = up.logs_show(&["config"], "\"msg\":\"settings\"").await;
    let started = log_lines(&logs, "started");
    assert_eq!(started[0]["greeting"], "Hello from a ConfigMap");
    assert_eq!(started[0]["api_key_bytes"], 10);
    assert!(!logs.contains("s3cr3t"), "the secret was logged: {logs}");
    let settings = log_lines(&logs, "settings");
    assert_eq!(settings[0]["color"], "blue");
    assert_eq!(settings[0]["size"], 3);
    assert_eq!(settings[0]["password_bytes"], 7);

    // Files follow the ConfigMap without a restart.
    up.kubectl(&[
        "patch",
        "configmap",
        "app-settings",
        "-p",
        r#"{"data":{"color":"green"}}"#,
    ])
    .unwrap();
    up.logs_show(&["config"], "\"color\":\"green\"").await;
    let pod = up.json(&["pod", "config"]);
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);

    // The sidecar reaches the app on the pod's loopback.
    let heard = up
        .logs_show(&["sidecar", "-c", "sidecar"], "app answer #2")
        .await;
    assert!(!log_lines(&heard, "sidecar heard").is_empty(), "{heard}");

    // Ctrl-C stops everything; the next `bosun up` has the same cluster.
    up.interrupt();
    up.restart().await;
    let config = up.json(&["configmap", "app-settings"]);
    assert_eq!(config["data"]["color"], "green");
    up.eventually("the pods run again after the restart", || {
        let pod = up.json(&["pod", "sidecar"]);
        let statuses = pod["status"]["containerStatuses"].as_array()?.clone();
        let again = statuses
            .iter()
            .all(|s| s["ready"] == true && s["restartCount"].as_i64().is_some_and(|n| n >= 1));
        again.then_some(())
    })
    .await;
    up.logs_show(&["config"], "\"color\":\"green\"").await;
}
