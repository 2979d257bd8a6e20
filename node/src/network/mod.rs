//! Pod networks: one Linux network namespace and one IP per pod, shared by its containers.
//!
//! Each pod gets a namespace `bosun-<pod UID>` (under `/run/netns`, so `ip netns exec` works
//! on it), loopback up, and a veth pair: `eth0` inside with an address from the node's
//! `spec.podCIDR` ([`ipam`]), its peer on the node's bridge (`bosun0`, holding the block's
//! first address, which is the pods' default gateway). The wasmtime runtime starts each
//! container's thread inside the namespace, so every socket a guest opens lives there
//! ([`policy`] decides which addresses it may use). Pods on other nodes are reached by a
//! route per node (its podCIDR via its address), kept from the Node objects
//! ([`Network::sync_routes`]).
//!
//! Without the privileges to make namespaces (not root, no CAP_NET_ADMIN) the node still
//! runs pods, on its own network: [`Network::host`], with the reason for the node's
//! condition and the pods' events.
//!
//! A pod's namespace, veth pair, address and route are made and removed over route netlink
//! from the agent's process ([`netlink`]: they lie on every pod's start path); the node's
//! rarer changes (its bridge, routes to other nodes) go through the `ip` command ([`ip`]).
//! Every step is idempotent, so a restarted agent (even after `kill -9`) finds a pod's
//! namespace and address again or repairs them, and [`Network::reconcile`] removes what
//! belongs to pods that are gone.
//!
//! Services: [`proxy`] spreads connections to cluster IPs and node ports over ready endpoints
//! with nftables rules, and [`names`] resolves Services' names for pods.

pub mod ip;
pub mod ipam;
pub mod names;
pub mod netlink;
pub mod netpol;
pub mod policy;
pub mod ports;
pub mod proxy;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bosun_api::cidr::Ipv4Cidr;
use sha2::{Digest, Sha256};

use ip::IpError;
use ipam::Ipam;
pub use policy::{EGRESS_ANNOTATION, SocketPolicy};
pub use ports::{HostPort, Protocol};

/// What went wrong while changing the node's network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or netlink request, and what it was for.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ip(#[from] IpError),
    #[error("nft refused the service rules: {0}")]
    Nft(String),
    #[error("the podCIDR {0} is too small for pods")]
    BlockTooSmall(Ipv4Cidr),
    #[error("{0} panicked")]
    Panicked(&'static str),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The routing protocol number marking the routes this agent owns (to other nodes' pods),
/// so it can tell them from anyone else's.
const ROUTE_PROTO: &str = "98";

/// How the node's pod network is set up.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The bridge the pods' veths join.
    pub bridge: String,
    /// The cluster's pod block (every node's podCIDR is inside it).
    pub cluster_cidr: Ipv4Cidr,
    /// The cluster's Service block.
    pub service_cidr: Ipv4Cidr,
    /// Where address records are kept.
    pub dir: PathBuf,
}

/// A pod's place on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    pub ip: Ipv4Addr,
    /// The pod's namespace; `None` for the node's own (hostNetwork, or no privileges).
    pub netns: Option<PathBuf>,
}

/// The node's pod network.
pub struct Network {
    config: NetworkConfig,
    node_ip: Ipv4Addr,
    mode: Mode,
    /// One change at a time: two containers of a pod start together and must not both make
    /// its namespace.
    lock: tokio::sync::Mutex<()>,
    /// The hostPort forwarders of each pod (by UID) that has any.
    forwarders: std::sync::Mutex<HashMap<String, ports::Forwarders>>,
    /// Pods whose network this process has set up or checked, by UID: their next containers
    /// need no `ip` calls.
    attached: std::sync::Mutex<HashMap<String, PodNetwork>>,
}

enum Mode {
    Pods(Arc<Ipam>),
    Host { reason: String },
}

