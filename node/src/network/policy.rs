//! Which addresses a guest's sockets may use: [`SocketPolicy`], consulted by the wasmtime
//! runtime for every bind, connect and datagram (wasi:sockets' address check).
//!
//! The rules (ARCHITECTURE.md, "Pod network"):
//! - bind: the wildcard address, loopback, or the pod's own IP (a port of its own namespace);
//! - listen, accept and receive: always (who may reach the pod is ingress policy, not the
//!   guest's);
//! - connect and send: loopback and the pod's own IP; inside the cluster's pod and service
//!   blocks, what the NetworkPolicies allow ([`super::netpol`]); outside them, only when the
//!   pod allows egress (the `bosun.dev/egress: allow` annotation) or an egress rule of a
//!   NetworkPolicy that isolates the pod allows it: the annotation is one more allow rule.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bosun_api::cidr::Ipv4Cidr;

/// The pod annotation that lets a pod's guests connect outside the cluster.
pub const EGRESS_ANNOTATION: &str = "bosun.dev/egress";

/// What a socket address is used for (wasmtime-wasi's `SocketAddrUse`, without the
/// dependency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Bind,
    Listen,
    /// Accepting a connection or receiving a datagram from the address.
    Accept,
    Connect,
    Send,
}

/// Why a guest may not use an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{0} is outside the pod network")]
    NotIpv4(SocketAddr),
    #[error("cannot bind {addr}: a pod binds only its own IP {pod_ip}, loopback or 0.0.0.0")]
    ForeignBind { addr: SocketAddr, pod_ip: Ipv4Addr },
    #[error(
        "{addr} is outside the cluster ({cluster_cidr} pods, {service_cidr} services), the pod does not allow egress (annotation {EGRESS_ANNOTATION}: allow), and no NetworkPolicy egress rule allows it"
    )]
    Egress {
        addr: SocketAddr,
        cluster_cidr: Ipv4Cidr,
        service_cidr: Ipv4Cidr,
    },
    #[error("{addr} is denied by NetworkPolicy {}", .policies.join(", "))]
    NetworkPolicy {
        addr: SocketAddr,
        policies: Vec<String>,
    },
}

/// One pod's socket rules.
#[derive(Debug, Clone)]
pub struct SocketPolicy {
    pub pod_ip: Ipv4Addr,
    pub cluster_cidr: Ipv4Cidr,
    pub service_cidr: Ipv4Cidr,
    /// Whether the pod may connect outside the cluster.
    pub egress: bool,
    /// The cluster's NetworkPolicies, as the node follows them.
    pub policies: Option<Arc<super::netpol::NetworkPolicies>>,
}

