//! `bosun server`: open the datastore, join the cluster, serve HTTPS, compact the log.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bosun_api::cidr::Ipv4Cidr;
use bosun_api::cluster;
use tokio::net::TcpListener;

use crate::apiserver::admission::{self, DefaultTolerations, ServiceRanges};
use crate::apiserver::auth::rbac::bootstrap::{CONTROLLER_MANAGER, SCHEDULER};
use crate::apiserver::{self, ApiState};
use crate::controllers::{self, ControllersConfig};
use crate::leader::{LeaderElector, LeaseTiming};
use crate::scheduler::{self, SchedulerConfig};
use crate::store::bootstrap::ClusterSecrets;
use crate::store::{self, PostgresOptions, PostgresStore, SqliteStore, Store};

/// Everything `bosun server` is told on its command line.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// `postgres://…`; `None` keeps the state in SQLite under `data_dir`.
    pub datastore_endpoint: Option<String>,
    /// The cluster token; `None` reads `<data_dir>/token` or, for a new cluster, makes one.
    pub token: Option<String>,
    pub bind_address: IpAddr,
    pub port: u16,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// How much of the event log to keep for watches and lists at old revisions.
    pub compaction_window: Duration,
    /// How often to compact.
    pub compaction_interval: Duration,
    /// How long an Event is kept after its last write.
    pub event_ttl: Duration,
    /// Static tokens (`--token-auth-file`), beside the admin's.
    pub token_auth_file: Option<PathBuf>,
    /// An external OIDC issuer whose ID tokens authenticate users.
    pub oidc: Option<apiserver::auth::oidc::OidcConfig>,
    /// The audit policy and where its log goes; `None` logs nothing.
    pub audit: Option<(apiserver::audit::Policy, apiserver::audit::LogConfig)>,
    /// The `iss` of ServiceAccount tokens (`--service-account-issuer`), also the audience the
    /// API server accepts.
    pub service_account_issuer: String,
    /// The longest a certificate signed for a CertificateSigningRequest lives.
    pub cluster_signing_duration: Duration,
    /// How often watches that ask for bookmarks get one.
    pub bookmark_interval: Duration,
    /// The scheduler to run under leader election; `None` (`--disable-scheduler`) runs none.
    pub scheduler: Option<SchedulerConfig>,
    /// The controller manager to run under leader election; `None` runs none.
    pub controllers: Option<ControllersConfig>,
    /// Lease timings of the scheduler's and the controller manager's leader election.
    pub leader_election: LeaseTiming,
    /// How long new pods tolerate an unreachable or not-ready node.
    pub default_tolerations: DefaultTolerations,
    /// Where Services' cluster IPs and node ports come from.
    pub service_ranges: ServiceRanges,
    /// The cluster's pod block (`--cluster-cidr`), published with the Service block for nodes.
    pub cluster_cidr: Ipv4Cidr,
    /// How often the nodes' usage is read for `metrics.k8s.io` (zero: never).
    pub metrics_resolution: Duration,
    /// The address pods reach this server at, the endpoint of the `kubernetes` Service
    /// (`--advertise-address`); `None`: the bind address if it is one, else the host's
    /// primary IPv4 address.
    pub advertise_address: Option<IpAddr>,
    /// How long this server's lease in the `kubernetes` Service's endpoints lasts; `None`
    /// (`--endpoint-reconciler-type none`): this server keeps neither the Service nor
    /// endpoints.
    pub endpoint_lease_duration: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] crate::pki::Error),
    #[error(transparent)]
    Tls(#[from] bosun_tls::Error),
    #[error("cannot make an API client from the admin kubeconfig: {0}")]
    Client(String),
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    #[error(transparent)]
    TokenFile(#[from] apiserver::auth::authn::TokenFileError),
}

/// Publishes the cluster's blocks in `kube-system/bosun-cluster`, where nodes read them. The
/// first server's are the cluster's: a later server with other blocks refuses to start.
async fn publish_blocks(store: &dyn Store, blocks: cluster::Blocks) -> Result<(), ServerError> {
    let configmaps = bosun_api::resources::find("", "v1", "configmaps").expect("registered");
    let mut object = serde_json::json!({
        "metadata": {"name": cluster::NAME, "namespace": cluster::NAMESPACE},
        "data": blocks.to_data(),
    });
    let mut strict = admission::FieldCheck::new(admission::FieldValidation::Strict);
    admission::prepare_create(
        configmaps,
        Some(cluster::NAMESPACE),
        &mut object,
        &mut strict,
    )
    .expect("the cluster's ConfigMap is valid");
    let key = store::Key::new(configmaps.storage_name(), cluster::NAMESPACE, cluster::NAME);
    match store.create(&key, object).await {
        Ok(_) => Ok(()),
        Err(store::Error::AlreadyExists { .. }) => {
            let published = store.get(&key).await?;
            let data: std::collections::BTreeMap<String, String> =
                serde_json::from_value(published.value["data"].clone()).unwrap_or_default();
            cluster::Blocks::from_data(&data)?
                .check(Some(blocks.cluster_cidr), Some(blocks.service_cidr))?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// What a started server tells its caller.
pub struct Started {
    pub addr: SocketAddr,
    /// Where other machines and pods reach it (`--advertise-address` and the port).
    pub advertised: SocketAddr,
    pub kubeconfig: PathBuf,
    pub token: String,
}

/// Runs the server until `shutdown` resolves. `on_start` is told where it listens once it
/// accepts connections.
pub async fn run(
    config: ServerConfig,
    on_start: impl FnOnce(&Started),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    create_private_dir(&config.data_dir)?;
    let token_path = config.data_dir.join("token");
    let token = match &config.token {
        Some(token) => Some(token.clone()),
        None => read_optional(&token_path)?.map(|t| t.trim().to_string()),
    };
    let (store, secrets): (Arc<dyn Store>, ClusterSecrets) = match &config.datastore_endpoint {
        Some(url) => {
            let (store, secrets) =
                PostgresStore::open(url, token.as_deref(), PostgresOptions::default()).await?;
            (Arc::new(store), secrets)
        }
        None => {
            let (store, secrets) =
                SqliteStore::open(&config.data_dir.join("state.db"), token.as_deref()).await?;
            (Arc::new(store), secrets)
        }
    };
    write_private(&token_path, &format!("{}\n", secrets.token))?;

    let addr = SocketAddr::new(config.bind_address, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen { addr, source })?;
    let names = serving_names(&config);
    let serving = secrets.ca.issue_server("bosun-apiserver", &names)?;
    // Clients may show a certificate from the cluster CA (its CN and O are who they are).
    let client_cas = bosun_tls::certificates_der(&secrets.ca.cert_pem)?;
    let tls = bosun_tls::server_config(
        &serving.cert_pem,
        &serving.key_pem,
        bosun_tls::ClientCerts::Optional(&client_cas),
    )?;
    // How this server proves itself to the nodes' log servers.
    let node_client = secrets
        .ca
        .issue_client("bosun-apiserver", &["system:masters"])?;
    let node_clients = apiserver::nodes::NodeClients::new(bosun_tls::Identity::from_pem(
        &node_client.cert_pem,
        &node_client.key_pem,
    )?);

    let kubeconfig = config.data_dir.join("admin.kubeconfig");
    let server_url = format!("https://{}", client_address(addr));
    let admin_kubeconfig = kubeconfig_yaml(&server_url, &secrets.ca.cert_pem, &secrets.admin_token);
    write_private(&kubeconfig, &admin_kubeconfig)?;

    let compactor = tokio::spawn(store::compact_periodically(
        store.clone(),
        config.compaction_window,
        config.compaction_interval,
    ));
    // Sweep often enough that an event outlives its TTL by a tenth at most (and by a minute
    // at most for long TTLs).
    let sweep = (config.event_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let expirer = tokio::spawn(apiserver::expiry::expire_events_periodically(
        store.clone(),
        config.event_ttl,
        sweep,
    ));
    apiserver::ensure_builtin_objects(&*store).await?;
    publish_blocks(
        &*store,
        cluster::Blocks {
            cluster_cidr: config.cluster_cidr,
            service_cidr: config.service_ranges.cidr,
        },
    )
    .await?;
    let signer = apiserver::auth::serviceaccount::Signer::new(
        &secrets.service_account_key,
        config.service_account_issuer.clone(),
    )
    .map_err(|e| ServerError::Client(e.to_string()))?;
    let service_accounts =
        apiserver::auth::serviceaccount::ServiceAccountTokens::start(store.clone(), signer).await?;
    let mut authenticator = apiserver::auth::Authenticator::with_admin(secrets.admin_token_hash())
        .with_bootstrap_token(crate::store::bootstrap::hash_token(&secrets.token))
        .with_service_accounts(service_accounts.clone());
    if let Some(oidc) = &config.oidc {
        let oidc = apiserver::auth::oidc::Oidc::start(oidc.clone())
            .map_err(|e| ServerError::Client(e.to_string()))?;
        authenticator = authenticator.with_oidc(oidc);
    }
    if let Some(path) = &config.token_auth_file {
        let count = authenticator.add_token_file(path)?;
        tracing::info!(path = %path.display(), count, "static tokens loaded");
    }
    let authenticator = Arc::new(authenticator);
    apiserver::auth::rbac::bootstrap::reconcile(&*store).await?;
    let rbac = apiserver::auth::rbac::Rbac::start(store.clone()).await?;
    let nodes = apiserver::auth::node::NodeAuthorizer::start(store.clone()).await?;
    let quota = admission::quota::ResourceQuota::start(store.clone()).await?;
    let authorizer: Arc<dyn apiserver::auth::Authorizer> =
        Arc::new(apiserver::auth::Union(vec![nodes, rbac.clone()]));
    let state = ApiState {
        store,
        authorizer: authorizer.clone(),
        bookmark_interval: config.bookmark_interval,
        node_clients: Some(Arc::new(node_clients)),
        admission: Arc::new(
            admission::Chain::standard(admission::Config {
                default_tolerations: config.default_tolerations,
                service_ranges: config.service_ranges,
            })
            .with(Arc::new(admission::escalation::RbacEscalation {
                rbac,
                authorizer: authorizer.clone(),
            }))
            .with(Arc::new(admission::certificates::CertificateSigning {
                authorizer: authorizer.clone(),
            }))
            .with_quota(quota),
        ),
        metrics: Default::default(),
        history: Default::default(),
        service_accounts: Some(service_accounts),
        join: Some(Arc::new(apiserver::auth::join::Join {
            ca_pem: secrets.ca.cert_pem.clone(),
            token: secrets.token.clone(),
        })),
        audit: match config.audit.clone() {
            Some((policy, log)) => {
                let path = log.path.clone();
                Some(
                    apiserver::audit::Auditor::start(policy, log).map_err(|source| {
                        ServerError::Io {
                            action: "cannot open the audit log",
                            path,
                            source,
                        }
                    })?,
                )
            }
            None => None,
        },
    };
    let scraper = (!config.metrics_resolution.is_zero()).then(|| {
        tokio::spawn(apiserver::metrics::scrape_periodically(
            state.clone(),
            config.metrics_resolution,
        ))
    });
    let app = apiserver::router(state, authenticator);

    // The scheduler and the controller manager are clients of this server like any other; on
    // shutdown they release their leases (while the server still answers) before it stops.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = match config.scheduler.clone() {
        Some(scheduler_config) => {
            let client = component_client(&secrets.ca, &server_url, SCHEDULER, &[]).await?;
            Some(spawn_elected(
                client.clone(),
                "bosun-scheduler",
                config.leader_election.clone(),
                stopped.clone(),
                move |_identity| scheduler::run(client.clone(), scheduler_config.clone()),
            ))
        }
        None => None,
    };
    let signing = controllers::certificates::Signing {
        ca: Arc::new(secrets.ca.clone()),
        max_duration: config.cluster_signing_duration,
    };
    let controller_manager = match config.controllers.clone() {
        Some(controllers_config) => {
            let client =
                component_client(&secrets.ca, &server_url, CONTROLLER_MANAGER, &[]).await?;
            Some(spawn_elected(
                client.clone(),
                "bosun-controller-manager",
                config.leader_election.clone(),
                stopped.clone(),
                move |identity| {
                    // Events name this server's leader identity as their reporting instance.
                    let mut config = controllers_config.clone();
                    config.events.instance = Some(identity);
                    config.signing = Some(signing.clone());
                    config.root_ca = Some(signing.ca.cert_pem.clone());
                    controllers::run(client.clone(), config)
                },
            ))
        }
        None => None,
    };
    let advertised = SocketAddr::new(advertise_address(&config), addr.port());
    let kubernetes_service = if let Some(lease_duration) = config.endpoint_lease_duration {
        if config.bind_address.is_loopback() && config.advertise_address.is_none() {
            tracing::warn!(
                bind_address = %config.bind_address,
                %advertised,
                "this server listens on loopback only: pods cannot reach it through the kubernetes Service (bind to 0.0.0.0 or the advertised address)"
            );
        }
        let client =
            component_client(&secrets.ca, &server_url, APISERVER, &["system:masters"]).await?;
        let service_ip =
            config.service_ranges.cidr.nth(1).ok_or_else(|| {
                ServerError::Client("the service block has no first address".into())
            })?;
        Some(tokio::spawn(controllers::kubernetes::run(
            client,
            controllers::kubernetes::Config {
                service_ip: service_ip.into(),
                address: advertised.ip(),
                port: advertised.port(),
                lease_duration,
            },
            stopped.clone(),
        )))
    } else {
        None
    };
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
        for task in [scheduler, controller_manager, kubernetes_service]
            .into_iter()
            .flatten()
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    };

    on_start(&Started {
        addr,
        advertised,
        kubeconfig,
        token: secrets.token.clone(),
    });
    bosun_tls::serve(listener, tls, app, shutdown).await;
    compactor.abort();
    expirer.abort();
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    Ok(())
}

/// Runs `work` (given this server's identity in the election) while this server holds the
/// Lease `kube-system/<lease>`, until `stopped` turns true.
fn spawn_elected<W, F>(
    client: kube::Client,
    lease: &str,
    timing: LeaseTiming,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    work: W,
) -> tokio::task::JoinHandle<()>
where
    W: FnMut(String) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    let elector = LeaderElector::new(client, "kube-system", lease, timing);
    let identity = elector.identity().to_string();
    let mut work = work;
    tokio::spawn(async move {
        elector
            .run(move || work(identity.clone()), async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    })
}

/// A client for a component that runs inside the server process under its own identity: a
/// client certificate from the cluster CA for `user`, whom the bootstrap policy grants what
/// the component needs.
async fn component_client(
    ca: &crate::pki::Ca,
    server_url: &str,
    user: &str,
    groups: &[&str],
) -> Result<kube::Client, ServerError> {
    let issued = ca.issue_client(user, groups)?;
    api_client(&kubeconfig_yaml_with_certificate(
        server_url,
        &ca.cert_pem,
        &issued.cert_pem,
        &issued.key_pem,
    ))
    .await
}

/// A Kubernetes client for the components that run inside the server process.
async fn api_client(kubeconfig_yaml: &str) -> Result<kube::Client, ServerError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let error = |e: &dyn std::fmt::Display| ServerError::Client(e.to_string());
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig_yaml).map_err(|e| error(&e))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| error(&e))?;
    // Names the server's controllers and scheduler as the field manager of their writes.
    config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_static(concat!("bosun-server/", env!("CARGO_PKG_VERSION"))),
    ));
    kube::Client::try_from(config).map_err(|e| error(&e))
}

