//! The Function controller: runs each `serving.bosun.dev/v1` Function as a Deployment and a
//! ClusterIP Service of its own name, both owned by it (so garbage collection, `kubectl
//! rollout` and Events work as for any Deployment), and reports them in its status.
//!
//! - The Deployment's pods are the Function's template, labelled
//!   `serving.bosun.dev/function: NAME`, with the Function's `timeout` and
//!   `containerConcurrency` as the node's serving annotations (`bosun.dev/request-timeout`,
//!   `bosun.dev/container-concurrency`), and a queue of 1000 (`bosun.dev/container-queue`,
//!   unless the template sets one). A changed template rolls out as a Deployment does.
//!   The template's hash is kept in an annotation, so an unchanged Function writes nothing.
//! - Replicas: a new Deployment starts at `scale.min`; after that the count is the
//!   autoscaler's (`autoscaler.rs`), which this controller only keeps within `[min, max]`.
//! - The Service listens on port 80 and sends to the function's port (its first container's
//!   first TCP `containerPort`, else 8080), so `http://NAME.NAMESPACE` works in the cluster.
//! - Status: `url` (in the domain of the first Ready node's gateway), `replicas`,
//!   `readyReplicas`, `observedGeneration`, and the conditions `Active` (`False`, reason
//!   `ScaledToZero`, with no replicas) and `Ready`; and `ReplicaFailure` while its Deployment
//!   cannot create the replicas it wants (reason `QuotaExceeded` when a ResourceQuota refused
//!   them, with the quota's message), so a Function its autoscaler cannot grow says why once,
//!   in its status.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bosun_api::function::{
    DEFAULT_DOMAIN, FUNCTION_LABEL, Function, FunctionStatus, GATEWAY_ANNOTATION, NOT_A_FUNCTION,
    TIMEOUT_ANNOTATION,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::objects::{controller_of, controller_reference, deleting};

/// The Deployment annotation with the hash of the template it was last given.
const TEMPLATE_HASH: &str = "serving.bosun.dev/template-hash";
/// The port a function listens on when its container declares none (the node's default).
const DEFAULT_PORT: i32 = 8080;
/// The requests a Function's replica queues past its concurrency limit (`--activator-queue`'s
/// default).
const REPLICA_QUEUE: usize = 1000;

struct Context {
    client: kube::Client,
    /// The nodes, for the domain their gateways serve (the Functions' URL).
    nodes: Store<Node>,
}

pub async fn run(client: kube::Client, config: ControllersConfig) {
    let (nodes, writer) = reflector::store::<Node>();
    let node_events = reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|_| std::future::ready(()));
    let functions: Api<Function> = Api::all(client.clone());
    let owned = || watcher::Config::default().labels(FUNCTION_LABEL);
    let controller = Controller::new(functions, watcher::Config::default())
        .owns(Api::<Deployment>::all(client.clone()), owned())
        .owns(Api::<Service>::all(client.clone()), owned())
        // A pod whose component turns out not to be a function changes the Function's Ready.
        .watches(Api::<Pod>::all(client.clone()), owned(), |pod| {
            let function = pod.labels().get(FUNCTION_LABEL)?;
            Some(ObjectRef::new(function).within(&pod.namespace()?))
        });
    let context = Arc::new(Context { client, nodes });
    tokio::select! {
        () = super::drive(controller, "function", reconcile, context, config.retry) => {}
        () = node_events => {}
    }
}

/// The domain the nodes' gateways route by (their `serving.bosun.dev/gateway` annotation,
/// `PORT DOMAIN`): the first Ready node's by name, else the default.
fn gateway_domain(nodes: &Store<Node>) -> String {
    let mut nodes = nodes.state();
    nodes.sort_by_key(|n| n.name_any());
    nodes
        .iter()
        .filter(|n| super::nodelifecycle::ready_status(n).as_deref() == Some("True"))
        .find_map(|n| {
            let (_, domain) = n.annotations().get(GATEWAY_ANNOTATION)?.split_once(' ')?;
            Some(domain.to_string())
        })
        .unwrap_or_else(|| DEFAULT_DOMAIN.to_string())
}

