//! The agent: registers this node, renews its Lease, and runs the pods bound to it.
//!
//! [`run`] starts these loops on one kube-rs client:
//! - [`node`]: creates or adopts the Node object and keeps its status (capacity, conditions
//!   from real readings, addresses, the log server's port) current;
//! - the Lease heartbeat in `kube-node-lease`, every quarter of `--lease-duration`;
//! - the pod watch (`spec.nodeName=<me>`), which hands every pod to its own [`pod`] worker,
//!   keyed by UID. A worker pulls, starts, restarts and stops the pod's containers and writes
//!   `pods/{name}/status`; when the pod is being deleted it stops them within the grace
//!   period and deletes the pod for good.
//! - the routes to other nodes' pods, from the Node objects;
//! - [`services`]: the node's service proxy rules and the resolver of Services' names, from
//!   Services and EndpointSlices.

pub(crate) mod env;
mod events;
mod netpol;
mod node;
mod pod;
mod probe;
mod services;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bosun_api::cidr::Ipv4Cidr;
use bosun_api::cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::gateway::Routes;
use crate::images::Images;
use crate::logs::server::LogIndex;
use crate::metrics::Containers;
use crate::network::names::Resolver;
use crate::network::{Network, NetworkConfig};
use crate::runtime::Runtime;
use crate::runtime::wasmtime::{WasmtimeOptions, WasmtimeRuntime};

pub use node::NodeReadings;

