//! The service proxy: connections to a Service's `clusterIP:port` (from a pod or the node) and
//! to `nodeIP:nodePort` (from anywhere) are spread over the Service's ready endpoints by the
//! kernel, through nftables rules in the node's network namespace, as kube-proxy's nftables
//! mode does. The agent ([`crate::agent`]'s service watch) turns the Services and
//! EndpointSlices it sees into [`ServicePort`]s; [`ruleset`] writes the whole table for them
//! (`ip <bridge>-proxy`: one per agent, so agents sharing a network namespace keep apart), and [`apply`] replaces the table in one nftables transaction, so a
//! connection never sees half an update. Established connections keep their endpoint
//! (conntrack), new ones only go to endpoints that are ready now.
//!
//! Per Service port there is a chain that picks an endpoint round robin (`numgen inc`), after
//! the endpoint a client was sent to last if `sessionAffinity: ClientIP` (a per-endpoint set of
//! client addresses with the affinity timeout). Each endpoint's chain DNATs to it. Packets are
//! masqueraded (marked, then `masquerade` on the way out) when the answer would otherwise not
//! come back through this node: a pod reaching itself through its Service (hairpin), node
//! ports, and clients outside the pod network. A Service port without endpoints is refused
//! (ICMP port unreachable, so a TCP client gets "connection refused" at once). The same table
//! masquerades pods' connections that leave the cluster block (egress), which the outside
//! could not answer otherwise.
//!
//! Pods on one bridge answer each other directly at layer 2, so for the replies of DNATed
//! connections to be translated back the bridge must pass its traffic through netfilter
//! (`net.bridge.bridge-nf-call-iptables`), which [`prepare`] turns on with a route for the
//! Service block (so the node itself can reach cluster IPs without a default route).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};

use bosun_api::cidr::Ipv4Cidr;
use sha2::{Digest, Sha256};

use super::Error;

/// The packet mark that asks for masquerading.
const MASQUERADE_MARK: u32 = 0x4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn parse(text: Option<&str>) -> Option<Self> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            _ => None,
        }
    }

    /// As Kubernetes spells it (`TCP`, `UDP`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }

    fn nft(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One port of one Service, with where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    pub namespace: String,
    pub service: String,
    /// The port's name (empty for a single unnamed port).
    pub port_name: String,
    pub protocol: Protocol,
    /// `None` for a headless Service (nothing to proxy; only names point at it).
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `sessionAffinity: ClientIP`'s timeout in seconds.
    pub affinity_seconds: Option<u32>,
    /// The endpoints new connections may go to.
    pub endpoints: Vec<SocketAddrV4>,
    /// The port of a Function's Service: without endpoints, its connections go to the node's
    /// activator (which wakes the Function) rather than being refused.
    pub activate: bool,
}

