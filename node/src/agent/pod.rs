//! One pod's worker: pulls its images, runs its init containers in order and then its app
//! containers, restarts them by `restartPolicy` with the kubelet's back-off, reports
//! `pods/{name}/status`, and on deletion stops them within the grace period and deletes the
//! pod for good.
//!
//! The worker is a single task. Everything slow (a pull, a start, a container's run) is a
//! future in `pending`; the task reacts to whichever finishes, to a new version of the pod,
//! and to back-off timers, then writes the status if it changed.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Container, ContainerStatus, LimitRange, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::probe::{self, Probes, Verdict};
use super::{Agent, env};
use crate::images::{Credential, Image, PullPolicy, parse_docker_config};
use crate::network::{EGRESS_ANNOTATION, HostPort, Protocol};
use crate::runtime::{ContainerSpec, Exit, NetworkAccess, Running, Runtime, Stopper};

/// Runs one pod until it is deleted (`pod`'s sender dropped or the pod marked for deletion and
/// stopped) or the agent stops.
pub(super) async fn run(
    agent: Arc<Agent>,
    mut pod: watch::Receiver<Arc<Pod>>,
    mut stopping: watch::Receiver<bool>,
) {
    let first = pod.borrow_and_update().clone();
    let mut worker = Worker::new(agent, first);
    let mut pending: FuturesUnordered<BoxFuture<'static, Step>> = FuturesUnordered::new();
    let mut gone = false;
    let mut agent_stopping = false;
    loop {
        if worker.pod.metadata.deletion_timestamp.is_some() {
            break;
        }
        worker.advance(&mut pending);
        worker.sync_volumes(&mut pending);
        worker.probe(&mut pending);
        let retry_publish = !worker.publish().await;
        let mut wake = worker.next_wake();
        if retry_publish {
            let soon = Instant::now() + Duration::from_secs(1);
            wake = Some(wake.map_or(soon, |w| w.min(soon)));
        }
        tokio::select! {
            Some(step) = pending.next() => worker.handle(step, &mut pending),
            changed = pod.changed() => match changed {
                Ok(()) => worker.pod = pod.borrow_and_update().clone(),
                Err(_) => {
                    gone = true;
                    break;
                }
            },
            stop = stopping.wait_for(|s| *s) => {
                drop(stop);
                // The agent is going away; its containers die with it. Leave the pod to the
                // next start of the agent.
                agent_stopping = true;
                break;
            }
            () = sleep_until(wake) => {}
        }
    }
    if agent_stopping {
        worker.stop_all(&mut pending, Duration::ZERO).await;
        return;
    }
    let grace = if gone {
        Duration::ZERO
    } else {
        worker.grace_period()
    };
    worker.event(
        EventType::Normal,
        "Killing",
        "Stopping",
        "Stopping the pod's containers",
    );
    worker.stop_all(&mut pending, grace).await;
    worker.agent.network().detach(&worker.uid).await;
    if !gone {
        worker.publish().await;
        worker.delete().await;
    }
    worker.remove_files();
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Something slow that finished.
enum Step {
    Launched {
        which: Which,
        result: Result<Launch, LaunchError>,
    },
    Exited {
        which: Which,
        exit: Exit,
    },
    /// The file volumes were rewritten from their objects.
    VolumesSynced(Result<(), String>),
    /// A probe of the container's run number `run` ended.
    Probed {
        which: Which,
        run: u64,
        kind: probe::Kind,
        result: Result<(), String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Which {
    init: bool,
    index: usize,
}

struct Launch {
    running: Running,
    image: Image,
    /// How long getting the image took (a look in the cache, or a pull).
    pull_time: Duration,
    /// The pod's address (its own, or the node's for hostNetwork).
    pod_ip: Ipv4Addr,
}

/// Why a container could not be started, as the kubelet words it.
struct LaunchError {
    reason: &'static str,
    message: String,
    /// Whether the image itself failed (the back-off shows as ImagePullBackOff).
    pull: bool,
}

#[derive(Clone)]
struct Finished {
    exit: Exit,
    started_at: String,
    finished_at: String,
    container_id: String,
}

enum State {
    /// Not running; started when `retry_at` has passed (or at once without one).
    Waiting {
        reason: String,
        message: Option<String>,
        retry_at: Option<Instant>,
    },
    /// Pulling or starting.
    Launching,
    Running {
        started_at: String,
        since: Instant,
        stopper: Stopper,
        container_id: String,
    },
    Terminated(Finished),
}

struct Slot {
    spec: Container,
    state: State,
    restart_count: i32,
    last: Option<Finished>,
    /// The back-off the next failure waits.
    backoff: Option<Duration>,
    image_id: String,
    /// Whether it ever ran (a later start is a restart).
    started_once: bool,
    pull_failures: u32,
    image: Option<Image>,
    /// The probes of the current run (while it runs).
    probes: Option<Probes>,
    /// Counts the container's runs, so that a late probe result of an earlier one is ignored.
    run: u64,
    /// An init container with `restartPolicy: Always`: a sidecar that runs for the pod's life.
    sidecar: bool,
    /// A sidecar that has started (its startup probe passed): the next init container may go.
    sidecar_started: bool,
}

impl Slot {
    fn new(spec: Container, waiting_reason: &str) -> Self {
        let spec_is_sidecar = spec.restart_policy.as_deref() == Some("Always");
        Self {
            spec,
            state: State::Waiting {
                reason: waiting_reason.to_string(),
                message: None,
                retry_at: None,
            },
            restart_count: 0,
            last: None,
            backoff: None,
            image_id: String::new(),
            started_once: false,
            pull_failures: 0,
            image: None,
            probes: None,
            run: 0,
            sidecar: spec_is_sidecar,
            sidecar_started: false,
        }
    }

    /// Done as far as the init sequence is concerned: completed, or a sidecar that started.
    fn init_done(&self) -> bool {
        self.succeeded() || (self.sidecar && self.sidecar_started)
    }

    /// Running, started (its startup probe passed) and ready (its readiness probe passed).
    fn ready(&self) -> bool {
        matches!(self.state, State::Running { .. })
            && self.probes.as_ref().is_none_or(|p| p.started && p.ready)
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(f) if f.exit.code == 0)
    }

    fn due(&self, now: Instant) -> bool {
        matches!(&self.state, State::Waiting { retry_at, .. } if retry_at.is_none_or(|t| t <= now))
    }

    /// Adopts what a previous run of the agent reported: finished containers stay finished;
    /// ones that were running died with that agent and count a restart.
    fn resume(&mut self, previous: &ContainerStatus, keeps_finished: impl Fn(i32) -> bool) {
        self.restart_count = previous.restart_count;
        self.image_id = previous.image_id.clone();
        let state = previous.state.as_ref();
        if let Some(t) = state.and_then(|s| s.terminated.as_ref())
            && keeps_finished(t.exit_code)
        {
            self.state = State::Terminated(Finished {
                exit: Exit {
                    code: t.exit_code,
                    reason: t.reason.clone().unwrap_or_default(),
                    message: t.message.clone(),
                },
                started_at: t
                    .started_at
                    .as_ref()
                    .map(|s| s.0.to_string())
                    .unwrap_or_default(),
                finished_at: t
                    .finished_at
                    .as_ref()
                    .map(|s| s.0.to_string())
                    .unwrap_or_default(),
                container_id: previous.container_id.clone().unwrap_or_default(),
            });
            self.started_once = true;
            return;
        }
        let ran = state.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            || previous
                .last_state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some());
        if ran {
            self.started_once = true;
            self.last = Some(Finished {
                exit: Exit {
                    code: 137,
                    reason: "ContainerStatusUnknown".to_string(),
                    message: Some("the node agent restarted while the container ran".to_string()),
                },
                started_at: state
                    .and_then(|s| s.running.as_ref())
                    .and_then(|r| r.started_at.as_ref())
                    .map(|s| s.0.to_string())
                    .unwrap_or_default(),
                finished_at: now_rfc3339(),
                container_id: previous.container_id.clone().unwrap_or_default(),
            });
        }
    }
}

fn now_rfc3339() -> String {
    bosun_api::time::rfc3339(SystemTime::now())
}

struct Worker {
    agent: Arc<Agent>,
    pod: Arc<Pod>,
    uid: String,
    namespace: String,
    name: String,
    dir: PathBuf,
    start_time: String,
    init: Vec<Slot>,
    apps: Vec<Slot>,
    /// Set when an init container failed for good: the pod is Failed.
    init_failed: bool,
    /// Set when every app container has finished for good: the sidecars are stopped and not
    /// restarted.
    apps_done: bool,
    /// The pod had finished (Succeeded or Failed) before this worker: nothing runs again.
    finished_before: bool,
    terminating: bool,
    published: Option<Value>,
    syncing_volumes: bool,
    volumes_synced_at: Instant,
    /// Until when the first status is held back while containers are being started
    /// (`first_status_delay`).
    hold_first_status_until: Instant,
    /// The pod's address, once its network is set up (or from the status an earlier run of
    /// the agent wrote).
    pod_ip: Option<Ipv4Addr>,
}

impl Worker {
    fn new(agent: Arc<Agent>, pod: Arc<Pod>) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let has_init = spec.init_containers.as_ref().is_some_and(|i| !i.is_empty());
        let init: Vec<Slot> = spec
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| Slot::new(c, "PodInitializing"))
            .collect();
        let app_reason = if has_init {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let apps: Vec<Slot> = spec
            .containers
            .into_iter()
            .map(|c| Slot::new(c, app_reason))
            .collect();
        let status = pod.status.as_ref();
        let start_time = status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(now_rfc3339);
        let phase = status.and_then(|s| s.phase.as_deref());
        let agent_delay = agent.config.first_status_delay;
        let mut worker = Self {
            dir: agent.pods_dir.join(&uid),
            agent,
            uid,
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            start_time,
            init,
            apps,
            init_failed: false,
            apps_done: false,
            finished_before: matches!(phase, Some("Succeeded" | "Failed")),
            terminating: false,
            published: None,
            syncing_volumes: false,
            volumes_synced_at: Instant::now(),
            hold_first_status_until: Instant::now() + agent_delay,
            pod_ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            pod,
        };
        worker.resume();
        worker
            .agent
            .logs
            .add_pod(&worker.namespace, &worker.name, worker.dir.join("logs"));
        worker
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// Picks up the statuses a previous run of the agent wrote.
    fn resume(&mut self) {
        let Some(status) = self.pod.status.clone() else {
            return;
        };
        let policy = self.restart_policy().to_string();
        for previous in status.init_container_statuses.iter().flatten() {
            if let Some(slot) = self.init.iter_mut().find(|s| s.spec.name == previous.name) {
                let sidecar = slot.sidecar;
                slot.resume(previous, |code| code == 0 && !sidecar);
                slot.sidecar_started = sidecar && slot.started_once;
            }
        }
        for previous in status.container_statuses.iter().flatten() {
            if let Some(slot) = self.apps.iter_mut().find(|s| s.spec.name == previous.name) {
                slot.resume(previous, |code| match policy.as_str() {
                    "Never" => true,
                    "OnFailure" => code == 0,
                    _ => false,
                });
            }
        }
        if self.init.iter().all(Slot::init_done) {
            for slot in &mut self.apps {
                if let State::Waiting { reason, .. } = &mut slot.state {
                    *reason = "ContainerCreating".to_string();
                }
            }
        }
    }

    fn slot(&mut self, which: Which) -> &mut Slot {
        if which.init {
            &mut self.init[which.index]
        } else {
            &mut self.apps[which.index]
        }
    }

    /// Starts whatever is due: the first unfinished init container, else every app container.
    fn advance(&mut self, pending: &mut FuturesUnordered<BoxFuture<'static, Step>>) {
        if self.terminating || self.init_failed || self.finished_before {
            return;
        }
        let now = Instant::now();
        if self.apps_done {
            return;
        }
        // Every app container has finished for good: the sidecars stop too.
        if !self.apps.is_empty()
            && self
                .apps
                .iter()
                .all(|s| matches!(s.state, State::Terminated(_)))
        {
            self.apps_done = true;
            for slot in self.init.iter().filter(|s| s.sidecar) {
                if let State::Running { stopper, .. } = &slot.state {
                    stopper.request_shutdown();
                    stopper.stop();
                }
            }
            return;
        }
        // Sidecars that started once are restarted whenever they stop, like app containers.
        for index in 0..self.init.len() {
            let slot = &self.init[index];
            if slot.sidecar && slot.sidecar_started && slot.due(now) {
                self.launch(Which { init: true, index }, pending);
            }
        }
        if let Some(index) = self.init.iter().position(|s| !s.init_done()) {
            if self.init[index].due(now) {
                self.launch(Which { init: true, index }, pending);
            }
            return;
        }
        for index in 0..self.apps.len() {
            if let State::Waiting { reason, .. } = &mut self.apps[index].state
                && reason == "PodInitializing"
            {
                *reason = "ContainerCreating".to_string();
            }
            if self.apps[index].due(now) {
                self.launch(Which { init: false, index }, pending);
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let running = self
            .init
            .iter()
            .chain(&self.apps)
            .any(|s| matches!(s.state, State::Running { .. }));
        let sync = (running && !self.syncing_volumes).then_some(self.volumes_synced_at);
        let probes = self
            .init
            .iter()
            .chain(&self.apps)
            .filter_map(|s| s.probes.as_ref()?.next_due());
        self.init
            .iter()
            .chain(&self.apps)
            .filter_map(|s| match &s.state {
                State::Waiting { retry_at, .. } => *retry_at,
                _ => None,
            })
            .chain(sync)
            .chain(probes)
            .chain(
                self.holding_first_status()
                    .then_some(self.hold_first_status_until),
            )
            .min()
    }

    fn launch(&mut self, which: Which, pending: &mut FuturesUnordered<BoxFuture<'static, Step>>) {
        let slot = self.slot(which);
        slot.state = State::Launching;
        let attempt = slot.restart_count + i32::from(slot.started_once);
        let container = slot.spec.clone();
        let log = self
            .dir
            .join("logs")
            .join(&container.name)
            .join(format!("{attempt}.log"));
        let agent = self.agent.clone();
        let pod = self.pod.clone();
        // A task of its own, so that the launch goes on while the worker writes the status.
        let task = tokio::spawn(async move { launch(&agent, &pod, &container, log).await });
        pending.push(
            async move {
                let result = task.await.unwrap_or_else(|e| {
                    Err(LaunchError {
                        reason: "CreateContainerError",
                        message: format!("the start failed: {e}"),
                        pull: false,
                    })
                });
                Step::Launched { which, result }
            }
            .boxed(),
        );
    }

    fn handle(&mut self, step: Step, pending: &mut FuturesUnordered<BoxFuture<'static, Step>>) {
        match step {
            Step::Launched { which, result } => match result {
                Ok(launch) => self.started(which, launch, pending),
                Err(error) => self.launch_failed(which, error),
            },
            Step::Exited { which, exit } => self.exited(which, exit),
            Step::VolumesSynced(result) => {
                self.syncing_volumes = false;
                if let Err(error) = result {
                    tracing::warn!(pod = %self.name, %error, "cannot update the pod's volumes");
                }
            }
            Step::Probed {
                which,
                run,
                kind,
                result,
            } => self.probed(which, run, kind, result),
        }
    }

    /// Starts the probes that are due, for the app containers that run.
    fn probe(&mut self, pending: &mut FuturesUnordered<BoxFuture<'static, Step>>) {
        let now = Instant::now();
        let pod_ip = self.pod_ip.unwrap_or(self.agent.node_ip);
        let all = (0..self.init.len())
            .map(|index| Which { init: true, index })
            .chain((0..self.apps.len()).map(|index| Which { init: false, index }));
        for which in all.collect::<Vec<_>>() {
            let slot = self.slot(which);
            if !matches!(slot.state, State::Running { .. }) {
                continue;
            }
            let Some(probes) = slot.probes.as_mut() else {
                continue;
            };
            for (kind, spec) in probes.due(now) {
                let (container, run) = (slot.spec.clone(), slot.run);
                pending.push(
                    async move {
                        let result = probe::check(&spec, &container, pod_ip).await;
                        Step::Probed {
                            which,
                            run,
                            kind,
                            result,
                        }
                    }
                    .boxed(),
                );
            }
        }
    }

    /// Takes a probe's result: readiness, or a kill after too many failures.
    fn probed(&mut self, which: Which, run: u64, kind: probe::Kind, result: Result<(), String>) {
        let slot = self.slot(which);
        if slot.run != run || !matches!(slot.state, State::Running { .. }) {
            return;
        }
        let Some(probes) = slot.probes.as_mut() else {
            return;
        };
        let verdict = probes.record(kind, result.is_ok(), Instant::now());
        if verdict == Verdict::Started && slot.sidecar {
            slot.sidecar_started = true;
        }
        let name = slot.spec.name.clone();
        let stopper = match &slot.state {
            State::Running { stopper, .. } => Some(stopper.clone()),
            _ => None,
        };
        if let Err(message) = &result {
            self.event(
                EventType::Warning,
                "Unhealthy",
                "Probe",
                &format!("{} probe failed: {message}", kind.name()),
            );
        }
        if verdict == Verdict::Kill {
            self.event(
                EventType::Normal,
                "Killing",
                "Kill",
                &format!(
                    "Container {name} failed {} probe, will be restarted",
                    kind.name().to_lowercase()
                ),
            );
            if let Some(stopper) = stopper {
                stopper.stop();
            }
        }
    }

    /// Rewrites the file volumes every `volume_sync_period` while a container runs.
    fn sync_volumes(&mut self, pending: &mut FuturesUnordered<BoxFuture<'static, Step>>) {
        let running = self
            .apps
            .iter()
            .chain(&self.init)
            .any(|s| matches!(s.state, State::Running { .. }));
        if !running || self.syncing_volumes || Instant::now() < self.volumes_synced_at {
            return;
        }
        self.syncing_volumes = true;
        self.volumes_synced_at = Instant::now() + self.agent.config.volume_sync_period;
        let (agent, pod, dir) = (self.agent.clone(), self.pod.clone(), self.dir.clone());
        let pod_ip = self.pod_ip.unwrap_or(agent.node_ip).to_string();
        pending.push(
            async move {
                let host_ip = agent.node_ip.to_string();
                let mut sources = env::Sources::new(&agent.client, &pod, host_ip, pod_ip);
                Step::VolumesSynced(crate::volumes::refresh(&mut sources, &dir, &pod).await)
            }
            .boxed(),
        );
    }

    fn started(
        &mut self,
        which: Which,
        launch: Launch,
        pending: &mut FuturesUnordered<BoxFuture<'static, Step>>,
    ) {
        let uid = self.uid.clone();
        let terminating = self.terminating;
        let slot = self.slot(which);
        if slot.started_once {
            slot.restart_count += 1;
        }
        slot.started_once = true;
        slot.pull_failures = 0;
        slot.image_id = launch.image.image_id.clone();
        let first_start = self.pod_ip.is_none();
        self.pod_ip = Some(launch.pod_ip);
        if first_start
            && !uses_host_network(&self.pod)
            && let Some(reason) = self.agent.network().fallback_reason()
        {
            self.event(
                EventType::Warning,
                "HostNetworkFallback",
                "SetUpNetwork",
                &format!(
                    "The pod shares the node's network (no network namespace of its own): {reason}"
                ),
            );
        }
        let slot = self.slot(which);
        let name = slot.spec.name.clone();
        let image = slot.spec.image.clone().unwrap_or_default();
        // As the kubelet words it.
        let pulled = if launch.image.pulled {
            format!(
                "Successfully pulled image {image:?} in {:.3}s",
                launch.pull_time.as_secs_f64()
            )
        } else {
            format!("Container image {image:?} already present on machine")
        };
        // Held for the pod's life: the image cache keeps what live pods use.
        slot.image = Some(launch.image);
        let container_id = format!("wasmtime://{uid}-{name}-{}", slot.restart_count);
        self.agent
            .logs
            .set_running(&self.namespace, &self.name, &name, true);
        let slot = self.slot(which);
        let stopper = launch.running.stopper();
        if terminating {
            stopper.stop();
        }
        slot.run += 1;
        // Init containers are not probed, sidecars are.
        slot.probes =
            (!which.init || slot.sidecar).then(|| Probes::new(&slot.spec, Instant::now()));
        if slot.sidecar && slot.probes.as_ref().is_none_or(|p| p.started) {
            slot.sidecar_started = true;
        }
        slot.state = State::Running {
            started_at: now_rfc3339(),
            since: Instant::now(),
            stopper,
            container_id,
        };
        let running = launch.running;
        pending.push(
            async move {
                let exit = running.exited().await;
                Step::Exited { which, exit }
            }
            .boxed(),
        );
        self.event(EventType::Normal, "Pulled", "Pull", &pulled);
        self.event(
            EventType::Normal,
            "Created",
            "Create",
            &format!("Created container {name}"),
        );
        self.event(
            EventType::Normal,
            "Started",
            "Start",
            &format!("Started container {name}"),
        );
    }

    fn launch_failed(&mut self, which: Which, error: LaunchError) {
        let backoff = self.agent.config.backoff;
        let slot = self.slot(which);
        let delay = next_backoff(&mut slot.backoff, backoff.initial, backoff.max);
        let reason = if error.pull {
            slot.pull_failures += 1;
            if slot.pull_failures > 1 {
                "ImagePullBackOff"
            } else {
                error.reason
            }
        } else {
            error.reason
        };
        let message = if reason == "ImagePullBackOff" {
            format!(
                "Back-off pulling image {:?}: {}",
                slot.spec.image.as_deref().unwrap_or(""),
                error.message
            )
        } else {
            error.message.clone()
        };
        slot.state = State::Waiting {
            reason: reason.to_string(),
            message: Some(message),
            retry_at: Some(Instant::now() + delay),
        };
        let name = slot.spec.name.clone();
        self.event(
            EventType::Warning,
            "Failed",
            if error.pull { "Pull" } else { "Create" },
            &format!(
                "Error: {} (container {name}): {}",
                error.reason, error.message
            ),
        );
    }

    fn exited(&mut self, which: Which, exit: Exit) {
        let policy = self.restart_policy().to_string();
        let (pod_name, namespace, uid) =
            (self.name.clone(), self.namespace.clone(), self.uid.clone());
        let terminating = self.terminating;
        let backoff = self.agent.config.backoff;
        let agent = self.agent.clone();
        let slot = self.slot(which);
        slot.probes = None;
        agent
            .logs
            .set_running(&namespace, &pod_name, &slot.spec.name, false);
        let (started_at, since, container_id) = match &slot.state {
            State::Running {
                started_at,
                since,
                container_id,
                ..
            } => (started_at.clone(), *since, container_id.clone()),
            _ => (String::new(), Instant::now(), String::new()),
        };
        let finished = Finished {
            exit,
            started_at,
            finished_at: now_rfc3339(),
            container_id,
        };
        let code = finished.exit.code;
        let sidecar = slot.sidecar;
        let restart = !terminating
            && if sidecar {
                !self.apps_done
            } else {
                match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => !which.init || code != 0,
                }
            };
        let slot = self.slot(which);
        if !restart {
            let failed_init = which.init && code != 0 && !sidecar;
            slot.state = State::Terminated(finished);
            if failed_init && !terminating {
                self.init_failed = true;
            }
            return;
        }
        // A container that ran well past the longest back-off starts its back-off afresh.
        if since.elapsed() > backoff.max * 2 {
            slot.backoff = None;
        }
        let delay = next_backoff(&mut slot.backoff, backoff.initial, backoff.max);
        let name = slot.spec.name.clone();
        slot.last = Some(finished);
        slot.state = State::Waiting {
            reason: "CrashLoopBackOff".to_string(),
            message: Some(format!(
                "back-off {} restarting failed container={name} pod={pod_name}_{namespace}({uid})",
                bosun_api::duration::format(delay)
            )),
            retry_at: Some(Instant::now() + delay),
        };
        self.event(
            EventType::Warning,
            "BackOff",
            "Restart",
            &format!(
                "Back-off restarting failed container {name} in pod {pod_name}_{namespace}({uid})"
            ),
        );
    }

    /// The grace period of a pod being deleted: until its deletionTimestamp, none left if that
    /// has passed (a node that was cut off or frozen while its pods were evicted).
    fn grace_period(&self) -> Duration {
        let meta = &self.pod.metadata;
        let seconds = meta.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64;
        let until = meta
            .deletion_timestamp
            .as_ref()
            .and_then(|t| bosun_api::time::parse_rfc3339(&t.0.to_string()))
            .map(|t| {
                t.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            });
        until.map_or(Duration::from_secs(seconds), |u| {
            u.min(Duration::from_secs(seconds))
        })
    }

    /// Stops every container: launches in flight are let finish and stopped; running guests
    /// get `grace`, then are interrupted.
    async fn stop_all(
        &mut self,
        pending: &mut FuturesUnordered<BoxFuture<'static, Step>>,
        grace: Duration,
    ) {
        self.terminating = true;
        let deadline = Instant::now() + grace;
        let mut interrupted = false;
        // Bosun's SIGTERM: guests that import bosun:lifecycle see it and can exit cleanly.
        for slot in self.init.iter().chain(&self.apps) {
            if let State::Running { stopper, .. } = &slot.state {
                stopper.request_shutdown();
            }
        }
        loop {
            let running = self
                .init
                .iter()
                .chain(&self.apps)
                .any(|s| matches!(s.state, State::Running { .. }));
            if pending.is_empty() && !running {
                break;
            }
            if !interrupted && Instant::now() >= deadline {
                for slot in self.init.iter().chain(&self.apps) {
                    if let State::Running { stopper, .. } = &slot.state {
                        stopper.stop();
                    }
                }
                interrupted = true;
            }
            let wake = (!interrupted).then_some(deadline);
            tokio::select! {
                Some(step) = pending.next() => match step {
                    Step::Launched { which, result: Ok(launch) } => {
                        launch.running.stopper().request_shutdown();
                        if interrupted {
                            launch.running.stop();
                        }
                        self.started(which, launch, pending);
                    }
                    Step::Launched { which, result: Err(_) } => {
                        self.slot(which).state = State::Waiting {
                            reason: "ContainerCreating".to_string(),
                            message: None,
                            retry_at: None,
                        };
                    }
                    Step::Exited { which, exit } => self.exited(which, exit),
                    Step::VolumesSynced(_) => self.syncing_volumes = false,
                    Step::Probed { .. } => {}
                },
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Deletes the pod for good once its containers have stopped (the API server waits for
    /// this when the pod has a node and a grace period).
    async fn delete(&self) {
        let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(error) => tracing::warn!(pod = %self.name, %error, "cannot delete the pod"),
        }
    }

    fn remove_files(&self) {
        self.agent
            .logs
            .remove_pod(&self.namespace, &self.name, &self.dir.join("logs"));
        if let Err(error) = std::fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot remove the pod's files");
        }
    }

    fn event(&self, kind: EventType, reason: &str, action: &str, note: &str) {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: Some(self.uid.clone()),
            ..Default::default()
        };
        self.agent.event(reference, kind, reason, action, note);
    }

    /// Whether the first status is held back: nothing written yet, a container being
    /// started, and `first_status_delay` not over.
    fn holding_first_status(&self) -> bool {
        self.published.is_none()
            && Instant::now() < self.hold_first_status_until
            && self
                .init
                .iter()
                .chain(&self.apps)
                .any(|s| matches!(s.state, State::Launching))
    }

    /// Writes the status if it changed; false if that failed (to be retried).
    async fn publish(&mut self) -> bool {
        if self.finished_before || self.holding_first_status() {
            return true;
        }
        let status = self.status();
        if self.published.as_ref() == Some(&status) {
            return true;
        }
        let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), &self.namespace);
        match api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
        {
            Ok(_) => {
                self.published = Some(status);
                true
            }
            Err(kube::Error::Api(e)) if e.code == 404 => true,
            Err(error) => {
                tracing::warn!(pod = %self.name, %error, "cannot write the pod's status");
                false
            }
        }
    }

    fn phase(&self) -> &'static str {
        if self.init_failed {
            return "Failed";
        }
        if !self.init.iter().all(Slot::init_done) {
            return "Pending";
        }
        let mut waiting_first = 0;
        let mut running = 0;
        let mut succeeded = 0;
        let mut failed = 0;
        for slot in &self.apps {
            match &slot.state {
                State::Running { .. } => running += 1,
                State::Terminated(f) if f.exit.code == 0 => succeeded += 1,
                State::Terminated(_) => failed += 1,
                // Waiting to restart counts as running, as in the kubelet.
                State::Waiting { .. } | State::Launching if slot.last.is_some() => running += 1,
                _ => waiting_first += 1,
            }
        }
        if waiting_first > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if failed > 0 {
            "Failed"
        } else if succeeded > 0 {
            "Succeeded"
        } else {
            "Pending"
        }
    }

    fn status(&self) -> Value {
        let host_ip = self.agent.node_ip.to_string();
        let initialized = self.init.iter().all(Slot::init_done);
        // Sidecars count for readiness (until the app containers are done).
        let unready: Vec<&str> = self
            .init
            .iter()
            .filter(|s| s.sidecar && !self.apps_done)
            .chain(&self.apps)
            .filter(|s| !s.ready())
            .map(|s| s.spec.name.as_str())
            .collect();
        let phase = self.phase();
        let incomplete: Vec<&str> = self
            .init
            .iter()
            .filter(|s| !s.init_done())
            .map(|s| s.spec.name.as_str())
            .collect();
        let ready = unready.is_empty();
        let completed = matches!(phase, "Succeeded" | "Failed");
        let mut conditions = vec![
            condition(
                "Initialized",
                initialized,
                "ContainersNotInitialized",
                format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                ),
            ),
            condition(
                "ContainersReady",
                ready,
                if completed {
                    "PodCompleted"
                } else {
                    "ContainersNotReady"
                },
                format!("containers with unready status: [{}]", unready.join(" ")),
            ),
            condition(
                "Ready",
                ready,
                if completed {
                    "PodCompleted"
                } else {
                    "ContainersNotReady"
                },
                format!("containers with unready status: [{}]", unready.join(" ")),
            ),
        ];
        // Keep the conditions others own (PodScheduled from the scheduler, readiness gates),
        // and the transition time of ours that did not change.
        let previous: Vec<Value> = self
            .pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.conditions).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let now = now_rfc3339();
        for c in &mut conditions {
            let before = previous.iter().find(|p| p["type"] == c["type"]);
            c["lastTransitionTime"] = match before {
                Some(b) if b["status"] == c["status"] && b["lastTransitionTime"].is_string() => {
                    b["lastTransitionTime"].clone()
                }
                _ => match self.published.as_ref().and_then(|p| {
                    p["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|p| p["type"] == c["type"]))
                        .filter(|p| p["status"] == c["status"])
                        .map(|p| p["lastTransitionTime"].clone())
                }) {
                    Some(t) => t,
                    None => json!(now),
                },
            };
        }
        let ours = ["Initialized", "ContainersReady", "Ready"];
        let mut all: Vec<Value> = previous
            .into_iter()
            .filter(|p| !ours.iter().any(|o| p["type"] == *o))
            .collect();
        all.extend(conditions);
        let mut status = json!({
            "phase": phase,
            "conditions": all,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": self.start_time,
            "initContainerStatuses": self.init.iter().map(|s| container_status(s, true)).collect::<Vec<_>>(),
            "containerStatuses": self.apps.iter().map(|s| container_status(s, false)).collect::<Vec<_>>(),
        });
        if let Some(ip) = self.pod_ip {
            status["podIP"] = json!(ip.to_string());
            status["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        status
    }
}

fn condition(kind: &str, ok: bool, reason: &str, message: String) -> Value {
    if ok {
        json!({"type": kind, "status": "True"})
    } else {
        json!({"type": kind, "status": "False", "reason": reason, "message": message})
    }
}

fn terminated(f: &Finished) -> Value {
    let mut t = json!({
        "exitCode": f.exit.code,
        "reason": f.exit.reason,
        "startedAt": f.started_at,
        "finishedAt": f.finished_at,
        "containerID": f.container_id,
    });
    if let Some(m) = &f.exit.message {
        t["message"] = json!(m);
    }
    if f.started_at.is_empty() {
        t.as_object_mut().unwrap().remove("startedAt");
    }
    json!({ "terminated": t })
}

fn container_status(slot: &Slot, init: bool) -> Value {
    let (state, ready, id) = match &slot.state {
        State::Waiting {
            reason, message, ..
        } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            (json!({ "waiting": w }), false, None)
        }
        State::Launching => {
            let reason = match &slot.last {
                Some(_) => "CrashLoopBackOff",
                None if init => "PodInitializing",
                None => "ContainerCreating",
            };
            (json!({"waiting": {"reason": reason}}), false, None)
        }
        State::Running {
            started_at,
            container_id,
            ..
        } => (
            json!({"running": {"startedAt": started_at}}),
            (!init || slot.sidecar) && slot.ready(),
            Some(container_id.clone()),
        ),
        State::Terminated(f) => (
            terminated(f),
            init && f.exit.code == 0,
            Some(f.container_id.clone()),
        ),
    };
    let mut status = json!({
        "name": slot.spec.name,
        "image": slot.spec.image.clone().unwrap_or_default(),
        "imageID": slot.image_id,
        "ready": ready,
        "restartCount": slot.restart_count,
        "started": matches!(slot.state, State::Running { .. })
            && slot.probes.as_ref().is_none_or(|p| p.started),
        "state": state,
        "lastState": slot.last.as_ref().map_or(json!({}), terminated),
    });
    if let Some(id) = id.filter(|i| !i.is_empty()) {
        status["containerID"] = json!(id);
    }
    status
}

