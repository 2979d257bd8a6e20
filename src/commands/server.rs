//! `bosun server`: flags → [`ServerConfig`] → [`bosun_control::server::run`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bosun_api::cidr::Ipv4Cidr;
use bosun_control::apiserver::admission::DefaultTolerations;
use bosun_control::apiserver::admission::services::{ServiceRanges, parse_port_range};
use bosun_control::controllers::ControllersConfig;
use bosun_control::leader::LeaseTiming;
use bosun_control::scheduler::SchedulerConfig;
use bosun_control::scheduler::queue::QueueOptions;
use bosun_control::scheduler::score::Weights;
use bosun_control::server::{ServerConfig, run as run_server};

#[derive(clap::Args)]
#[group(skip)]
pub struct Args {
    /// Where the server keeps its state (SQLite file, kubeconfig, token).
    /// Default: /var/lib/bosun as root, ~/.local/share/bosun otherwise.
    #[arg(long, env = "BOSUN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user:pass@host:port/db). Without it the state is SQLite in
    /// the data directory.
    #[arg(long, env = "BOSUN_DATASTORE_ENDPOINT")]
    datastore_endpoint: Option<String>,
    /// The cluster token. The first server makes one (written to DATA_DIR/token); further
    /// servers on the same PostgreSQL must be given it.
    #[arg(long, env = "BOSUN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "BOSUN_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// HTTPS port of the API server (0 picks a free one).
    #[arg(long, env = "BOSUN_PORT", default_value_t = 6443)]
    port: u16,
    /// The address pods and other machines reach this server at: the endpoint of the
    /// `kubernetes` Service. Default: --bind-address when it is a specific address, else the
    /// host's primary IPv4 address.
    #[arg(long, env = "BOSUN_ADVERTISE_ADDRESS")]
    advertise_address: Option<IpAddr>,
    /// How long this server's lease among the `kubernetes` Service's endpoints lasts (renewed
    /// every third of it); a server that dies leaves the endpoints when it runs out.
    #[arg(long, env = "BOSUN_ENDPOINT_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    endpoint_lease_duration: Duration,
    /// `lease`: this server keeps the `kubernetes` Service and is among its endpoints while
    /// its lease is current; `none`: it leaves both alone.
    #[arg(long, env = "BOSUN_ENDPOINT_RECONCILER_TYPE", default_value = "lease", value_parser = ["lease", "none"])]
    endpoint_reconciler_type: String,
    /// Extra name or address for the serving certificate (repeatable).
    #[arg(long = "tls-san", env = "BOSUN_TLS_SAN", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// How much of the event log to keep (watches and lists may start that far back).
    #[arg(long, env = "BOSUN_COMPACTION_WINDOW", default_value = "5m", value_parser = duration)]
    compaction_window: Duration,
    /// How often the event log is compacted.
    #[arg(long, env = "BOSUN_COMPACTION_INTERVAL", default_value = "1m", value_parser = duration)]
    compaction_interval: Duration,
    /// A static token file for automation, in Kubernetes' CSV format:
    /// `token,user,uid[,"group1,group2"]` per line.
    #[arg(long, env = "BOSUN_TOKEN_AUTH_FILE")]
    token_auth_file: Option<PathBuf>,
    /// An OpenID Connect issuer whose ID tokens authenticate users (https).
    #[arg(long, env = "BOSUN_OIDC_ISSUER_URL")]
    oidc_issuer_url: Option<String>,
    /// The client id the issuer's tokens must name in `aud`.
    #[arg(long, env = "BOSUN_OIDC_CLIENT_ID")]
    oidc_client_id: Option<String>,
    /// The claim that is the user name (`sub`; other than `email`, it is prefixed `ISSUER#`).
    #[arg(long, env = "BOSUN_OIDC_USERNAME_CLAIM", default_value = "sub")]
    oidc_username_claim: String,
    /// The claim that lists the user's groups.
    #[arg(long, env = "BOSUN_OIDC_GROUPS_CLAIM")]
    oidc_groups_claim: Option<String>,
    /// CA certificates (PEM) to trust for the issuer, instead of the system's.
    #[arg(long, env = "BOSUN_OIDC_CA_FILE")]
    oidc_ca_file: Option<PathBuf>,
    /// Where the audit log goes (`-` for stdout); nothing is logged without
    /// `--audit-policy-file`.
    #[arg(long, env = "BOSUN_AUDIT_LOG_PATH")]
    audit_log_path: Option<PathBuf>,
    /// The audit policy: an audit.k8s.io/v1 Policy (YAML).
    #[arg(long, env = "BOSUN_AUDIT_POLICY_FILE")]
    audit_policy_file: Option<PathBuf>,
    /// Rotate the audit log past this many megabytes (0: never).
    #[arg(long, env = "BOSUN_AUDIT_LOG_MAXSIZE", default_value_t = 100)]
    audit_log_maxsize: u64,
    /// How many rotated audit logs to keep (0: all).
    #[arg(long, env = "BOSUN_AUDIT_LOG_MAXBACKUP", default_value_t = 10)]
    audit_log_maxbackup: usize,
    /// Remove rotated audit logs older than this many days (0: never).
    #[arg(long, env = "BOSUN_AUDIT_LOG_MAXAGE", default_value_t = 0)]
    audit_log_maxage: u64,
    /// The issuer (`iss`) of ServiceAccount tokens, and the audience the API server accepts.
    #[arg(
        long,
        env = "BOSUN_SERVICE_ACCOUNT_ISSUER",
        default_value = "https://kubernetes.default.svc"
    )]
    service_account_issuer: String,
    /// The longest a certificate signed for a CertificateSigningRequest lives (a request may
    /// ask for less with `spec.expirationSeconds`).
    #[arg(long, env = "BOSUN_CLUSTER_SIGNING_DURATION", default_value = "8760h", value_parser = duration)]
    cluster_signing_duration: Duration,
    /// How long an Event is kept after its last write.
    #[arg(long, env = "BOSUN_EVENT_TTL", default_value = "1h", value_parser = duration)]
    event_ttl: Duration,
    /// How often every node's usage is read for `metrics.k8s.io` (`kubectl top`); CPU is the
    /// rate between the last two readings. 0 turns it off.
    #[arg(long, env = "BOSUN_METRICS_RESOLUTION", default_value = "15s", value_parser = duration)]
    metrics_resolution: Duration,
    /// How often a watch that asked for bookmarks (`allowWatchBookmarks`) gets one.
    #[arg(long, env = "BOSUN_WATCH_BOOKMARK_INTERVAL", default_value = "30s", value_parser = duration)]
    watch_bookmark_interval: Duration,
    /// Do not run the scheduler in this server (run it elsewhere, or not at all).
    #[arg(long, env = "BOSUN_DISABLE_SCHEDULER")]
    disable_scheduler: bool,
    /// Controllers not to run, comma-separated (controllers: clusterrole-aggregation, cronjob, csrsigning, deployment, endpoint,
    /// endpointslice, function, function-autoscaler, function-triggers, garbagecollector,
    /// horizontalpodautoscaling, job, namespace, nodeipam, nodelifecycle, podgc, replicaset, serviceaccount,
    /// servicelb); `*` disables all.
    #[arg(long, env = "BOSUN_DISABLE_CONTROLLERS", value_delimiter = ',')]
    disable_controllers: Vec<String>,
    /// How long a controller waits before retrying a reconcile that failed (and before
    /// looking again at a namespace that is not empty yet).
    #[arg(long, env = "BOSUN_CONTROLLER_RETRY", default_value = "5s", value_parser = duration)]
    controller_retry: Duration,
    /// How long a node may go without renewing its Lease before it is marked Unknown and
    /// tainted unreachable.
    #[arg(long, env = "BOSUN_NODE_MONITOR_GRACE_PERIOD", default_value = "40s", value_parser = duration)]
    node_monitor_grace_period: Duration,
    /// How often the node lifecycle controller checks nodes and evicts pods.
    #[arg(long, env = "BOSUN_NODE_MONITOR_PERIOD", default_value = "5s", value_parser = duration)]
    node_monitor_period: Duration,
    /// How long a Job waits before replacing its first failed pod; it doubles with every
    /// failure, up to 6 minutes.
    #[arg(long, env = "BOSUN_JOB_BACKOFF", default_value = "10s", value_parser = duration)]
    job_backoff: Duration,
    /// How often pods whose node is gone, and finished pods beyond the threshold, are deleted.
    #[arg(long, env = "BOSUN_POD_GC_PERIOD", default_value = "20s", value_parser = duration)]
    pod_gc_period: Duration,
    /// How often every ResourceQuota's usage is counted again from its namespace's objects
    /// (deletions give quota back at once).
    #[arg(
        long,
        env = "BOSUN_RESOURCE_QUOTA_SYNC_PERIOD",
        default_value = "5m",
        value_parser = duration
    )]
    resource_quota_sync_period: Duration,
    /// How many finished pods may exist before the oldest are deleted.
    #[arg(
        long,
        env = "BOSUN_TERMINATED_POD_GC_THRESHOLD",
        default_value_t = 12500
    )]
    terminated_pod_gc_threshold: usize,
    /// How often each HorizontalPodAutoscaler reads its metrics and scales its target.
    #[arg(long, env = "BOSUN_HPA_SYNC_PERIOD", default_value = "15s", value_parser = duration)]
    horizontal_pod_autoscaler_sync_period: Duration,
    /// How long an HPA without its own scale-down window keeps the highest recommendation of
    /// that time before it scales down.
    #[arg(
        long,
        env = "BOSUN_HPA_DOWNSCALE_STABILIZATION",
        default_value = "5m",
        value_parser = duration
    )]
    horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// How far (as a fraction) the usage must be from an HPA's target before it scales.
    #[arg(long, env = "BOSUN_HPA_TOLERANCE", default_value_t = 0.1)]
    horizontal_pod_autoscaler_tolerance: f64,
    /// How long after a pod starts its CPU samples are read with care (they may include
    /// its start-up).
    #[arg(
        long,
        env = "BOSUN_HPA_CPU_INITIALIZATION_PERIOD",
        default_value = "5m",
        value_parser = duration
    )]
    horizontal_pod_autoscaler_cpu_initialization_period: Duration,
    /// How long after a pod starts it may be unready without counting as never ready.
    #[arg(
        long,
        env = "BOSUN_HPA_INITIAL_READINESS_DELAY",
        default_value = "30s",
        value_parser = duration
    )]
    horizontal_pod_autoscaler_initial_readiness_delay: Duration,
    /// The tolerationSeconds of the `node.kubernetes.io/unreachable` toleration every pod
    /// gets: how long its pods stay bound to an unreachable node.
    #[arg(
        long,
        env = "BOSUN_DEFAULT_UNREACHABLE_TOLERATION_SECONDS",
        default_value_t = 300
    )]
    default_unreachable_toleration_seconds: i64,
    /// The same for `node.kubernetes.io/not-ready`.
    #[arg(
        long,
        env = "BOSUN_DEFAULT_NOT_READY_TOLERATION_SECONDS",
        default_value_t = 300
    )]
    default_not_ready_toleration_seconds: i64,
    /// The block pod IPs come from; each node gets a /NODE_CIDR_MASK_SIZE of it as its podCIDR.
    #[arg(long, env = "BOSUN_CLUSTER_CIDR", default_value = "10.88.0.0/16")]
    cluster_cidr: Ipv4Cidr,
    /// The block Services' cluster IPs come from (the same block the nodes are given).
    #[arg(long, env = "BOSUN_SERVICE_CIDR", default_value = "10.89.0.0/16")]
    service_cidr: Ipv4Cidr,
    /// The ports NodePort and LoadBalancer Services are given on every node.
    #[arg(long, env = "BOSUN_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767", value_parser = parse_port_range)]
    service_node_port_range: (u16, u16),
    /// The prefix length of each node's podCIDR.
    #[arg(long, env = "BOSUN_NODE_CIDR_MASK_SIZE", default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Score plugin weights, e.g. `spread=5,least-allocated=1` (plugins: least-allocated,
    /// balanced-allocation, node-affinity, taint-toleration, spread).
    #[arg(long, env = "BOSUN_SCHEDULER_SCORE_WEIGHTS", default_value = "")]
    scheduler_score_weights: Weights,
    /// Share of nodes (1-100) the scheduler examines per pod in a large cluster; without it,
    /// adaptive as in kube-scheduler.
    #[arg(long, env = "BOSUN_PERCENTAGE_OF_NODES_TO_SCORE", value_parser = clap::value_parser!(u32).range(1..=100))]
    percentage_of_nodes_to_score: Option<u32>,
    /// First retry delay of a pod that could not be scheduled; doubles per attempt.
    #[arg(long, env = "BOSUN_POD_INITIAL_BACKOFF", default_value = "1s", value_parser = duration)]
    pod_initial_backoff: Duration,
    /// Longest retry delay of a pod that could not be scheduled.
    #[arg(long, env = "BOSUN_POD_MAX_BACKOFF", default_value = "10s", value_parser = duration)]
    pod_max_backoff: Duration,
    /// How long a standby waits after the leader's last renewal before taking over.
    #[arg(long, env = "BOSUN_LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops leading.
    #[arg(long, env = "BOSUN_LEADER_ELECT_RENEW_DEADLINE", default_value = "10s", value_parser = duration)]
    leader_elect_renew_deadline: Duration,
    /// How often the leader renews and standbys retry.
    #[arg(long, env = "BOSUN_LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = duration)]
    leader_elect_retry_period: Duration,
}

