//! Cluster names: what `NAME`, `NAME.NAMESPACE`, `NAME.NAMESPACE.svc` and
//! `NAME.NAMESPACE.svc.<cluster domain>` mean to a pod.
//!
//! The [`Resolver`] holds a [`Directory`] of the cluster's Services (their cluster IPs, or the
//! ready endpoints of headless ones), replaced whole by the agent's service watch on every
//! change. It answers in memory; it is the one place names are resolved, so the Wasm guests'
//! `wasi:sockets/ip-name-lookup` (the runtime asks it first and falls back to the node's own
//! resolver for other names) and a DNS responder for Linux containers can share it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

/// Where a Service's name points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    ClusterIp(Ipv4Addr),
    /// A headless Service: its ready endpoints' addresses.
    Headless(Vec<Ipv4Addr>),
}

/// A Service as pods see it: its name's target and its ports (for the environment variables
/// Kubernetes gives containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub target: Target,
    /// (name, port, protocol) of each port.
    pub ports: Vec<(String, u16, String)>,
}

/// Every Service, by (namespace, name).
pub type Directory = BTreeMap<(String, String), ServiceEntry>;

/// What a name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A cluster name: these addresses (none for a headless Service without ready endpoints).
    Cluster(Vec<Ipv4Addr>),
    /// Not a Service's name: ask the node's resolver.
    Elsewhere,
}

pub struct Resolver {
    domain: String,
    directory: RwLock<Arc<Directory>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver for the cluster domain `domain` (`cluster.local`), with no Services yet.
    pub fn new(domain: &str) -> Self {
        Self {
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            directory: RwLock::new(Arc::default()),
        }
    }

    /// Replaces what the resolver knows.
    pub fn update(&self, directory: Directory) {
        *self.directory.write().unwrap() = Arc::new(directory);
    }

    /// The Services as last updated.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.read().unwrap().clone()
    }

    /// Resolves `name` for a pod in `namespace`, as the pod's resolv.conf search path
    /// (`<namespace>.svc.<domain> svc.<domain> <domain>`) would.
    pub fn lookup(&self, name: &str, namespace: &str) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = name.split('.').collect();
        let domain: Vec<&str> = self.domain.split('.').collect();
        let local = labels.len() > domain.len() && labels.ends_with(&domain);
        let labels = if local {
            &labels[..labels.len() - domain.len()]
        } else {
            &labels[..]
        };
        let (service, in_namespace) = match labels {
            [service] if !local => (*service, namespace),
            [service, ns] if !local => (*service, *ns),
            [service, ns, "svc"] => (*service, *ns),
            _ => return Answer::Elsewhere,
        };
        let directory = self.directory();
        match directory.get(&(in_namespace.to_string(), service.to_string())) {
            Some(entry) => Answer::Cluster(match &entry.target {
                Target::ClusterIp(ip) => vec![*ip],
                Target::Headless(ips) => ips.clone(),
            }),
            None => Answer::Elsewhere,
        }
    }
}

/// A pod's view of names: the node's resolver and the pod's namespace.
#[derive(Clone)]
pub struct PodNames {
    pub resolver: Arc<Resolver>,
    pub namespace: String,
    /// The pod's address, and the policies told what its lookups outside the cluster
    /// answered (for egress by name).
    pub pod_ip: std::net::Ipv4Addr,
    pub policies: Option<Arc<super::netpol::NetworkPolicies>>,
}

