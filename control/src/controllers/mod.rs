//! The controllers: API clients that drive the cluster's objects toward what their specs ask,
//! run together as one controller manager under leader election (one active per cluster).
//!
//! - [`nodeipam`]: gives each Node a `spec.podCIDR` out of the cluster CIDR.
//! - [`replicaset`]: keeps each ReplicaSet's pods at `spec.replicas`.
//! - [`deployment`]: rolls Deployments out through ReplicaSets.
//! - [`garbagecollector`]: deletes what lost its owners; cascading deletion in the
//!   background, foreground or orphan mode.
//! - [`job`]: runs Jobs' pods to completion.
//! - [`cronjob`]: creates Jobs on a schedule.
//! - [`namespace`]: empties a namespace being deleted, then lets it go.
//! - [`podgc`]: deletes pods whose node is gone, and old finished pods.
//! - [`nodelifecycle`]: taints nodes that stopped renewing their Lease and evicts their pods.
//! - [`endpoints`]: publishes the pods behind each Service as Endpoints (`endpoint`) and
//!   EndpointSlices (`endpointslice`).
//! - [`serviceaccounts`]: every namespace's `default` ServiceAccount and `kube-root-ca.crt`.
//! - [`servicelb`]: gives LoadBalancer Services the nodes' addresses.
//! - [`function`]: runs each Function as a Deployment and a Service of its name.
//! - [`autoscaler`]: scales Functions on their load, wakes them, and takes idle ones to zero.
//! - [`triggers`]: calls Functions on their cron triggers' schedules.
//! - [`certificates`]: signs approved CertificateSigningRequests with the cluster CA.
//! - [`clusterroleaggregation`]: fills aggregated ClusterRoles (`admin`, `edit`, `view`)
//!   with the rules of the ClusterRoles their selectors match.
//! - [`podautoscaler`]: scales Deployments and other scalable kinds on their pods' CPU,
//!   memory or function load, as HorizontalPodAutoscalers ask.

pub mod autoscaler;
pub mod certificates;
pub mod clusterroleaggregation;
pub mod cronjob;
pub mod deployment;
pub mod endpoints;
pub mod function;
pub mod garbagecollector;
pub mod job;
pub mod kubernetes;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podautoscaler;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod serviceaccounts;
pub mod servicelb;
pub mod triggers;

use std::collections::BTreeSet;
use std::time::Duration;

use bosun_api::cidr::Ipv4Cidr;
use bosun_api::resources::Resource;

use crate::events::RecorderOptions;

/// The controllers' names, as `--disable-controllers` takes them.
pub const ALL: &[&str] = &[
    "clusterrole-aggregation",
    "cronjob",
    "csrsigning",
    "deployment",
    "endpoint",
    "endpointslice",
    "function",
    "function-autoscaler",
    "function-triggers",
    "garbagecollector",
    "horizontalpodautoscaling",
    "job",
    "namespace",
    "nodeipam",
    "nodelifecycle",
    "podgc",
    "replicaset",
    "resourcequota",
    "serviceaccount",
    "servicelb",
];

/// What the controller manager runs and how.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// Controllers not to run (names from [`ALL`]).
    pub disabled: BTreeSet<String>,
    /// The block pod IPs come from; each node gets a sub-block of it.
    pub cluster_cidr: Ipv4Cidr,
    /// The prefix length of each node's block (24: 254 pods per node).
    pub node_cidr_mask_size: u8,
    pub events: RecorderOptions,
    /// How long a controller waits before retrying a reconcile that failed.
    pub retry: Duration,
    /// How long a node may go without renewing its Lease before it is Unknown and tainted.
    pub node_monitor_grace_period: Duration,
    /// How often nodes' heartbeats and taints are checked.
    pub node_monitor_period: Duration,
    /// How long a Job waits before replacing its first failed pod (doubling per failure).
    pub job_backoff: Duration,
    /// How often pod garbage collection runs.
    pub pod_gc_period: Duration,
    /// Finished pods kept before the oldest are deleted.
    pub terminated_pod_gc_threshold: usize,
    /// How often every quota's usage is counted again from its namespace's objects.
    pub resource_quota_sync_period: Duration,
    /// How often the function autoscaler reads the nodes' function metrics and decides.
    pub function_autoscale_period: Duration,
    /// How often each HorizontalPodAutoscaler is synced (15 s).
    pub hpa_sync_period: Duration,
    /// How long a scale-down waits for the recommendations to stay low (5 min), for HPAs
    /// without their own scale-down window.
    pub hpa_downscale_stabilization: Duration,
    /// How far from the target the usage must be before an HPA scales (0.1).
    pub hpa_tolerance: f64,
    /// How long after its start a pod's CPU sample may be skewed by its start (5 min).
    pub hpa_cpu_initialization_period: Duration,
    /// How long after its start a pod may be unready without being held as never ready (30 s).
    pub hpa_initial_readiness_delay: Duration,
    /// The CA and limits the CSR signer signs with; `None` signs nothing.
    pub signing: Option<certificates::Signing>,
    /// The cluster CA certificate (PEM) every namespace's `kube-root-ca.crt` carries.
    pub root_ca: Option<String>,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            disabled: BTreeSet::new(),
            cluster_cidr: "10.88.0.0/16".parse().expect("a valid block"),
            node_cidr_mask_size: 24,
            events: RecorderOptions::default(),
            retry: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            job_backoff: Duration::from_secs(10),
            pod_gc_period: Duration::from_secs(20),
            terminated_pod_gc_threshold: 12500,
            resource_quota_sync_period: Duration::from_secs(300),
            function_autoscale_period: Duration::from_secs(1),
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            hpa_tolerance: 0.1,
            hpa_cpu_initialization_period: Duration::from_secs(300),
            hpa_initial_readiness_delay: Duration::from_secs(30),
            signing: None,
            root_ca: None,
        }
    }
}