impl ServicePort {
    /// A name for this port's chains: stable, short and unique per port.
    fn id(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(format!(
            "{}/{}/{}/{:?}",
            self.namespace, self.service, self.port_name, self.protocol
        ));
        hash.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What the rules need to know about the node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The nftables table (of family `ip`) the proxy owns.
    pub table: String,
    /// Clients from outside this block are masqueraded.
    pub cluster_cidr: Ipv4Cidr,
    /// The node's activation listener ([`crate::gateway::Gateway::serve_activation`]), on
    /// an address of the node that its pods reach.
    pub activator: Option<SocketAddrV4>,
}

/// The nftables script that makes the proxy's table exactly what `ports` ask for
/// (replacing whatever it held).
pub fn ruleset(ports: &[ServicePort], config: &ProxyConfig) -> String {
    let mut out = String::new();
    // `add` then `delete` works whether or not the table exists; all of it is one transaction.
    let table = &config.table;
    let _ = writeln!(out, "add table ip {table}\ndelete table ip {table}");
    let _ = writeln!(out, "table ip {table} {{");
    let mut service_ips = Vec::new();
    let mut node_ports = Vec::new();
    let mut refused_ips = Vec::new();
    let mut refused_node_ports = Vec::new();
    let mut chains = String::new();
    let mut activations = String::new();
    let mut sets = String::new();
    let mut seen_node_ports = BTreeSet::new();
    for port in ports {
        let Some(ip) = port.cluster_ip else { continue };
        let id = port.id();
        let proto = port.protocol.nft();
        let node_port = port
            .node_port
            .filter(|p| seen_node_ports.insert((*p, port.protocol)));
        if port.endpoints.is_empty()
            && port.activate
            && port.protocol == Protocol::Tcp
            && let Some(activator) = config.activator
        {
            service_ips.push(format!("{ip} . {proto} . {} : goto activate", port.port));
            if let Some(n) = node_port {
                refused_node_ports.push(format!("{proto} . {n}"));
            }
            if activations.is_empty() {
                let _ = writeln!(
                    activations,
                    "  chain activate {{\n    meta l4proto tcp dnat to {activator}\n  }}"
                );
            }
            continue;
        }
        if port.endpoints.is_empty() {
            refused_ips.push(format!("{ip} . {proto} . {}", port.port));
            if let Some(n) = node_port {
                refused_node_ports.push(format!("{proto} . {n}"));
            }
            continue;
        }
        service_ips.push(format!("{ip} . {proto} . {} : goto svc-{id}", port.port));
        let _ = writeln!(chains, "  chain svc-{id} {{");
        let _ = writeln!(
            chains,
            "    ip saddr != {} meta mark set meta mark | {MASQUERADE_MARK:#x}",
            config.cluster_cidr
        );
        let _ = writeln!(chains, "    goto pick-{id}\n  }}");
        if let Some(n) = node_port {
            node_ports.push(format!("{proto} . {n} : goto ext-{id}"));
            let _ = writeln!(
                chains,
                "  chain ext-{id} {{\n    meta mark set meta mark | {MASQUERADE_MARK:#x}\n    goto pick-{id}\n  }}"
            );
        }
        let _ = writeln!(chains, "  chain pick-{id} {{");
        if let Some(timeout) = port.affinity_seconds {
            for (i, _) in port.endpoints.iter().enumerate() {
                let _ = writeln!(
                    sets,
                    "  set aff-{id}-{i} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
                );
                let _ = writeln!(chains, "    ip saddr @aff-{id}-{i} goto ep-{id}-{i}");
            }
        }
        let picks: Vec<String> = (0..port.endpoints.len())
            .map(|i| format!("{i} : goto ep-{id}-{i}"))
            .collect();
        let _ = writeln!(
            chains,
            "    numgen inc mod {} vmap {{ {} }}\n  }}",
            port.endpoints.len(),
            picks.join(", ")
        );
        for (i, endpoint) in port.endpoints.iter().enumerate() {
            let _ = writeln!(chains, "  chain ep-{id}-{i} {{");
            let _ = writeln!(
                chains,
                "    ip saddr {} meta mark set meta mark | {MASQUERADE_MARK:#x}",
                endpoint.ip()
            );
            if port.affinity_seconds.is_some() {
                let _ = writeln!(chains, "    update @aff-{id}-{i} {{ ip saddr }}");
            }
            let _ = writeln!(chains, "    meta l4proto {proto} dnat to {endpoint}\n  }}");
        }
    }
    let elements = |items: &[String]| {
        if items.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", items.join(", "))
        }
    };
    let _ = writeln!(
        out,
        "  map service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict;{} }}",
        elements(&service_ips)
    );
    let _ = writeln!(
        out,
        "  map service-nodeports {{ type inet_proto . inet_service : verdict;{} }}",
        elements(&node_ports)
    );
    let _ = writeln!(
        out,
        "  set no-endpoint-ips {{ type ipv4_addr . inet_proto . inet_service;{} }}",
        elements(&refused_ips)
    );
    let _ = writeln!(
        out,
        "  set no-endpoint-nodeports {{ type inet_proto . inet_service;{} }}",
        elements(&refused_node_ports)
    );
    out.push_str(&sets);
    out.push_str(
        "  chain services {
    ip daddr . meta l4proto . th dport vmap @service-ips
    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
  }
  chain nat-prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }
  chain nat-output {
    type nat hook output priority -100; policy accept;
    jump services
  }
  chain nat-postrouting {
    type nat hook postrouting priority srcnat; policy accept;
",
    );
    let _ = writeln!(
        out,
        "    meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} masquerade"
    );
    // Egress: pods leaving the cluster go out as the node, or the answers would be addressed
    // to a pod network the outside has no route to (the CNI bridge plugin's `ipMasq`).
    let cluster = config.cluster_cidr;
    let _ = writeln!(
        out,
        "    ip saddr {cluster} ip daddr != {cluster} masquerade\n  }}"
    );
    out.push_str(
        "  chain refuse {
    ct state new ip daddr . meta l4proto . th dport @no-endpoint-ips reject
    ct state new fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport @no-endpoint-nodeports reject
  }
  chain filter-input {
    type filter hook input priority filter - 10; policy accept;
    jump refuse
  }
  chain filter-forward {
    type filter hook forward priority filter - 10; policy accept;
    jump refuse
  }
  chain filter-output {
    type filter hook output priority filter - 10; policy accept;
    jump refuse
  }
