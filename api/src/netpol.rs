//! What NetworkPolicies (networking.k8s.io/v1) allow, as upstream defines it, for the node
//! to enforce: a connection from a source to a destination port is allowed when the source's
//! egress and the destination's ingress both allow it. A pod is isolated in a direction when
//! some policy of its namespace selects it and has that policy type; an isolated pod allows in
//! that direction only what some rule of those policies allows (the rules add up). A pod no
//! policy isolates allows everything.
//!
//! A rule with no peers allows every peer, and one with no ports every port. A peer is pods
//! (a `podSelector`, in the policy's namespace or in the namespaces a `namespaceSelector`
//! picks) or an `ipBlock` (a CIDR less its `except` blocks). A named port is the destination
//! pod's container port of that name and protocol. Only IPv4 is routed on a Bosun pod network,
//! so IPv6 blocks match nothing.
//!
//! Beyond upstream: a policy annotated `bosun.dev/egress-allow-hosts: "api.example.com,
//! *.corp.internal"` has one more egress rule, allowing any port of an address its pod got by
//! resolving a name that matches (exactly, or under a `*.` suffix, case-insensitively); the
//! node remembers which names each pod resolved to which addresses ([`Endpoint::names`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cidr::Ipv4Cidr;
use crate::labels::{Reason, Selector};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// `TCP`, `UDP` or `SCTP`, as the API names them (absent: TCP).
    pub fn parse(name: Option<&str>) -> Option<Self> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

/// A pod as policies see it.
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Its namespace's labels.
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// Its containers' named ports: (name, number, protocol).
    pub ports: &'a [(String, u16, Protocol)],
}

/// One end of a connection: its address, and the pod that has it, if any.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub ip: Ipv4Addr,
    pub pod: Option<PodRef<'a>>,
    /// The names the other end resolved to this address (for egress by name).
    pub names: &'a [String],
}

/// The annotation that lets a policy's pods reach hosts by name.
pub const EGRESS_HOSTS_ANNOTATION: &str = "bosun.dev/egress-allow-hosts";

/// Whether `name` is one of `pattern`'s: the name itself, or any name under `*.suffix`.
fn host_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => name.len() > suffix.len() && name.ends_with(&format!(".{suffix}")),
        None => !pattern.is_empty() && name == pattern,
    }
}

#[derive(Debug, Clone)]
enum Peer {
    Pods {
        namespaces: Option<Selector>,
        pods: Option<Selector>,
    },
    Block {
        cidr: Option<Ipv4Cidr>,
        except: Vec<Ipv4Cidr>,
    },
}

#[derive(Debug, Clone)]
enum PortNumber {
    Any,
    Range(u16, u16),
    Named(String),
}

#[derive(Debug, Clone)]
struct Port {
    protocol: Protocol,
    number: PortNumber,
}

#[derive(Debug, Clone)]
struct Rule {
    /// Empty: every peer.
    peers: Vec<Peer>,
    /// Empty: every port.
    ports: Vec<Port>,
}

/// A NetworkPolicy, compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    selector: Selector,
    /// `None` when the policy is not of that type.
    ingress: Option<Vec<Rule>>,
    egress: Option<Vec<Rule>>,
    /// Name patterns its pods may reach (the `bosun.dev/egress-allow-hosts` annotation).
    hosts: Vec<String>,
}

/// Why a stored policy cannot be compiled (the API validates policies, so only an object
/// written around validation gets here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("selector: {0}")]
    Selector(#[from] Reason),
    #[error("unknown protocol {0:?}")]
    Protocol(String),
}

