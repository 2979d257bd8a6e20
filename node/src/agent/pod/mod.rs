//! One pod's worker: pulls its images, runs its init containers in order and then its app
//! containers, restarts them by `restartPolicy` with the kubelet's back-off, reports
//! `pods/{name}/status`, and on deletion stops them within the grace period and deletes the
//! pod for good.
//!
//! The worker is a single task. Everything slow (a launch, a container's run, a probe) is a
//! future in `pending`; the task reacts to whichever finishes, to a new version of the pod,
//! and to back-off timers, then writes the status if it changed. Its parts:
//! - [`container`]: one container's state machine ([`container::Slot`]);
//! - [`status`]: the pod's status from the slots (pure functions);
//! - [`launch`]: a container resolved into a [`launch::ContainerPlan`], then started on the
//!   runtime of its RuntimeClass handler;
//! - [`Host`]: everything the worker needs of its node (the API server, the registry, the
//!   network, the runtimes). The agent is the real one (`host.rs`); the unit tests (`tests.rs`)
//!   drive the worker through a fake host and the fake runtime, on tokio's paused clock.

mod container;
mod host;
mod launch;
mod status;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bosun_api::function::FUNCTION_LABEL;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, PodStatus, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use tokio::sync::watch;
use tokio::time::Instant;

use self::container::{Finished, Handle, Slot, State, next_backoff, now};
use super::Backoff;
use super::probe::{self, Probes, Verdict};
use crate::gateway::Routes;
use crate::images::Image;
use crate::logs::server::LogIndex;
use crate::metrics::{ContainerKey, Containers};
use crate::objects::ConfigError;
use crate::runtime::Exit;

/// What a pod worker needs of its node: the seam between the worker's logic and the API
/// server, the registry, the network and the runtimes.
#[async_trait::async_trait]
pub(crate) trait Host: Send + Sync + 'static {
    fn settings(&self) -> Settings;

    /// What the log server can serve.
    fn logs(&self) -> &LogIndex;

    /// The running containers, for the node's metrics.
    fn containers(&self) -> &Containers;

    /// The function gateway's routes, which learn of this node's ready replicas at once.
    fn routes(&self) -> &Routes;

    /// Gets `container` of `pod` running, its output going to `log`.
    async fn launch(
        &self,
        pod: &Pod,
        container: &Container,
        log: PathBuf,
    ) -> Result<Launch, LaunchError>;

    /// Runs one probe of `container` against the pod at `pod_ip`; `Err` says why it failed.
    async fn probe(
        &self,
        probe: &Probe,
        container: &Container,
        pod_ip: Ipv4Addr,
    ) -> Result<(), probe::Failure>;

    /// Rewrites the pod's configMap, secret and downwardAPI volumes under `dir`.
    async fn sync_volumes(
        &self,
        pod: &Pod,
        dir: &Path,
        pod_ip: Ipv4Addr,
    ) -> Result<(), ConfigError>;

    /// Writes the pod's status.
    async fn publish(&self, pod: &Pod, status: &PodStatus) -> Published;

    /// Deletes the pod for good (its containers have stopped).
    async fn delete(&self, pod: &Pod);

    /// Lets go of the pod's network.
    async fn detach_network(&self, uid: &str);

    /// Why pods share the node's network, if they do.
    fn network_fallback(&self) -> Option<String>;

    fn event(
        &self,
        regarding: ObjectReference,
        kind: EventType,
        reason: &str,
        action: &str,
        note: &str,
    );
}

/// The node's settings a worker follows.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub node_ip: Ipv4Addr,
    /// One directory per pod UID (logs, volumes).
    pub pods_dir: PathBuf,
    pub backoff: Backoff,
    pub first_status_delay: Duration,
    pub volume_sync_period: Duration,
}

/// How writing a status went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    Written,
    /// The pod is gone from the API: nothing to write to.
    PodGone,
    /// To be tried again.
    Failed,
}

/// A started container.
pub(crate) struct Launch {
    pub handle: Handle,
    /// The RuntimeClass handler that runs it.
    pub handler: String,
    pub image: Image,
    /// How long getting the image took (a look in the cache, or a pull).
    pub pull_time: Duration,
    /// The pod's address (its own, or the node's for hostNetwork).
    pub pod_ip: Ipv4Addr,
}

/// Why a container could not be started, as the kubelet words it.
pub(crate) struct LaunchError {
    pub reason: &'static str,
    pub message: String,
    /// Whether the image itself failed (the back-off shows as ImagePullBackOff).
    pub pull: bool,
}