/// Everything `bosun node` is told on its command line.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// The address the node is reached at (its InternalIP); `None` picks the host's first
    /// non-loopback IPv4 address.
    pub address: Option<IpAddr>,
    /// The port of the log server, published as `status.daemonEndpoints.kubeletEndpoint`.
    pub port: u16,
    /// Registries spoken to over plain HTTP (`host:port`).
    pub insecure_registries: Vec<String>,
    /// How long the node's Lease is valid; it is renewed every quarter of it.
    pub lease_duration: Duration,
    /// How often the Node's status is re-read and written if it changed.
    pub status_update_period: Duration,
    /// Pods this node accepts (`capacity.pods`).
    pub max_pods: u32,
    /// The memory limit of a container that sets none and whose namespace has no LimitRange
    /// default.
    pub default_memory_limit: u64,
    /// Back-off between restarts of a crashing container, and between pulls of an image that
    /// failed: doubled from `initial` up to `max`.
    pub backoff: Backoff,
    /// The image cache is trimmed to this size (least recently used, unused blobs first).
    pub image_cache_max_bytes: u64,
    /// How often configMap, secret and downwardAPI volumes are rewritten from the objects.
    pub volume_sync_period: Duration,
    /// How long a new pod's first status waits while its containers are being started, so
    /// that a pod that starts quickly is written once, Running, instead of ContainerCreating
    /// and then Running (the kubelet's status manager likewise writes only the latest
    /// status). A start that takes longer shows ContainerCreating after this.
    pub first_status_delay: Duration,
    /// Events written per second after a burst of `event_burst` (0: no limit); more wait in
    /// a queue of 1000, and past that are dropped.
    pub event_qps: f64,
    pub event_burst: u32,
    /// The bridge the pods' veths join (made if missing).
    pub bridge: String,
    /// The cluster's pod block, if given: the control plane publishes it
    /// (`kube-system/bosun-cluster`), and a value given here must agree with it.
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// The cluster's Service block, if given; as `cluster_cidr`.
    pub service_cidr: Option<Ipv4Cidr>,
    /// The cluster's DNS domain: Services are `NAME.NAMESPACE.svc.<domain>`.
    pub cluster_domain: String,
    /// How long pods wait at start for the first listing of Services.
    pub services_sync_timeout: Duration,
    pub wasmtime: WasmtimeOptions,
    /// The function gateway's port (`--function-port`); 0 turns it off.
    pub function_port: u16,
    /// Function hosts are `NAME.NAMESPACE.<function_domain>`.
    pub function_domain: String,
    /// Requests one Function may have held on this node while it has no ready replica.
    pub activator_queue: usize,
    /// How long the node waits for its client certificate request to be approved and signed.
    pub certificate_timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl NodeConfig {
    /// Kubernetes' defaults for a node named `name` keeping its state in `data_dir`.
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            data_dir: data_dir.into(),
            address: None,
            port: 10250,
            insecure_registries: Vec::new(),
            lease_duration: Duration::from_secs(40),
            status_update_period: Duration::from_secs(10),
            max_pods: 110,
            default_memory_limit: 256 << 20,
            backoff: Backoff {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(300),
            },
            image_cache_max_bytes: 10 << 30,
            volume_sync_period: Duration::from_secs(10),
            first_status_delay: Duration::from_millis(100),
            event_qps: 50.0,
            event_burst: 100,
            bridge: "bosun0".to_string(),
            cluster_cidr: None,
            service_cidr: None,
            cluster_domain: "cluster.local".to_string(),
            services_sync_timeout: Duration::from_secs(10),
            wasmtime: WasmtimeOptions::default(),
            function_port: 8081,
            function_domain: bosun_api::function::DEFAULT_DOMAIN.to_string(),
            activator_queue: 1000,
            certificate_timeout: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the wasmtime runtime: {0}")]
    Runtime(#[from] crate::runtime::Error),
    #[error("cannot register the node: {0}")]
    Register(#[source] kube::Error),
    #[error("{0} is IPv6; Bosun's pod network is IPv4 only for now")]
    Ipv6Address(std::net::Ipv6Addr),
    #[error("the node has no usable address: {0}")]
    Address(#[source] std::io::Error),
    #[error("cannot start the log server: {0}")]
    LogServer(String),
    #[error("cannot configure the log server's TLS: {0}")]
    Tls(#[from] bosun_tls::Error),
    #[error("cannot read the cluster's blocks from the control plane: {0}")]
    ReadBlocks(#[source] kube::Error),
    #[error(transparent)]
    Blocks(#[from] cluster::Error),
    #[error("cannot get the node's credentials: {0}")]
    Credentials(#[from] crate::credentials::CredentialsError),
}

/// What the pod workers share.
pub(crate) struct Agent {
    pub client: kube::Client,
    pub config: NodeConfig,
    /// The cluster's pod and Service blocks, as the control plane publishes them.
    pub blocks: cluster::Blocks,
    /// A runtime per RuntimeClass handler.
    runtimes: HashMap<&'static str, Arc<dyn Runtime>>,
    pub images: Images,
    pub node_ip: Ipv4Addr,
    pub events: events::Events,
    /// `<data_dir>/pods`: one directory per pod UID (logs, volumes).
    pub pods_dir: PathBuf,
    /// The log server's certificate (PEM), published on the Node.
    pub serving_cert: Option<String>,
    /// What the log server can serve.
    pub logs: Arc<LogIndex>,
    /// The running containers, whose usage and function stats the node port serves.
    pub containers: Arc<Containers>,
    /// The pods' ServiceAccount tokens, until they near their end.
    pub tokens: crate::objects::TokenCache,
    /// The pod network, set up once the node has its podCIDR (before any pod starts).
    network: OnceLock<Network>,
    /// What Services' names mean, kept by the service watch.
    pub resolver: Arc<Resolver>,
    /// What the NetworkPolicies allow guests, kept by the policy watch.
    pub policies: Arc<crate::network::netpol::NetworkPolicies>,
    /// Where the function gateway sends each Function's requests, kept by the service watch.
    pub routes: Arc<Routes>,
    /// The activation listener's address, where the proxy sends connections to the Service
    /// of a Function with no ready replica; set before the service watch starts.
    pub activator: OnceLock<SocketAddrV4>,
}

impl Agent {
    /// Records an event about `regarding` in the background, rate limited (a failure only
    /// goes to the debug log: events are best effort).
    pub fn event(
        &self,
        regarding: k8s_openapi::api::core::v1::ObjectReference,
        kind: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_: kind,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: action.to_string(),
            secondary: None,
        };
        self.events.record(regarding, event);
    }

    /// Records a warning about this node (its Node object).
    pub fn node_warning(&self, reason: &str, action: &str, note: &str) {
        let node = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(self.config.name.clone()),
            ..Default::default()
        };
        self.event(node, EventType::Warning, reason, action, note);
    }

    /// The runtime of a RuntimeClass handler, if this node has it.
    pub fn runtime(&self, handler: &str) -> Option<Arc<dyn Runtime>> {
        self.runtimes.get(handler).cloned()
    }

    /// The handlers this node has runtimes for, sorted.
    pub fn handlers(&self) -> Vec<&'static str> {
        let mut handlers: Vec<&'static str> = self.runtimes.keys().copied().collect();
        handlers.sort_unstable();
        handlers
    }

    /// The pod network. Pod workers start only after it is set up.
    pub fn network(&self) -> &Network {
        self.network
            .get()
            .expect("the pod network is set up before pods start")
    }
}

/// Runs the agent until `shutdown` resolves. Its containers stop with it: Wasm runs inside
/// this process. `kube` says how to reach the API server; its CA is also the one whose
/// client certificates the log server accepts.
pub async fn run(
    bootstrap: crate::credentials::Bootstrap,
    mut config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    if let crate::credentials::Bootstrap::Kubeconfig(kube) = &bootstrap
        && kube.root_cert.as_ref().is_none_or(Vec::is_empty)
    {
        return Err(AgentError::LogServer(
            "the kubeconfig has no certificate-authority-data, so the log server could not \
             tell the API server from anyone else"
                .to_string(),
        ));
    }
    let credentials = crate::credentials::establish(
        &config.name,
        &config.data_dir,
        bootstrap,
        &format!("bosun-node/{}", env!("CARGO_PKG_VERSION")),
        config.certificate_timeout,
    )
    .await?;
    let client = credentials.client.clone();
    let cluster_ca = bosun_tls::certificates_der(&credentials.ca_pem)
        .map_err(|e| AgentError::LogServer(e.to_string()))?;
    let io = |action, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| AgentError::Io {
            action,
            path,
            source,
        }
    };
    let pods_dir = config.data_dir.join("pods");
    std::fs::create_dir_all(&pods_dir).map_err(io("cannot create", &pods_dir))?;
    let images_dir = config.data_dir.join("images");
    let images = Images::open(&images_dir, &config.insecure_registries)
        .map_err(io("cannot open the image cache in", &images_dir))?;
    let resolver = Arc::new(Resolver::new(&config.cluster_domain));
    let mut wasmtime = config.wasmtime.clone();
    wasmtime
        .cache_dir
        .get_or_insert_with(|| config.data_dir.join("compiled"));
    let blocks = cluster_blocks(&client)
        .await?
        .check(config.cluster_cidr, config.service_cidr)?;
    wasmtime.sockets = blocks;
    wasmtime.extra_roots.extend(cluster_ca.iter().cloned());
    wasmtime.resolver = Some(resolver.clone());
    let (policies, denials) = crate::network::netpol::NetworkPolicies::new();
    let policies = Arc::new(policies);
    wasmtime.policies = Some(policies.clone());
    let wasmtime: Arc<dyn Runtime> = Arc::new(WasmtimeRuntime::new(wasmtime)?);
    let runtimes = HashMap::from([(wasmtime.handler(), wasmtime)]);
    let node_ip = match config.address {
        Some(IpAddr::V4(ip)) => ip,
        Some(IpAddr::V6(ip)) => {
            return Err(AgentError::Ipv6Address(ip));
        }
        None => bosun_api::cluster::host_address().map_err(AgentError::Address)?,
    };
    let listener = tokio::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), config.port))
        .await
        .map_err(|e| {
            AgentError::LogServer(format!("cannot listen on port {}: {e}", config.port))
        })?;
    config.port = listener
        .local_addr()
        .map_err(|e| AgentError::LogServer(e.to_string()))?
        .port();
    let names = vec![
        node_ip.to_string(),
        config.name.clone(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let serving = rcgen::generate_simple_self_signed(names)
        .map_err(|e| AgentError::LogServer(format!("cannot make a certificate: {e}")))?;
    let serving_cert = serving.cert.pem();
    let tls = bosun_tls::server_config(
        &serving_cert,
        &serving.signing_key.serialize_pem(),
        bosun_tls::ClientCerts::Required(&cluster_ca),
    )?;
    let logs = Arc::new(LogIndex::default());
    let containers = Arc::new(Containers::default());
    let events = events::Events::start(
        Recorder::new(
            client.clone(),
            Reporter {
                controller: "bosun-node".to_string(),
                instance: Some(config.name.clone()),
            },
        ),
        config.event_qps,
        config.event_burst,
    );
    let agent = Arc::new(Agent {
        client: client.clone(),
        config,
        blocks,
        runtimes,
        images,
        node_ip,
        events,
        pods_dir,
        serving_cert: Some(serving_cert),
        logs: logs.clone(),
        containers: containers.clone(),
        tokens: Default::default(),
        network: OnceLock::new(),
        resolver,
        policies,
        routes: Arc::new(Routes::default()),
        activator: OnceLock::new(),
    });
    let (stop_logs, logs_stopped) = tokio::sync::oneshot::channel::<()>();
    let routes = crate::logs::server::routes(logs, Duration::from_millis(100)).merge(
        crate::metrics::routes(containers, agent.config.name.clone()),
    );
    let log_server = tokio::spawn(bosun_tls::serve(listener, tls, routes, async {
        let _ = logs_stopped.await;
    }));

    // Bound now, served once the Services are known: a request that comes early waits in the
    // listener's backlog rather than being refused or told its Function does not exist.
    let gateway_listener = bind_gateway(&agent).await;
    node::register(&agent, gateway_listener.is_some())
        .await
        .map_err(AgentError::Register)?;
    let heartbeat = tokio::spawn(node::heartbeat(agent.clone()));
    tokio::pin!(shutdown);
    let network = tokio::select! {
        network = start_network(&agent) => network,
        () = &mut shutdown => {
            heartbeat.abort();
            return Ok(());
        }
    };
    let _ = agent.network.set(network);
    let activation_listener = bind_activation(&agent).await;
    if let Err(error) = node::write_status(&agent).await {
        tracing::warn!(%error, "cannot update the node's status");
    }
    let status = tokio::spawn(node::keep_status(agent.clone()));
    let routes = tokio::spawn(keep_routes(agent.clone()));
    let (services_synced, mut synced) = watch::channel(false);
    let services = tokio::spawn(services::keep(agent.clone(), services_synced));
    // Containers started before the Services are known would miss their variables and names
    // (the kubelet waits likewise); a control plane that cannot list them does not hold pods
    // up for long.
    let _ = tokio::time::timeout(
        agent.config.services_sync_timeout,
        synced.wait_for(|done| *done),
    )
    .await;
    let gc = tokio::spawn(collect_garbage(agent.clone()));
    let policy_watch = tokio::spawn(netpol::keep(agent.clone()));
    let denial_events = tokio::spawn(netpol::report(agent.clone(), denials));
    let gateway = start_gateway(&agent, gateway_listener, activation_listener);
    let (stopping, stopping_rx) = watch::channel(false);
    let pods = tokio::spawn(watch_pods(agent.clone(), stopping_rx));
    shutdown.await;
    heartbeat.abort();
    status.abort();
    routes.abort();
    services.abort();
    gc.abort();
    policy_watch.abort();
    denial_events.abort();
    for task in gateway {
        task.abort();
    }
    // The workers stop their containers and return; the pod directories stay for the next
    // start, which adopts the pods again.
    stopping.send_replace(true);
    let _ = pods.await;
    let _ = stop_logs.send(());
    let _ = log_server.await;
    tracing::info!(node = %agent.config.name, "node agent stopped");
    Ok(())
}

/// Binds the function gateway's port (`--function-port`), unless it is 0. A port that cannot
/// be bound leaves the node without a gateway, with a warning and an Event on the Node.
async fn bind_gateway(agent: &Arc<Agent>) -> Option<tokio::net::TcpListener> {
    let port = agent.config.function_port;
    if port == 0 {
        return None;
    }
    match tokio::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), port)).await {
        Ok(listener) => Some(listener),
        Err(error) => {
            let note = format!("the function gateway cannot listen on port {port}: {error}");
            tracing::warn!(%note);
            agent.node_warning("FunctionGatewayUnavailable", "Listen", &note);
            None
        }
    }
}