#[tracing::instrument(name = "reconcile", skip_all, fields(function = %function.name_any(), namespace = ?function.metadata.namespace))]
async fn reconcile(function: Arc<Function>, context: Arc<Context>) -> Result<Action, Error> {
    if deleting(function.meta()) {
        return Ok(Action::await_change());
    }
    let namespace = function.namespace().unwrap_or_default();
    let name = function.name_any();
    let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(context.client.clone(), &namespace);
    let port = function_port(&function.spec.template);

    let deployment = match deployments.get_opt(&name).await? {
        None => {
            deployments
                .create(&PostParams::default(), &new_deployment(&function))
                .await?
        }
        Some(existing) => {
            owned_by(&function, &existing.metadata, "Deployment")?;
            update_deployment(&deployments, &function, existing).await?
        }
    };
    match services.get_opt(&name).await? {
        None => {
            services
                .create(&PostParams::default(), &new_service(&function, port))
                .await?;
        }
        Some(existing) => {
            owned_by(&function, &existing.metadata, "Service")?;
            let wanted = service_spec(&name, port);
            let annotations = service_annotations(&function);
            let stale_annotations = annotations
                .iter()
                .any(|(k, v)| existing.annotations().get(k) != Some(v));
            let spec = existing.spec.unwrap_or_default();
            if spec.ports != wanted.ports || spec.selector != wanted.selector || stale_annotations {
                let patch = json!({
                    "metadata": {"annotations": annotations},
                    "spec": {"ports": wanted.ports, "selector": wanted.selector},
                });
                services
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
            }
        }
    }

    let old = function.status.clone().unwrap_or_default();
    let broken = not_a_function(&context.client, &function).await?;
    let domain = gateway_domain(&context.nodes);
    let status = status(&function, &deployment, &old, broken, &domain);
    if status != old {
        let functions: Api<Function> = Api::namespaced(context.client.clone(), &namespace);
        functions
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    Ok(Action::await_change())
}

/// Refuses to take over an object of the Function's name that something else made.
fn owned_by(function: &Function, meta: &ObjectMeta, kind: &str) -> Result<(), Error> {
    let uid = function.metadata.uid.as_deref();
    match controller_of(meta) {
        Some(owner) if Some(owner.uid.as_str()) == uid => Ok(()),
        _ => Err(Error::Invalid(format!(
            "{kind} {} exists and is not controlled by Function {}",
            meta.name.as_deref().unwrap_or_default(),
            function.name_any()
        ))),
    }
}

/// The port the function's first container serves on: its first TCP `containerPort`.
fn function_port(template: &PodTemplateSpec) -> i32 {
    template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map_or(DEFAULT_PORT, bosun_api::function::serving_port)
}

fn labels(function: &Function) -> BTreeMap<String, String> {
    BTreeMap::from([(FUNCTION_LABEL.to_string(), function.name_any())])
}

/// The pods' template: the Function's, with its label and serving annotations.
fn pod_template(function: &Function) -> PodTemplateSpec {
    let mut template = function.spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .extend(labels(function));
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    if let Some(timeout) = &function.spec.timeout {
        annotations.insert("bosun.dev/request-timeout".to_string(), timeout.clone());
    }
    if let Some(n) = function.spec.container_concurrency {
        annotations.insert("bosun.dev/container-concurrency".to_string(), n.to_string());
    }
    // A replica that wakes gets every request the activators held at once: its queue takes
    // as many as a node's activator holds by default, rather than the plain pod's 100.
    annotations
        .entry("bosun.dev/container-queue".to_string())
        .or_insert_with(|| REPLICA_QUEUE.to_string());
    template
}

fn template_hash(template: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(template).expect("a template serializes");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn new_deployment(function: &Function) -> Deployment {
    let template = pod_template(function);
    Deployment {
        metadata: ObjectMeta {
            name: Some(function.name_any()),
            namespace: function.namespace(),
            labels: Some(labels(function)),
            annotations: Some(BTreeMap::from([(
                TEMPLATE_HASH.to_string(),
                template_hash(&template),
            )])),
            owner_references: Some(vec![controller_reference(function)]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(function.spec.scaling().min),
            selector: LabelSelector {
                match_labels: Some(labels(function)),
                ..Default::default()
            },
            template,
            ..Default::default()
        }),
        status: None,
    }
}

/// Rolls out a changed template, and keeps the replicas within `[min, max]`.
async fn update_deployment(
    api: &Api<Deployment>,
    function: &Function,
    deployment: Deployment,
) -> Result<Deployment, Error> {
    let template = pod_template(function);
    let hash = template_hash(&template);
    let scaling = function.spec.scaling();
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let clamped = replicas.clamp(scaling.min, scaling.max);
    let same_template = deployment.annotations().get(TEMPLATE_HASH) == Some(&hash);
    if same_template && clamped == replicas {
        return Ok(deployment);
    }
    let mut patch = json!({"spec": {"replicas": clamped}});
    if !same_template {
        patch["metadata"] = json!({"annotations": {TEMPLATE_HASH: hash}});
        patch["spec"]["template"] = serde_json::to_value(&template).expect("serializable");
    }
    Ok(api
        .patch(
            &function.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?)
}

/// What the nodes' gateways read on the Service: the Function's request timeout.
fn service_annotations(function: &Function) -> BTreeMap<String, String> {
    BTreeMap::from([(
        TIMEOUT_ANNOTATION.to_string(),
        function
            .spec
            .timeout
            .clone()
            .unwrap_or_else(|| "60s".to_string()),
    )])
}

fn service_spec(name: &str, port: i32) -> ServiceSpec {
    ServiceSpec {
        selector: Some(BTreeMap::from([(
            FUNCTION_LABEL.to_string(),
            name.to_string(),
        )])),
        ports: Some(vec![ServicePort {
            name: Some("http".to_string()),
            port: 80,
            target_port: Some(IntOrString::Int(port)),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn new_service(function: &Function, port: i32) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(function.name_any()),
            namespace: function.namespace(),
            labels: Some(labels(function)),
            annotations: Some(service_annotations(function)),
            owner_references: Some(vec![controller_reference(function)]),
            ..Default::default()
        },
        spec: Some(service_spec(&function.name_any(), port)),
        status: None,
    }
}

/// The Function's status from its Deployment; conditions keep their transition time while
/// their status stays.
/// Why the Function cannot serve, if a node said its container is no wasi:http component: from
/// a pod of the current template, or from the status already written for this generation (its
/// pods may be gone since).
async fn not_a_function(
    client: &kube::Client,
    function: &Function,
) -> Result<Option<String>, Error> {
    let kept = function.status.as_ref().and_then(|s| {
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.reason == NOT_A_FUNCTION_REASON
            && s.observed_generation == function.metadata.generation)
            .then(|| ready.message.clone())
    });
    if kept.is_some() {
        return Ok(kept);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &function.namespace().unwrap_or_default());
    let selector = format!("{FUNCTION_LABEL}={}", function.name_any());
    let pods = pods.list(&ListParams::default().labels(&selector)).await?;
    Ok(pods.items.iter().find_map(|pod| {
        let waiting = pod
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .state
            .as_ref()?
            .waiting
            .as_ref()?;
        let message = waiting.message.as_ref()?;
        message.contains(NOT_A_FUNCTION).then(|| message.clone())
    }))
}

/// The Ready reason of a Function whose container is no wasi:http component.
pub const NOT_A_FUNCTION_REASON: &str = "NotAFunction";

fn status(
    function: &Function,
    deployment: &Deployment,
    old: &FunctionStatus,
    broken: Option<String>,
    domain: &str,
) -> FunctionStatus {
    let (replicas, ready) = crate::objects::deployment_replicas(deployment);
    let ready_count = ready;
    let generation = function.metadata.generation;
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(
                || Time(k8s_openapi::jiff::Timestamp::now()),
                |c| c.last_transition_time.clone(),
            );
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    let active = if replicas > 0 {
        condition("Active", true, "Active", format!("{replicas} replicas"))
    } else {
        condition(
            "Active",
            false,
            "ScaledToZero",
            "the function has no replicas".to_string(),
        )
    };
    let ready = match (ready, replicas) {
        _ if broken.is_some() => condition(
            "Ready",
            false,
            NOT_A_FUNCTION_REASON,
            broken.unwrap_or_default(),
        ),
        (0, 0) => condition(
            "Ready",
            false,
            "ScaledToZero",
            "no replica is running".to_string(),
        ),
        (0, _) => condition(
            "Ready",
            false,
            "ReplicasNotReady",
            format!("none of {replicas} replicas is ready yet"),
        ),
        (n, _) => condition("Ready", true, "Ready", format!("{n} of {replicas} ready")),
    };
    let mut conditions = vec![ready, active];
    let failure = deployment
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True");
    if let Some(failure) = failure {
        let message = failure.message.clone().unwrap_or_default();
        let reason = if message.contains("exceeded quota") {
            "QuotaExceeded"
        } else {
            failure.reason.as_deref().unwrap_or("FailedCreate")
        };
        conditions.push(condition("ReplicaFailure", true, reason, message));
    }
    FunctionStatus {
        url: Some(format!(
            "http://{}.{}.{domain}",
            function.name_any(),
            function.namespace().unwrap_or_default()
        )),
        replicas: Some(replicas),
        ready_replicas: Some(ready_count),
        conditions,
        observed_generation: generation,
        // The trigger controller's.
        triggers: old.triggers.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    fn function(ports: Option<Vec<ContainerPort>>) -> Function {
        let mut f = Function::default();
        f.metadata.name = Some("hello".to_string());
        f.metadata.namespace = Some("default".to_string());
        f.metadata.uid = Some("u1".to_string());
        f.spec.timeout = Some("5s".to_string());
        f.spec.container_concurrency = Some(4);
        f.spec.template.spec = Some(PodSpec {
            containers: vec![Container {
                name: "fn".to_string(),
                image: Some("r/hello:v1".to_string()),
                ports,
                ..Default::default()
            }],
            ..Default::default()
        });
        f
    }

    #[test]
    fn the_deployment_carries_the_label_the_annotations_and_the_minimum() {
        let f = function(None);
        let d = new_deployment(&f);
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(0), "scale to zero is the default");
        let meta = spec.template.metadata.as_ref().unwrap();
        assert_eq!(
            meta.labels.as_ref().unwrap().get(FUNCTION_LABEL),
            Some(&"hello".to_string())
        );
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations["bosun.dev/request-timeout"], "5s");
        assert_eq!(annotations["bosun.dev/container-concurrency"], "4");
        assert_eq!(annotations["bosun.dev/container-queue"], "1000");
        assert_eq!(
            controller_of(&d.metadata).map(|o| o.uid.as_str()),
            Some("u1")
        );
    }

    #[test]
    fn the_service_sends_port_80_to_the_functions_port() {
        assert_eq!(function_port(&function(None).spec.template), 8080);
        let udp_then_tcp = vec![
            ContainerPort {
                container_port: 53,
                protocol: Some("UDP".to_string()),
                ..Default::default()
            },
            ContainerPort {
                container_port: 9000,
                ..Default::default()
            },
        ];
        let f = function(Some(udp_then_tcp));
        let port = function_port(&f.spec.template);
        assert_eq!(port, 9000);
        let ports = new_service(&f, port).spec.unwrap().ports.unwrap();
        assert_eq!(
            (ports[0].port, ports[0].target_port.clone()),
            (80, Some(IntOrString::Int(9000)))
        );
    }

    #[test]
    fn a_function_at_zero_is_not_active() {
        let f = function(None);
        let d = new_deployment(&f);
        let s = status(&f, &d, &FunctionStatus::default(), None, "fn.local");
        assert_eq!(s.url.as_deref(), Some("http://hello.default.fn.local"));
        let active = s.conditions.iter().find(|c| c.type_ == "Active").unwrap();
        assert_eq!(
            (active.status.as_str(), active.reason.as_str()),
            ("False", "ScaledToZero")
        );
        // Nothing changed: the same status, transition times kept.
        assert_eq!(status(&f, &d, &s, None, "fn.local"), s);
    }
}