impl SocketPolicy {
    /// `Ok` if the guest may use `addr` this way, else why not (for the node's log).
    pub fn check(&self, addr: SocketAddr, use_: Use) -> Result<(), Denied> {
        let ip = match addr.ip() {
            IpAddr::V4(ip) => ip,
            // An IPv4-mapped IPv6 address is its IPv4 address; other IPv6 is outside the
            // pod network (IPv4 only for now), so it is egress (except loopback).
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(ip) => ip,
                None if v6.is_loopback() || (v6.is_unspecified() && use_ == Use::Bind) => {
                    return Ok(());
                }
                None if self.egress && matches!(use_, Use::Connect | Use::Send) => return Ok(()),
                None => return Err(Denied::NotIpv4(addr)),
            },
        };
        match use_ {
            Use::Listen | Use::Accept => Ok(()),
            Use::Bind if ip.is_unspecified() || ip.is_loopback() || ip == self.pod_ip => Ok(()),
            Use::Bind => Err(Denied::ForeignBind {
                addr,
                pod_ip: self.pod_ip,
            }),
            Use::Connect | Use::Send => {
                if ip.is_loopback() || ip == self.pod_ip {
                    return Ok(());
                }
                let protocol = match use_ {
                    Use::Connect => bosun_api::netpol::Protocol::Tcp,
                    _ => bosun_api::netpol::Protocol::Udp,
                };
                let target = SocketAddr::from((ip, addr.port()));
                let inside = self.cluster_cidr.contains(ip) || self.service_cidr.contains(ip);
                match &self.policies {
                    Some(policies) if inside => policies
                        .check(self.pod_ip, target, protocol)
                        .map_err(|policies| Denied::NetworkPolicy { addr, policies }),
                    _ if inside || self.egress => Ok(()),
                    Some(policies) if policies.allows_outside(self.pod_ip, target, protocol) => {
                        Ok(())
                    }
                    _ => Err(Denied::Egress {
                        addr,
                        cluster_cidr: self.cluster_cidr,
                        service_cidr: self.service_cidr,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(egress: bool) -> SocketPolicy {
        SocketPolicy {
            pod_ip: "10.88.0.5".parse().unwrap(),
            cluster_cidr: "10.88.0.0/16".parse().unwrap(),
            service_cidr: "10.89.0.0/16".parse().unwrap(),
            egress,
            policies: None,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn binds_only_its_own_addresses() {
        let p = policy(true);
        for ok in [
            "0.0.0.0:80",
            "127.0.0.1:8080",
            "10.88.0.5:80",
            "[::]:80",
            "[::1]:80",
        ] {
            assert!(p.check(addr(ok), Use::Bind).is_ok(), "{ok}");
        }
        for denied in ["10.88.0.6:80", "192.168.1.1:80", "[2001:db8::1]:80"] {
            assert!(p.check(addr(denied), Use::Bind).is_err(), "{denied}");
        }
    }

    #[test]
    fn connects_inside_the_cluster_and_outside_only_with_egress() {
        let closed = policy(false);
        for ok in [
            "127.0.0.1:1",
            "10.88.0.5:1",
            "10.88.7.9:80",
            "10.89.0.1:443",
            "[::1]:80",
            "[::ffff:10.88.1.2]:80",
        ] {
            assert!(closed.check(addr(ok), Use::Connect).is_ok(), "{ok}");
            assert!(closed.check(addr(ok), Use::Send).is_ok(), "{ok}");
        }
        for outside in ["192.168.77.2:80", "8.8.8.8:53", "[2001:db8::1]:80"] {
            let error = closed.check(addr(outside), Use::Connect).unwrap_err();
            assert!(error.to_string().contains("outside"), "{error}");
            assert!(policy(true).check(addr(outside), Use::Connect).is_ok());
        }
    }

    #[test]
    fn network_policies_judge_the_cluster_and_may_open_the_outside() {
        use super::super::netpol::{NetworkPolicies, PodInfo};
        use std::collections::{BTreeMap, HashMap};
        let (policies, _denials) = NetworkPolicies::new();
        let egress: k8s_openapi::api::networking::v1::NetworkPolicy =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "out", "namespace": "a"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                         "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}
            }))
            .unwrap();
        let web = PodInfo {
            namespace: "a".into(),
            name: "web".into(),
            uid: "u".into(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
        };
        policies.set(
            HashMap::from([("10.88.0.5".parse().unwrap(), web)]),
            HashMap::new(),
            vec![bosun_api::netpol::Policy::compile(&egress).unwrap()],
        );
        let policies = Some(Arc::new(policies));
        let closed = SocketPolicy {
            policies: policies.clone(),
            ..policy(false)
        };
        assert!(closed.check(addr("192.0.2.7:443"), Use::Connect).is_ok());
        assert!(matches!(
            closed.check(addr("198.51.100.1:443"), Use::Connect),
            Err(Denied::Egress { .. })
        ));
        assert!(matches!(
            closed.check(addr("10.88.0.9:80"), Use::Connect),
            Err(Denied::NetworkPolicy { .. })
        ));
        assert!(closed.check(addr("127.0.0.1:80"), Use::Connect).is_ok());
        // The annotation is one more allow rule, for outside the cluster.
        let open = SocketPolicy {
            policies,
            ..policy(true)
        };
        assert!(open.check(addr("198.51.100.1:443"), Use::Connect).is_ok());
        assert!(open.check(addr("10.88.0.9:80"), Use::Connect).is_err());
    }

    #[test]
    fn listening_and_accepting_are_not_the_guests_choice() {
        let p = policy(false);
        assert!(p.check(addr("192.168.77.2:5000"), Use::Accept).is_ok());
        assert!(p.check(addr("0.0.0.0:80"), Use::Listen).is_ok());
    }
}