/// Binds the activation listener on the node's address on the pod network (port chosen by
/// the kernel), and records it for the proxy's rules. Without a pod network there is no
/// proxy to send anything to it.
async fn bind_activation(agent: &Agent) -> Option<tokio::net::TcpListener> {
    let ip = agent.network().gateway_ip()?;
    match tokio::net::TcpListener::bind((ip, 0)).await {
        Ok(listener) => {
            if let Ok(std::net::SocketAddr::V4(address)) = listener.local_addr() {
                let _ = agent.activator.set(address);
            }
            Some(listener)
        }
        Err(error) => {
            let note = format!(
                "cannot listen for Function activations on {ip}: {error}; a Function at zero wakes only through the gateway"
            );
            tracing::warn!(%note);
            agent.node_warning("FunctionActivatorUnavailable", "Listen", &note);
            None
        }
    }
}

/// Serves the function gateway on `public` (requests by Host) and on `activation`
/// (connections the proxy sends to Functions at zero); returns the tasks serving them.
fn start_gateway(
    agent: &Arc<Agent>,
    public: Option<tokio::net::TcpListener>,
    activation: Option<tokio::net::TcpListener>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = agent.client.clone();
    let signal: crate::gateway::activator::Signal = Arc::new(move |namespace, name| {
        let client = client.clone();
        Box::pin(async move { activate(client, namespace, name).await })
    });
    let gateway = Arc::new(crate::gateway::Gateway::new(
        crate::gateway::GatewayConfig {
            domain: agent.config.function_domain.clone(),
            activator_queue: agent.config.activator_queue,
        },
        agent.routes.clone(),
        signal,
    ));
    let mut tasks = Vec::new();
    if let Some(listener) = public {
        tracing::info!(
            port = agent.config.function_port,
            "function gateway serving"
        );
        tasks.push(tokio::spawn(gateway.clone().serve(listener)));
    }
    if let Some(listener) = activation {
        tasks.push(tokio::spawn(gateway.serve_activation(listener)));
    }
    tasks
}

