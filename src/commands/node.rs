//! `bosun node`: flags → [`NodeConfig`] → [`bosun_node::agent::run`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bosun_api::cidr::Ipv4Cidr;
use bosun_node::agent::{Backoff, NodeConfig, run as run_agent};
use bosun_node::credentials::Bootstrap;

use super::server::{default_data_dir, duration};

#[derive(clap::Args)]
pub struct Args {
    /// A kubeconfig whose credentials may approve the node's certificate request (the
    /// admin's: `bosun server` writes DATA_DIR/admin.kubeconfig). The node gets its own
    /// `system:node:NAME` certificate with it, and uses only that.
    #[arg(long, env = "BOSUN_KUBECONFIG", required_unless_present = "server", conflicts_with_all = ["server", "token"])]
    kubeconfig: Option<PathBuf>,
    /// A server to join, `https://HOST:PORT`, with --token instead of a kubeconfig (as k3s
    /// agents join).
    #[arg(long, env = "BOSUN_SERVER", requires = "token")]
    server: Option<String>,
    /// The cluster token (a server's DATA_DIR/token), used once: to check the server's CA and
    /// to get the node's certificate.
    #[arg(long, env = "BOSUN_TOKEN", hide_env_values = true, requires = "server")]
    token: Option<String>,
    /// How long to wait for the node's certificate request to be approved and signed.
    #[arg(long, env = "BOSUN_CERTIFICATE_TIMEOUT", default_value = "15m", value_parser = duration)]
    certificate_timeout: Duration,
    /// The Node's name. Default: the host name.
    #[arg(long, env = "BOSUN_NAME")]
    name: Option<String>,
    /// Where the node keeps pulled images, compiled code, pod files and logs.
    /// Default: /var/lib/bosun as root, ~/.local/share/bosun otherwise.
    #[arg(long, env = "BOSUN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTPS port of the log server the API server reads `kubectl logs` from (0 picks a free
    /// one).
    #[arg(long, env = "BOSUN_PORT", default_value_t = 10250)]
    port: u16,
    /// The cluster's pod block. The node learns it from the control plane; given here, it must
    /// agree with that.
    #[arg(long, env = "BOSUN_CLUSTER_CIDR")]
    cluster_cidr: Option<Ipv4Cidr>,
    /// The cluster's Service block. The node learns it from the control plane; given here, it
    /// must agree with that.
    #[arg(long, env = "BOSUN_SERVICE_CIDR")]
    service_cidr: Option<Ipv4Cidr>,
    #[command(flatten)]
    agent: AgentFlags,
}

/// The node agent's flags that `bosun up` shares with `bosun node` as they are (the others
/// are named for the server, or given by it).
#[derive(clap::Args)]
#[group(skip)]
pub struct AgentFlags {
    /// The node's address (its InternalIP). Default: the host's primary IPv4 address.
    #[arg(long, env = "BOSUN_NODE_IP")]
    node_ip: Option<IpAddr>,
    /// A registry (HOST:PORT) to pull from over plain HTTP (repeatable).
    #[arg(
        long = "insecure-registry",
        env = "BOSUN_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// How long the node's Lease lasts; it is renewed every quarter of it.
    #[arg(long, env = "BOSUN_LEASE_DURATION", default_value = "40s", value_parser = duration)]
    lease_duration: Duration,
    /// How often the node re-reads its conditions and resources.
    #[arg(long, env = "BOSUN_NODE_STATUS_UPDATE_FREQUENCY", default_value = "10s", value_parser = duration)]
    node_status_update_frequency: Duration,
    /// Pods the node accepts.
    #[arg(long, env = "BOSUN_MAX_PODS", default_value_t = 110)]
    max_pods: u32,
    /// Memory limit of a container that sets none (a namespace's LimitRange default is set
    /// in the pod at its creation), e.g. 256Mi.
    #[arg(long, env = "BOSUN_DEFAULT_MEMORY_LIMIT", default_value = "256Mi", value_parser = quantity)]
    default_memory_limit: u64,
    /// First delay before restarting a crashed container or re-pulling a failed image;
    /// doubles per failure.
    #[arg(long, env = "BOSUN_BACKOFF_INITIAL", default_value = "10s", value_parser = duration)]
    backoff_initial: Duration,
    /// Longest such delay.
    #[arg(long, env = "BOSUN_BACKOFF_MAX", default_value = "5m", value_parser = duration)]
    backoff_max: Duration,
    /// How often configMap, secret and downwardAPI volumes are refreshed from their objects.
    #[arg(long, env = "BOSUN_VOLUME_SYNC_PERIOD", default_value = "10s", value_parser = duration)]
    volume_sync_period: Duration,
    /// How long a new pod's first status waits for its containers to start (a pod that
    /// starts sooner is written once, Running; a slower start shows ContainerCreating then).
    #[arg(long, env = "BOSUN_FIRST_STATUS_DELAY", default_value = "100ms", value_parser = duration)]
    first_status_delay: Duration,
    /// Events the node writes per second, after a burst of --event-burst (0: no limit).
    #[arg(long, env = "BOSUN_EVENT_QPS", default_value_t = 50.0, value_parser = event_qps)]
    event_qps: f64,
    /// Events the node may write at once before --event-qps applies.
    #[arg(long, env = "BOSUN_EVENT_BURST", default_value_t = 100)]
    event_burst: u32,
    /// The image cache is trimmed to this size, e.g. 10Gi.
    #[arg(long, env = "BOSUN_IMAGE_CACHE_SIZE", default_value = "10Gi", value_parser = quantity)]
    image_cache_size: u64,
    /// The bridge the pods' network interfaces join (made if missing).
    #[arg(long, env = "BOSUN_BRIDGE", default_value = "bosun0", value_parser = interface_name)]
    bridge: String,
    /// The cluster's DNS domain: pods resolve Services as `NAME.NAMESPACE.svc.DOMAIN`.
    #[arg(long, env = "BOSUN_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// The function gateway's port, on all the node's addresses: it routes a request with
    /// `Host: NAME.NAMESPACE.<--function-domain>` to that Function (0 turns it off).
    #[arg(long, env = "BOSUN_FUNCTION_PORT", default_value_t = 8081)]
    function_port: u16,
    /// The domain of Functions' hosts at the gateway.
    #[arg(long, env = "BOSUN_FUNCTION_DOMAIN", default_value = "fn.local")]
    function_domain: String,
    /// Requests the node holds per Function while it has no ready replica; more get 503.
    #[arg(long, env = "BOSUN_ACTIVATOR_QUEUE", default_value_t = 1000)]
    activator_queue: usize,
}

