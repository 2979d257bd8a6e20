//! The scheduler: places pending pods on nodes. An API client like any other (DESIGN.md):
//! it watches pods, nodes and RuntimeClasses through the API server and binds with
//! `POST pods/{name}/binding`; it never touches the store.
//!
//! Entry point: [`run`], normally under [`crate::leader::LeaderElector`] so that one
//! scheduler is active per cluster. The parts:
//! - [`pod`]: what a pod asks for (requests, wasm memory limits, constraints), computed once.
//! - [`cache`]: nodes and the pods placed on them, including assumed (bind in flight) pods.
//! - [`queue`]: pending pods by priority and age, with back-off and an unschedulable set.
//! - [`filter`] and [`score`]: the plugins; [`algorithm`]: one decision.
//! - [`binder`]: writes bindings and `PodScheduled=False` conditions.
//!
//! It does not preempt lower-priority pods, and it only knows the resources cpu, memory and
//! pods.

pub mod algorithm;
pub mod binder;
pub mod cache;
pub mod filter;
pub mod pod;
pub mod queue;
pub mod score;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::events::{self, Recorder, RecorderOptions};
use crate::telemetry;
use algorithm::Algorithm;
use cache::Cache;
use pod::{PodInfo, PodKey, key_of};
use queue::{Queue, QueueOptions};
use score::Weights;

/// The scheduler name pods get by default.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// How the scheduler behaves; every wait is configurable so tests can shorten it.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this (or empty) are ours.
    pub name: String,
    pub weights: Weights,
    /// `None`: adaptive (see [`algorithm`]).
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Bindings in flight at once.
    pub bind_concurrency: usize,
    pub queue: QueueOptions,
    pub events: RecorderOptions,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_SCHEDULER.to_string(),
            weights: Weights::default(),
            percentage_of_nodes_to_score: None,
            bind_concurrency: 64,
            queue: QueueOptions::default(),
            events: RecorderOptions::default(),
        }
    }
}

/// Everything the watch handlers and the decision loop share.
struct State {
    cache: Cache,
    queue: Queue,
    classes: HashMap<String, RuntimeClass>,
    /// Which initial lists have completed (pods, nodes, classes).
    synced: [bool; 3],
    /// Keys seen since a watch (re)started listing, to drop what disappeared meanwhile.
    relisting_pods: Option<HashSet<PodKey>>,
    relisting_nodes: Option<HashSet<String>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    scheduler_name: String,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn responsible_for(&self, pod: &Pod) -> bool {
        match pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()) {
            None | Some("") => self.scheduler_name == DEFAULT_SCHEDULER,
            Some(name) => name == self.scheduler_name,
        }
    }
}

/// Schedules until dropped.
pub async fn run(client: kube::Client, config: SchedulerConfig) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            cache: Cache::default(),
            queue: Queue::new(config.queue.clone()),
            classes: HashMap::new(),
            synced: [false; 3],
            relisting_pods: None,
            relisting_nodes: None,
        }),
        wake: Notify::new(),
        scheduler_name: config.name.clone(),
    });
    let recorder = Recorder::start(client.clone(), &config.name, config.events.clone());
    tokio::join!(
        watch_pods(client.clone(), shared.clone()),
        watch_nodes(client.clone(), shared.clone()),
        watch_classes(client.clone(), shared.clone()),
        decide(client, shared.clone(), recorder, config),
    );
}

async fn watch_pods(client: kube::Client, shared: Arc<Shared>) {
    // Finished pods hold no resources; the selector drops them as they finish.
    let config = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let stream = watcher(Api::<Pod>::all(client), config).default_backoff();
    futures::pin_mut!(stream);
    loop {
        match stream.try_next().await {
            Ok(Some(event)) => shared.lock().on_pod_event(event, &shared),
            Ok(None) => return,
            Err(error) => tracing::warn!(%error, "pod watch failed; retrying"),
        }
        shared.wake.notify_one();
    }
}

async fn watch_nodes(client: kube::Client, shared: Arc<Shared>) {
    let stream = watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    loop {
        match stream.try_next().await {
            Ok(Some(event)) => shared.lock().on_node_event(event),
            Ok(None) => return,
            Err(error) => tracing::warn!(%error, "node watch failed; retrying"),
        }
        shared.wake.notify_one();
    }
}