/// Asks the control plane to scale a Function up: the activation annotation, now.
async fn activate(client: kube::Client, namespace: String, name: String) {
    use bosun_api::function::{ACTIVATION_ANNOTATION, Function};
    let api: Api<Function> = Api::namespaced(client, &namespace);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {ACTIVATION_ANNOTATION: now}}});
    if let Err(error) = api
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
    {
        tracing::warn!(%error, function = %name, %namespace, "cannot ask for the function's activation");
    }
}

/// The cluster's blocks, from the ConfigMap the control plane keeps them in.
async fn cluster_blocks(client: &kube::Client) -> Result<cluster::Blocks, AgentError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), cluster::NAMESPACE);
    let map = api
        .get(cluster::NAME)
        .await
        .map_err(AgentError::ReadBlocks)?;
    Ok(cluster::Blocks::from_data(&map.data.unwrap_or_default())?)
}

/// Sets up the pod network on the node's podCIDR, waiting for the control plane to assign
/// one; without the privileges for it, pods get the node's own network.
async fn start_network(agent: &Agent) -> Network {
    let config = NetworkConfig {
        bridge: agent.config.bridge.clone(),
        cluster_cidr: agent.blocks.cluster_cidr,
        service_cidr: agent.blocks.service_cidr,
        dir: agent.config.data_dir.join("network"),
    };
    let host = |reason: String| {
        tracing::warn!(%reason, "no pod network: pods will share the node's network");
        agent.node_warning(
            "HostNetworkFallback",
            "SetUpPodNetwork",
            &format!("pods share the node's network: {reason}"),
        );
        Network::host(config.clone(), agent.node_ip, reason)
    };
    let probed = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Network::probe(&config)).await
    };
    match probed {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return host(reason.to_string()),
        Err(e) => return host(format!("the network check panicked: {e}")),
    }
    let pod_cidr = node::wait_for_pod_cidr(agent).await;
    let node_ip = agent.node_ip;
    let for_start = config.clone();
    let started =
        tokio::task::spawn_blocking(move || Network::start(for_start, node_ip, pod_cidr)).await;
    match started {
        Ok(Ok(network)) => network,
        Ok(Err(reason)) => host(reason.to_string()),
        Err(e) => host(format!("the network setup panicked: {e}")),
    }
}

