//! IPv4 address blocks written the CIDR way (`10.88.0.0/16`): the cluster's pod and service
//! ranges, each node's `spec.podCIDR`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;

/// An IPv4 block: a network address and a prefix length. The address has no host bits set.
/// The arithmetic is `ipnet`'s; this type adds the rules Bosun's flags and objects need (no
/// host bits) and the indexing IPAM uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr(Ipv4Net);

/// Why text is not an IPv4 block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a CIDR block (expected ADDRESS/PREFIX, e.g. 10.88.0.0/16)")]
    NotABlock(String),
    #[error("{address:?} in {input:?} is not an IPv4 address")]
    Address { address: String, input: String },
    #[error("{prefix:?} in {input:?} is not a prefix length")]
    Prefix { prefix: String, input: String },
    #[error("prefix length {0} is over 32")]
    PrefixTooLong(u8),
    #[error("{given} has host bits set (the block is {block})")]
    HostBits { given: String, block: String },
}

impl Ipv4Cidr {
    /// The block `network/prefix`; refuses a prefix over 32 or host bits in `network`.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        let net = Ipv4Net::new(network, prefix).map_err(|_| Error::PrefixTooLong(prefix))?;
        if net.trunc() != net {
            return Err(Error::HostBits {
                given: net.to_string(),
                block: net.trunc().to_string(),
            });
        }
        Ok(Self(net))
    }

    pub fn network(&self) -> Ipv4Addr {
        self.0.network()
    }

    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// How many addresses the block spans (2^(32 - prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix()))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(&ip)
    }

    /// Whether the two blocks share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.0.contains(&other.0) || other.0.contains(&self.0)
    }

    /// The `index`th address of the block (0 is the network address), if the block has it.
    pub fn nth(&self, index: u64) -> Option<Ipv4Addr> {
        (index < self.size()).then(|| Ipv4Addr::from(u32::from(self.network()) + index as u32))
    }

    /// Where `ip` lies in the block (the inverse of [`nth`](Self::nth)).
    pub fn index_of(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip)
            .then(|| u64::from(u32::from(ip) - u32::from(self.network())))
    }

    /// The `index`th sub-block of length `prefix` (`10.88.0.0/16`.subnet(24, 3) is
    /// `10.88.3.0/24`), if there is one.
    pub fn subnet(&self, prefix: u8, index: u64) -> Option<Ipv4Cidr> {
        if index >= self.subnet_count(prefix) {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        let network = Ipv4Addr::from(u32::from(self.network()) + (index * step) as u32);
        Ipv4Cidr::new(network, prefix).ok()
    }

    /// How many sub-blocks of length `prefix` the block holds (0 if `prefix` is shorter).
    pub fn subnet_count(&self, prefix: u8) -> u64 {
        if prefix < self.prefix() || prefix > 32 {
            0
        } else {
            1u64 << (prefix - self.prefix())
        }
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| Error::NotABlock(s.to_string()))?;
        let network: Ipv4Addr = address.parse().map_err(|_| Error::Address {
            address: address.to_string(),
            input: s.to_string(),
        })?;
        let prefix: u8 = prefix.parse().map_err(|_| Error::Prefix {
            prefix: prefix.to_string(),
            input: s.to_string(),
        })?;
        Self::new(network, prefix)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let cidr: Ipv4Cidr = "10.88.0.0/16".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.88.0.0/16");
        assert_eq!(cidr.size(), 65536);
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().size(), 1 << 32);
        assert_eq!("1.2.3.4/32".parse::<Ipv4Cidr>().unwrap().size(), 1);
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        for (input, says) in [
            ("10.88.0.0", "not a CIDR block"),
            ("10.88.0.0/33", "over 32"),
            ("10.88.0.1/16", "host bits set (the block is 10.88.0.0/16)"),
            ("10.888.0.0/16", "not an IPv4 address"),
            ("10.88.0.0/x", "not a prefix length"),
        ] {
            let error = input.parse::<Ipv4Cidr>().unwrap_err().to_string();
            assert!(error.contains(says), "{input}: {error}");
        }
    }

    #[test]
    fn membership_and_addresses() {
        let cidr: Ipv4Cidr = "10.88.3.0/24".parse().unwrap();
        assert!(cidr.contains("10.88.3.255".parse().unwrap()));
        assert!(!cidr.contains("10.88.4.0".parse().unwrap()));
        assert_eq!(cidr.nth(1), Some("10.88.3.1".parse().unwrap()));
        assert_eq!(cidr.nth(256), None);
        assert_eq!(cidr.index_of("10.88.3.7".parse().unwrap()), Some(7));
        assert_eq!(cidr.index_of("10.88.2.7".parse().unwrap()), None);
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("255.255.255.255".parse().unwrap()));
    }

    #[test]
    fn subnets() {
        let cluster: Ipv4Cidr = "10.88.0.0/16".parse().unwrap();
        assert_eq!(cluster.subnet_count(24), 256);
        assert_eq!(cluster.subnet(24, 3).unwrap().to_string(), "10.88.3.0/24");
        assert_eq!(
            cluster.subnet(24, 255).unwrap().to_string(),
            "10.88.255.0/24"
        );
        assert_eq!(cluster.subnet(24, 256), None);
        assert_eq!(cluster.subnet(8, 0), None);
        assert!(cluster.overlaps(&cluster.subnet(24, 9).unwrap()));
        assert!(!cluster.overlaps(&"10.89.0.0/16".parse().unwrap()));
    }
}
