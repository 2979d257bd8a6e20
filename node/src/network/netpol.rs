//! NetworkPolicy enforcement for Wasm guests, at their socket calls: before a guest's TCP
//! connect or UDP send reaches the kernel, [`NetworkPolicies::check`] judges it with
//! `bosun_api::netpol` (the source pod's egress, then the destination pod's ingress), so a
//! denied connection fails in the guest with `access-denied` at once, and no packet is sent.
//!
//! The node keeps what that needs in memory (`agent/netpol.rs` follows it): every pod's
//! address, namespace, labels and named ports, the namespaces' labels, the policies, and the
//! Services' endpoints. A connection to a Service's cluster IP is judged against its endpoints:
//! allowed when every endpoint the proxy may choose is allowed. Traffic from the node itself
//! (the function gateway, probes) is not a pod's and is not judged, as CNI plugins let the
//! kubelet's through. Each denial is handed to the agent, which records a rate-limited
//! `NetworkPolicyDenied` Event on the pod.
//!
//! Egress by name (`bosun.dev/egress-allow-hosts`): guests resolve names through the node
//! (`runtime/wasmtime/names.rs`), which tells [`NetworkPolicies::learn`] what each pod's
//! lookups of names outside the cluster answered; an address a pod got from an allowed name is
//! allowed to that pod for [`LEARNED_FOR`] after the lookup (each lookup renews it), whatever
//! other names share the address.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use bosun_api::netpol::{self, Endpoint, PodRef, Policy, Protocol, Verdict};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

/// A pod as the policies see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// Named container ports: (name, number, protocol).
    pub ports: Vec<(String, u16, Protocol)>,
}

impl PodInfo {
    pub fn of(pod: &Pod) -> Self {
        let ports = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let protocol = Protocol::parse(p.protocol.as_deref())?;
                Some((
                    p.name.clone()?,
                    u16::try_from(p.container_port).ok()?,
                    protocol,
                ))
            })
            .collect();
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ports,
        }
    }
}

/// Everything the checks read, replaced whole on every change.
#[derive(Debug, Default)]
struct State {
    /// Every pod with an address of its own, as the watch has them.
    pods: HashMap<Ipv4Addr, PodInfo>,
    /// This node's pods, as they were given their address (before the watch has them).
    local: HashMap<Ipv4Addr, PodInfo>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    policies: Vec<Policy>,
    /// (cluster IP, port, protocol) → the endpoints the proxy may send to.
    services: HashMap<(Ipv4Addr, u16, Protocol), Vec<SocketAddrV4>>,
}

impl State {
    fn pod(&self, ip: &Ipv4Addr) -> Option<&PodInfo> {
        self.local.get(ip).or_else(|| self.pods.get(ip))
    }
}

/// A connection a policy denied, for the agent's Event.
#[derive(Debug, Clone)]
pub struct Denial {
    pub source: PodInfo,
    pub destination: SocketAddr,
    /// The destination pod, as `namespace/name`, when it is one.
    pub destination_pod: Option<String>,
    /// The policies that isolate the denied end, `namespace/name`.
    pub policies: Vec<String>,
}

/// Denials waiting for the agent; more are dropped (the Events are rate limited anyway).
const DENIALS: usize = 1000;

/// How long an address a pod resolved from a name counts as that name's for its egress.
pub const LEARNED_FOR: Duration = Duration::from_secs(600);

/// (source pod, address) → the names the pod resolved to it, each until when.
type Learned = HashMap<(Ipv4Addr, Ipv4Addr), Vec<(String, Instant)>>;

#[derive(Debug)]
pub struct NetworkPolicies {
    state: RwLock<State>,
    learned: Mutex<Learned>,
    denials: mpsc::Sender<Denial>,
}

impl NetworkPolicies {
    pub fn new() -> (Self, mpsc::Receiver<Denial>) {
        let (denials, rx) = mpsc::channel(DENIALS);
        (
            Self {
                state: RwLock::default(),
                learned: Mutex::default(),
                denials,
            },
            rx,
        )
    }

    /// Replaces the pods, namespaces and policies, keeping the Services.
    pub fn set(
        &self,
        pods: HashMap<Ipv4Addr, PodInfo>,
        namespaces: HashMap<String, BTreeMap<String, String>>,
        policies: Vec<Policy>,
    ) {
        let mut state = self.state.write().expect("policy state not poisoned");
        state.pods = pods;
        state.namespaces = namespaces;
        state.policies = policies;
    }

    /// A pod of this node has been given `ip`: it is known from now on, before the watch
    /// reports its address (an address used again is replaced).
    pub fn add_local(&self, ip: Ipv4Addr, pod: PodInfo) {
        let mut state = self.state.write().expect("policy state not poisoned");
        state.local.insert(ip, pod);
    }

    /// The pod at `source` resolved `name` (outside the cluster) to `addresses`.
    pub fn learn(&self, source: Ipv4Addr, name: &str, addresses: &[IpAddr]) {
        let until = Instant::now() + LEARNED_FOR;
        let mut learned = self.learned.lock().expect("learned names not poisoned");
        learned.retain(|_, names| {
            names.retain(|(_, t)| *t > Instant::now());
            !names.is_empty()
        });
        for address in addresses {
            let IpAddr::V4(address) = address.to_canonical() else {
                continue;
            };
            let names = learned.entry((source, address)).or_default();
            names.retain(|(n, _)| n != name);
            names.push((name.to_string(), until));
        }
    }