fn selector(
    s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<Option<Selector>, Error> {
    Ok(s.map(Selector::from_label_selector).transpose()?)
}

fn peers(list: Option<&Vec<net::NetworkPolicyPeer>>) -> Result<Vec<Peer>, Error> {
    let mut out = Vec::new();
    for peer in list.into_iter().flatten() {
        out.push(match &peer.ip_block {
            Some(block) => Peer::Block {
                cidr: block.cidr.parse().ok(),
                except: block
                    .except
                    .iter()
                    .flatten()
                    .filter_map(|e| e.parse().ok())
                    .collect(),
            },
            None => Peer::Pods {
                namespaces: selector(peer.namespace_selector.as_ref())?,
                pods: selector(peer.pod_selector.as_ref())?,
            },
        });
    }
    Ok(out)
}

fn ports(list: Option<&Vec<net::NetworkPolicyPort>>) -> Result<Vec<Port>, Error> {
    let mut out = Vec::new();
    for port in list.into_iter().flatten() {
        let protocol = Protocol::parse(port.protocol.as_deref())
            .ok_or_else(|| Error::Protocol(port.protocol.clone().unwrap_or_default()))?;
        let number = match &port.port {
            None => PortNumber::Any,
            Some(IntOrString::Int(n)) => {
                let start = *n as u16;
                let end = port.end_port.map_or(start, |e| e as u16);
                PortNumber::Range(start, end)
            }
            Some(IntOrString::String(name)) => PortNumber::Named(name.clone()),
        };
        out.push(Port { protocol, number });
    }
    Ok(out)
}

impl Policy {
    pub fn compile(policy: &net::NetworkPolicy) -> Result<Self, Error> {
        let spec = policy.spec.clone().unwrap_or_default();
        let types = spec.policy_types.clone().unwrap_or_else(|| {
            let mut types = vec!["Ingress".to_string()];
            if spec.egress.is_some() {
                types.push("Egress".to_string());
            }
            types
        });
        let typed = |kind: &str| types.iter().any(|t| t == kind);
        let rule = |peers_list, ports_list| -> Result<Rule, Error> {
            Ok(Rule {
                peers: peers(peers_list)?,
                ports: ports(ports_list)?,
            })
        };
        let ingress = spec
            .ingress
            .iter()
            .flatten()
            .map(|r| rule(r.from.as_ref(), r.ports.as_ref()))
            .collect::<Result<Vec<_>, Error>>()?;
        let egress = spec
            .egress
            .iter()
            .flatten()
            .map(|r| rule(r.to.as_ref(), r.ports.as_ref()))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            namespace: policy.metadata.namespace.clone().unwrap_or_default(),
            name: policy.metadata.name.clone().unwrap_or_default(),
            selector: Selector::from_label_selector(&spec.pod_selector.unwrap_or_default())?,
            ingress: typed("Ingress").then_some(ingress),
            egress: typed("Egress").then_some(egress),
            hosts: policy
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(EGRESS_HOSTS_ANNOTATION))
                .map(|hosts| {
                    hosts
                        .split(',')
                        .map(|h| h.trim().to_string())
                        .filter(|h| !h.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Whether the policy isolates `pod` in `direction`.
    pub fn isolates(&self, pod: &PodRef<'_>, direction: Direction) -> bool {
        let typed = match direction {
            Direction::Ingress => self.ingress.is_some(),
            Direction::Egress => self.egress.is_some(),
        };
        typed && pod.namespace == self.namespace && self.selector.matches(pod.labels)
    }

    /// Whether a rule of the policy allows `pod`'s connection with `peer` in `direction`, to
    /// `port` (of `destination`, for named ports).
    fn allows(
        &self,
        direction: Direction,
        peer: &Endpoint<'_>,
        destination: Option<&PodRef<'_>>,
        port: u16,
        protocol: Protocol,
    ) -> bool {
        let rules = match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        };
        if direction == Direction::Egress
            && rules.is_some()
            && peer
                .names
                .iter()
                .any(|name| self.hosts.iter().any(|h| host_matches(h, name)))
        {
            return true;
        }
        rules.iter().flatten().any(|rule| {
            (rule.peers.is_empty() || rule.peers.iter().any(|p| self.peer_matches(p, peer)))
                && (rule.ports.is_empty()
                    || rule
                        .ports
                        .iter()
                        .any(|p| port_matches(p, destination, port, protocol)))
        })
    }

    fn peer_matches(&self, peer: &Peer, endpoint: &Endpoint<'_>) -> bool {
        match peer {
            Peer::Block { cidr, except } => {
                cidr.is_some_and(|c| c.contains(endpoint.ip))
                    && !except.iter().any(|e| e.contains(endpoint.ip))
            }
            Peer::Pods { namespaces, pods } => {
                let Some(pod) = &endpoint.pod else {
                    return false;
                };
                let namespace_ok = match namespaces {
                    None => pod.namespace == self.namespace,
                    Some(selector) => selector.matches(pod.namespace_labels),
                };
                namespace_ok && pods.as_ref().is_none_or(|s| s.matches(pod.labels))
            }
        }
    }
}

fn port_matches(
    rule: &Port,
    destination: Option<&PodRef<'_>>,
    port: u16,
    protocol: Protocol,
) -> bool {
    if rule.protocol != protocol {
        return false;
    }
    match &rule.number {
        PortNumber::Any => true,
        PortNumber::Range(start, end) => (*start..=*end).contains(&port),
        PortNumber::Named(name) => destination.is_some_and(|pod| {
            pod.ports
                .iter()
                .any(|(n, number, p)| n == name && *number == port && *p == protocol)
        }),
    }
}

/// What the policies decide about one direction of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Denied: the pod is isolated by these policies (namespace/name), and none allows it.
    Denied(Vec<String>),
}

/// Whether `pod` may have a connection with `peer` in `direction` (ingress: `peer` connects
/// to `pod`'s `port`; egress: `pod` connects to `peer`'s `port`).
pub fn check(
    policies: &[Policy],
    direction: Direction,
    pod: &PodRef<'_>,
    peer: &Endpoint<'_>,
    port: u16,
    protocol: Protocol,
) -> Verdict {
    let isolating: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.isolates(pod, direction))
        .collect();
    if isolating.is_empty() {
        return Verdict::Allowed;
    }
    let destination = match direction {
        Direction::Ingress => Some(pod),
        Direction::Egress => peer.pod.as_ref(),
    };
    if isolating
        .iter()
        .any(|p| p.allows(direction, peer, destination, port, protocol))
    {
        return Verdict::Allowed;
    }
    Verdict::Denied(
        isolating
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect(),
    )
}

/// Whether a connection from `source` to `destination`'s `port` is allowed: the source's
/// egress, then the destination's ingress (each only when that end is a pod).
pub fn connection(
    policies: &[Policy],
    source: &Endpoint<'_>,
    destination: &Endpoint<'_>,
    port: u16,
    protocol: Protocol,
) -> Verdict {
    if let Some(pod) = &source.pod
        && let denied @ Verdict::Denied(_) = check(
            policies,
            Direction::Egress,
            pod,
            destination,
            port,
            protocol,
        )
    {
        return denied;
    }
    match &destination.pod {
        Some(pod) => check(policies, Direction::Ingress, pod, source, port, protocol),
        None => Verdict::Allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(namespace: &str, name: &str, spec: serde_json::Value) -> Policy {
        let object: net::NetworkPolicy = serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec}),
        )
        .unwrap();
        Policy::compile(&object).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    struct Pod {
        namespace: &'static str,
        labels: BTreeMap<String, String>,
        namespace_labels: BTreeMap<String, String>,
        ports: Vec<(String, u16, Protocol)>,
        ip: Ipv4Addr,
    }

    impl Pod {
        fn new(namespace: &'static str, app: &str, ip: [u8; 4]) -> Self {
            Self {
                namespace,
                labels: labels(&[("app", app)]),
                namespace_labels: labels(&[("team", namespace)]),
                ports: vec![("db".into(), 5432, Protocol::Tcp)],
                ip: Ipv4Addr::from(ip),
            }
        }

        fn at(&self) -> Endpoint<'_> {
            Endpoint {
                ip: self.ip,
                names: &[],
                pod: Some(PodRef {
                    namespace: self.namespace,
                    labels: &self.labels,
                    namespace_labels: &self.namespace_labels,
                    ports: &self.ports,
                }),
            }
        }
    }

    fn outside(ip: [u8; 4]) -> Endpoint<'static> {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            pod: None,
            names: &[],
        }
    }

    #[test]
    fn without_policies_everything_is_allowed() {
        let (a, b) = (
            Pod::new("a", "web", [10, 0, 0, 1]),
            Pod::new("b", "db", [10, 0, 0, 2]),
        );
        assert_eq!(
            connection(&[], &a.at(), &b.at(), 80, Protocol::Tcp),
            Verdict::Allowed
        );
    }

    #[test]
    fn a_namespace_isolated_to_itself() {
        let policies = [policy(
            "a",
            "same-namespace",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        )];
        let web = Pod::new("a", "web", [10, 0, 0, 1]);
        let db = Pod::new("a", "db", [10, 0, 0, 2]);
        let other = Pod::new("b", "web", [10, 0, 1, 1]);
        assert_eq!(
            connection(&policies, &web.at(), &db.at(), 5432, Protocol::Tcp),
            Verdict::Allowed
        );
        assert_eq!(
            connection(&policies, &other.at(), &db.at(), 5432, Protocol::Tcp),
            Verdict::Denied(vec!["a/same-namespace".into()])
        );
        // Egress from the isolated namespace is not restricted (an Ingress policy only).
        assert_eq!(
            connection(&policies, &db.at(), &other.at(), 80, Protocol::Tcp),
            Verdict::Allowed
        );
        assert!(matches!(
            connection(
                &policies,
                &outside([192, 0, 2, 1]),
                &db.at(),
                5432,
                Protocol::Tcp
            ),
            Verdict::Denied(_)
        ));
    }

    #[test]
    fn rules_add_up_across_policies_and_pick_peers_and_ports() {
        let policies = [
            policy(
                "a",
                "db-from-web",
                json!({"podSelector": {"matchLabels": {"app": "db"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                    "ports": [{"port": "db"}]}]}),
            ),
            policy(
                "a",
                "db-from-team-b",
                json!({"podSelector": {"matchLabels": {"app": "db"}},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}},
                                              "podSelector": {"matchLabels": {"app": "batch"}}}],
                                    "ports": [{"port": 5000, "endPort": 5010, "protocol": "UDP"}]}]}),
            ),
        ];
        let db = Pod::new("a", "db", [10, 0, 0, 2]);
        let web = Pod::new("a", "web", [10, 0, 0, 1]);
        let batch = Pod::new("b", "batch", [10, 0, 1, 1]);
        let web_b = Pod::new("b", "web", [10, 0, 1, 2]);
        let tcp = Protocol::Tcp;
        assert_eq!(
            connection(&policies, &web.at(), &db.at(), 5432, tcp),
            Verdict::Allowed
        );
        assert!(matches!(
            connection(&policies, &web.at(), &db.at(), 22, tcp),
            Verdict::Denied(_)
        ));
        assert_eq!(
            connection(&policies, &batch.at(), &db.at(), 5005, Protocol::Udp),
            Verdict::Allowed
        );
        assert!(matches!(
            connection(&policies, &batch.at(), &db.at(), 5011, Protocol::Udp),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            connection(&policies, &batch.at(), &db.at(), 5005, tcp),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            connection(&policies, &web_b.at(), &db.at(), 5005, Protocol::Udp),
            Verdict::Denied(_)
        ));
        // Pods the policies do not select are not isolated.
        assert_eq!(
            connection(&policies, &batch.at(), &web.at(), 80, tcp),
            Verdict::Allowed
        );
    }

    #[test]
    fn egress_by_address_block() {
        let policies = [policy(
            "a",
            "egress",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}]}]}),
        )];
        let web = Pod::new("a", "web", [10, 0, 0, 1]);
        let tcp = Protocol::Tcp;
        assert_eq!(
            connection(&policies, &web.at(), &outside([192, 0, 2, 7]), 443, tcp),
            Verdict::Allowed
        );
        assert!(matches!(
            connection(&policies, &web.at(), &outside([192, 0, 2, 200]), 443, tcp),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            connection(&policies, &web.at(), &outside([198, 51, 100, 1]), 443, tcp),
            Verdict::Denied(_)
        ));
        // Ingress is untouched by an Egress-only policy.
        assert_eq!(
            connection(&policies, &outside([198, 51, 100, 1]), &web.at(), 80, tcp),
            Verdict::Allowed
        );
    }

    #[test]
    fn hosts_by_name() {
        let object: net::NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "names", "namespace": "a",
                         "annotations": {EGRESS_HOSTS_ANNOTATION: "api.example.com, *.corp.internal"}},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]}
        }))
        .unwrap();
        let policies = [Policy::compile(&object).unwrap()];
        let web = Pod::new("a", "web", [10, 0, 0, 1]);
        let resolved = |names: &'static [String]| Endpoint {
            ip: Ipv4Addr::from([192, 0, 2, 9]),
            pod: None,
            names,
        };
        static API: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["API.example.com.".to_string()]);
        static DEEP: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["db.eu.corp.internal".to_string()]);
        static OTHER: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
            vec!["corp.internal".to_string(), "example.com".to_string()]
        });
        let tcp = Protocol::Tcp;
        assert_eq!(
            connection(&policies, &web.at(), &resolved(&API), 443, tcp),
            Verdict::Allowed
        );
        assert_eq!(
            connection(&policies, &web.at(), &resolved(&DEEP), 5432, tcp),
            Verdict::Allowed
        );
        assert!(matches!(
            connection(&policies, &web.at(), &resolved(&OTHER), 443, tcp),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            connection(&policies, &web.at(), &resolved(&[]), 443, tcp),
            Verdict::Denied(_)
        ));
    }

    #[test]
    fn default_deny_isolates_both_ways() {
        let policies = [policy(
            "a",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        )];
        let (web, db) = (
            Pod::new("a", "web", [10, 0, 0, 1]),
            Pod::new("a", "db", [10, 0, 0, 2]),
        );
        assert_eq!(
            connection(&policies, &web.at(), &db.at(), 5432, Protocol::Tcp),
            Verdict::Denied(vec!["a/deny".into()])
        );
    }
}
