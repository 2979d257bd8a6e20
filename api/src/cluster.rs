//! The cluster-wide settings every component must agree on, and where they are published: the
//! first server writes them to the ConfigMap `kube-system/bosun-cluster`; later servers on the
//! same datastore must have the same ones, and nodes read them from there instead of repeating
//! the server's flags (a node's own flags are only overrides, checked against these).

use std::collections::BTreeMap;

use crate::cidr::Ipv4Cidr;

/// The ConfigMap's namespace and name.
pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "bosun-cluster";

const CLUSTER_CIDR: &str = "clusterCIDR";
const SERVICE_CIDR: &str = "serviceCIDR";

/// The cluster's address blocks (the server's `--cluster-cidr` and `--service-cidr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    /// Pods' addresses; each node gets a block of it.
    pub cluster_cidr: Ipv4Cidr,
    /// Services' cluster IPs.
    pub service_cidr: Ipv4Cidr,
}

impl Default for Blocks {
    fn default() -> Self {
        Self {
            cluster_cidr: "10.88.0.0/16".parse().expect("a valid block"),
            service_cidr: "10.89.0.0/16".parse().expect("a valid block"),
        }
    }
}

/// Why the published settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the ConfigMap {NAMESPACE}/{NAME} has no {0}")]
    Missing(&'static str),
    #[error("the ConfigMap {NAMESPACE}/{NAME} has an invalid {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error(
        "{flag} {given} disagrees with the cluster's {published} (kept in {NAMESPACE}/{NAME}); leave the flag out or give the cluster's value"
    )]
    Disagrees {
        flag: &'static str,
        given: Ipv4Cidr,
        published: Ipv4Cidr,
    },
}

impl Blocks {
    /// The ConfigMap's `data`.
    pub fn to_data(self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CLUSTER_CIDR.to_string(), self.cluster_cidr.to_string()),
            (SERVICE_CIDR.to_string(), self.service_cidr.to_string()),
        ])
    }

    /// From the ConfigMap's `data`.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, Error> {
        let block = |key: &'static str| -> Result<Ipv4Cidr, Error> {
            data.get(key)
                .ok_or(Error::Missing(key))?
                .parse()
                .map_err(|e: crate::cidr::Error| Error::Invalid {
                    key,
                    reason: e.to_string(),
                })
        };
        Ok(Self {
            cluster_cidr: block(CLUSTER_CIDR)?,
            service_cidr: block(SERVICE_CIDR)?,
        })
    }

    /// These blocks, unless a component's own flags say otherwise: the flags must agree.
    pub fn check(
        self,
        cluster_cidr: Option<Ipv4Cidr>,
        service_cidr: Option<Ipv4Cidr>,
    ) -> Result<Self, Error> {
        for (flag, given, published) in [
            ("--cluster-cidr", cluster_cidr, self.cluster_cidr),
            ("--service-cidr", service_cidr, self.service_cidr),
        ] {
            if let Some(given) = given
                && given != published
            {
                return Err(Error::Disagrees {
                    flag,
                    given,
                    published,
                });
            }
        }
        Ok(self)
    }
}

/// The host's first non-loopback IPv4 address, where other machines reach it: the kernel's
/// routing choice, read as the source address of a UDP socket "connected" to a public
/// address (a system call only; nothing is sent). The default of a node's InternalIP and of
/// the API server's advertised address.
pub fn host_address() -> std::io::Result<std::net::Ipv4Addr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    if socket.connect("192.0.2.1:9").is_ok()
        && let Ok(std::net::SocketAddr::V4(addr)) = socket.local_addr()
        && !addr.ip().is_unspecified()
    {
        return Ok(*addr.ip());
    }
    Ok(std::net::Ipv4Addr::LOCALHOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_flags_must_agree() {
        let blocks = Blocks::default();
        assert_eq!(Blocks::from_data(&blocks.to_data()), Ok(blocks));
        assert_eq!(blocks.check(None, None), Ok(blocks));
        assert_eq!(blocks.check(Some(blocks.cluster_cidr), None), Ok(blocks));
        let other = "10.1.0.0/16".parse().unwrap();
        let err = blocks.check(Some(other), None).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "--cluster-cidr 10.1.0.0/16 disagrees with the cluster's 10.88.0.0/16"
            ),
            "{err}"
        );
        assert!(blocks.check(None, Some(other)).is_err());
        let mut bad = blocks.to_data();
        bad.insert("serviceCIDR".into(), "nonsense".into());
        assert!(matches!(
            Blocks::from_data(&bad),
            Err(Error::Invalid {
                key: "serviceCIDR",
                ..
            })
        ));
        bad.remove("clusterCIDR");
        assert_eq!(Blocks::from_data(&bad), Err(Error::Missing("clusterCIDR")));
    }
}