/// The kubelet's back-off: `initial`, doubled each time, capped at `max`.
fn next_backoff(current: &mut Option<Duration>, initial: Duration, max: Duration) -> Duration {
    let next = match *current {
        None => initial,
        Some(d) => (d * 2).min(max),
    };
    *current = Some(next);
    next
}

/// Pulls the container's image, builds its spec and starts it.
async fn launch(
    agent: &Arc<Agent>,
    pod: &Pod,
    container: &Container,
    log: PathBuf,
) -> Result<Launch, LaunchError> {
    let image_name = container.image.clone().unwrap_or_default();
    let config_error = |message: String| LaunchError {
        reason: "CreateContainerConfigError",
        message,
        pull: false,
    };
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    // The pod's network and the image, at the same time.
    let host_ports = host_ports(pod);
    let attach = agent
        .network()
        .attach(uid, uses_host_network(pod), &host_ports);
    let policy = PullPolicy::of(container.image_pull_policy.as_deref(), &image_name);
    let pull = async {
        let mut secrets =
            env::Sources::new(&agent.client, pod, agent.node_ip.to_string(), String::new());
        let credentials = pull_credentials(&mut secrets, pod).await;
        let started = Instant::now();
        let image = agent.images.ensure(&image_name, policy, &credentials).await;
        (image, started.elapsed())
    };
    let (network, (image, pull_time)) = tokio::join!(attach, pull);
    let image = image.map_err(|e| LaunchError {
        reason: e.reason(),
        message: e.to_string(),
        pull: true,
    })?;
    let network = network.map_err(|message| LaunchError {
        reason: "CreateContainerError",
        message,
        pull: false,
    })?;
    let mut sources = env::Sources::new(
        &agent.client,
        pod,
        agent.node_ip.to_string(),
        network.ip.to_string(),
    );
    let env = env::environment(&mut sources, container)
        .await
        .map_err(config_error)?;
    let env = env::with_services(env, &agent.resolver.directory(), pod);
    let pod_dir = agent
        .pods_dir
        .join(pod.metadata.uid.as_deref().unwrap_or_default());
    let mounts = crate::volumes::mounts(&mut sources, &pod_dir, pod, container)
        .await
        .map_err(config_error)?;
    let memory_limit = memory_limit(agent, pod, container)
        .await
        .map_err(config_error)?;
    let cpu_limit_millis = limit(container, "cpu")
        .map(|q| bosun_api::quantity::parse(&q))
        .transpose()
        .map_err(config_error)?
        .map(|cores| (cores * 1000.0).ceil() as u64);
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| config_error(format!("cannot create {}: {e}", parent.display())))?;
    }
    let spec = ContainerSpec {
        name: container.name.clone(),
        args: env::argv(container, &env),
        env,
        mounts,
        log,
        memory_limit,
        cpu_limit_millis,
        network: Some(NetworkAccess {
            netns: network.netns.clone(),
            policy: agent.network().policy(network.ip, egress_allowed(pod)),
            names: Some(crate::network::names::PodNames {
                resolver: agent.resolver.clone(),
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            }),
        }),
        digest: Some(image.digest.clone()),
        wasm: image.wasm.clone(),
    };
    let starter = agent.clone();
    let running = tokio::task::spawn_blocking(move || starter.runtime.start(spec))
        .await
        .map_err(|e| LaunchError {
            reason: "CreateContainerError",
            message: format!("the start panicked: {e}"),
            pull: false,
        })?
        .map_err(|e| LaunchError {
            reason: "CreateContainerError",
            message: e.to_string(),
            pull: false,
        })?;
    Ok(Launch {
        running,
        image,
        pull_time,
        pod_ip: network.ip,
    })
}