pub(crate) fn duration(s: &str) -> Result<Duration, bosun_api::duration::Error> {
    bosun_api::duration::parse(s)
}

/// `/var/lib/bosun` for root, `~/.local/share/bosun` for anyone else.
pub(crate) fn default_data_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    match std::env::var_os("HOME") {
        Some(home) if !is_root => PathBuf::from(home).join(".local/share/bosun"),
        _ => PathBuf::from("/var/lib/bosun"),
    }
}

impl Args {
    /// The data directory these flags name, or the default one.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// The server's configuration; an error for flags that do not fit together.
    pub fn config(self) -> anyhow::Result<ServerConfig> {
        let data_dir = self.data_dir();
        let args = self;
        let controllers = if args.disable_controllers.iter().any(|n| n == "*") {
            None
        } else {
            let config = ControllersConfig {
                disabled: args.disable_controllers.into_iter().collect(),
                cluster_cidr: args.cluster_cidr,
                node_cidr_mask_size: args.node_cidr_mask_size,
                retry: args.controller_retry,
                node_monitor_grace_period: args.node_monitor_grace_period,
                node_monitor_period: args.node_monitor_period,
                job_backoff: args.job_backoff,
                pod_gc_period: args.pod_gc_period,
                resource_quota_sync_period: args.resource_quota_sync_period,
                terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
                hpa_sync_period: args.horizontal_pod_autoscaler_sync_period,
                hpa_downscale_stabilization: args.horizontal_pod_autoscaler_downscale_stabilization,
                hpa_tolerance: args.horizontal_pod_autoscaler_tolerance,
                hpa_cpu_initialization_period: args
                    .horizontal_pod_autoscaler_cpu_initialization_period,
                hpa_initial_readiness_delay: args.horizontal_pod_autoscaler_initial_readiness_delay,
                ..ControllersConfig::default()
            };
            config.validate().map_err(anyhow::Error::msg)?;
            Some(config)
        };
        let oidc = match (&args.oidc_issuer_url, &args.oidc_client_id) {
            (Some(issuer), Some(client_id)) => {
                if !issuer.starts_with("https://") {
                    anyhow::bail!("--oidc-issuer-url must be an https URL, not {issuer:?}");
                }
                let ca_pem = match &args.oidc_ca_file {
                    Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                        format!("cannot read --oidc-ca-file {}", path.display())
                    })?),
                    None => None,
                };
                Some(bosun_control::apiserver::auth::oidc::OidcConfig {
                    issuer_url: issuer.clone(),
                    client_id: client_id.clone(),
                    username_claim: args.oidc_username_claim.clone(),
                    groups_claim: args.oidc_groups_claim.clone(),
                    ca_pem,
                })
            }
            (None, None) => None,
            _ => anyhow::bail!("--oidc-issuer-url and --oidc-client-id go together"),
        };
        let audit = match (&args.audit_policy_file, &args.audit_log_path) {
            (Some(policy), Some(path)) => Some((
                bosun_control::apiserver::audit::Policy::load(policy)?,
                bosun_control::apiserver::audit::LogConfig {
                    path: path.clone(),
                    max_size_mb: args.audit_log_maxsize,
                    max_backups: args.audit_log_maxbackup,
                    max_age_days: args.audit_log_maxage,
                },
            )),
            (Some(_), None) => {
                anyhow::bail!(
                    "--audit-policy-file needs --audit-log-path (a file, or - for stdout)"
                )
            }
            (None, _) => None,
        };
        Ok(ServerConfig {
            data_dir,
            datastore_endpoint: args.datastore_endpoint,
            token: args.token,
            bind_address: args.bind_address,
            port: args.port,
            tls_sans: args.tls_sans,
            compaction_window: args.compaction_window,
            compaction_interval: args.compaction_interval,
            event_ttl: args.event_ttl,
            token_auth_file: args.token_auth_file,
            cluster_signing_duration: args.cluster_signing_duration,
            service_account_issuer: args.service_account_issuer,
            audit,
            oidc,
            bookmark_interval: args.watch_bookmark_interval,
            metrics_resolution: args.metrics_resolution,
            advertise_address: args.advertise_address,
            endpoint_lease_duration: (args.endpoint_reconciler_type == "lease")
                .then_some(args.endpoint_lease_duration),
            scheduler: (!args.disable_scheduler).then(|| SchedulerConfig {
                weights: args.scheduler_score_weights,
                percentage_of_nodes_to_score: args.percentage_of_nodes_to_score,
                queue: QueueOptions {
                    initial_backoff: args.pod_initial_backoff,
                    max_backoff: args.pod_max_backoff,
                    ..QueueOptions::default()
                },
                ..SchedulerConfig::default()
            }),
            controllers,
            leader_election: LeaseTiming {
                lease_duration: args.leader_elect_lease_duration,
                renew_deadline: args.leader_elect_renew_deadline,
                retry_period: args.leader_elect_retry_period,
            },
            cluster_cidr: args.cluster_cidr,
            service_ranges: ServiceRanges {
                cidr: args.service_cidr,
                node_ports: args.service_node_port_range,
            },
            default_tolerations: DefaultTolerations {
                not_ready_seconds: args.default_not_ready_toleration_seconds,
                unreachable_seconds: args.default_unreachable_toleration_seconds,
            },
        })
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    let data_dir = config.data_dir.clone();
    run_server(
        config,
        |started| {
            tracing::info!(
                address = %started.addr,
                kubeconfig = %started.kubeconfig.display(),
                "bosun server is listening"
            );
            println!("bosun server listening on https://{}", started.addr);
            println!("kubeconfig: {}", started.kubeconfig.display());
            println!("cluster token: {}/token", data_dir.display());
            println!(
                "add a node: bosun node --server https://{} --token \"$(cat {}/token)\"",
                started.advertised,
                data_dir.display()
            );
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        },
    )
    .await
    .context("bosun server failed")
}
