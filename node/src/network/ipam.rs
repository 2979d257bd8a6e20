//! Pod IP addresses out of the node's `spec.podCIDR`, kept on disk so that an agent that
//! restarts (even after `kill -9`) neither leaks an address nor hands out one a live pod has.
//!
//! One file per address in use, `<dir>/<ip>`, holding the pod UID; it is created with
//! `O_EXCL`, so two allocations can never get the same address. Addresses go round-robin
//! (the next after the last one handed out, as CNI's host-local does), so that a freed address
//! is not reused at once by a new pod that old connections might then reach.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use bosun_api::cidr::Ipv4Cidr;

pub struct Ipam {
    dir: PathBuf,
    block: Ipv4Cidr,
}

impl Ipam {
    /// Addresses of `block` recorded under `dir` (made if missing). The block's first address
    /// is the network, its second the gateway (the node's bridge), its last the broadcast:
    /// pods get the others.
    pub fn open(dir: &Path, block: Ipv4Cidr) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            block,
        })
    }

    pub fn block(&self) -> Ipv4Cidr {
        self.block
    }

    /// The bridge's address: the block's first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.block.nth(1).expect("a block of at least 4 addresses")
    }

    /// Every recorded address and the pod UID holding it.
    pub fn records(&self) -> Vec<(Ipv4Addr, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut records: Vec<(Ipv4Addr, String)> = entries
            .flatten()
            .filter_map(|e| {
                let ip: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
                let uid = std::fs::read_to_string(e.path()).ok()?;
                Some((ip, uid.trim().to_string()))
            })
            .collect();
        records.sort();
        records
    }

    /// The address `uid` holds, if any.
    pub fn find(&self, uid: &str) -> Option<Ipv4Addr> {
        self.records()
            .into_iter()
            .find(|(ip, holder)| holder == uid && self.block.contains(*ip))
            .map(|(ip, _)| ip)
    }

    /// The address `uid` holds, or a new one for it.
    pub fn allocate(&self, uid: &str) -> std::io::Result<Ipv4Addr> {
        if let Some(ip) = self.find(uid) {
            return Ok(ip);
        }
        let first = 2u64;
        let last = self.block.size().saturating_sub(2);
        let start = self
            .last_reserved()
            .and_then(|ip| self.block.index_of(ip))
            .filter(|i| (first..=last).contains(i))
            .map_or(first, |i| if i >= last { first } else { i + 1 });
        let span = last + 1 - first;
        for offset in 0..span {
            let index = first + (start - first + offset) % span;
            let ip = self.block.nth(index).expect("index inside the block");
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.dir.join(ip.to_string()))
            {
                // No fsync: the records must survive the agent (a `kill -9` leaves the page
                // cache), not the machine, whose restart takes every namespace with it.
                Ok(mut file) => {
                    file.write_all(uid.as_bytes())?;
                    let _ = std::fs::write(self.dir.join("last_reserved"), ip.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "no pod address left in {} ({} in use)",
            self.block,
            self.records().len()
        )))
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        std::fs::read_to_string(self.dir.join("last_reserved"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Frees `ip` (nothing if it is not recorded).
    pub fn release(&self, ip: Ipv4Addr) {
        match std::fs::remove_file(self.dir.join(ip.to_string())) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(%ip, %error, "cannot free a pod address"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &Path, block: &str) -> Ipam {
        Ipam::open(dir, block.parse().unwrap()).unwrap()
    }

    #[test]
    fn hands_out_each_address_once_and_keeps_them_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ipam(dir.path(), "10.88.3.0/24");
        assert_eq!(a.gateway().to_string(), "10.88.3.1");
        let first = a.allocate("pod-a").unwrap();
        assert_eq!(first.to_string(), "10.88.3.2");
        assert_eq!(
            a.allocate("pod-a").unwrap(),
            first,
            "the same pod, the same address"
        );
        let second = a.allocate("pod-b").unwrap();
        assert_eq!(second.to_string(), "10.88.3.3");
        // A restarted agent reads the same records.
        let b = ipam(dir.path(), "10.88.3.0/24");
        assert_eq!(b.find("pod-a"), Some(first));
        assert_eq!(b.allocate("pod-c").unwrap().to_string(), "10.88.3.4");
        assert_eq!(b.records().len(), 3);
    }

    #[test]
    fn round_robin_does_not_reuse_a_freed_address_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = ipam(dir.path(), "10.88.3.0/24");
        let first = a.allocate("pod-a").unwrap();
        a.release(first);
        assert_eq!(a.find("pod-a"), None);
        assert_eq!(a.allocate("pod-b").unwrap().to_string(), "10.88.3.3");
    }

    #[test]
    fn a_full_block_says_so_and_wraps_around() {
        let dir = tempfile::tempdir().unwrap();
        // A /29: network .0, gateway .1, broadcast .7, pods .2 to .6.
        let a = ipam(dir.path(), "10.88.3.0/29");
        let ips: Vec<_> = (0..5)
            .map(|i| a.allocate(&format!("p{i}")).unwrap())
            .collect();
        assert_eq!(ips.last().unwrap().to_string(), "10.88.3.6");
        let error = a.allocate("one-too-many").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no pod address left in 10.88.3.0/29"),
            "{error}"
        );
        a.release(ips[1]);
        assert_eq!(
            a.allocate("again").unwrap(),
            ips[1],
            "wraps around to the free one"
        );
    }
}