impl ControllersConfig {
    /// Checks the names in `disabled` and that node blocks fit in the cluster block.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(unknown) = self.disabled.iter().find(|n| !ALL.contains(&n.as_str())) {
            return Err(format!(
                "unknown controller {unknown:?} (controllers: {})",
                ALL.join(", ")
            ));
        }
        if self.node_cidr_mask_size < self.cluster_cidr.prefix() || self.node_cidr_mask_size > 30 {
            return Err(format!(
                "a node block of /{} does not fit the cluster CIDR {} (use a prefix between /{} and /30)",
                self.node_cidr_mask_size,
                self.cluster_cidr,
                self.cluster_cidr.prefix()
            ));
        }
        Ok(())
    }
}

/// The kube-rs description of a served resource, for dynamic API clients.
pub(crate) fn api_resource(resource: &Resource) -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: resource.group.to_string(),
        version: resource.version.to_string(),
        api_version: resource.api_version(),
        kind: resource.kind.to_string(),
        plural: resource.plural.to_string(),
    }
}

/// A store of every Function, and the stream of their changes that fills it (poll it).
pub(crate) fn watch_functions(
    client: kube::Client,
) -> (
    kube::runtime::reflector::Store<bosun_api::function::Function>,
    impl futures::Stream<Item = Result<bosun_api::function::Function, kube::runtime::watcher::Error>>,
) {
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (store, writer) = reflector::store();
    let events = reflector::reflector(
        writer,
        watcher(kube::Api::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .applied_objects();
    (store, events)
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// When to try again: at once after a conflict (someone else wrote first, and the next
    /// read sees it), else after `retry`.
    pub fn retry_after(&self, retry: Duration) -> Duration {
        match self {
            Error::Api(kube::Error::Api(e)) if e.code == 409 => Duration::from_millis(50),
            _ => retry,
        }
    }
}

/// Runs a kube-rs controller until its watches end: a failed reconcile is logged and tried
/// again after `retry` (at once after a conflict).
pub(crate) async fn drive<K, C, F>(
    controller: kube::runtime::Controller<K>,
    name: &'static str,
    reconcile: impl FnMut(std::sync::Arc<K>, std::sync::Arc<C>) -> F,
    context: std::sync::Arc<C>,
    retry: Duration,
) where
    K: Clone
        + kube::Resource
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + std::fmt::Debug + Unpin,
    C: Send + Sync + 'static,
    F: std::future::Future<Output = Result<kube::runtime::controller::Action, Error>>
        + Send
        + 'static,
{
    use futures::{FutureExt, StreamExt};
    let mut reconcile = reconcile;
    let counted = move |object, context| {
        let work = crate::telemetry::global().reconcile(name);
        reconcile(object, context).map(move |result| {
            drop(work);
            result
        })
    };
    controller
        .run(
            counted,
            move |_object, error: &Error, _context| {
                crate::telemetry::global()
                    .queue_retries
                    .get_or_create(&crate::telemetry::NameLabel { name: name.into() })
                    .inc();
                tracing::warn!(%error, controller = name, "reconcile failed; retrying");
                kube::runtime::controller::Action::requeue(error.retry_after(retry))
            },
            context,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, controller = name, "reconcile");
            }
        })
        .await;
}

/// Runs every enabled controller until they all end (they end only if the client is gone).
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let mut tasks = tokio::task::JoinSet::new();
    if !config.disabled.contains("serviceaccount") {
        tasks.spawn(serviceaccounts::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("csrsigning") {
        tasks.spawn(certificates::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("clusterrole-aggregation") {
        tasks.spawn(clusterroleaggregation::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("garbagecollector") {
        tasks.spawn(garbagecollector::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("job") {
        tasks.spawn(job::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("namespace") {
        tasks.spawn(namespace::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("nodeipam") {
        tasks.spawn(nodeipam::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("cronjob") {
        tasks.spawn(cronjob::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("deployment") {
        tasks.spawn(deployment::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("nodelifecycle") {
        tasks.spawn(nodelifecycle::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("podgc") {
        tasks.spawn(podgc::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("resourcequota") {
        tasks.spawn(resourcequota::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("replicaset") {
        tasks.spawn(replicaset::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("endpoint") {
        tasks.spawn(endpoints::run_endpoints(client.clone(), config.clone()));
    }
    if !config.disabled.contains("endpointslice") {
        tasks.spawn(endpoints::run_slices(client.clone(), config.clone()));
    }
    if !config.disabled.contains("servicelb") {
        tasks.spawn(servicelb::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("function") {
        tasks.spawn(function::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("function-autoscaler") {
        tasks.spawn(autoscaler::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("function-triggers") {
        tasks.spawn(triggers::run(client.clone(), config.clone()));
    }
    if !config.disabled.contains("horizontalpodautoscaling") {
        tasks.spawn(podautoscaler::run(client.clone(), config.clone()));
    }
    while tasks.join_next().await.is_some() {}
}
