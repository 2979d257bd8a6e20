//! Route netlink for the changes every pod start and stop makes: its network namespace, its
//! veth pair, its address and its default route. Starting two `ip` processes per pod cost
//! about 10 ms of the pod's start and a fork and exec each on a node starting hundreds of
//! pods; a request here is one message (built with `netlink-packet-route`) and its
//! acknowledgement, over a `netlink-sys` socket.
//!
//! The node's rarer changes (the bridge at start, routes to other nodes, the check after an
//! agent restart) still go through the `ip` command ([`super::ip`]).
//!
//! A netlink socket acts in the network namespace that was its thread's when it was opened,
//! so [`make_pod_netns`] opens one socket before leaving the node's namespace and one after.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::Error;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use rustix::mount::{MountPropagationFlags, UnmountFlags};

/// A route netlink socket in the network namespace its thread was in when it was opened.
pub struct Socket {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl Socket {
    pub fn open() -> io::Result<Self> {
        let socket = netlink_sys::Socket::new(NETLINK_ROUTE)?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends `message` and waits for the kernel's acknowledgement (or its error).
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        loop {
            let (answer, _) = self.socket.recv_from_full()?;
            if let Some(result) = acknowledgement(&answer, self.seq) {
                return result;
            }
        }
    }

    /// Creates the veth pair `name` (here, up, on the bridge `master`) and `peer` (in the
    /// network namespace `peer_netns`, down).
    pub fn add_veth(
        &mut self,
        name: &str,
        master: u32,
        peer: &str,
        peer_netns: &impl AsRawFd,
    ) -> io::Result<()> {
        // Not up yet: the kernel configures the peer before it links the pair, and a veth
        // without its peer refuses to go up (ENOTCONN).
        let mut peer_link = LinkMessage::default();
        peer_link
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        peer_link
            .attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut link = link(0, true);
        link.attributes.extend([
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Controller(master),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_link))),
            ]),
        ]);
        self.request(
            RouteNetlinkMessage::NewLink(link),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes the interface `name` (a veth takes its peer with it).
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut link = link(0, false);
        link.attributes
            .push(LinkAttribute::IfName(name.to_string()));
        self.request(RouteNetlinkMessage::DelLink(link), 0)
    }

    /// Sets the interface with index `index` up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.request(RouteNetlinkMessage::NewLink(link(index, true)), 0)
    }

    /// Adds `address/prefix` to the interface with index `index`.
    pub fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.index = index;
        message.attributes = vec![
            AddressAttribute::Local(IpAddr::V4(address)),
            AddressAttribute::Address(IpAddr::V4(address)),
        ];
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds the default route via `gateway` to the main table.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }
}

/// A link message for the interface `index` (0: named by an attribute), set up or with its
/// flags untouched.
fn link(index: u32, up: bool) -> LinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    if up {
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
    }
    link
}

/// The result in a batch of netlink messages that answers request `seq`, if there is one.
fn acknowledgement(mut bytes: &[u8], seq: u32) -> Option<io::Result<()>> {
    while !bytes.is_empty() {
        let message = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            Ok(message) => message,
            Err(e) => return Some(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
        };
        if let NetlinkPayload::Error(error) = &message.payload
            && message.header.sequence_number == seq
        {
            return Some(match error.code {
                None => Ok(()),
                Some(_) => Err(error.to_io()),
            });
        }
        let len = message.header.length as usize;
        if len == 0 {
            break;
        }
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    None
}

/// Makes `dir` (where named namespaces are mounted) a shared mount point, as `ip netns add`
/// does, so that a namespace mounted there later shows in every mount namespace.
pub fn prepare_netns_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let shared = || {
        rustix::mount::mount_change(
            dir,
            MountPropagationFlags::SHARED | MountPropagationFlags::REC,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: make it one, on itself.
        Err(rustix::io::Errno::INVAL) => {
            rustix::mount::mount_bind_recursive(dir, dir)?;
            Ok(shared()?)
        }
        Err(e) => Err(e.into()),
    }
}

/// What a pod's network is made of.
pub struct PodNetworkSpec<'a> {
    /// Where the namespace is mounted (`/run/netns/<name>`).
    pub path: &'a Path,
    /// The node's end of the veth pair.
    pub veth: &'a str,
    /// The bridge the node's end joins.
    pub bridge: &'a str,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// Makes a network namespace mounted at `spec.path`, with loopback up and `eth0` holding
/// the pod's address and default route, joined by a veth pair to the bridge. Runs on a
/// thread of its own, which leaves the node's namespace for the new one and then ends, so no
/// other code runs in the wrong namespace. On error part of it may exist: tear it down.
pub fn make_pod_netns(spec: &PodNetworkSpec<'_>) -> Result<(), Error> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("pod-netns".into())
            .spawn_scoped(scope, || make_pod_netns_here(spec))
            .map_err(Error::io("cannot start a thread"))?
            .join()
            .map_err(|_| Error::Panicked("the network namespace setup"))?
    })
}

