//! The policy watch: every agent follows all pods, namespaces and NetworkPolicies, and on
//! every change gives [`NetworkPolicies`](crate::network::netpol::NetworkPolicies) what the
//! socket checks read. A policy change therefore applies to the next connection a guest makes.
//! It also turns the checks' denials into `NetworkPolicyDenied` Events on the source pod, at
//! most one per pod, destination and port in [`EVENT_INTERVAL`], and counts every one in the
//! node's `bosun_network_policy_denials_total{namespace,pod,policy}` (on `/metrics`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_api::netpol::Policy;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

use super::Agent;
use crate::network::netpol::{Denial, PodInfo};

/// How often one pod's denials to one destination make an Event.
const EVENT_INTERVAL: Duration = Duration::from_secs(30);

/// Follows pods, namespaces and NetworkPolicies until the client goes.
pub(crate) async fn keep(agent: Arc<Agent>) {
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (namespaces, namespaces_writer) = reflector::store::<Namespace>();
    let (policies, policies_writer) = reflector::store::<NetworkPolicy>();
    let client = agent.client.clone();
    let pod_events = reflector::reflector(
        pods_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()));
    let namespace_events = reflector::reflector(
        namespaces_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()));
    let policy_events = reflector::reflector(
        policies_writer,
        watcher(
            Api::<NetworkPolicy>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()));
    let mut events = futures::stream::select_all([
        pod_events.boxed(),
        namespace_events.boxed(),
        policy_events.boxed(),
    ]);
    while let Some(event) = events.next().await {
        if let Err(error) = event {
            tracing::warn!(%error, "watching pods, namespaces and network policies");
            continue;
        }
        // Take everything that arrived together, then rebuild once.
        while let Some(Some(_)) = events.next().now_or_never() {}
        let ready = |ok: Option<Result<(), _>>| matches!(ok, Some(Ok(())));
        if !(ready(pods.wait_until_ready().now_or_never())
            && ready(namespaces.wait_until_ready().now_or_never())
            && ready(policies.wait_until_ready().now_or_never()))
        {
            continue;
        }
        rebuild(&agent, &pods, &namespaces, &policies);
    }
}

fn rebuild(
    agent: &Agent,
    pods: &Store<Pod>,
    namespaces: &Store<Namespace>,
    policies: &Store<NetworkPolicy>,
) {
    let mut by_ip = HashMap::new();
    for pod in pods.state() {
        let host = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        if let (false, Some(ip)) = (host, ip) {
            by_ip.insert(ip, PodInfo::of(&pod));
        }
    }
    let labels: HashMap<String, BTreeMap<String, String>> = namespaces
        .state()
        .iter()
        .map(|n| {
            // Upstream sets this label on every namespace; selectors name namespaces by it.
            let mut labels = n.labels().clone();
            labels.insert("kubernetes.io/metadata.name".into(), n.name_any());
            (n.name_any(), labels)
        })
        .collect();
    let mut compiled = Vec::new();
    for policy in policies.state() {
        match Policy::compile(&policy) {
            Ok(policy) => compiled.push(policy),
            Err(error) => tracing::warn!(
                %error,
                policy = %policy.name_any(),
                namespace = ?policy.namespace(),
                "ignoring a NetworkPolicy the node cannot read"
            ),
        }
    }
    agent.policies.set(by_ip, labels, compiled);
}

/// Records the checks' denials as Events on the source pods.
pub(crate) async fn report(agent: Arc<Agent>, mut denials: mpsc::Receiver<Denial>) {
    let mut last: HashMap<(String, std::net::SocketAddr), Instant> = HashMap::new();
    while let Some(denial) = denials.recv().await {
        for policy in &denial.policies {
            agent
                .containers
                .count_denial(&denial.source.namespace, &denial.source.name, policy);
        }
        let key = (denial.source.uid.clone(), denial.destination);
        let now = Instant::now();
        if last
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < EVENT_INTERVAL)
        {
            continue;
        }
        last.retain(|_, at| now.duration_since(*at) < EVENT_INTERVAL);
        last.insert(key, now);
        let target = match &denial.destination_pod {
            Some(pod) => format!("{} (pod {pod})", denial.destination),
            None => denial.destination.to_string(),
        };
        let note = format!(
            "connection from {}/{} to {target} denied by NetworkPolicy {}",
            denial.source.namespace,
            denial.source.name,
            denial.policies.join(", ")
        );
        tracing::info!(%note, "network policy denial");
        agent.event(
            ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(denial.source.namespace.clone()),
                name: Some(denial.source.name.clone()),
                uid: Some(denial.source.uid.clone()),
                ..Default::default()
            },
            EventType::Warning,
            "NetworkPolicyDenied",
            "Connect",
            &note,
        );
    }
}
