//! The HorizontalPodAutoscaler controller (autoscaling/v2), as kube-controller-manager's
//! `horizontalpodautoscaling` works: every `--horizontal-pod-autoscaler-sync-period` (15 s),
//! and at once when an HPA's spec changes, each HPA
//!
//! 1. reads its target's `scale` subresource (any kind that serves one: Deployments,
//!    ReplicaSets, …) for the current replicas and the pod selector;
//! 2. works out the replicas each metric asks for ([`replicas`]):
//!    - `Resource` and `ContainerResource` (cpu, memory; `Utilization` of the requests, or
//!      `AverageValue`) from `metrics.k8s.io`, which `bosun server` serves itself;
//!    - `Pods` with `requests_per_second` or `concurrency`, read from the nodes' function
//!      metrics (`/metrics/functions`, through the API server's node proxy), for pods that
//!      serve wasi:http;
//!
//!    and takes the highest;
//! 3. normalizes that with its `behavior`, or upstream's rules without one ([`normalize`]),
//!    scales the target, and writes `status` (`currentMetrics`, `desiredReplicas`, the
//!    `AbleToScale`, `ScalingActive` and `ScalingLimited` conditions) and Events
//!    (`SuccessfulRescale` "New size: 4; reason: cpu resource utilization (percentage of
//!    request) above target", and upstream's warnings).
//!
//! A target with zero replicas and a non-zero `minReplicas` is left alone (scaling disabled).
//! A metric that cannot be read never scales to zero and never scales down.

pub(crate) mod normalize;
pub(crate) mod replicas;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bosun_api::metrics::PodMetrics;
use k8s_openapi::api::autoscaling::v2::ContainerResourceMetricStatus;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricIdentifier, MetricSpec, MetricStatus, MetricValueStatus, PodsMetricStatus,
    ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use self::normalize::{Behavior, Memory};
use self::replicas::{Calculator, Observed, Proposal, Sample, Samples};
use super::{ControllersConfig, Error};
use crate::events::{Recorder, reference};

type Key = (String, String);

/// Pod name → its answered-requests counter and when it was read.
type Counters = HashMap<String, (u64, Instant)>;

struct Context {
    client: kube::Client,
    recorder: Recorder,
    config: ControllersConfig,
    calculator: Calculator,
    memories: Mutex<HashMap<Key, Memory>>,
    /// Per HPA, each of its function pods' answered-requests counter at its last reading,
    /// for `requests_per_second` (per HPA, so that two reading one pod do not shorten each
    /// other's interval).
    counters: Mutex<HashMap<Key, Counters>>,
    hpas: reflector::Store<HorizontalPodAutoscaler>,
}

