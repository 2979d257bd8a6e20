//! The pod worker through a fake host and the fake runtime, on tokio's paused clock: restart
//! policies and back-off, init containers and sidecars in order, probes driving readiness, the
//! grace period of a deletion, and the statuses it writes.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, HTTPGetAction, ObjectReference, Pod, PodSpec, PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::events::EventType;
use tokio::sync::watch;

use super::{FUNCTION_LABEL, Host, Launch, LaunchError, Published, Settings};
use crate::agent::{Backoff, probe};
use crate::gateway::{FunctionRoute, RouteTable, Routes};
use crate::images::Image;
use crate::logs::server::LogIndex;
use crate::metrics::Containers;
use crate::objects::ConfigError;
use crate::runtime::fake::{FakeRuntime, Script};
use crate::runtime::{Artifact, Container as _, ContainerSpec, Exit, Runtime};

const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 7);

/// A node with nothing behind it but the fake runtime; it keeps what the worker told it.
struct FakeHost {
    settings: Settings,
    runtime: FakeRuntime,
    logs: LogIndex,
    containers: Containers,
    routes: Routes,
    statuses: Mutex<Vec<PodStatus>>,
    /// Whether a probe at a path (`/ready`, `/live`) succeeds; missing paths succeed.
    probes: Mutex<HashMap<String, bool>>,
    events: Mutex<Vec<(String, String)>>,
    deleted: Mutex<bool>,
    _dir: tempfile::TempDir,
}

impl FakeHost {
    fn new() -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        Arc::new(Self {
            settings: Settings {
                node_ip: Ipv4Addr::new(10, 0, 0, 1),
                pods_dir: dir.path().join("pods"),
                backoff: Backoff {
                    initial: Duration::from_secs(10),
                    max: Duration::from_secs(300),
                },
                first_status_delay: Duration::from_millis(100),
                volume_sync_period: Duration::from_secs(10),
            },
            runtime: FakeRuntime::default(),
            logs: LogIndex::default(),
            containers: Containers::default(),
            routes: Routes::default(),
            statuses: Mutex::default(),
            probes: Mutex::default(),
            events: Mutex::default(),
            deleted: Mutex::new(false),
            _dir: dir,
        })
    }

    fn last(&self) -> PodStatus {
        self.statuses
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a status was written")
    }

    fn reasons(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events.iter().map(|(reason, _)| reason.clone()).collect()
    }

    fn set_probe(&self, path: &str, ok: bool) {
        self.probes.lock().unwrap().insert(path.to_string(), ok);
    }
}

#[async_trait::async_trait]
impl Host for FakeHost {
    fn settings(&self) -> Settings {
        self.settings.clone()
    }

    fn logs(&self) -> &LogIndex {
        &self.logs
    }

    fn containers(&self) -> &Containers {
        &self.containers
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    async fn launch(
        &self,
        _pod: &Pod,
        container: &Container,
        log: PathBuf,
    ) -> Result<Launch, LaunchError> {
        let spec = ContainerSpec {
            name: container.name.clone(),
            artifact: Artifact::Wasm {
                bytes: Arc::from(Vec::new()),
                digest: None,
            },
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            log,
            memory_limit: 64 << 20,
            cpu_limit_millis: None,
            network: None,
            serving: Default::default(),
        };
        let handle = self.runtime.start(spec).map_err(|e| LaunchError {
            reason: "CreateContainerError",
            message: e.to_string(),
            pull: false,
        })?;
        Ok(Launch {
            handle,
            handler: "fake".to_string(),
            image: Image {
                image_id: "registry.local/app@sha256:00".to_string(),
                digest: "sha256:00".to_string(),
                wasm: Arc::from(Vec::new()),
                pulled: false,
            },
            pull_time: Duration::ZERO,
            pod_ip: POD_IP,
        })
    }

    async fn probe(
        &self,
        probe: &Probe,
        _: &Container,
        pod_ip: Ipv4Addr,
    ) -> Result<(), probe::Failure> {
        assert_eq!(pod_ip, POD_IP, "probes go to the pod's address");
        let path = probe
            .http_get
            .as_ref()
            .and_then(|h| h.path.clone())
            .unwrap_or_default();
        match self.probes.lock().unwrap().get(&path) {
            Some(false) => Err(probe::Failure::Status(500)),
            _ => Ok(()),
        }
    }

    async fn sync_volumes(&self, _: &Pod, _: &Path, _: Ipv4Addr) -> Result<(), ConfigError> {
        Ok(())
    }

    async fn publish(&self, _: &Pod, status: &PodStatus) -> Published {
        self.statuses.lock().unwrap().push(status.clone());
        Published::Written
    }

    async fn delete(&self, _: &Pod) {
        *self.deleted.lock().unwrap() = true;
    }

    async fn detach_network(&self, _: &str) {}

    fn network_fallback(&self) -> Option<String> {
        None
    }

    fn event(&self, _: ObjectReference, _: EventType, reason: &str, _: &str, note: &str) {
        self.events
            .lock()
            .unwrap()
            .push((reason.to_string(), note.to_string()));
    }
}

fn container(name: &str) -> Container {
    Container {
        name: name.to_string(),
        image: Some(format!("registry.local/{name}:v1")),
        ..Default::default()
    }
}

fn sidecar(name: &str) -> Container {
    Container {
        restart_policy: Some("Always".to_string()),
        ..container(name)
    }
}

fn http_probe(path: &str, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(8080),
            ..Default::default()
        }),
        period_seconds: Some(1),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