impl Network {
    /// Checks that this process may change the network, by making (or finding) the bridge.
    /// `Err` says why not, for [`Network::host`].
    pub fn probe(config: &NetworkConfig) -> Result<(), Error> {
        match ip::ip(&["link", "add", &config.bridge, "type", "bridge"]) {
            Ok(_) => Ok(()),
            Err(e) if e.is_exists() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets up the bridge with the block's gateway address and turns on forwarding; pods get
    /// addresses from `pod_cidr`.
    pub fn start(
        config: NetworkConfig,
        node_ip: Ipv4Addr,
        pod_cidr: Ipv4Cidr,
    ) -> Result<Self, Error> {
        if pod_cidr.size() < 4 {
            return Err(Error::BlockTooSmall(pod_cidr));
        }
        let ipam = Ipam::open(&config.dir.join("ipam"), pod_cidr)
            .map_err(Error::io(format!("cannot open {}", config.dir.display())))?;
        let gateway = format!("{}/{}", ipam.gateway(), pod_cidr.prefix());
        Self::probe(&config)?;
        if let Some(clash) = clashing_route(&config.bridge, pod_cidr) {
            tracing::warn!(%pod_cidr, route = %clash, "the podCIDR overlaps a route of this host: pods may not reach that network (choose another --cluster-cidr)");
        }
        let current = ip::ip(&["-o", "-4", "addr", "show", "dev", &config.bridge])?;
        let mut commands = Vec::new();
        if !current.contains(&format!("inet {gateway} ")) {
            // A bridge left from another podCIDR: its old address must go.
            commands.push(format!("addr flush dev {}", config.bridge));
            commands.push(format!("addr add {gateway} dev {}", config.bridge));
        }
        commands.push(format!("link set {} up", config.bridge));
        ip::batch(None, &commands)?;
        netlink::prepare_netns_dir(std::path::Path::new(NETNS_DIR))
            .map_err(Error::io(format!("cannot prepare {NETNS_DIR}")))?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(Error::io("cannot turn on IPv4 forwarding"))?;
        if let Err(reason) = proxy::prepare(&config.bridge, config.service_cidr) {
            tracing::warn!(%reason, "Services may not be reachable from this node");
        }
        tracing::info!(bridge = %config.bridge, %pod_cidr, "pod network ready");
        Ok(Self {
            config,
            node_ip,
            mode: Mode::Pods(Arc::new(ipam)),
            lock: tokio::sync::Mutex::new(()),
            forwarders: Default::default(),
            attached: Default::default(),
        })
    }

    /// Pods share the node's network (and its address); `reason` says why.
    pub fn host(config: NetworkConfig, node_ip: Ipv4Addr, reason: String) -> Self {
        Self {
            config,
            node_ip,
            mode: Mode::Host { reason },
            lock: tokio::sync::Mutex::new(()),
            forwarders: Default::default(),
            attached: Default::default(),
        }
    }

    /// Why pods run on the node's network, if they do.
    pub fn fallback_reason(&self) -> Option<&str> {
        match &self.mode {
            Mode::Host { reason } => Some(reason),
            Mode::Pods(_) => None,
        }
    }

    /// The node's pod block, if it has its own pod network.
    pub fn pod_cidr(&self) -> Option<Ipv4Cidr> {
        match &self.mode {
            Mode::Pods(ipam) => Some(ipam.block()),
            Mode::Host { .. } => None,
        }
    }

    /// The socket rules of a pod at `pod_ip`.
    pub fn policy(&self, pod_ip: Ipv4Addr, egress: bool) -> SocketPolicy {
        SocketPolicy {
            pod_ip,
            cluster_cidr: self.config.cluster_cidr,
            service_cidr: self.config.service_cidr,
            egress,
            policies: None,
        }
    }

    /// The node's address on the pod network (the bridge's), which every pod reaches.
    pub fn gateway_ip(&self) -> Option<Ipv4Addr> {
        match &self.mode {
            Mode::Pods(ipam) => Some(ipam.gateway()),
            Mode::Host { .. } => None,
        }
    }

    /// Makes the node's service proxy send new connections as `ports` say, those to a
    /// sleeping Function to `activator`; `Ok(false)` when pods share the node's network
    /// (there is no proxy then).
    pub async fn apply_services(
        &self,
        ports: &[proxy::ServicePort],
        activator: Option<SocketAddrV4>,
    ) -> Result<bool, Error> {
        if let Mode::Host { .. } = self.mode {
            return Ok(false);
        }
        let config = proxy::ProxyConfig {
            table: format!("{}-proxy", self.config.bridge),
            cluster_cidr: self.config.cluster_cidr,
            activator,
        };
        let script = proxy::ruleset(ports, &config);
        tokio::task::spawn_blocking(move || proxy::apply(&script))
            .await
            .map_err(|_| Error::Panicked("the service rule update"))??;
        Ok(true)
    }

    /// The pod's namespace and address, made if missing (idempotent: the same pod gets the
    /// same ones, also after an agent restart), and its `host_ports` forwarded to it.
    pub async fn attach(
        &self,
        uid: &str,
        host_network: bool,
        host_ports: &[HostPort],
    ) -> Result<PodNetwork, Error> {
        let ipam = match &self.mode {
            Mode::Pods(ipam) if !host_network => ipam.clone(),
            // On the node's network a pod's ports are the node's already.
            _ => {
                return Ok(PodNetwork {
                    ip: self.node_ip,
                    netns: None,
                });
            }
        };
        let _one_at_a_time = self.lock.lock().await;
        let known = self.attached.lock().unwrap().get(uid).cloned();
        let pod = match known {
            Some(pod) => pod,
            None => {
                let bridge = self.config.bridge.clone();
                let owner = uid.to_string();
                let pod = tokio::task::spawn_blocking(move || attach(&ipam, &bridge, &owner))
                    .await
                    .map_err(|_| Error::Panicked("the network setup"))??;
                self.attached
                    .lock()
                    .unwrap()
                    .insert(uid.to_string(), pod.clone());
                pod
            }
        };
        let forwarding = self.forwarders.lock().unwrap().contains_key(uid);
        if !host_ports.is_empty() && !forwarding {
            let forwarders = ports::Forwarders::start(pod.ip, host_ports).await?;
            self.forwarders
                .lock()
                .unwrap()
                .insert(uid.to_string(), forwarders);
        }
        Ok(pod)
    }

    /// Removes the pod's namespace and frees its address (nothing if it has none).
    pub async fn detach(&self, uid: &str) {
        let Mode::Pods(ipam) = &self.mode else {
            return;
        };
        self.forwarders.lock().unwrap().remove(uid);
        // Outside the lock: other pods' changes need not wait for this one's sockets.
        let flushing = uid.to_string();
        let _ =
            tokio::task::spawn_blocking(move || wait_for_sockets(&flushing, SOCKET_FLUSH_LIMIT))
                .await;
        let _one_at_a_time = self.lock.lock().await;
        self.attached.lock().unwrap().remove(uid);
        let (ipam, uid) = (ipam.clone(), uid.to_string());
        let _ = tokio::task::spawn_blocking(move || {
            teardown(&uid);
            if let Some(ip) = ipam.find(&uid) {
                ipam.release(ip);
            }
        })
        .await;
    }

    /// Removes the namespaces and addresses of pods not in `live` (after an agent restart).
    pub async fn reconcile(&self, live: &HashSet<String>) {
        let Mode::Pods(ipam) = &self.mode else {
            return;
        };
        let _one_at_a_time = self.lock.lock().await;
        let (ipam, live) = (ipam.clone(), live.clone());
        let _ = tokio::task::spawn_blocking(move || {
            for (ip, uid) in ipam.records() {
                if !live.contains(&uid) {
                    tracing::info!(pod_uid = %uid, %ip, "removing the network of a pod that is gone");
                    teardown(&uid);
                    ipam.release(ip);
                }
            }
        })
        .await;
    }

    /// Routes each other node's pod block via that node's address, and removes the routes
    /// this agent made for nodes no longer in `nodes`.
    pub async fn sync_routes(&self, nodes: &BTreeSet<(Ipv4Cidr, Ipv4Addr)>) -> Result<(), Error> {
        let Some(own) = self.pod_cidr() else {
            return Ok(());
        };
        let wanted: BTreeSet<(Ipv4Cidr, Ipv4Addr)> = nodes
            .iter()
            .filter(|(cidr, via)| *cidr != own && *via != self.node_ip)
            .copied()
            .collect();
        let _one_at_a_time = self.lock.lock().await;
        tokio::task::spawn_blocking(move || sync_routes(&wanted))
            .await
            .map_err(|_| Error::Panicked("the route update"))??;
        Ok(())
    }
}

/// A route of the host (not the bridge's, not ours) whose destination overlaps `pod_cidr`.
fn clashing_route(bridge: &str, pod_cidr: Ipv4Cidr) -> Option<String> {
    let routes = ip::ip(&["-4", "route", "show"]).ok()?;
    routes
        .lines()
        .filter(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let on_bridge = words.windows(2).any(|w| w == ["dev", bridge]);
            let ours = words.windows(2).any(|w| w == ["proto", ROUTE_PROTO]);
            !on_bridge && !ours
        })
        .find(|line| {
            let destination = line.split_whitespace().next().unwrap_or("");
            let block = match destination.parse::<Ipv4Cidr>() {
                Ok(block) => Some(block),
                Err(_) => destination
                    .parse::<Ipv4Addr>()
                    .ok()
                    .and_then(|ip| Ipv4Cidr::new(ip, 32).ok()),
            };
            block.is_some_and(|b| b.overlaps(&pod_cidr))
        })
        .map(str::to_string)
}

/// The namespace's name for a pod.
pub fn netns_name(uid: &str) -> String {
    format!("bosun-{uid}")
}

/// Where a pod's namespace is mounted.
fn netns_path(uid: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(netns_name(uid))
}

/// The node end of a pod's veth pair: `bv` and 12 hex digits of the UID's hash (interface
/// names have at most 15 characters).
fn host_veth(uid: &str) -> String {
    let hash = Sha256::digest(uid.as_bytes());
    let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("bv{hex}")
}

fn attach(ipam: &Ipam, bridge: &str, uid: &str) -> Result<PodNetwork, Error> {
    let address = ipam
        .allocate(uid)
        .map_err(Error::io("cannot get a pod address"))?;
    let netns = netns_name(uid);
    let path = netns_path(uid);
    let veth = host_veth(uid);
    let done = PodNetwork {
        ip: address,
        netns: Some(path.clone()),
    };
    if path.exists() {
        if is_configured(&netns, &veth, bridge, address) {
            return Ok(done);
        }
        // Half made (the agent died during a setup): start again.
        teardown(uid);
    }
    let setup = netlink::make_pod_netns(&netlink::PodNetworkSpec {
        path: &path,
        veth: &veth,
        bridge,
        address,
        prefix: ipam.block().prefix(),
        gateway: ipam.gateway(),
    });
    match setup {
        Ok(()) => {
            tracing::debug!(pod_uid = %uid, ip = %address, "pod network made");
            Ok(done)
        }
        Err(error) => {
            teardown(uid);
            Err(error)
        }
    }
}

fn is_configured(netns: &str, veth: &str, bridge: &str, address: Ipv4Addr) -> bool {
    let inside = ip::ip(&["-n", netns, "-o", "-4", "addr", "show", "dev", "eth0"]);
    let outside = ip::ip(&["-o", "link", "show", "dev", veth]);
    matches!((inside, outside), (Ok(i), Ok(o))
        if i.contains(&format!("inet {address}/")) && o.contains(&format!("master {bridge} ")))
}

/// Removes a pod's veth and namespace, whatever of them is there.
/// How long a stopped pod's network outlives its containers at most, for its sockets to
/// deliver what they were given.
const SOCKET_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Moves the calling thread (only it) into the network namespace `ns`.
pub fn enter_netns(ns: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns takes a file descriptor that `ns` keeps open for the call; it changes
    // the namespace of this thread alone.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits, at most `limit`, until the sockets left in a stopped pod's namespace have sent
/// what they hold. A container's last response and its FIN are still in the kernel when it
/// exits (paced, or waiting for an ACK); deleting the veth then would lose them silently, and
/// the peer would wait for an answer that never comes.
fn wait_for_sockets(uid: &str, limit: Duration) {
    let Ok(ns) = std::fs::File::open(netns_path(uid)) else {
        return;
    };
    // A thread of its own: entering the pod's namespace must not leave a pool thread there.
    let watcher = std::thread::Builder::new()
        .name("netns-flush".to_string())
        .spawn(move || {
            if enter_netns(&ns).is_err() {
                return;
            }
            let deadline = std::time::Instant::now() + limit;
            while std::time::Instant::now() < deadline {
                match std::fs::read_to_string("/proc/thread-self/net/tcp") {
                    Ok(table) if holds_unsent(&table) => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => return,
                }
            }
        });
    if let Ok(watcher) = watcher {
        let _ = watcher.join();
    }
}

/// Whether a `/proc/net/tcp` table has a socket that still has data or a FIN to deliver:
/// data in its send queue, or a FIN not yet acknowledged (FIN_WAIT1, CLOSING, LAST_ACK).
fn holds_unsent(table: &str) -> bool {
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(&state), Some(queues)) = (fields.get(3), fields.get(4)) else {
            return false;
        };
        let queued = queues
            .split(':')
            .next()
            .and_then(|q| u32::from_str_radix(q, 16).ok())
            .unwrap_or(0);
        matches!(state, "04" | "0B" | "09") || (queued > 0 && state != "0A")
    })
}