/// Runs one pod until it is deleted (`pod`'s sender dropped or the pod marked for deletion and
/// stopped) or the agent stops.
pub(crate) async fn run(
    host: Arc<dyn Host>,
    mut pod: watch::Receiver<Arc<Pod>>,
    mut stopping: watch::Receiver<bool>,
) {
    let first = pod.borrow_and_update().clone();
    let mut worker = Worker::new(host, first);
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
    worker.serve_locally(false);
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
    worker.host.detach_network(&worker.uid).await;
    if !gone {
        worker.publish().await;
        worker.delete().await;
    }
    worker.remove_files();
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
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
    VolumesSynced(Result<(), ConfigError>),
    /// A probe of the container's run number `run` ended.
    Probed {
        which: Which,
        run: u64,
        kind: probe::Kind,
        result: Result<(), probe::Failure>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Which {
    init: bool,
    index: usize,
}

struct Worker {
    host: Arc<dyn Host>,
    settings: Settings,
    pod: Arc<Pod>,
    uid: String,
    namespace: String,
    name: String,
    dir: PathBuf,
    start_time: Time,
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
    published: Option<PodStatus>,
    syncing_volumes: bool,
    volumes_synced_at: Instant,
    /// Until when the first status is held back while containers are being started
    /// (`first_status_delay`).
    hold_first_status_until: Instant,
    /// The pod's address, once its network is set up (or from the status an earlier run of
    /// the agent wrote).
    pod_ip: Option<Ipv4Addr>,
    /// Where this Function replica is in the node's gateway routes, while it is ready.
    serving_at: Option<SocketAddrV4>,
    /// When this agent first saw the pod, until its first Running status is written (for
    /// `kubelet_pod_start_duration_seconds`); None for a pod that already ran.
    seen_at: Option<Instant>,
}

impl Worker {
    fn new(host: Arc<dyn Host>, pod: Arc<Pod>) -> Self {
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
            .and_then(|s| s.start_time.clone())
            .unwrap_or_else(now);
        let phase = status.and_then(|s| s.phase.as_deref());
        let settings = host.settings();
        let mut worker = Self {
            dir: settings.pods_dir.join(&uid),
            hold_first_status_until: Instant::now() + settings.first_status_delay,
            settings,
            host,
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
            pod_ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            serving_at: None,
            seen_at: phase.is_none_or(|p| p == "Pending").then(Instant::now),
            pod,
        };
        worker.resume();
        worker
            .host
            .logs()
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
                if let Some(handle) = slot.handle() {
                    handle.terminate();
                    handle.kill();
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
        let running = self.init.iter().chain(&self.apps).any(Slot::is_running);
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
        let host = self.host.clone();
        let pod = self.pod.clone();
        // A task of its own, so that the launch goes on while the worker writes the status.
        let task = tokio::spawn(async move { host.launch(&pod, &container, log).await });
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
        let pod_ip = self.pod_ip.unwrap_or(self.settings.node_ip);
        let host = self.host.clone();
        let all = (0..self.init.len())
            .map(|index| Which { init: true, index })
            .chain((0..self.apps.len()).map(|index| Which { init: false, index }));
        for which in all.collect::<Vec<_>>() {
            let slot = self.slot(which);
            if !slot.is_running() {
                continue;
            }
            let Some(probes) = slot.probes.as_mut() else {
                continue;
            };
            for (kind, spec) in probes.due(now) {
                let (container, run) = (slot.spec.clone(), slot.run);
                let host = host.clone();
                pending.push(
                    async move {
                        let result = host.probe(&spec, &container, pod_ip).await;
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
    fn probed(
        &mut self,
        which: Which,
        run: u64,
        kind: probe::Kind,
        result: Result<(), probe::Failure>,
    ) {
        let slot = self.slot(which);
        if slot.run != run || !slot.is_running() {
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
        let handle = slot.handle().cloned();
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
            if let Some(handle) = handle {
                handle.kill();
            }
        }
    }

    /// Rewrites the file volumes every `volume_sync_period` while a container runs.
    fn sync_volumes(&mut self, pending: &mut FuturesUnordered<BoxFuture<'static, Step>>) {
        let running = self.apps.iter().chain(&self.init).any(Slot::is_running);
        if !running || self.syncing_volumes || Instant::now() < self.volumes_synced_at {
            return;
        }
        self.syncing_volumes = true;
        self.volumes_synced_at = Instant::now() + self.settings.volume_sync_period;
        let (host, pod, dir) = (self.host.clone(), self.pod.clone(), self.dir.clone());
        let pod_ip = self.pod_ip.unwrap_or(self.settings.node_ip);
        pending.push(
            async move { Step::VolumesSynced(host.sync_volumes(&pod, &dir, pod_ip).await) }.boxed(),
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
            && !launch::uses_host_network(&self.pod)
            && let Some(reason) = self.host.network_fallback()
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
        slot.image = Some(launch.image);
        let container_id = format!("{}://{uid}-{name}-{}", launch.handler, slot.restart_count);
        self.host
            .logs()
            .set_running(&self.namespace, &self.name, &name, true);
        let handle = launch.handle;
        let key = ContainerKey {
            namespace: self.namespace.clone(),
            pod: self.name.clone(),
            container: name.clone(),
        };
        self.host.containers().add(key, &uid, handle.clone());
        let slot = self.slot(which);
        if terminating {
            handle.kill();
        }
        slot.run += 1;
        // Init containers are not probed, sidecars are.
        slot.probes =
            (!which.init || slot.sidecar).then(|| Probes::new(&slot.spec, Instant::now()));
        if slot.sidecar && slot.probes.as_ref().is_none_or(|p| p.started) {
            slot.sidecar_started = true;
        }
        slot.state = State::Running {
            started_at: now(),
            since: Instant::now(),
            handle: handle.clone(),
            container_id,
        };
        pending.push(
            async move {
                let exit = handle.wait().await;
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
        let backoff = self.settings.backoff;
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
        slot.wait(reason, message, delay);
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
        let backoff = self.settings.backoff;
        let host = self.host.clone();
        let slot = self.slot(which);
        slot.probes = None;
        host.logs()
            .set_running(&namespace, &pod_name, &slot.spec.name, false);
        let (started_at, since, container_id) = match &slot.state {
            State::Running {
                started_at,
                since,
                container_id,
                handle,
            } => {
                let key = ContainerKey {
                    namespace: namespace.clone(),
                    pod: pod_name.clone(),
                    container: slot.spec.name.clone(),
                };
                host.containers().remove(&key, handle);
                (Some(started_at.clone()), *since, container_id.clone())
            }
            _ => (None, Instant::now(), String::new()),
        };
        let finished = Finished {
            exit,
            started_at,
            finished_at: now(),
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
        slot.wait(
            "CrashLoopBackOff",
            format!(
                "back-off {} restarting failed container={name} pod={pod_name}_{namespace}({uid})",
                bosun_api::duration::format(delay)
            ),
            delay,
        );
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
        for handle in self.init.iter().chain(&self.apps).filter_map(Slot::handle) {
            handle.terminate();
        }
        loop {
            let running = self.init.iter().chain(&self.apps).any(Slot::is_running);
            if pending.is_empty() && !running {
                break;
            }
            if !interrupted && Instant::now() >= deadline {
                for handle in self.init.iter().chain(&self.apps).filter_map(Slot::handle) {
                    handle.kill();
                }
                interrupted = true;
            }
            let wake = (!interrupted).then_some(deadline);
            tokio::select! {
                Some(step) = pending.next() => match step {
                    Step::Launched { which, result: Ok(launch) } => {
                        launch.handle.terminate();
                        if interrupted {
                            launch.handle.kill();
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
        self.host.delete(&self.pod).await;
    }

    fn remove_files(&self) {
        self.host
            .logs()
            .remove_pod(&self.namespace, &self.name, &self.dir.join("logs"));
        if let Err(error) = std::fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot remove the pod's files");
        }
    }

    fn event(&self, kind: EventType, reason: &str, action: &str, note: &str) {
        let reference = ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: Some(self.uid.clone()),
            ..Default::default()
        };
        self.host.event(reference, kind, reason, action, note);
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
        if self.finished_before {
            return true;
        }
        let status = self.status();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        self.serve_locally(ready);
        if self.holding_first_status() {
            return true;
        }
        if self.published.as_ref() == Some(&status) {
            return true;
        }
        match self.host.publish(&self.pod, &status).await {
            Published::Written => {
                if status.phase.as_deref() == Some("Running")
                    && let Some(seen) = self.seen_at.take()
                {
                    self.host.containers().pod_start.observe(seen.elapsed());
                }
                self.published = Some(status);
                true
            }
            Published::PodGone => true,
            Published::Failed => false,
        }
    }

    /// A Function's replica that is ready takes requests from this node's gateway at once,
    /// without waiting for its EndpointSlice to come back through the API; it leaves the
    /// routes as soon as it is not ready or starts stopping.
    fn serve_locally(&mut self, ready: bool) {
        let labels = self.pod.metadata.labels.as_ref();
        let Some(function) = labels.and_then(|l| l.get(FUNCTION_LABEL)) else {
            return;
        };
        let port = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(bosun_api::function::serving_port)
            .and_then(|p| u16::try_from(p).ok());
        let endpoint = match (ready && !self.terminating, self.pod_ip, port) {
            (true, Some(ip), Some(port)) => Some(SocketAddrV4::new(ip, port)),
            _ => None,
        };
        if endpoint == self.serving_at {
            return;
        }
        let routes = self.host.routes();
        if let Some(old) = self.serving_at.take() {
            routes.serve_locally(&self.namespace, function, old, false);
        }
        if let Some(new) = endpoint {
            routes.serve_locally(&self.namespace, function, new, true);
            self.serving_at = Some(new);
        }
    }

    fn status(&self) -> PodStatus {
        let conditions = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        status::status(&status::Pod {
            init: &self.init,
            apps: &self.apps,
            init_failed: self.init_failed,
            apps_done: self.apps_done,
            node_ip: self.settings.node_ip,
            pod_ip: self.pod_ip,
            start_time: self.start_time.clone(),
            conditions: &conditions,
            published: self.published.as_ref(),
            now: now(),
        })
    }
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