    /// The names the pod at `source` resolved to `address`, still current.
    fn names(&self, source: Ipv4Addr, address: Ipv4Addr) -> Vec<String> {
        let learned = self.learned.lock().expect("learned names not poisoned");
        let now = Instant::now();
        learned
            .get(&(source, address))
            .map(|names| {
                names
                    .iter()
                    .filter(|(_, t)| *t > now)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn set_services(&self, services: HashMap<(Ipv4Addr, u16, Protocol), Vec<SocketAddrV4>>) {
        self.state
            .write()
            .expect("policy state not poisoned")
            .services = services;
    }

    /// Whether an egress rule of a policy that isolates the pod at `source` allows
    /// `destination`, an address outside the cluster (where Bosun refuses what nothing
    /// allows, policy or `bosun.dev/egress` annotation).
    pub fn allows_outside(
        &self,
        source: Ipv4Addr,
        destination: SocketAddr,
        protocol: Protocol,
    ) -> bool {
        let SocketAddr::V4(target) = destination else {
            return false;
        };
        let names = self.names(source, *target.ip());
        let state = self.state.read().expect("policy state not poisoned");
        let Some(from) = state.pod(&source) else {
            return false;
        };
        let empty = BTreeMap::new();
        let pod = PodRef {
            namespace: &from.namespace,
            labels: &from.labels,
            namespace_labels: state.namespaces.get(&from.namespace).unwrap_or(&empty),
            ports: &from.ports,
        };
        let peer = Endpoint {
            ip: *target.ip(),
            pod: None,
            names: &names,
        };
        state
            .policies
            .iter()
            .any(|p| p.isolates(&pod, netpol::Direction::Egress))
            && netpol::check(
                &state.policies,
                netpol::Direction::Egress,
                &pod,
                &peer,
                target.port(),
                protocol,
            ) == Verdict::Allowed
    }

    /// Whether the guest of the pod at `source` may connect or send to `destination`; `Err`
    /// names the policies that deny it (and the denial goes to the agent).
    pub fn check(
        &self,
        source: Ipv4Addr,
        destination: SocketAddr,
        protocol: Protocol,
    ) -> Result<(), Vec<String>> {
        let SocketAddr::V4(target) = destination else {
            return Ok(());
        };
        let names = self.names(source, *target.ip());
        let state = self.state.read().expect("policy state not poisoned");
        if state.policies.is_empty() {
            return Ok(());
        }
        let Some(from) = state.pod(&source) else {
            return Ok(());
        };
        let empty = BTreeMap::new();
        let endpoint = |ip: Ipv4Addr| {
            let pod = state.pod(&ip);
            let reference = pod.map(|p| PodRef {
                namespace: &p.namespace,
                labels: &p.labels,
                namespace_labels: state.namespaces.get(&p.namespace).unwrap_or(&empty),
                ports: &p.ports,
            });
            Endpoint {
                ip,
                pod: reference,
                names: &names,
            }
        };
        let targets = match state.services.get(&(*target.ip(), target.port(), protocol)) {
            Some(endpoints) => endpoints.clone(),
            None => vec![target],
        };
        for to in targets {
            if let Verdict::Denied(policies) = netpol::connection(
                &state.policies,
                &endpoint(source),
                &endpoint(*to.ip()),
                to.port(),
                protocol,
            ) {
                let destination_pod = state
                    .pod(to.ip())
                    .map(|p| format!("{}/{}", p.namespace, p.name));
                let _ = self.denials.try_send(Denial {
                    source: from.clone(),
                    destination,
                    destination_pod,
                    policies: policies.clone(),
                });
                return Err(policies);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde_json::json;

    fn pod(namespace: &str, name: &str) -> PodInfo {
        PodInfo {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            ports: Vec::new(),
        }
    }

    #[test]
    fn a_service_is_judged_by_its_endpoints_and_denials_are_reported() {
        let (policies, mut denials) = NetworkPolicies::new();
        let isolated: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "own", "namespace": "a"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
        }))
        .unwrap();
        let web: Ipv4Addr = "10.0.0.1".parse().unwrap();
        let db: Ipv4Addr = "10.0.0.2".parse().unwrap();
        let stranger: Ipv4Addr = "10.0.1.1".parse().unwrap();
        policies.set(
            HashMap::from([
                (web, pod("a", "web")),
                (db, pod("a", "db")),
                (stranger, pod("b", "x")),
            ]),
            HashMap::new(),
            vec![Policy::compile(&isolated).unwrap()],
        );
        let service: Ipv4Addr = "10.96.0.10".parse().unwrap();
        policies.set_services(HashMap::from([(
            (service, 80, Protocol::Tcp),
            vec![SocketAddrV4::new(db, 8080)],
        )]));
        let to = |ip: Ipv4Addr, port: u16| SocketAddr::V4(SocketAddrV4::new(ip, port));
        assert!(policies.check(web, to(db, 8080), Protocol::Tcp).is_ok());
        assert!(policies.check(web, to(service, 80), Protocol::Tcp).is_ok());
        assert_eq!(
            policies.check(stranger, to(service, 80), Protocol::Tcp),
            Err(vec!["a/own".to_string()])
        );
        let denial = denials.try_recv().unwrap();
        assert_eq!(denial.source.name, "x");
        assert_eq!(denial.destination_pod.as_deref(), Some("a/db"));
        // The node's own traffic is not a pod's.
        assert!(
            policies
                .check("10.0.0.254".parse().unwrap(), to(db, 8080), Protocol::Tcp)
                .is_ok()
        );
    }
}