fn make_pod_netns_here(spec: &PodNetworkSpec<'_>) -> Result<(), Error> {
    let mut node = Socket::open().map_err(Error::io("cannot open a netlink socket"))?;
    let bridge = interface_index(spec.bridge)
        .map_err(Error::io(format!("cannot find the bridge {}", spec.bridge)))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(spec.path)
        .map_err(Error::io(format!("cannot create {}", spec.path.display())))?;
    // SAFETY: only the network namespace is unshared, not the file table, and only for this
    // thread, which ends after this function.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(|e| Error::io("cannot make a network namespace")(e.into()))?;
    let own = "/proc/thread-self/ns/net";
    rustix::mount::mount_bind(own, spec.path)
        .map_err(|e| Error::io(format!("cannot mount {}", spec.path.display()))(e.into()))?;
    let netns = std::fs::File::open(own).map_err(Error::io("cannot open the new namespace"))?;
    let mut pod = Socket::open().map_err(Error::io("cannot open a netlink socket"))?;
    // A new namespace's loopback is always its first interface.
    pod.set_up(1).map_err(Error::io("cannot set lo up"))?;
    node.add_veth(spec.veth, bridge, "eth0", &netns)
        .map_err(Error::io(format!("cannot add the veth pair {}", spec.veth)))?;
    let eth0 = interface_index("eth0").map_err(Error::io("cannot find eth0"))?;
    pod.add_address(eth0, spec.address, spec.prefix)
        .map_err(Error::io(format!("cannot add {} to eth0", spec.address)))?;
    pod.set_up(eth0).map_err(Error::io("cannot set eth0 up"))?;
    pod.add_default_route(spec.gateway)
        .map_err(Error::io(format!("cannot route via {}", spec.gateway)))?;
    Ok(())
}

/// Removes the namespace mounted at `path`: `Ok(false)` if there was none.
pub fn remove_netns(path: &Path) -> io::Result<bool> {
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        // EINVAL: not a mount point (a setup that stopped before mounting).
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The index of the interface `name` in the calling thread's network namespace.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let name = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: the string is NUL-terminated and lives for the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::ErrorMessage;

    fn answer(seq: u32, code: i32) -> Vec<u8> {
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(code);
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut message =
            NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Error(error));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    #[test]
    fn acknowledgements_are_matched_to_their_request() {
        assert!(acknowledgement(&answer(3, 0), 3).unwrap().is_ok());
        let error = acknowledgement(&answer(3, -libc::EEXIST), 3).unwrap();
        assert_eq!(error.unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert!(acknowledgement(&answer(2, 0), 3).is_none());
        let mut both = answer(2, -libc::EPERM);
        both.extend(answer(3, 0));
        assert!(acknowledgement(&both, 3).unwrap().is_ok());
        assert!(acknowledgement(&[1, 2, 3], 3).unwrap().is_err());
    }
}

/// The real kernel: a namespace with its veth pair on a bridge of the test's own, checked
/// with `ip`, then removed. Needs root, as the suite has in CI.
#[cfg(test)]
mod kernel_tests {
    use super::*;
    use crate::network::ip::ip;

    #[test]
    fn a_pod_namespace_is_made_and_removed() {
        let id = std::process::id() % 100_000;
        let bridge = format!("btnl{id}");
        let path = std::path::PathBuf::from(format!("/run/netns/bosun-nltest-{id}"));
        let veth = format!("bvnl{id}");
        ip(&["link", "add", &bridge, "type", "bridge"]).unwrap();
        prepare_netns_dir(Path::new("/run/netns")).unwrap();
        let made = make_pod_netns(&PodNetworkSpec {
            path: &path,
            veth: &veth,
            bridge: &bridge,
            address: Ipv4Addr::new(198, 18, 7, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(198, 18, 7, 1),
        });
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let inside = ip(&["-n", &name, "-o", "-4", "addr", "show"]);
        let links = ip(&["-n", &name, "-o", "link", "show"]);
        let routes = ip(&["-n", &name, "-4", "route", "show"]);
        let outside = ip(&["-o", "link", "show", "dev", &veth]);
        let deleted = Socket::open().and_then(|mut s| s.delete_link(&veth));
        let removed = remove_netns(&path);
        let again = remove_netns(&path);
        let _ = ip(&["link", "del", &bridge]);
        made.unwrap();
        let inside = inside.unwrap();
        assert!(inside.contains("eth0    inet 198.18.7.2/24"), "{inside}");
        assert!(inside.contains("lo    inet 127.0.0.1/8"), "{inside}");
        let links = links.unwrap();
        assert!(links.lines().all(|l| l.contains(",UP")), "{links}");
        assert!(
            routes.unwrap().contains("default via 198.18.7.1 dev eth0"),
            "no default route"
        );
        let outside = outside.unwrap();
        assert!(outside.contains(&format!("master {bridge} ")), "{outside}");
        assert!(outside.contains(",UP"), "{outside}");
        deleted.unwrap();
        assert!(removed.unwrap());
        assert!(!again.unwrap());
        assert!(!path.exists());
    }
}