fn event_qps(s: &str) -> anyhow::Result<f64> {
    match s.parse::<f64>() {
        Ok(qps) if qps.is_finite() && qps >= 0.0 => Ok(qps),
        _ => anyhow::bail!("{s:?} is not a rate: a number of events per second, 0 or more"),
    }
}

fn interface_name(s: &str) -> anyhow::Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        anyhow::bail!("{s:?} is not an interface name (1 to 15 letters, digits, '-' or '_')")
    }
}

fn quantity(s: &str) -> anyhow::Result<u64> {
    let value = bosun_api::quantity::parse(s)?;
    if value < 0.0 {
        anyhow::bail!("{s} is negative");
    }
    Ok(value as u64)
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Args {
    pub fn config(self) -> NodeConfig {
        let mut config = self.agent.config(
            self.name.unwrap_or_else(host_name),
            self.data_dir.unwrap_or_else(default_data_dir),
            self.port,
            self.cluster_cidr,
            self.service_cidr,
        );
        config.certificate_timeout = self.certificate_timeout;
        config
    }

    /// What the node proves itself with to get its certificate.
    async fn bootstrap(&self) -> anyhow::Result<Bootstrap> {
        match (&self.kubeconfig, &self.server, &self.token) {
            (Some(path), _, _) => Ok(Bootstrap::Kubeconfig(Box::new(
                kube_config(path, "bosun-node").await?,
            ))),
            (None, Some(server), Some(token)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                if !server.starts_with("https://") {
                    anyhow::bail!("--server must be an https:// URL, not {server:?}");
                }
                Ok(Bootstrap::Token {
                    server: server.clone(),
                    token: token.trim().to_string(),
                })
            }
            _ => anyhow::bail!("give --kubeconfig, or --server and --token"),
        }
    }
}

impl AgentFlags {
    /// The agent's configuration, with what `bosun node` and `bosun up` name differently.
    pub fn config(
        self,
        name: String,
        data_dir: PathBuf,
        port: u16,
        cluster_cidr: Option<Ipv4Cidr>,
        service_cidr: Option<Ipv4Cidr>,
    ) -> NodeConfig {
        let mut config = NodeConfig::new(name, data_dir);
        config.address = self.node_ip;
        config.port = port;
        config.insecure_registries = self.insecure_registries;
        config.lease_duration = self.lease_duration;
        config.status_update_period = self.node_status_update_frequency;
        config.max_pods = self.max_pods;
        config.default_memory_limit = self.default_memory_limit;
        config.backoff = Backoff {
            initial: self.backoff_initial,
            max: self.backoff_max,
        };
        config.image_cache_max_bytes = self.image_cache_size;
        config.volume_sync_period = self.volume_sync_period;
        config.first_status_delay = self.first_status_delay;
        config.event_qps = self.event_qps;
        config.event_burst = self.event_burst;
        config.bridge = self.bridge;
        config.cluster_cidr = cluster_cidr;
        config.service_cidr = service_cidr;
        config.cluster_domain = self.cluster_domain;
        config.function_port = self.function_port;
        config.function_domain = self.function_domain.trim_matches('.').to_ascii_lowercase();
        config.activator_queue = self.activator_queue;
        config
    }
}

/// The kube-rs configuration in a kubeconfig file, for the component `agent` (its
/// User-Agent, which names it as the field manager of its writes: `bosun-node`).
pub async fn kube_config(path: &std::path::Path, agent: &str) -> anyhow::Result<kube::Config> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("invalid kubeconfig {}", path.display()))?;
    let agent = format!("{agent}/{}", env!("CARGO_PKG_VERSION"));
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&agent).context("a User-Agent is ASCII")?,
    ));
    Ok(config)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let bootstrap = args.bootstrap().await?;
    let config = args.config();
    println!("bosun node {} starting", config.name);
    run_agent(bootstrap, config, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await
    .context("bosun node failed")
}