/// The address clients should use: a wildcard bind is reached on loopback.
fn client_address(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback: IpAddr = if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    }
}

/// The user this server's own client (the `kubernetes` Service's upkeep) is, as upstream's
/// loopback client.
const APISERVER: &str = "system:apiserver";

/// Where pods reach this server: `--advertise-address`, else the bind address when it is a
/// specific, non-loopback one, else the host's primary IPv4 address.
fn advertise_address(config: &ServerConfig) -> IpAddr {
    if let Some(address) = config.advertise_address {
        return address;
    }
    if !config.bind_address.is_unspecified() && !config.bind_address.is_loopback() {
        return config.bind_address;
    }
    bosun_api::cluster::host_address()
        .map(IpAddr::V4)
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// Names for the serving certificate: localhost, the host name, every local address, the
/// bind address, the `kubernetes` Service's and the advertised address, and each `--tls-san`.
fn serving_names(config: &ServerConfig) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().to_string());
    }
    names.extend(local_addresses().into_iter().map(|ip| ip.to_string()));
    // Pods reach the server at the `kubernetes` Service's address and the advertised one.
    if let Some(ip) = config.service_ranges.cidr.nth(1) {
        names.push(ip.to_string());
    }
    names.push(advertise_address(config).to_string());
    if !config.bind_address.is_unspecified() {
        names.push(config.bind_address.to_string());
    }
    names.extend(config.tls_sans.iter().cloned());
    names.retain(|n| !n.is_empty());
    names.sort();
    names.dedup();
    names
}

