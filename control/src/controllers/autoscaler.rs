//! The function autoscaler: sets each Function's replicas from the load its replicas carry,
//! wakes Functions the nodes' activators ask for, and takes idle Functions to zero.
//!
//! - **Activation.** A node holding requests for a Function with no ready replica writes the
//!   annotation `serving.bosun.dev/activation-requested` on it. The autoscaler watches
//!   Functions, so it hears at once (not at its next tick): a Function at zero goes to
//!   `max(min, 1)` with an `Activated` Event, the annotation is cleared, and the Function
//!   counts as busy from then on (its `scaleToZeroAfter` starts again).
//! - **Load.** Every tick (`ControllersConfig::function_autoscale_period`, 1 s) it reads each
//!   node that runs a Function's pods at `GET /api/v1/nodes/NODE/proxy/metrics/functions`
//!   (the node port, through the API server, as logs go), and keeps per Function the requests
//!   in flight and queued (`concurrency`) and the requests answered per second (`rps`, from the
//!   counters' differences).
//! - **Decision** ([`decide`]): `ceil(average / target)` over the stable window, or over the
//!   panic window (a tenth of it) when that asks for at least twice the ready replicas; while
//!   the panic lasts it never scales down. Clamped to `[min, max]`. A Function that has seen no
//!   request for `scaleToZeroAfter` may go to zero; before that it keeps at least one replica.
//!   Every change is an Event on the Function: `ScaledUp`, `ScaledDown` or `ScaledToZero`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_api::function::{ACTIVATION_ANNOTATION, FUNCTION_LABEL, Function, Metric, Scaling};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::events::{Recorder, reference};

type Key = (String, String);

/// One tick's reading of a Function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub at: Instant,
    /// Requests in flight and queued, over all replicas.
    pub concurrency: f64,
    /// Requests answered per second since the previous tick.
    pub rps: f64,
}

/// What the autoscaler remembers of a Function.
#[derive(Debug)]
pub(crate) struct History {
    samples: VecDeque<Sample>,
    /// The last time it had a request (or was woken).
    pub last_activity: Instant,
    /// Each replica's answered-requests counter at the last reading.
    counters: HashMap<String, u64>,
    last_read: Option<Instant>,
    /// Whether the last decision was made in panic.
    panicking: bool,
}

impl History {
    pub fn new(now: Instant) -> Self {
        Self {
            samples: VecDeque::new(),
            last_activity: now,
            counters: HashMap::new(),
            last_read: None,
            panicking: false,
        }
    }

    /// Adds a reading: each replica's requests in flight and queued, and its answered
    /// requests counter.
    pub fn record(
        &mut self,
        now: Instant,
        replicas: &BTreeMap<String, (f64, u64)>,
        keep: Duration,
    ) {
        let elapsed = self
            .last_read
            .map(|at| now.duration_since(at).as_secs_f64())
            .filter(|s| *s > 0.0);
        let mut answered = 0u64;
        let mut concurrency = 0.0;
        for (pod, (busy, total)) in replicas {
            concurrency += busy;
            // A replica seen for the first time, or restarted, counts from here.
            if let Some(before) = self.counters.get(pod)
                && total >= before
            {
                answered += total - before;
            }
        }
        self.counters = replicas.iter().map(|(p, (_, t))| (p.clone(), *t)).collect();
        self.last_read = Some(now);
        if answered > 0 || concurrency > 0.0 {
            self.last_activity = now;
        }
        let rps = elapsed.map_or(0.0, |s| answered as f64 / s);
        self.samples.push_back(Sample {
            at: now,
            concurrency,
            rps,
        });
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > keep)
        {
            self.samples.pop_front();
        }
    }

    /// The metric's average over the samples of the last `window`.
    fn average(&self, metric: Metric, now: Instant, window: Duration) -> f64 {
        let values: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| now.duration_since(s.at) <= window)
            .map(|s| match metric {
                Metric::Concurrency => s.concurrency,
                Metric::Rps => s.rps,
            })
            .collect();
        if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        }
    }
}

/// What to do with a Function's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub replicas: i32,
    pub panic: bool,
}

