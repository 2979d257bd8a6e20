//! Starting a container, in two steps: [`plan`] resolves the pod's container into a plain
//! [`ContainerPlan`] (the runtime handler, the image pulled, the pod's network attached, the
//! environment, mounts and limits worked out), then [`start`] hands the plan's spec to the
//! runtime of its handler.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::Api;
use tokio::time::Instant;

use super::super::{Agent, env};
use super::{Launch, LaunchError};
use crate::images::{Credential, Image, PullPolicy, parse_docker_config};
use crate::network::{EGRESS_ANNOTATION, HostPort, Protocol};
use crate::objects::{ConfigError, Sources};
use crate::runtime::{Artifact, ContainerSpec, DEFAULT_HANDLER, PodNetwork, Serving};

/// A container, resolved: everything its runtime needs, and what the worker reports.
pub(super) struct ContainerPlan {
    /// The RuntimeClass handler whose runtime starts it.
    pub handler: String,
    pub spec: ContainerSpec,
    pub image: Image,
    /// How long getting the image took (a look in the cache, or a pull).
    pub pull_time: Duration,
}

fn config_error(error: impl std::fmt::Display) -> LaunchError {
    LaunchError {
        reason: "CreateContainerConfigError",
        message: error.to_string(),
        pull: false,
    }
}

fn create_error(message: String) -> LaunchError {
    LaunchError {
        reason: "CreateContainerError",
        message,
        pull: false,
    }
}

/// Resolves `container` of `pod`: pulls its image and attaches the pod's network (at the same
/// time), then works out its environment, mounts and limits.
pub(super) async fn plan(
    agent: &Agent,
    pod: &Pod,
    container: &Container,
    log: PathBuf,
) -> Result<ContainerPlan, LaunchError> {
    let image_name = container.image.clone().unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let handler = handler(agent, pod).await?;
    let host_ports = host_ports(pod);
    let attach = agent
        .network()
        .attach(uid, uses_host_network(pod), &host_ports);
    let policy = PullPolicy::of(container.image_pull_policy.as_deref(), &image_name);
    let pull = async {
        let mut secrets =
            Sources::new(&agent.client, pod, agent.node_ip.to_string(), String::new());
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
    if image.pulled {
        agent.containers.image_pull.observe(pull_time);
    }
    let network =
        network.map_err(|e| create_error(format!("cannot set up the pod network: {e}")))?;
    if network.netns.is_some() {
        agent
            .policies
            .add_local(network.ip, crate::network::netpol::PodInfo::of(pod));
    }
    let mut sources = Sources::new(
        &agent.client,
        pod,
        agent.node_ip.to_string(),
        network.ip.to_string(),
    )
    .with_tokens(&agent.tokens);
    let env = env::environment(&mut sources, container)
        .await
        .map_err(config_error)?;
    let env = env::with_services(env, &agent.resolver.directory(), pod);
    let pod_dir = agent.pods_dir.join(uid);
    let mounts = crate::volumes::mounts(&mut sources, &pod_dir, pod, container)
        .await
        .map_err(config_error)?;
    let memory_limit = memory_limit(agent, container).map_err(config_error)?;
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
        artifact: Artifact::Wasm {
            bytes: image.wasm.clone(),
            digest: Some(image.digest.clone()),
        },
        args: env::argv(container, &env),
        env,
        mounts,
        log,
        memory_limit,
        cpu_limit_millis,
        network: Some(PodNetwork {
            netns: network.netns.clone(),
            ip: network.ip,
            egress: egress_allowed(pod),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        }),
        serving: serving(pod, container).map_err(config_error)?,
    };
    Ok(ContainerPlan {
        handler,
        spec,
        image,
        pull_time,
    })
}

/// Starts a planned container on its handler's runtime (off the async threads: compiling
/// blocks).
pub(super) async fn start(agent: &Agent, plan: ContainerPlan) -> Result<Launch, LaunchError> {
    let runtime = agent.runtime(&plan.handler).ok_or_else(|| {
        create_error(format!(
            "no runtime for the RuntimeClass handler {:?} on this node (it has: {})",
            plan.handler,
            agent.handlers().join(", ")
        ))
    })?;
    let pod_ip = plan.spec.network.as_ref().map_or(agent.node_ip, |n| n.ip);
    let spec = plan.spec;
    let handle = tokio::task::spawn_blocking(move || runtime.start(spec))
        .await
        .map_err(|e| create_error(format!("the start panicked: {e}")))?
        .map_err(|e| create_error(e.to_string()))?;
    Ok(Launch {
        handle,
        handler: plan.handler,
        image: plan.image,
        pull_time: plan.pull_time,
        pod_ip,
    })
}