fn uses_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The TCP ports of the pod's containers that ask for a node port (`hostPort`).
fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                // SCTP: wasi:sockets has none, so nothing in a guest could answer.
                _ => return None,
            };
            Some(HostPort {
                protocol,
                host_ip: p
                    .host_ip
                    .as_deref()
                    .and_then(|ip| ip.parse().ok())
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
                host_port: u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?,
                container_port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect()
}

/// Whether the pod lets its guests connect outside the cluster (see [`crate::network::policy`]).
fn egress_allowed(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EGRESS_ANNOTATION))
        .is_some_and(|v| v == "allow")
}

fn limit(container: &Container, resource: &str) -> Option<String> {
    container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(resource))
        .map(|q| q.0.clone())
}

/// The container's memory limit; without one, its namespace's LimitRange default for
/// containers; without that, the node's default.
async fn memory_limit(agent: &Agent, pod: &Pod, container: &Container) -> Result<u64, String> {
    if let Some(q) = limit(container, "memory") {
        return Ok(bosun_api::quantity::parse(&q)? as u64);
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<LimitRange> = Api::namespaced(agent.client.clone(), namespace);
    let ranges = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot read the LimitRanges of {namespace}: {e}"))?;
    for range in ranges {
        for item in range.spec.iter().flat_map(|s| &s.limits) {
            if item.type_ == "Container"
                && let Some(q) = item.default.as_ref().and_then(|d| d.get("memory"))
            {
                return Ok(bosun_api::quantity::parse(&q.0)? as u64);
            }
        }
    }
    Ok(agent.config.default_memory_limit)
}

/// Registry credentials from the pod's `imagePullSecrets` (`kubernetes.io/dockerconfigjson`).
/// A missing or malformed secret is skipped, as the kubelet does; the pull then fails with the
/// registry's own message.
async fn pull_credentials(sources: &mut env::Sources<'_>, pod: &Pod) -> Vec<Credential> {
    let mut out = Vec::new();
    let names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone())
        .collect();
    for name in names {
        let Ok(Some(secret)) = sources.secret(&name).await else {
            tracing::warn!(secret = %name, "image pull secret not found");
            continue;
        };
        let secret: &Secret = secret;
        let Some(json) = secret
            .data
            .as_ref()
            .and_then(|d| d.get(".dockerconfigjson"))
        else {
            continue;
        };
        match parse_docker_config(&json.0) {
            Ok(creds) => out.extend(creds),
            Err(error) => tracing::warn!(secret = %name, %error, "bad image pull secret"),
        }
    }
    out
}

/// Removes the directories of pods that no longer exist.
pub(super) fn remove_orphans(pods_dir: &Path, live: &[String]) {
    let Ok(entries) = std::fs::read_dir(pods_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !live.contains(&name) {
            tracing::info!(pod_uid = %name, "removing the files of a pod that is gone");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let mut b = None;
        let s = Duration::from_secs;
        let seq: Vec<Duration> = (0..7)
            .map(|_| next_backoff(&mut b, s(10), s(300)))
            .collect();
        assert_eq!(seq, [s(10), s(20), s(40), s(80), s(160), s(300), s(300)]);
    }
}