/// The IPv4 addresses of this machine's interfaces, read from the kernel's routing table
/// (`/proc/net/fib_trie` lists every local address as a `/32 host LOCAL` entry).
fn local_addresses() -> Vec<IpAddr> {
    let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") else {
        return Vec::new();
    };
    let lines: Vec<&str> = trie.lines().collect();
    let mut out = Vec::new();
    for pair in lines.windows(2) {
        if pair[1].contains("/32 host LOCAL")
            && let Some(ip) = pair[0].split_whitespace().last()
            && let Ok(ip) = ip.parse::<IpAddr>()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: bosun\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n\
         - name: admin\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: bosun\n  context:\n    cluster: bosun\n    user: admin\n\
         current-context: bosun\n",
        ca = B64.encode(ca_pem),
    )
}

fn kubeconfig_yaml_with_certificate(
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: bosun\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n\
         - name: component\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n\
         contexts:\n\
         - name: bosun\n  context:\n    cluster: bosun\n    user: component\n\
         current-context: bosun\n",
        ca = B64.encode(ca_pem),
        cert = B64.encode(cert_pem),
        key = B64.encode(key_pem),
    )
}

fn create_private_dir(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ServerError::Io {
            action: "cannot create",
            path: dir.to_path_buf(),
            source,
        })
}