/// The replicas a Function should have, from its history. `current` is what its Deployment
/// asks for, `ready` what runs.
pub(crate) fn decide(
    scaling: &Scaling,
    history: &History,
    now: Instant,
    current: i32,
    ready: i32,
) -> Decision {
    let want = |window: Duration| -> i32 {
        let average = history.average(scaling.metric, now, window);
        (average / scaling.target).ceil().min(f64::from(i32::MAX)) as i32
    };
    let stable = want(scaling.stable_window);
    let panic_window = scaling.stable_window / 10;
    let burst = want(panic_window.max(Duration::from_secs(1)));
    let panic = burst >= 2 * ready.max(1) && burst > current;
    let mut replicas = if panic || (history.panicking && burst > stable) {
        // In panic it never scales down.
        burst.max(stable).max(current)
    } else {
        stable
    };
    if replicas == 0 && now.duration_since(history.last_activity) < scaling.scale_to_zero_after {
        replicas = current.min(1);
    }
    Decision {
        replicas: replicas.clamp(scaling.min, scaling.max),
        panic,
    }
}

struct State {
    client: kube::Client,
    recorder: Recorder,
    histories: HashMap<Key, History>,
}

pub async fn run(client: kube::Client, config: ControllersConfig) {
    let (store, events) = super::watch_functions(client.clone());
    let mut events = std::pin::pin!(events);
    let mut state = State {
        recorder: Recorder::start(client.clone(), "function-autoscaler", config.events.clone()),
        client,
        histories: HashMap::new(),
    };
    let mut ticker = tokio::time::interval(config.function_autoscale_period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(function)) if function.annotations().contains_key(ACTIVATION_ANNOTATION) => {
                    if let Err(error) = state.activate(&function).await {
                        tracing::warn!(%error, function = %function.name_any(), "cannot activate");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => tracing::debug!(%error, "watching functions"),
                None => return,
            },
            _ = ticker.tick() => {
                let functions = store.state();
                if let Err(error) = state.tick(&functions).await {
                    tracing::warn!(%error, "function autoscaler tick");
                }
            }
        }
    }
}