fn pod(restart_policy: &str, init: Vec<Container>, apps: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".to_string()),
            namespace: Some("default".to_string()),
            uid: Some("uid-1".to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some(restart_policy.to_string()),
            init_containers: Some(init),
            containers: apps,
            ..Default::default()
        }),
        status: None,
    }
}

/// A running worker for `pod` on `host`, and the sender of the pod's newer versions.
fn start(host: &Arc<FakeHost>, pod: Pod) -> (watch::Sender<Arc<Pod>>, watch::Sender<bool>) {
    let (pods, rx) = watch::channel(Arc::new(pod));
    let (stopping, stopping_rx) = watch::channel(false);
    let as_host: Arc<dyn Host> = host.clone();
    tokio::spawn(super::run(as_host, rx, stopping_rx));
    (pods, stopping)
}

/// Lets the paused clock run in small steps until `done` holds, for at most `limit`.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn container_status<'a>(status: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no status of {name}"))
}

fn waiting_reason(status: &PodStatus, name: &str) -> Option<String> {
    container_status(status, name)
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn condition(status: &PodStatus, kind: &str) -> String {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn fail_after(seconds: u64) -> Script {
    Script {
        exit_after: Some((Duration::from_secs(seconds), Exit::error(1, "boom"))),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_crashing_container_restarts_after_a_doubling_back_off() {
    let host = FakeHost::new();
    host.runtime.script("app", fail_after(1));
    let _pod = start(&host, pod("Always", vec![], vec![container("app")]));
    let started = tokio::time::Instant::now();
    until("three starts", Duration::from_secs(60), || {
        host.runtime.started_names().len() == 3
    })
    .await;
    // Runs of 1 s, then back-offs of 10 s and 20 s.
    let elapsed = started.elapsed();
    assert!(
        (Duration::from_secs(32)..Duration::from_secs(34)).contains(&elapsed),
        "{elapsed:?}"
    );
    until("the restart count", Duration::from_secs(5), || {
        container_status(&host.last(), "app").restart_count == 2
    })
    .await;
    assert_eq!(host.last().phase.as_deref(), Some("Running"));
    until("the third run failing", Duration::from_secs(5), || {
        waiting_reason(&host.last(), "app").as_deref() == Some("CrashLoopBackOff")
    })
    .await;
    let status = host.last();
    let app = container_status(&status, "app");
    let last = app
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    assert!(host.reasons().contains(&"BackOff".to_string()));
}

#[tokio::test(start_paused = true)]
async fn never_and_on_failure_decide_what_restarts() {
    for (policy, exit, restarts, phase) in [
        ("Never", 1, false, "Failed"),
        ("Never", 0, false, "Succeeded"),
        ("OnFailure", 0, false, "Succeeded"),
        ("OnFailure", 1, true, "Running"),
    ] {
        let host = FakeHost::new();
        let code = if exit == 0 {
            Exit::completed()
        } else {
            Exit::error(exit, "boom")
        };
        host.runtime.script(
            "job",
            Script {
                exit_after: Some((Duration::from_secs(1), code)),
                ..Default::default()
            },
        );
        let _pod = start(&host, pod(policy, vec![], vec![container("job")]));
        tokio::time::sleep(Duration::from_secs(15)).await;
        let what = format!("{policy} after exit {exit}");
        assert_eq!(host.last().phase.as_deref(), Some(phase), "{what}");
        assert_eq!(host.runtime.started_names().len() > 1, restarts, "{what}");
    }
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_in_order_beside_their_sidecar() {
    let host = FakeHost::new();
    host.runtime.script(
        "migrate",
        Script {
            exit_after: Some((Duration::from_secs(2), Exit::completed())),
            ..Default::default()
        },
    );
    host.runtime.script(
        "app",
        Script {
            exit_after: Some((Duration::from_secs(5), Exit::completed())),
            ..Default::default()
        },
    );
    let _pod = start(
        &host,
        pod(
            "Never",
            vec![sidecar("proxy"), container("migrate")],
            vec![container("app")],
        ),
    );
    until("the first init container", Duration::from_secs(1), || {
        host.runtime.started_names().len() == 2
    })
    .await;
    // The sidecar started (no startup probe), so the next init container went; the app
    // waits for it.
    assert_eq!(host.runtime.started_names(), ["proxy", "migrate"]);
    until("the pod's status", Duration::from_secs(1), || {
        !host.statuses.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        waiting_reason(&host.last(), "app").as_deref(),
        Some("PodInitializing")
    );
    assert_eq!(condition(&host.last(), "Initialized"), "False");
    until("the app container", Duration::from_secs(5), || {
        host.runtime.started_names().len() == 3
    })
    .await;
    assert_eq!(host.runtime.started_names()[2], "app");
    until("the pod completing", Duration::from_secs(10), || {
        host.last().phase.as_deref() == Some("Succeeded")
    })
    .await;
    // With the app container done, the sidecar was stopped, and its exit does not fail the
    // pod.
    let proxy = host.runtime.last("proxy").unwrap();
    assert!(proxy.was_terminated() && proxy.is_finished());
    assert_eq!(host.runtime.started_names().len(), 3, "nothing restarted");
}

#[tokio::test(start_paused = true)]
async fn a_failed_init_container_fails_the_pod_under_never() {
    let host = FakeHost::new();
    host.runtime.script("setup", fail_after(1));
    let _pod = start(
        &host,
        pod("Never", vec![container("setup")], vec![container("app")]),
    );
    until("the pod failing", Duration::from_secs(10), || {
        host.statuses
            .lock()
            .unwrap()
            .last()
            .is_some_and(|s| s.phase.as_deref() == Some("Failed"))
    })
    .await;
    assert_eq!(host.runtime.started_names(), ["setup"], "the app never ran");
}

#[tokio::test(start_paused = true)]
async fn probes_drive_readiness_and_a_failing_liveness_probe_restarts() {
    let host = FakeHost::new();
    let mut app = container("app");
    app.readiness_probe = Some(http_probe("/ready", 1));
    app.liveness_probe = Some(http_probe("/live", 3));
    host.set_probe("/ready", false);
    let _pod = start(&host, pod("Always", vec![], vec![app]));
    until("running, not ready", Duration::from_secs(5), || {
        host.statuses.lock().unwrap().last().is_some_and(|s| {
            s.phase.as_deref() == Some("Running") && condition(s, "Ready") == "False"
        })
    })
    .await;
    assert!(host.reasons().contains(&"Unhealthy".to_string()));
    host.set_probe("/ready", true);
    until("ready", Duration::from_secs(5), || {
        condition(&host.last(), "Ready") == "True"
    })
    .await;
    assert!(container_status(&host.last(), "app").ready);
    // Three liveness failures in a row: killed, and restarted by the policy.
    host.set_probe("/live", false);
    until("a restart", Duration::from_secs(30), || {
        host.runtime.started_names().len() == 2
    })
    .await;
    let first = host.runtime.started()[0].1.clone();
    assert!(first.is_finished());
    assert!(host.reasons().contains(&"Killing".to_string()));
}

/// A Function's replica joins this node's gateway routes the moment it is ready, before
/// any EndpointSlice says so, and leaves them when it stops being ready or starts stopping.
#[tokio::test(start_paused = true)]
async fn a_ready_function_replica_is_routed_to_at_once_on_its_node() {
    let host = FakeHost::new();
    host.routes.update(RouteTable::from([(
        ("default".to_string(), "hello".to_string()),
        FunctionRoute {
            endpoints: Vec::new(),
            timeout: Duration::from_secs(60),
            service: None,
        },
    )]));
    let endpoints = || host.routes.get("default", "hello").unwrap().endpoints;
    let mut app = container("fn");
    app.readiness_probe = Some(http_probe("/ready", 1));
    host.set_probe("/ready", false);
    let mut spec = pod("Always", vec![], vec![app]);
    spec.metadata.labels = Some([(FUNCTION_LABEL.to_string(), "hello".to_string())].into());
    let (pods, _stopping) = start(&host, spec.clone());
    until("running, not ready", Duration::from_secs(5), || {
        host.runtime.started_names().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(endpoints().is_empty(), "not ready, not routed");
    host.set_probe("/ready", true);
    until("routed once ready", Duration::from_secs(5), || {
        endpoints() == [std::net::SocketAddrV4::new(POD_IP, 8080)]
    })
    .await;
    host.set_probe("/ready", false);
    until("unrouted once failing", Duration::from_secs(5), || {
        endpoints().is_empty()
    })
    .await;
    host.set_probe("/ready", true);
    until("routed again", Duration::from_secs(5), || {
        !endpoints().is_empty()
    })
    .await;
    spec.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    pods.send_replace(Arc::new(spec));
    until("unrouted once stopping", Duration::from_secs(1), || {
        endpoints().is_empty()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_stops_within_its_grace_period_then_goes() {
    let host = FakeHost::new();
    host.runtime.script(
        "stubborn",
        Script {
            ignores_terminate: true,
            ..Default::default()
        },
    );
    let mut spec = pod(
        "Always",
        vec![],
        vec![container("polite"), container("stubborn")],
    );
    let (pods, _stopping) = start(&host, spec.clone());
    until("both running", Duration::from_secs(5), || {
        host.runtime.started_names().len() == 2
    })
    .await;
    let grace = 30;
    let deadline = std::time::SystemTime::now() + Duration::from_secs(grace);
    spec.metadata.deletion_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::try_from(deadline).unwrap(),
    ));
    spec.metadata.deletion_grace_period_seconds = Some(grace as i64);
    let asked = tokio::time::Instant::now();
    pods.send_replace(Arc::new(spec));
    let polite = host.runtime.last("polite").unwrap();
    let stubborn = host.runtime.last("stubborn").unwrap();
    until("the polite one ends", Duration::from_secs(1), || {
        polite.is_finished()
    })
    .await;
    assert!(stubborn.was_terminated() && !stubborn.is_finished());
    until("the pod deleted", Duration::from_secs(60), || {
        *host.deleted.lock().unwrap()
    })
    .await;
    let waited = asked.elapsed();
    assert!(
        (Duration::from_secs(grace - 1)..Duration::from_secs(grace + 1)).contains(&waited),
        "the stubborn container was killed after {waited:?}"
    );
    assert!(stubborn.is_finished());
    let last = host.last();
    let stopped = container_status(&last, "stubborn");
    let terminated = stopped.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(terminated.reason.as_deref(), Some("Stopped"));
    assert!(host.reasons().contains(&"Killing".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_quick_start_is_written_once_as_running() {
    let host = FakeHost::new();
    let _pod = start(&host, pod("Always", vec![], vec![container("app")]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let statuses = host.statuses.lock().unwrap().clone();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    let status = &statuses[0];
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.88.0.7"));
    assert_eq!(condition(status, "Ready"), "True");
    let app = container_status(status, "app");
    assert_eq!(app.container_id.as_deref(), Some("fake://uid-1-app-0"));
    assert_eq!(app.image_id, "registry.local/app@sha256:00");
    assert_eq!(app.started, Some(true));
}

#[tokio::test(start_paused = true)]
async fn a_start_that_fails_is_retried_with_back_off() {
    let host = FakeHost::new();
    host.runtime.script(
        "app",
        Script {
            fails_to_start: Some("no such thing".to_string()),
            ..Default::default()
        },
    );
    let _pod = start(&host, pod("Always", vec![], vec![container("app")]));
    until("the failure shown", Duration::from_secs(1), || {
        host.statuses
            .lock()
            .unwrap()
            .last()
            .is_some_and(|s| waiting_reason(s, "app").as_deref() == Some("CreateContainerError"))
    })
    .await;
    let status = host.last();
    let waiting = container_status(&status, "app")
        .state
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap();
    assert!(
        waiting.message.unwrap().contains("no such thing"),
        "the message says why"
    );
    host.runtime.script("app", Script::default());
    // The first back-off is 10 s.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(host.runtime.started_names().is_empty());
    until("the retry", Duration::from_secs(2), || {
        host.runtime.started_names().len() == 1
    })
    .await;
    assert!(host.reasons().contains(&"Failed".to_string()));
}