/// The handler of the pod's RuntimeClass (`wasmtime` when it names none).
async fn handler(agent: &Agent, pod: &Pod) -> Result<String, LaunchError> {
    let Some(name) = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref())
    else {
        return Ok(DEFAULT_HANDLER.to_string());
    };
    let api: Api<RuntimeClass> = Api::all(agent.client.clone());
    match api.get_opt(name).await {
        Ok(Some(class)) => Ok(class.handler),
        Ok(None) => Err(config_error(format!("RuntimeClass {name:?} not found"))),
        Err(e) => Err(config_error(format!(
            "cannot read RuntimeClass {name:?}: {e}"
        ))),
    }
}

pub(super) fn uses_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The ports of the pod's containers that ask for a node port (`hostPort`).
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
/// The annotations that tune a function container's serving (README, "HTTP functions").
pub const REQUEST_TIMEOUT_ANNOTATION: &str = "bosun.dev/request-timeout";
pub const CONCURRENCY_ANNOTATION: &str = "bosun.dev/container-concurrency";
pub const QUEUE_ANNOTATION: &str = "bosun.dev/container-queue";
pub const MAX_BODY_ANNOTATION: &str = "bosun.dev/max-request-body";

/// A function container's port or serving annotation that cannot be used.
#[derive(Debug, thiserror::Error)]
enum ServingError {
    #[error("containerPort {0} is not a port")]
    Port(i32),
    #[error("annotation {name}: {value:?} is not {expected}")]
    Annotation {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// How the container serves if it is a function: its first TCP port and the pod's
/// annotations, each checked.
fn serving(pod: &Pod, container: &Container) -> Result<Serving, ServingError> {
    let mut serving = Serving::default();
    let function_pod = pod
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(bosun_api::function::FUNCTION_LABEL));
    let first = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .is_some_and(|c| c.name == container.name);
    serving.required = function_pod && first;
    if let Some(port) = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
    {
        serving.port = u16::try_from(port.container_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(ServingError::Port(port.container_port))?;
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let get = |name: &str| annotations.get(name).map(|v| v.trim());
    let bad = |name: &'static str, value: &str, expected: &'static str| ServingError::Annotation {
        name,
        value: value.to_string(),
        expected,
    };
    if let Some(value) = get(REQUEST_TIMEOUT_ANNOTATION) {
        serving.request_timeout = bosun_api::duration::parse(value)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                bad(
                    REQUEST_TIMEOUT_ANNOTATION,
                    value,
                    "a positive duration such as 30s",
                )
            })?;
    }
    if let Some(value) = get(CONCURRENCY_ANNOTATION) {
        serving.concurrency = value.parse().map_err(|_| {
            bad(
                CONCURRENCY_ANNOTATION,
                value,
                "a whole number (0 for the node's share)",
            )
        })?;
    }
    if let Some(value) = get(QUEUE_ANNOTATION) {
        serving.queue = value
            .parse()
            .map_err(|_| bad(QUEUE_ANNOTATION, value, "a whole number of requests"))?;
    }
    if let Some(value) = get(MAX_BODY_ANNOTATION) {
        serving.max_body = bosun_api::quantity::parse(value)
            .ok()
            .filter(|b| *b >= 0.0)
            .map(|b| b as u64)
            .ok_or_else(|| bad(MAX_BODY_ANNOTATION, value, "a size such as 10Mi"))?;
    }
    Ok(serving)
}

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

/// The container's memory limit; without one, the node's default. (A namespace's LimitRange
/// default is already in the pod: the LimitRanger admission plugin puts it there.)
fn memory_limit(agent: &Agent, container: &Container) -> Result<u64, ConfigError> {
    match limit(container, "memory") {
        Some(q) => Ok(bosun_api::quantity::parse(&q)? as u64),
        None => Ok(agent.config.default_memory_limit),
    }
}

/// Registry credentials from the pod's `imagePullSecrets` (`kubernetes.io/dockerconfigjson`).
/// A missing or malformed secret is skipped, as the kubelet does; the pull then fails with the
/// registry's own message.
async fn pull_credentials(sources: &mut Sources<'_>, pod: &Pod) -> Vec<Credential> {
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