/// Keeps a route to every other node's pods (its podCIDR via its InternalIP).
async fn keep_routes(agent: Arc<Agent>) {
    let api: Api<Node> = Api::all(agent.client.clone());
    let mut nodes: HashMap<String, (Ipv4Cidr, Ipv4Addr)> = HashMap::new();
    let mut listing: Option<HashMap<String, (Ipv4Cidr, Ipv4Addr)>> = None;
    let mut ready = false;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(node)) => {
                if let (Some(listing), Some(route)) = (listing.as_mut(), node::pod_route(&node)) {
                    listing.insert(node.name_any(), route);
                }
            }
            Ok(watcher::Event::InitDone) => {
                nodes = listing.take().unwrap_or_default();
                ready = true;
            }
            Ok(watcher::Event::Apply(node)) => match node::pod_route(&node) {
                Some(route) => {
                    nodes.insert(node.name_any(), route);
                }
                None => {
                    nodes.remove(&node.name_any());
                }
            },
            Ok(watcher::Event::Delete(node)) => {
                nodes.remove(&node.name_any());
            }
            Err(error) => {
                tracing::warn!(%error, "watching nodes for routes");
                continue;
            }
        }
        if ready {
            let wanted: BTreeSet<(Ipv4Cidr, Ipv4Addr)> = nodes.values().copied().collect();
            if let Err(error) = agent.network().sync_routes(&wanted).await {
                tracing::warn!(%error, "cannot update the routes to other nodes' pods");
            }
        }
    }
}