impl State {
    /// Wakes a Function a node asked for, and clears the request.
    async fn activate(&mut self, function: &Function) -> Result<(), Error> {
        let (namespace, name) = (
            function.namespace().unwrap_or_default(),
            function.name_any(),
        );
        let now = Instant::now();
        self.histories
            .entry((namespace.clone(), name.clone()))
            .or_insert_with(|| History::new(now))
            .last_activity = now;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
        // One that cannot serve is not woken again and again: its requests time out.
        let cannot_serve = function.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == super::function::NOT_A_FUNCTION_REASON)
        });
        if cannot_serve {
            tracing::debug!(function = %name, "not activated: its container is no function");
        } else if let Some(deployment) = deployments.get_opt(&name).await? {
            let replicas = deployment.spec.and_then(|s| s.replicas).unwrap_or(0);
            if replicas == 0 {
                let wanted = function.spec.scaling().min.max(1);
                scale(&deployments, &name, wanted).await?;
                self.recorder.normal(
                    reference(function),
                    "Activated",
                    format!("A request arrived with no replica running: scaled from 0 to {wanted}"),
                );
            }
        }
        let functions: Api<Function> = Api::namespaced(self.client.clone(), &namespace);
        let clear = json!({"metadata": {"annotations": {ACTIVATION_ANNOTATION: null}}});
        functions
            .patch(&name, &PatchParams::default(), &Patch::Merge(clear))
            .await?;
        Ok(())
    }

    /// Reads the load of every Function and sets its replicas.
    async fn tick(&mut self, functions: &[Arc<Function>]) -> Result<(), Error> {
        let now = Instant::now();
        let loads = self.read_load(now).await?;
        let live: Vec<Key> = functions
            .iter()
            .map(|f| (f.namespace().unwrap_or_default(), f.name_any()))
            .collect();
        self.histories.retain(|key, _| live.contains(key));
        for function in functions {
            if function.meta().deletion_timestamp.is_some() {
                continue;
            }
            let key = (
                function.namespace().unwrap_or_default(),
                function.name_any(),
            );
            let scaling = function.spec.scaling();
            let history = self
                .histories
                .entry(key.clone())
                .or_insert_with(|| History::new(now));
            let empty = BTreeMap::new();
            history.record(
                now,
                loads.get(&key).unwrap_or(&empty),
                scaling.stable_window,
            );
            let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &key.0);
            let Some(deployment) = deployments.get_opt(&key.1).await? else {
                continue;
            };
            let (current, ready) = crate::objects::deployment_replicas(&deployment);
            let decision = decide(&scaling, history, now, current, ready);
            history.panicking = decision.panic;
            if decision.replicas == current {
                continue;
            }
            scale(&deployments, &key.1, decision.replicas).await?;
            let (reason, how) = match decision.replicas {
                0 => (
                    "ScaledToZero",
                    format!(
                        "no request for {:?}: scaled from {current} to 0",
                        scaling.scale_to_zero_after
                    ),
                ),
                n if n > current => (
                    "ScaledUp",
                    format!(
                        "{} {} per replica{}: scaled from {current} to {n}",
                        scaling.metric.name(),
                        scaling.target,
                        if decision.panic { " (panic)" } else { "" }
                    ),
                ),
                n => ("ScaledDown", format!("scaled from {current} to {n}")),
            };
            self.recorder
                .normal(reference(function.as_ref()), reason, how);
        }
        Ok(())
    }

    /// Each Function's replicas' (busy, answered) readings, from the nodes that run them.
    async fn read_load(
        &self,
        now: Instant,
    ) -> Result<HashMap<Key, BTreeMap<String, (f64, u64)>>, Error> {
        let _ = now;
        let pods: Api<Pod> = Api::all(self.client.clone());
        let pods = pods
            .list(&ListParams::default().labels(FUNCTION_LABEL))
            .await?;
        let mut function_of: HashMap<(String, String), Key> = HashMap::new();
        let mut nodes: Vec<String> = Vec::new();
        for pod in &pods.items {
            let namespace = pod.namespace().unwrap_or_default();
            let Some(function) = pod.labels().get(FUNCTION_LABEL) else {
                continue;
            };
            function_of.insert(
                (namespace.clone(), pod.name_any()),
                (namespace, function.clone()),
            );
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone())
                && !nodes.contains(&node)
            {
                nodes.push(node);
            }
        }
        let mut loads: HashMap<Key, BTreeMap<String, (f64, u64)>> = HashMap::new();
        for node in nodes {
            let request =
                axum::http::Request::get(format!("/api/v1/nodes/{node}/proxy/metrics/functions"))
                    .body(Vec::new())
                    .expect("a valid request");
            let text = match self.client.request_text(request).await {
                Ok(text) => text,
                Err(error) => {
                    tracing::debug!(%error, %node, "cannot read the node's function metrics");
                    continue;
                }
            };
            for ((namespace, pod), (busy, answered)) in parse_metrics(&text) {
                if let Some(key) = function_of.get(&(namespace, pod.clone())) {
                    let entry = loads
                        .entry(key.clone())
                        .or_default()
                        .entry(pod)
                        .or_insert((0.0, 0));
                    entry.0 += busy;
                    entry.1 += answered;
                }
            }
        }
        Ok(loads)
    }
}

async fn scale(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<(), Error> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await?;
    Ok(())
}