impl std::fmt::Debug for PodNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNames")
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// Kubernetes' service environment variables of the Services `wanted(namespace, name)`
/// picks: for each with a cluster IP, `{NAME}_SERVICE_HOST`, `{NAME}_SERVICE_PORT[_{PORT}]`
/// and the Docker-link style `{NAME}_PORT…` ones.
pub fn service_env(
    directory: &Directory,
    wanted: impl Fn(&str, &str) -> bool,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for ((ns, name), entry) in directory {
        let Target::ClusterIp(ip) = entry.target else {
            continue;
        };
        if !wanted(ns, name) || entry.ports.is_empty() {
            continue;
        }
        let prefix = name.to_ascii_uppercase().replace('-', "_");
        env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        let (_, first, first_proto) = &entry.ports[0];
        env.push((format!("{prefix}_SERVICE_PORT"), first.to_string()));
        for (port_name, port, _) in &entry.ports {
            if !port_name.is_empty() {
                let port_name = port_name.to_ascii_uppercase().replace('-', "_");
                env.push((
                    format!("{prefix}_SERVICE_PORT_{port_name}"),
                    port.to_string(),
                ));
            }
        }
        env.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{first}", first_proto.to_ascii_lowercase()),
        ));
        for (_, port, protocol) in &entry.ports {
            let link = format!("{prefix}_PORT_{port}_{}", protocol.to_ascii_uppercase());
            env.push((
                link.clone(),
                format!("{}://{ip}:{port}", protocol.to_ascii_lowercase()),
            ));
            env.push((format!("{link}_PROTO"), protocol.to_ascii_lowercase()));
            env.push((format!("{link}_PORT"), port.to_string()));
            env.push((format!("{link}_ADDR"), ip.to_string()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> Resolver {
        let resolver = Resolver::new("cluster.local");
        let mut directory = Directory::new();
        directory.insert(
            ("shop".into(), "web-api".into()),
            ServiceEntry {
                target: Target::ClusterIp("10.89.0.7".parse().unwrap()),
                ports: vec![
                    ("http".into(), 80, "TCP".into()),
                    ("dns".into(), 53, "UDP".into()),
                ],
            },
        );
        directory.insert(
            ("shop".into(), "db".into()),
            ServiceEntry {
                target: Target::Headless(vec![
                    "10.88.0.2".parse().unwrap(),
                    "10.88.1.2".parse().unwrap(),
                ]),
                ports: vec![],
            },
        );
        resolver.update(directory);
        resolver
    }

    #[test]
    fn every_kubernetes_form_of_a_service_name_resolves() {
        let r = resolver();
        let ip = Answer::Cluster(vec!["10.89.0.7".parse().unwrap()]);
        assert_eq!(r.lookup("web-api", "shop"), ip);
        assert_eq!(r.lookup("web-api.shop", "other"), ip);
        assert_eq!(r.lookup("web-api.shop.svc", "other"), ip);
        assert_eq!(r.lookup("Web-Api.shop.svc.cluster.local.", "other"), ip);
        assert_eq!(
            r.lookup("web-api", "other"),
            Answer::Elsewhere,
            "another namespace's"
        );
        assert_eq!(
            r.lookup("web-api.shop.cluster.local", "shop"),
            Answer::Elsewhere
        );
        assert_eq!(r.lookup("example.com", "shop"), Answer::Elsewhere);
        assert_eq!(
            r.lookup("db.shop.svc.cluster.local", "x"),
            Answer::Cluster(vec![
                "10.88.0.2".parse().unwrap(),
                "10.88.1.2".parse().unwrap()
            ])
        );
    }

    #[test]
    fn containers_get_kubernetes_service_variables() {
        let env = service_env(&resolver().directory(), |ns, _| ns == "shop");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("WEB_API_SERVICE_HOST"), Some("10.89.0.7"));
        assert_eq!(get("WEB_API_SERVICE_PORT"), Some("80"));
        assert_eq!(get("WEB_API_SERVICE_PORT_DNS"), Some("53"));
        assert_eq!(get("WEB_API_PORT"), Some("tcp://10.89.0.7:80"));
        assert_eq!(get("WEB_API_PORT_53_UDP_ADDR"), Some("10.89.0.7"));
        assert_eq!(
            get("DB_SERVICE_HOST"),
            None,
            "headless Services have no variables"
        );
        assert!(service_env(&resolver().directory(), |ns, _| ns == "other").is_empty());
    }
}