async fn watch_classes(client: kube::Client, shared: Arc<Shared>) {
    let stream =
        watcher(Api::<RuntimeClass>::all(client), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut listing: Option<HashMap<String, RuntimeClass>> = None;
    loop {
        match stream.try_next().await {
            Ok(Some(event)) => {
                let mut state = shared.lock();
                match event {
                    watcher::Event::Init => listing = Some(HashMap::new()),
                    watcher::Event::InitApply(class) => {
                        if let Some(l) = listing.as_mut() {
                            l.insert(class.metadata.name.clone().unwrap_or_default(), class);
                        }
                    }
                    watcher::Event::InitDone => {
                        state.classes = listing.take().unwrap_or_default();
                        state.synced[2] = true;
                    }
                    watcher::Event::Apply(class) => {
                        state
                            .classes
                            .insert(class.metadata.name.clone().unwrap_or_default(), class);
                    }
                    watcher::Event::Delete(class) => {
                        state
                            .classes
                            .remove(class.metadata.name.as_deref().unwrap_or_default());
                    }
                }
                state.queue.cluster_changed(Instant::now());
            }
            Ok(None) => return,
            Err(error) => tracing::warn!(%error, "runtimeclass watch failed; retrying"),
        }
        shared.wake.notify_one();
    }
}

impl State {
    fn on_pod_event(&mut self, event: watcher::Event<Pod>, shared: &Shared) {
        let now = Instant::now();
        match event {
            watcher::Event::Init => self.relisting_pods = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(seen) = self.relisting_pods.as_mut() {
                    seen.insert(key_of(&pod));
                }
                self.on_pod(pod, shared, now);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisting_pods.take() {
                    let gone: Vec<PodKey> = self
                        .cache
                        .pod_keys()
                        .into_iter()
                        .chain(self.queue.keys())
                        .filter(|k| !seen.contains(k))
                        .collect();
                    for key in gone {
                        self.pod_gone(&key, now);
                    }
                }
                self.synced[0] = true;
            }
            watcher::Event::Apply(pod) => self.on_pod(pod, shared, now),
            watcher::Event::Delete(pod) => self.pod_gone(&key_of(&pod), now),
        }
    }

    fn on_pod(&mut self, pod: Pod, shared: &Shared, now: Instant) {
        let key = key_of(&pod);
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let pod = Arc::new(pod);
        match node {
            Some(node) => {
                if !self.queue.is_in_flight(&key) {
                    self.queue.remove(&key);
                }
                let info = bound_pod_info(pod, &self.classes);
                self.cache.add_bound(Arc::new(info), &node);
            }
            None if pod.metadata.deletion_timestamp.is_some() || !shared.responsible_for(&pod) => {
                self.queue.remove(&key);
            }
            None => self.queue.add_or_update(key, pod, now),
        }
    }

    fn pod_gone(&mut self, key: &str, now: Instant) {
        self.queue.remove(key);
        if self.cache.remove_pod(key) {
            self.queue.cluster_changed(now);
        }
    }

    fn on_node_event(&mut self, event: watcher::Event<Node>) {
        let now = Instant::now();
        match event {
            watcher::Event::Init => self.relisting_nodes = Some(HashSet::new()),
            watcher::Event::InitApply(node) => {
                if let Some(seen) = self.relisting_nodes.as_mut() {
                    seen.insert(node.metadata.name.clone().unwrap_or_default());
                }
                self.cache.set_node(Arc::new(node));
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisting_nodes.take() {
                    for name in self.cache.node_names() {
                        if !seen.contains(&name) {
                            self.cache.remove_node(&name);
                        }
                    }
                }
                self.synced[1] = true;
                self.queue.cluster_changed(now);
            }
            watcher::Event::Apply(node) => {
                if self.cache.set_node(Arc::new(node)) {
                    self.queue.cluster_changed(now);
                }
            }
            watcher::Event::Delete(node) => {
                self.cache
                    .remove_node(node.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }
}

/// A bound pod's accounting; a RuntimeClass that has gone away counts as the default.
fn bound_pod_info(pod: Arc<Pod>, classes: &HashMap<String, RuntimeClass>) -> PodInfo {
    match PodInfo::new(pod.clone(), classes) {
        Ok(info) => info,
        Err(_) => {
            let mut plain = (*pod).clone();
            if let Some(spec) = plain.spec.as_mut() {
                spec.runtime_class_name = None;
                spec.affinity = None;
            }
            let mut info = PodInfo::new(Arc::new(plain), &HashMap::new())
                .expect("a pod without class or affinity always has scheduling facts");
            info.pod = pod;
            info
        }
    }
}

/// What the decision loop concluded about one pod.
enum Decision {
    Bind(Arc<PodInfo>, String),
    Unschedulable(Arc<Pod>, String),
    /// The pod changed under us (bound elsewhere, deleted): nothing to do.
    Skip,
}

async fn decide(
    client: kube::Client,
    shared: Arc<Shared>,
    recorder: Recorder,
    config: SchedulerConfig,
) {
    let mut algorithm = Algorithm::new(config.weights.clone(), config.percentage_of_nodes_to_score);
    let binds = Arc::new(Semaphore::new(config.bind_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let (next, wakeup) = {
            let mut state = shared.lock();
            if !state.synced.iter().all(|s| *s) {
                (None, None)
            } else {
                match state.queue.pop(Instant::now()) {
                    Some(next) => (Some(next), None),
                    None => (None, state.queue.next_wakeup()),
                }
            }
        };
        let started = Instant::now();
        let Some((key, pod)) = next else {
            let sleep = async {
                match wakeup {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = sleep => {}
            }
            continue;
        };
        let permit = binds
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let decision = {
            let mut state = shared.lock();
            decide_one(&mut state, &mut algorithm, &key, pod)
        };
        match decision {
            Decision::Skip => shared.lock().queue.done(&key),
            Decision::Bind(info, node) => {
                let (client, shared, recorder) = (client.clone(), shared.clone(), recorder.clone());
                tasks.spawn(async move {
                    bind_one(&client, &shared, &recorder, info, node, started).await;
                    drop(permit);
                });
            }
            Decision::Unschedulable(pod, message) => {
                drop(permit);
                telemetry::global().schedule_attempt("unschedulable", started.into_std());
                tracing::debug!(pod = %key, %message, "unschedulable");
                shared.lock().queue.unschedulable(&key, Instant::now());
                recorder.warning(
                    events::reference(&*pod),
                    "FailedScheduling",
                    message.clone(),
                );
                if !binder::already_marked(&pod, &message) {
                    let client = client.clone();
                    tasks.spawn(async move {
                        if let Err(error) = binder::mark_unschedulable(&client, &pod, &message).await {
                            tracing::warn!(pod = %key_of(&pod), %error, "cannot set PodScheduled=False");
                        }
                    });
                }
            }
        }
    }
}

#[tracing::instrument(name = "schedule", skip_all, fields(pod = %key_of(&pod)))]
fn decide_one(
    state: &mut State,
    algorithm: &mut Algorithm,
    key: &PodKey,
    pod: Arc<Pod>,
) -> Decision {
    if state.cache.contains_pod(key) || pod.metadata.deletion_timestamp.is_some() {
        return Decision::Skip;
    }
    let info = match PodInfo::new(pod.clone(), &state.classes) {
        Ok(info) => Arc::new(info),
        Err(error) => return Decision::Unschedulable(pod, error.to_string()),
    };
    match algorithm.schedule(&info, &state.cache) {
        Ok(node) => {
            state.cache.assume(info.clone(), &node);
            Decision::Bind(info, node)
        }
        Err(fit) => Decision::Unschedulable(pod, fit.to_string()),
    }
}

async fn bind_one(
    client: &kube::Client,
    shared: &Shared,
    recorder: &Recorder,
    info: Arc<PodInfo>,
    node: String,
    started: Instant,
) {
    let result = binder::bind(client, &info.pod, &node).await;
    let outcome = if result.is_ok() { "scheduled" } else { "error" };
    telemetry::global().schedule_attempt(outcome, started.into_std());
    let now = Instant::now();
    let mut state = shared.lock();
    match result {
        Ok(()) => {
            state.queue.done(&info.key);
            drop(state);
            recorder.normal(
                events::reference(&*info.pod),
                "Scheduled",
                format!("Successfully assigned {} to {node}", info.key),
            );
        }
        // Deleted, re-created or bound by someone else: retry after back-off; by then the
        // watch has removed the pod from the queue or shown it bound.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            state.cache.forget(&info.key);
            state.queue.failed(&info.key, now);
        }
        Err(error) => {
            state.cache.forget(&info.key);
            state.queue.failed(&info.key, now);
            drop(state);
            tracing::warn!(pod = %info.key, %node, %error, "binding failed; will retry");
            recorder.warning(
                events::reference(&*info.pod),
                "FailedScheduling",
                format!("Binding rejected: {error}"),
            );
        }
    }
    shared.wake.notify_one();
}

/// Builders for the plugin tests: nodes and pods from compact JSON.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use serde_json::{Value, json};

    /// A Ready node with `cpu` cores, `memory` bytes and room for 110 pods; `extra` is merged
    /// into the object (labels, taints, unschedulable).
    pub fn node(name: &str, cpu: &str, memory: &str, extra: Value) -> Arc<Node> {
        let mut value = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        });
        merge(&mut value, extra);
        Arc::new(serde_json::from_value(value).expect("valid node"))
    }

    /// A pod with one container requesting `cpu`/`memory` (empty: nothing); `extra` is
    /// merged into the object.
    pub fn pod(name: &str, cpu: &str, memory: &str, extra: Value) -> Arc<Pod> {
        let mut requests = serde_json::Map::new();
        if !cpu.is_empty() {
            requests.insert("cpu".into(), json!(cpu));
        }
        if !memory.is_empty() {
            requests.insert("memory".into(), json!(memory));
        }
        let mut value = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": requests}}]},
        });
        merge(&mut value, extra);
        Arc::new(serde_json::from_value(value).expect("valid pod"))
    }

    pub fn info(pod: Arc<Pod>) -> PodInfo {
        PodInfo::new(pod, &HashMap::new()).expect("pod info")
    }

    fn merge(base: &mut Value, extra: Value) {
        match (base, extra) {
            (Value::Object(b), Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    pub fn cache_of(nodes: &[Arc<Node>]) -> Cache {
        let mut cache = Cache::default();
        for n in nodes {
            cache.set_node(n.clone());
        }
        cache
    }
}