",
    );
    out.push_str(&chains);
    out.push_str(&activations);
    out.push_str("}\n");
    out
}

/// Loads an nftables script in one transaction.
pub fn apply(script: &str) -> Result<(), Error> {
    apply_in(None, script)
}

/// The same in the named network namespace (`ip netns`), or in this process's.
fn apply_in(netns: Option<&str>, script: &str) -> Result<(), Error> {
    let mut command = match netns {
        Some(netns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns, "nft"]);
            c
        }
        None => Command::new("nft"),
    };
    let mut child = command
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io("cannot run nft (is nftables installed?)"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(Error::io("cannot write to nft"))?;
    let output = child.wait_with_output().map_err(Error::io("nft failed"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}

/// Where an accepted connection was addressed before the proxy's DNAT sent it here (a
/// Service's `clusterIP:port`), as conntrack remembers it (`SO_ORIGINAL_DST`).
pub fn original_destination(stream: &tokio::net::TcpStream) -> std::io::Result<SocketAddrV4> {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed sockaddr_in is a valid value; getsockopt writes at most `length`
    // bytes into it, and the descriptor stays open while `stream` is borrowed.
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&raw mut address).cast(),
            &mut length,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr)),
        u16::from_be(address.sin_port),
    ))
}

/// Lets netfilter see bridged traffic and routes the Service block to the bridge.
pub fn prepare(bridge: &str, service_cidr: Ipv4Cidr) -> Result<(), Error> {
    let sysctl = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    std::fs::write(sysctl, "1").map_err(Error::io(format!(
        "cannot write {sysctl} (is the br_netfilter module loaded?)"
    )))?;
    super::ip::ip(&[
        "-4",
        "route",
        "replace",
        &service_cidr.to_string(),
        "dev",
        bridge,
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(endpoints: &[&str], node_port: Option<u16>, affinity: Option<u32>) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            service: "web".into(),
            port_name: String::new(),
            protocol: Protocol::Tcp,
            cluster_ip: Some("10.89.0.10".parse().unwrap()),
            port: 80,
            node_port,
            affinity_seconds: affinity,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            activate: false,
        }
    }

    fn config() -> ProxyConfig {
        ProxyConfig {
            table: "bosun0-proxy".into(),
            cluster_cidr: "10.88.0.0/16".parse().unwrap(),
            activator: Some("10.88.0.1:40000".parse().unwrap()),
        }
    }

    #[test]
    fn endpoints_are_picked_round_robin_and_dnatted() {
        let rules = ruleset(
            &[port(
                &["10.88.0.2:8080", "10.88.1.2:8080"],
                Some(30080),
                None,
            )],
            &config(),
        );
        let id = port(&[], None, None).id();
        assert!(
            rules.contains(&format!("10.89.0.10 . tcp . 80 : goto svc-{id}")),
            "{rules}"
        );
        assert!(
            rules.contains(&format!("tcp . 30080 : goto ext-{id}")),
            "{rules}"
        );
        assert!(
            rules.contains(&format!(
                "numgen inc mod 2 vmap {{ 0 : goto ep-{id}-0, 1 : goto ep-{id}-1 }}"
            )),
            "{rules}"
        );
        assert!(
            rules.contains("meta l4proto tcp dnat to 10.88.1.2:8080"),
            "{rules}"
        );
        assert!(
            !rules.contains("aff-"),
            "no affinity sets without ClientIP affinity"
        );
    }

    #[test]
    fn ports_without_endpoints_are_refused_and_headless_ones_skipped() {
        let mut headless = port(&["10.88.0.2:80"], None, None);
        headless.cluster_ip = None;
        let rules = ruleset(&[port(&[], Some(30081), None), headless], &config());
        assert!(rules.contains("set no-endpoint-ips { type ipv4_addr . inet_proto . inet_service; elements = { 10.89.0.10 . tcp . 80 }; }"), "{rules}");
        assert!(rules.contains("elements = { tcp . 30081 }"), "{rules}");
        assert!(!rules.contains("dnat to"), "{rules}");
    }

    /// The real thing: nftables takes the rules (the suite runs as root with `nft`).
    #[test]
    fn nftables_loads_the_rules_and_replaces_them_whole() {
        let netns = format!("bosun-nft-test-{}", std::process::id());
        let ip = |args: &[&str]| Command::new("ip").args(args).status().unwrap().success();
        assert!(ip(&["netns", "add", &netns]), "ip netns add (needs root)");
        let mut asleep = port(&[], None, None);
        (asleep.service, asleep.cluster_ip, asleep.activate) =
            ("fn".into(), Some("10.89.0.11".parse().unwrap()), true);
        let first = ruleset(
            &[
                port(&["10.88.0.2:8080", "10.88.1.2:8080"], Some(30080), Some(60)),
                port(&[], Some(30081), None),
                asleep,
            ],
            &config(),
        );
        let loaded = apply_in(Some(&netns), &first);
        let second = apply_in(
            Some(&netns),
            &ruleset(&[port(&["10.88.0.9:80"], None, None)], &config()),
        );
        let listed = Command::new("ip")
            .args(["netns", "exec", &netns, "nft", "list", "ruleset"])
            .output()
            .unwrap();
        ip(&["netns", "del", &netns]);
        loaded.unwrap();
        second.unwrap();
        assert!(first.contains("dnat to 10.88.0.1:40000"), "{first}");
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(listed.contains("dnat to 10.88.0.9:80"), "{listed}");
        assert!(
            !listed.contains("10.88.0.2"),
            "the old rules are gone: {listed}"
        );
    }

    #[test]
    fn a_function_service_without_endpoints_goes_to_the_activator() {
        let mut asleep = port(&[], None, None);
        asleep.activate = true;
        let rules = ruleset(&[asleep.clone()], &config());
        assert!(
            rules.contains("10.89.0.10 . tcp . 80 : goto activate"),
            "{rules}"
        );
        assert!(
            rules.contains("chain activate {\n    meta l4proto tcp dnat to 10.88.0.1:40000\n  }"),
            "{rules}"
        );
        assert!(
            !rules.contains("elements = { 10.89.0.10 . tcp . 80 }"),
            "not refused: {rules}"
        );
        // Awake, it is a Service like any other; without an activator, it is refused.
        asleep.endpoints = vec!["10.88.0.2:8080".parse().unwrap()];
        let awake = ruleset(&[asleep.clone()], &config());
        assert!(!awake.contains("activate"), "{awake}");
        asleep.endpoints.clear();
        let refused = ruleset(
            &[asleep],
            &ProxyConfig {
                activator: None,
                ..config()
            },
        );
        assert!(
            refused.contains("elements = { 10.89.0.10 . tcp . 80 }"),
            "{refused}"
        );
    }

    #[test]
    fn client_ip_affinity_remembers_the_clients_endpoint() {
        let rules = ruleset(
            &[port(&["10.88.0.2:80", "10.88.0.3:80"], None, Some(10800))],
            &config(),
        );
        let id = port(&[], None, None).id();
        assert!(rules.contains(&format!(
            "set aff-{id}-1 {{ type ipv4_addr; flags dynamic,timeout; timeout 10800s; }}"
        )));
        assert!(rules.contains(&format!("ip saddr @aff-{id}-0 goto ep-{id}-0")));
        assert!(rules.contains(&format!("update @aff-{id}-1 {{ ip saddr }}")));
    }
}