fn teardown(uid: &str) {
    // Deleting the veth takes its peer with it at once (a namespace's interfaces go only when
    // the kernel gets round to destroying it).
    let veth = host_veth(uid);
    let deleted = netlink::Socket::open().and_then(|mut node| node.delete_link(&veth));
    if let Err(e) = deleted
        && e.raw_os_error() != Some(libc::ENODEV)
    {
        tracing::warn!(pod_uid = %uid, error = %e, "network teardown: cannot delete {veth}");
    }
    let path = netns_path(uid);
    if let Err(e) = netlink::remove_netns(&path) {
        tracing::warn!(pod_uid = %uid, error = %e, "network teardown: cannot remove {}", path.display());
    }
}

fn sync_routes(wanted: &BTreeSet<(Ipv4Cidr, Ipv4Addr)>) -> Result<(), IpError> {
    let current: BTreeSet<(Ipv4Cidr, Ipv4Addr)> =
        ip::ip(&["-4", "route", "show", "proto", ROUTE_PROTO])?
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let cidr: Ipv4Cidr = words.next()?.parse().ok()?;
                let via: Ipv4Addr = words.skip_while(|w| *w != "via").nth(1)?.parse().ok()?;
                Some((cidr, via))
            })
            .collect();
    let mut commands = Vec::new();
    for (cidr, via) in current.difference(wanted) {
        commands.push(format!("route del {cidr} via {via} proto {ROUTE_PROTO}"));
    }
    for (cidr, via) in wanted.difference(&current) {
        commands.push(format!(
            "route replace {cidr} via {via} proto {ROUTE_PROTO}"
        ));
    }
    if commands.is_empty() {
        return Ok(());
    }
    tracing::info!(routes = ?wanted, "updating the routes to other nodes' pods");
    ip::batch(None, &commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the kernel writes them: a listener, a connection at rest, one whose response
    /// is still queued, one whose FIN is not acknowledged, and one in TIME_WAIT.
    #[test]
    fn sockets_with_something_to_deliver_are_told_apart() {
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        let listen = "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        let idle = "   1: 0200E80A:1F90 0100E80A:C26C 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1";
        let queued = "   2: 0200E80A:1F90 0100E80A:C26D 01 0000008D:00000000 01:00000014 00000000     0        0 3 1 0 20 4 30 10 -1";
        let fin = "   3: 0200E80A:1F90 0100E80A:C26E 04 00000001:00000000 01:00000014 00000000     0        0 0 1 0 20 4 30 10 -1";
        let time_wait = "   4: 0200E80A:1F90 0100E80A:C26F 06 00000000:00000000 03:00000F00 00000000     0        0 0 3 0";
        let table = |lines: &[&str]| [&[header][..], lines].concat().join("\n");
        assert!(!holds_unsent(&table(&[listen, idle, time_wait])));
        assert!(holds_unsent(&table(&[listen, queued])));
        assert!(holds_unsent(&table(&[fin, time_wait])));
        assert!(!holds_unsent(&table(&[])));
    }

    #[test]
    fn interface_names_fit_and_differ() {
        let a = host_veth("0a6a3c1e-7f56-4c9b-9d59-1b2f1d3e4f50");
        let b = host_veth("0a6a3c1e-7f56-4c9b-9d59-1b2f1d3e4f51");
        assert!(a.len() <= 15 && a.starts_with("bv"), "{a}");
        assert_ne!(a, b);
        assert_eq!(netns_name("u1"), "bosun-u1");
    }
}