/// Per (namespace, pod): requests in flight plus queued, and requests answered, summed over
/// the pod's containers, from a node's `/metrics/functions`.
pub(crate) fn parse_metrics(text: &str) -> BTreeMap<(String, String), (f64, u64)> {
    let mut out: BTreeMap<(String, String), (f64, u64)> = BTreeMap::new();
    for sample in bosun_api::promtext::samples(text) {
        let (Some(namespace), Some(pod)) = (sample.label("namespace"), sample.label("pod")) else {
            continue;
        };
        let entry = out
            .entry((namespace.to_string(), pod.to_string()))
            .or_insert((0.0, 0));
        match sample.name.as_str() {
            "bosun_function_requests_in_flight" | "bosun_function_requests_queued" => {
                entry.0 += sample.value;
            }
            "bosun_function_requests_total" => entry.1 += sample.value as u64,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaling(metric: Metric, target: f64) -> Scaling {
        Scaling {
            min: 0,
            max: 10,
            metric,
            target,
            scale_to_zero_after: Duration::from_secs(30),
            stable_window: Duration::from_secs(60),
        }
    }

    fn load(pods: &[(&str, f64, u64)]) -> BTreeMap<String, (f64, u64)> {
        pods.iter()
            .map(|(p, busy, total)| (p.to_string(), (*busy, *total)))
            .collect()
    }

    #[test]
    fn steady_concurrency_sets_the_replicas() {
        let start = Instant::now();
        let mut history = History::new(start);
        for second in 0..60 {
            let now = start + Duration::from_secs(second);
            history.record(
                now,
                &load(&[("a", 15.0, second * 10)]),
                Duration::from_secs(60),
            );
        }
        let now = start + Duration::from_secs(59);
        let s = scaling(Metric::Concurrency, 10.0);
        assert_eq!(
            decide(&s, &history, now, 1, 1).replicas,
            2,
            "15 in flight / 10"
        );
        // Requests per second: 10 a second against a target of 4.
        let s = scaling(Metric::Rps, 4.0);
        assert_eq!(decide(&s, &history, now, 1, 1).replicas, 3);
    }

    #[test]
    fn a_burst_scales_up_in_panic_and_does_not_scale_down_while_it_lasts() {
        let start = Instant::now();
        let mut history = History::new(start);
        let window = Duration::from_secs(60);
        for second in 0..55 {
            history.record(
                start + Duration::from_secs(second),
                &load(&[("a", 1.0, 0)]),
                window,
            );
        }
        // Five seconds of 40 in flight.
        for second in 55..60 {
            history.record(
                start + Duration::from_secs(second),
                &load(&[("a", 40.0, 0)]),
                window,
            );
        }
        let now = start + Duration::from_secs(59);
        let s = scaling(Metric::Concurrency, 10.0);
        let decision = decide(&s, &history, now, 1, 1);
        assert!(decision.panic, "{decision:?}");
        // The panic window (6 s) averages 29 in flight: 3 replicas; the minute's average 1.
        assert_eq!(decision.replicas, 3, "the burst, not the minute's average");
        history.panicking = true;
        // The burst ends; within the panic window the replicas stay.
        history.record(
            start + Duration::from_secs(60),
            &load(&[("a", 0.0, 0)]),
            window,
        );
        let later = decide(&s, &history, start + Duration::from_secs(60), 3, 3);
        assert_eq!(later.replicas, 3, "{later:?}");
    }

    #[test]
    fn an_idle_function_goes_to_zero_only_after_its_grace() {
        let start = Instant::now();
        let mut history = History::new(start);
        let window = Duration::from_secs(60);
        history.record(start, &load(&[("a", 0.0, 5)]), window);
        history.record(
            start + Duration::from_secs(1),
            &load(&[("a", 0.0, 6)]),
            window,
        );
        let s = scaling(Metric::Concurrency, 10.0);
        let soon = start + Duration::from_secs(10);
        history.record(soon, &load(&[("a", 0.0, 6)]), window);
        assert_eq!(
            decide(&s, &history, soon, 1, 1).replicas,
            1,
            "within 30 s of a request"
        );
        let late = start + Duration::from_secs(40);
        history.record(late, &load(&[("a", 0.0, 6)]), window);
        assert_eq!(decide(&s, &history, late, 1, 1).replicas, 0);
        let floor = Scaling { min: 2, ..s };
        assert_eq!(
            decide(&floor, &history, late, 2, 2).replicas,
            2,
            "never below min"
        );
    }

    #[test]
    fn node_metrics_are_read_per_pod() {
        let text = "# TYPE bosun_function_requests_in_flight gauge\n\
            bosun_function_requests_in_flight{namespace=\"default\",pod=\"a\",container=\"fn\"} 2\n\
            bosun_function_requests_queued{namespace=\"default\",pod=\"a\",container=\"fn\"} 1\n\
            bosun_function_requests_total{namespace=\"default\",pod=\"a\",container=\"fn\",code=\"2xx\"} 7\n\
            bosun_function_requests_total{namespace=\"default\",pod=\"a\",container=\"fn\",code=\"5xx\"} 3\n\
            bosun_function_instances_created_total{namespace=\"default\",pod=\"a\",container=\"fn\"} 10\n";
        let parsed = parse_metrics(text);
        assert_eq!(
            parsed.get(&("default".to_string(), "a".to_string())),
            Some(&(3.0, 10))
        );
    }
}