/// Every minute: trims the image cache to `image_cache_max_bytes` and forgets compiled code,
/// keeping what live pods use.
async fn collect_garbage(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let in_use = agent.images.in_use();
        for runtime in agent.runtimes.values() {
            runtime.retain(&in_use);
        }
        let freed = agent
            .images
            .collect_garbage(agent.config.image_cache_max_bytes, &in_use);
        if freed > 0 {
            tracing::info!(freed_bytes = freed, "trimmed the image cache");
        }
    }
}

/// A pod's worker and the channel that feeds it the pod's latest version.
struct Worker {
    pod: watch::Sender<Arc<Pod>>,
    task: tokio::task::JoinHandle<()>,
}

/// Watches the pods bound to this node and keeps one worker per pod UID, until `stopping`.
async fn watch_pods(agent: Arc<Agent>, mut stopping: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(agent.client.clone());
    let selector = format!("spec.nodeName={}", agent.config.name);
    let config = watcher::Config::default().fields(&selector);
    let mut workers: HashMap<String, Worker> = HashMap::new();
    // UIDs seen since the last (re)list; the workers of the others lost their pod meanwhile.
    let mut listed: Option<Vec<String>> = None;
    let mut stream = watcher(api, config).boxed();
    let mut cleaned = false;
    let for_workers = stopping.clone();
    let watch = async {
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match event {
                watcher::Event::Init => listed = Some(Vec::new()),
                watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                    let Some(uid) = pod.metadata.uid.clone() else {
                        continue;
                    };
                    if let Some(listed) = listed.as_mut() {
                        listed.push(uid.clone());
                    }
                    workers.retain(|_, w| !w.task.is_finished());
                    let pod = Arc::new(pod);
                    match workers.get(&uid) {
                        Some(worker) => {
                            worker.pod.send_replace(pod);
                        }
                        None => {
                            let (tx, rx) = watch::channel(pod.clone());
                            let host: Arc<dyn pod::Host> = agent.clone();
                            // Every line of a pod's worker names the pod.
                            let span = tracing::info_span!(
                                "pod",
                                namespace = pod.metadata.namespace.as_deref().unwrap_or_default(),
                                name = pod.metadata.name.as_deref().unwrap_or_default(),
                                uid = %uid,
                            );
                            let worker = pod::run(host, rx, for_workers.clone());
                            let task = tokio::spawn(tracing::Instrument::instrument(worker, span));
                            workers.insert(uid, Worker { pod: tx, task });
                        }
                    }
                }
                watcher::Event::Delete(pod) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        // Dropping the sender tells the worker its pod is gone.
                        workers.remove(uid);
                    }
                }
                watcher::Event::InitDone => {
                    if let Some(seen) = listed.take() {
                        workers.retain(|uid, _| seen.contains(uid));
                        if !cleaned {
                            // Pods deleted while the agent was away leave directories,
                            // namespaces and addresses.
                            pod::remove_orphans(&agent.pods_dir, &seen);
                            let live: HashSet<String> = seen.iter().cloned().collect();
                            agent.network().reconcile(&live).await;
                            cleaned = true;
                        }
                    }
                }
            }
        }
    };
    tokio::select! {
        () = watch => {}
        _ = stopping.wait_for(|s| *s) => {}
    }
    for (_, worker) in workers {
        let _ = worker.task.await;
    }
}