fn read_optional(path: &Path) -> Result<Option<String>, ServerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ServerError::Io {
            action: "cannot read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a file only its owner can read, replacing it atomically.
fn write_private(path: &Path, contents: &str) -> Result<(), ServerError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| ServerError::Io {
        action: "cannot write",
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_servers_blocks_are_the_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SqliteStore::open(&dir.path().join("state.db"), Some("t"))
            .await
            .unwrap();
        apiserver::ensure_builtin_objects(&store).await.unwrap();
        let blocks = cluster::Blocks::default();
        publish_blocks(&store, blocks).await.unwrap();
        // A second start with the same blocks is fine; other blocks are refused.
        publish_blocks(&store, blocks).await.unwrap();
        let other = cluster::Blocks {
            service_cidr: "10.99.0.0/16".parse().unwrap(),
            ..blocks
        };
        let err = publish_blocks(&store, other).await.unwrap_err();
        assert!(
            err.to_string().starts_with(
                "--service-cidr 10.99.0.0/16 disagrees with the cluster's 10.89.0.0/16"
            ),
            "{err}"
        );
    }

    #[test]
    fn wildcard_binds_are_reached_on_loopback() {
        let addr: SocketAddr = "0.0.0.0:6443".parse().unwrap();
        assert_eq!(client_address(addr).to_string(), "127.0.0.1:6443");
        let addr: SocketAddr = "10.1.2.3:6443".parse().unwrap();
        assert_eq!(client_address(addr), addr);
    }

    #[test]
    fn local_addresses_include_loopback() {
        assert!(local_addresses().contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
    }
}