pub async fn run(client: kube::Client, config: ControllersConfig) {
    let (hpas, writer) = reflector::store();
    // Status writes (this controller's own) do not wake it; spec changes do.
    let stream = reflector::reflector(
        writer,
        watcher(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let context = Arc::new(Context {
        recorder: Recorder::start(
            client.clone(),
            "horizontal-pod-autoscaler",
            config.events.clone(),
        ),
        calculator: Calculator {
            tolerance: config.hpa_tolerance,
            cpu_initialization_period: config.hpa_cpu_initialization_period,
            initial_readiness_delay: config.hpa_initial_readiness_delay,
        },
        client,
        memories: Mutex::new(HashMap::new()),
        counters: Mutex::new(HashMap::new()),
        hpas: hpas.clone(),
        config,
    });
    let retry = context.config.retry;
    super::drive(
        Controller::for_stream(stream, hpas),
        "horizontalpodautoscaling",
        reconcile,
        context,
        retry,
    )
    .await;
}

async fn reconcile(
    hpa: Arc<HorizontalPodAutoscaler>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let key = (hpa.namespace().unwrap_or_default(), hpa.name_any());
    context.forget_deleted();
    if hpa.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut sync = Sync {
        context: &context,
        key,
        status: hpa.status.clone().unwrap_or_default(),
        now: SystemTime::now(),
    };
    // A sync that could not scale said why in the status and Events; it is tried again at
    // the next period, as any other.
    if let Err(error) = sync.run(&hpa).await {
        tracing::debug!(%error, hpa = %sync.key.1, namespace = %sync.key.0, "cannot scale");
    }
    sync.write_status(&hpa).await?;
    Ok(Action::requeue(context.config.hpa_sync_period))
}

impl Context {
    /// Drops what is remembered of HPAs that are gone.
    fn forget_deleted(&self) {
        let exists = |(namespace, name): &Key| {
            self.hpas
                .get(&reflector::ObjectRef::new(name).within(namespace))
                .is_some()
        };
        let mut memories = self.memories.lock().expect("not poisoned");
        memories.retain(|key, _| exists(key));
        let mut counters = self.counters.lock().expect("not poisoned");
        counters.retain(|key, _| exists(key));
    }
}

/// One sync of one HPA: the status it builds up.
struct Sync<'a> {
    context: &'a Context,
    key: Key,
    status: HorizontalPodAutoscalerStatus,
    now: SystemTime,
}

/// A metric's proposal, the name upstream gives it in reasons, and its status.
struct Proposed {
    replicas: i32,
    name: String,
    status: MetricStatus,
}

/// Why a metric gave no proposal: the `ScalingActive` reason and the error.
struct Failed {
    reason: &'static str,
    error: String,
}

impl Sync<'_> {
    async fn run(&mut self, hpa: &HorizontalPodAutoscaler) -> Result<(), Error> {
        let spec = hpa.spec.clone().unwrap_or_default();
        let target = &spec.scale_target_ref;
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        let scale = match self.scale_api(target).await {
            Ok((api, _)) => match api.get_scale(&target.name).await {
                Ok(scale) => Ok((api, scale)),
                Err(e) => Err(error_text(&e)),
            },
            Err(e) => Err(e),
        };
        let (api, scale) = match scale {
            Ok(found) => found,
            Err(error) => {
                self.warn(hpa, "FailedGetScale", error.clone());
                let message = format!(
                    "the HPA controller was unable to get the target's current scale: {error}"
                );
                self.condition("AbleToScale", false, "FailedGetScale", message.clone());
                // Upstream leaves ScalingActive as it was; with no target nothing can be
                // computed, so it says so there too.
                self.condition("ScalingActive", false, "FailedGetScale", message);
                return Err(Error::Invalid(format!(
                    "failed to query scale subresource for {}/{}: {error}",
                    target.kind, target.name
                )));
            }
        };
        self.condition(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        );
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let selector = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let instant = Instant::now();
        self.memory(|m| m.record_initial(current, instant));

        let mut metric_statuses = Vec::new();
        let mut rescale_reason = String::new();
        let desired;
        if current == 0 && min != 0 {
            desired = 0;
            self.condition(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            );
        } else if current > max {
            rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
            desired = max;
        } else if current < min {
            rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
            desired = min;
        } else {
            let (proposal, statuses) = self
                .replicas_for_metrics(
                    hpa,
                    &spec.metrics.clone().unwrap_or_default(),
                    current,
                    &selector,
                )
                .await;
            metric_statuses = statuses;
            let Some((proposed, metric)) = proposal else {
                self.status.current_replicas = Some(current);
                self.status.current_metrics = Some(metric_statuses);
                return Err(Error::Invalid(format!(
                    "failed to compute desired number of replicas based on listed metrics for {}/{}",
                    target.kind, target.name
                )));
            };
            if proposed > current {
                rescale_reason = format!("{metric} above target");
            } else if proposed < current {
                rescale_reason = "All metrics below target".into();
            }
            desired = self.normalize(hpa, current, proposed, min, max, instant);
        }

        let rescale = desired != current;
        if rescale {
            let patch = json!({"spec": {"replicas": desired}});
            if let Err(e) = api
                .patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                let error = error_text(&e);
                self.warn(
                    hpa,
                    "FailedRescale",
                    format!("New size: {desired}; reason: {rescale_reason}; error: {error}"),
                );
                self.condition(
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {error}"),
                );
                self.status.current_replicas = Some(current);
                self.status.current_metrics = Some(metric_statuses);
                return Err(e.into());
            }
            self.condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            self.context.recorder.normal(
                reference(hpa),
                "SuccessfulRescale",
                format!("New size: {desired}; reason: {rescale_reason}"),
            );
            if let Some(behavior) = &spec.behavior {
                let behavior =
                    Behavior::read(behavior, self.context.config.hpa_downscale_stabilization);
                self.memory(|m| m.record_scale(&behavior, current, desired, instant));
            }
            tracing::info!(hpa = %self.key.1, namespace = %self.key.0, from = current, to = desired, reason = %rescale_reason, "rescaled");
            self.status.last_scale_time = Some(Time(self.now.try_into().unwrap_or_default()));
        }
        self.status.current_replicas = Some(current);
        self.status.desired_replicas = if rescale { desired } else { current };
        self.status.current_metrics = Some(metric_statuses);
        Ok(())
    }

    /// The client of the target's kind, and its resource.
    async fn scale_api(
        &self,
        target: &k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference,
    ) -> Result<(Api<DynamicObject>, &'static bosun_api::resources::Resource), String> {
        let api_version = target.api_version.as_deref().unwrap_or("v1");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = bosun_api::resources::RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == target.kind)
            .ok_or_else(|| format!("no matches for kind {:?} in group {group:?}", target.kind))?;
        if !resource.scale {
            return Err(format!(
                "{}.{group} {:?} has no scale subresource",
                resource.plural, target.name
            ));
        }
        let api = Api::namespaced_with(
            self.context.client.clone(),
            &self.key.0,
            &super::api_resource(resource),
        );
        Ok((api, resource))
    }

    /// Each metric's proposal, the highest of them with its name (None if the metrics may
    /// not decide: all failed, or some failed and the rest would scale down), and the
    /// metrics' statuses.
    async fn replicas_for_metrics(
        &mut self,
        hpa: &HorizontalPodAutoscaler,
        metrics: &[MetricSpec],
        current: i32,
        selector: &str,
    ) -> (Option<(i32, String)>, Vec<MetricStatus>) {
        if selector.is_empty() {
            self.warn(hpa, "SelectorRequired", "selector is required".into());
            self.condition(
                "ScalingActive",
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector".into(),
            );
            return (None, Vec::new());
        }
        let pods: Api<Pod> = Api::namespaced(self.context.client.clone(), &self.key.0);
        let pods = match pods.list(&ListParams::default().labels(selector)).await {
            Ok(list) => list.items,
            Err(e) => {
                let error = format!("unable to list the target's pods: {}", error_text(&e));
                self.warn(hpa, "FailedGetResourceMetric", error.clone());
                self.condition(
                    "ScalingActive",
                    false,
                    "FailedGetResourceMetric",
                    format!("the HPA was unable to compute the replica count: {error}"),
                );
                return (None, Vec::new());
            }
        };
        let mut statuses = Vec::new();
        let mut best: Option<(i32, String)> = None;
        let mut first_failure: Option<Failed> = None;
        let mut failures = 0;
        for metric in metrics {
            match self.propose(metric, current, selector, &pods).await {
                Ok(proposed) => {
                    statuses.push(proposed.status);
                    if best.as_ref().is_none_or(|(r, _)| proposed.replicas > *r) {
                        best = Some((proposed.replicas, proposed.name));
                    }
                }
                Err(failed) => {
                    // A failed metric has no status.
                    failures += 1;
                    self.warn(hpa, failed.reason, failed.error.clone());
                    first_failure.get_or_insert(failed);
                }
            }
        }
        let blocked = failures >= metrics.len()
            || (failures > 0 && best.as_ref().is_some_and(|(r, _)| *r < current));
        if blocked {
            if let Some(failed) = first_failure {
                self.condition(
                    "ScalingActive",
                    false,
                    failed.reason,
                    format!(
                        "the HPA was unable to compute the replica count: {}",
                        failed.error
                    ),
                );
                self.warn(
                    hpa,
                    "FailedComputeMetricsReplicas",
                    format!(
                        "invalid metrics ({failures} invalid out of {}), first error is: {}",
                        metrics.len(),
                        failed.error
                    ),
                );
            }
            return (None, statuses);
        }
        let (replicas, name) = best.expect("a metric proposed");
        self.condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!("the HPA was able to successfully calculate a replica count from {name}"),
        );
        (Some((replicas, name)), statuses)
    }

    async fn propose(
        &self,
        metric: &MetricSpec,
        current: i32,
        selector: &str,
        pods: &[Pod],
    ) -> Result<Proposed, Failed> {
        let pods: Vec<&Pod> = pods.iter().collect();
        let now = self.now;
        let observed = |samples| Observed {
            pods: &pods,
            samples,
            now,
        };
        match metric.type_.as_str() {
            "Resource" | "ContainerResource" => {
                let (name, container, target) = match (&metric.resource, &metric.container_resource)
                {
                    (Some(r), _) if metric.type_ == "Resource" => (r.name.clone(), None, &r.target),
                    (_, Some(r)) => (r.name.clone(), Some(r.container.clone()), &r.target),
                    _ => {
                        return Err(Failed {
                            reason: "InvalidMetricSourceType",
                            error: format!("invalid metric source: no {} given", metric.type_),
                        });
                    }
                };
                let reason = if container.is_some() {
                    "FailedGetContainerResourceMetric"
                } else {
                    "FailedGetResourceMetric"
                };
                let fail = |what: &str, error: String| Failed {
                    reason,
                    error: format!("failed to get {name} {what}: {error}"),
                };
                let cpu = name == "cpu";
                let what = if target.type_ == "AverageValue" {
                    "usage"
                } else {
                    "utilization"
                };
                let samples = self
                    .resource_samples(&name, container.as_deref(), selector)
                    .await
                    .map_err(|e| fail(what, e.to_string()))?;
                let calculator = self.context.calculator;
                let (proposal, metric_name): (Proposal, String) = if target.type_ == "AverageValue"
                {
                    let goal = target
                        .average_value
                        .as_ref()
                        .and_then(|q| bosun_api::quantity::parse(&q.0).ok())
                        .map(replicas::thousandths)
                        .ok_or_else(|| fail(what, "no averageValue target".into()))?;
                    let proposal = calculator
                        .average_replicas(current, goal, cpu, observed(samples))
                        .map_err(|e| fail(what, e.to_string()))?;
                    (proposal, format!("{name} resource"))
                } else {
                    let Some(goal) = target.average_utilization else {
                        return Err(Failed {
                            reason,
                            error: "invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into(),
                        });
                    };
                    let requests = replicas::requests(&pods, &name, container.as_deref())
                        .map_err(|e| fail(what, e.to_string()))?;
                    let proposal = calculator
                        .utilization_replicas(current, goal, cpu, &requests, observed(samples))
                        .map_err(|e| fail(what, e.to_string()))?;
                    (
                        proposal,
                        format!("{name} resource utilization (percentage of request)"),
                    )
                };
                let value = MetricValueStatus {
                    average_utilization: proposal.utilization,
                    average_value: Some(milli_quantity(proposal.average)),
                    value: None,
                };
                let status = match container {
                    None => MetricStatus {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricStatus {
                            name,
                            current: value,
                        }),
                        ..MetricStatus::default()
                    },
                    Some(container) => MetricStatus {
                        type_: "ContainerResource".into(),
                        container_resource: Some(ContainerResourceMetricStatus {
                            name,
                            container,
                            current: value,
                        }),
                        ..MetricStatus::default()
                    },
                };
                Ok(Proposed {
                    replicas: proposal.replicas,
                    name: metric_name,
                    status,
                })
            }
            "Pods" => {
                let Some(source) = &metric.pods else {
                    return Err(Failed {
                        reason: "InvalidMetricSourceType",
                        error: "invalid metric source: no pods given".into(),
                    });
                };
                let name = source.metric.name.clone();
                let fail = |error: String| Failed {
                    reason: "FailedGetPodsMetric",
                    error: format!(
                        "failed to get pods metric value: unable to get metric {name}: {error}"
                    ),
                };
                let goal = source
                    .target
                    .average_value
                    .as_ref()
                    .and_then(|q| bosun_api::quantity::parse(&q.0).ok())
                    .map(replicas::thousandths)
                    .ok_or_else(|| fail("no averageValue target".into()))?;
                let samples = self.function_samples(&name, &pods).await.map_err(fail)?;
                let proposal = self
                    .context
                    .calculator
                    .average_replicas(current, goal, false, observed(samples))
                    .map_err(|e| fail(e.to_string()))?;
                Ok(Proposed {
                    replicas: proposal.replicas,
                    name: format!("pods metric {name}"),
                    status: MetricStatus {
                        type_: "Pods".into(),
                        pods: Some(PodsMetricStatus {
                            metric: MetricIdentifier {
                                name,
                                selector: source.metric.selector.clone(),
                            },
                            current: MetricValueStatus {
                                average_value: Some(milli_quantity(proposal.average)),
                                ..MetricValueStatus::default()
                            },
                        }),
                        ..MetricStatus::default()
                    },
                })
            }
            other => Err(Failed {
                reason: "InvalidMetricSourceType",
                error: format!(
                    "unknown or unsupported metric source type {other:?} (Bosun reads Resource, ContainerResource and Pods metrics)"
                ),
            }),
        }
    }

    /// Each selected pod's usage of `resource` from `metrics.k8s.io`: the sum over its
    /// containers (or `container` alone). A pod with a container that has no reading is left
    /// out (missing).
    async fn resource_samples(
        &self,
        resource: &str,
        container: Option<&str>,
        selector: &str,
    ) -> Result<Samples, String> {
        let api: Api<PodMetrics> = Api::namespaced(self.context.client.clone(), &self.key.0);
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                format!(
                    "unable to get metrics for resource {resource}: {}",
                    error_text(&e)
                )
            })?;
        if list.items.is_empty() {
            return Err(format!(
                "unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
            ));
        }
        let mut samples = Samples::new();
        for pod in list.items {
            let mut sum = 0i64;
            let mut complete = true;
            for c in &pod.containers {
                if container.is_some_and(|wanted| wanted != c.name) {
                    continue;
                }
                match c
                    .usage
                    .get(resource)
                    .and_then(|q| bosun_api::quantity::parse(&q.0).ok())
                {
                    Some(value) => sum += replicas::thousandths(value),
                    None => complete = false,
                }
            }
            if !complete {
                continue;
            }
            let window = bosun_api::duration::parse(&pod.window).unwrap_or_default();
            samples.insert(
                pod.metadata.name.clone().unwrap_or_default(),
                Sample {
                    value: sum,
                    timestamp: SystemTime::from(pod.timestamp.0),
                    window,
                },
            );
        }
        Ok(samples)
    }

    /// Each pod's `requests_per_second` or `concurrency` from its node's function metrics.
    /// A rate needs two readings, so a pod read for the first time has none yet.
    async fn function_samples(&self, metric: &str, pods: &[&Pod]) -> Result<Samples, String> {
        if !matches!(metric, "requests_per_second" | "concurrency") {
            return Err("no such metric: Bosun serves the Pods metrics requests_per_second and concurrency (of pods that serve wasi:http)".into());
        }
        let mut nodes: Vec<&str> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut readings: BTreeMap<(String, String), (f64, u64)> = BTreeMap::new();
        for node in nodes {
            let request =
                axum::http::Request::get(format!("/api/v1/nodes/{node}/proxy/metrics/functions"))
                    .body(Vec::new())
                    .expect("a valid request");
            match self.context.client.request_text(request).await {
                Ok(text) => readings.extend(super::autoscaler::parse_metrics(&text)),
                Err(error) => {
                    tracing::debug!(%error, %node, "cannot read the node's function metrics")
                }
            }
        }
        let instant = Instant::now();
        let mut all = self.context.counters.lock().expect("not poisoned");
        let counters = all.entry(self.key.clone()).or_default();
        let mut samples = Samples::new();
        for pod in pods {
            let name = pod.name_any();
            let key = (self.key.0.clone(), name.clone());
            let Some((busy, answered)) = readings.get(&key).copied() else {
                continue;
            };
            let value = if metric == "concurrency" {
                Some(busy)
            } else {
                let before = counters.insert(name.clone(), (answered, instant));
                before.and_then(|(count, at)| {
                    let elapsed = instant.duration_since(at).as_secs_f64();
                    (elapsed > 0.0 && answered >= count)
                        .then(|| (answered - count) as f64 / elapsed)
                })
            };
            if let Some(value) = value {
                samples.insert(
                    name,
                    Sample {
                        value: replicas::thousandths(value),
                        timestamp: self.now,
                        window: self.context.config.hpa_sync_period,
                    },
                );
            }
        }
        // Pods no longer selected are forgotten.
        let live: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        counters.retain(|pod, _| live.contains(pod));
        Ok(samples)
    }

    /// The replicas after stabilization and the rate limits, with the `AbleToScale` and
    /// `ScalingLimited` conditions that say why.
    fn normalize(
        &mut self,
        hpa: &HorizontalPodAutoscaler,
        current: i32,
        proposed: i32,
        min: i32,
        max: i32,
        now: Instant,
    ) -> i32 {
        let config = &self.context.config;
        let (stabilized, stabilized_reason, stabilized_message, limited) = match hpa
            .spec
            .as_ref()
            .and_then(|s| s.behavior.as_ref())
        {
            None => {
                let window = config.hpa_downscale_stabilization;
                let stabilized = self.memory(|m| m.stabilize(proposed, window, now));
                let limited = normalize::limit(current, stabilized, min, max);
                (
                    stabilized,
                    "ScaleDownStabilized",
                    "recent recommendations were higher than current one, applying the highest recent recommendation",
                    limited,
                )
            }
            Some(behavior) => {
                let behavior = Behavior::read(behavior, config.hpa_downscale_stabilization);
                let held = self.memory(|m| m.stabilize_with(&behavior, current, proposed, now));
                let limited =
                    self.memory(|m| m.limit_with(&behavior, current, held.replicas, min, max, now));
                (held.replicas, held.reason, held.message, limited)
            }
        };
        if stabilized != proposed {
            self.condition(
                "AbleToScale",
                true,
                stabilized_reason,
                stabilized_message.into(),
            );
        } else {
            self.condition(
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            );
        }
        self.condition(
            "ScalingLimited",
            limited.replicas != stabilized,
            limited.reason,
            limited.message.into(),
        );
        limited.replicas
    }

    fn memory<T>(&self, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut memories = self.context.memories.lock().expect("not poisoned");
        f(memories.entry(self.key.clone()).or_default())
    }

    fn warn(&self, hpa: &HorizontalPodAutoscaler, reason: &str, message: String) {
        self.context
            .recorder
            .warning(reference(hpa), reason, message);
    }

    /// Sets a condition; its transition time moves only when its status changes.
    fn condition(&mut self, type_: &str, status: bool, reason: &str, message: String) {
        let status = if status { "True" } else { "False" }.to_string();
        let conditions = self.status.conditions.get_or_insert_with(Vec::new);
        let now = Time(self.now.try_into().unwrap_or_default());
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(now);
                }
                c.status = status;
                c.reason = Some(reason.into());
                c.message = Some(message);
            }
            None => conditions.push(HorizontalPodAutoscalerCondition {
                type_: type_.into(),
                status,
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: Some(now),
            }),
        }
    }

    /// Writes the status if it changed.
    async fn write_status(&self, hpa: &HorizontalPodAutoscaler) -> Result<(), Error> {
        let mut status = self.status.clone();
        status.observed_generation = hpa.metadata.generation;
        if hpa.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut updated = hpa.clone();
        updated.status = Some(status);
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.context.client.clone(), &self.key.0);
        api.replace_status(&self.key.1, &PostParams::default(), &updated)
            .await?;
        Ok(())
    }
}

/// An API error's message, without kube-rs's wrapping.
fn error_text(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// A value in thousandths as a decimal quantity, as upstream's `NewMilliQuantity` prints it
/// (`250m`, `2`, `64M`).
fn milli_quantity(thousandths: i64) -> Quantity {
    if thousandths % 1000 != 0 {
        return Quantity(format!("{thousandths}m"));
    }
    let mut value = thousandths / 1000;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while value != 0 && value % 1000 == 0 && suffix < SUFFIXES.len() - 1 {
        value /= 1000;
        suffix += 1;
    }
    Quantity(format!("{value}{}", SUFFIXES[suffix]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_as_upstreams() {
        assert_eq!(milli_quantity(250).0, "250m");
        assert_eq!(milli_quantity(2000).0, "2");
        assert_eq!(milli_quantity(64_000_000_000).0, "64M");
        assert_eq!(milli_quantity(1_048_576_000).0, "1048576");
        assert_eq!(milli_quantity(0).0, "0");
    }
}
