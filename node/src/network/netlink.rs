//! Route netlink, spoken directly, for the changes every pod start and stop makes: its
//! network namespace, its veth pair, its address and its default route. Starting two `ip`
//! processes per pod cost about 10 ms of the pod's start and a fork and exec each on a node
//! starting hundreds of pods; a request here is one message and its acknowledgement.
//!
//! The node's rarer changes (the bridge at start, routes to other nodes, the check after an
//! agent restart) still go through the `ip` command ([`super::ip`]).
//!
//! A netlink socket acts in the network namespace that was its thread's when it was opened,
//! so [`make_pod_netns`] opens one socket before leaving the node's namespace and one after.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `struct ifinfomsg`'s size.
const IFINFOMSG_LEN: usize = 16;
const NLMSG_HDRLEN: usize = 16;
/// `VETH_INFO_PEER` of `<linux/veth.h>`, which libc does not have.
const VETH_INFO_PEER: u16 = 1;

/// A route netlink socket in the network namespace its thread was in when it was opened.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the descriptor is checked, then owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor just returned to us and not owned elsewhere.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, seq: 0 })
    }

    /// Sends `message` and waits for the kernel's acknowledgement (or its error).
    fn request(&mut self, message: Message) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = message.finish(self.seq);
        // SAFETY: the buffer is valid for its length during the call; the kernel is the
        // default destination of a netlink socket that is not connected.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buffer = vec![0u8; 8192];
        loop {
            // SAFETY: the buffer is valid and writable for its length during the call.
            let received = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if received < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if let Some(result) = acknowledgement(&buffer[..received as usize], self.seq) {
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
        let mut m = Message::new(libc::RTM_NEWLINK, libc::NLM_F_CREATE | libc::NLM_F_EXCL);
        m.put(&ifinfomsg(0, true));
        m.attr(libc::IFLA_IFNAME, &c_string(name));
        m.attr(libc::IFLA_MASTER, &master.to_ne_bytes());
        m.begin(libc::IFLA_LINKINFO);
        m.attr(libc::IFLA_INFO_KIND, b"veth");
        m.begin(libc::IFLA_INFO_DATA);
        m.begin(VETH_INFO_PEER);
        // Not up yet: the kernel configures the peer before it links the pair, and a veth
        // without its peer refuses to go up (ENOTCONN).
        m.put(&ifinfomsg(0, false));
        m.attr(libc::IFLA_IFNAME, &c_string(peer));
        m.attr(
            libc::IFLA_NET_NS_FD,
            &(peer_netns.as_raw_fd() as u32).to_ne_bytes(),
        );
        m.end();
        m.end();
        m.end();
        self.request(m)
    }

    /// Removes the interface `name` (a veth takes its peer with it).
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = Message::new(libc::RTM_DELLINK, 0);
        m.put(&ifinfomsg(0, false));
        m.attr(libc::IFLA_IFNAME, &c_string(name));
        self.request(m)
    }

    /// Sets the interface with index `index` up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = Message::new(libc::RTM_NEWLINK, 0);
        m.put(&ifinfomsg(index, true));
        self.request(m)
    }

    /// Adds `address/prefix` to the interface with index `index`.
    pub fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = Message::new(libc::RTM_NEWADDR, libc::NLM_F_CREATE | libc::NLM_F_EXCL);
        // struct ifaddrmsg: family, prefix length, flags, scope, interface index.
        m.put(&[libc::AF_INET as u8, prefix, 0, libc::RT_SCOPE_UNIVERSE]);
        m.put(&index.to_ne_bytes());
        m.attr(libc::IFA_LOCAL, &address.octets());
        m.attr(libc::IFA_ADDRESS, &address.octets());
        self.request(m)
    }

    /// Adds the default route via `gateway` to the main table.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = Message::new(libc::RTM_NEWROUTE, libc::NLM_F_CREATE | libc::NLM_F_EXCL);
        // struct rtmsg: family, destination and source lengths, tos, table, protocol,
        // scope, type, flags.
        m.put(&[
            libc::AF_INET as u8,
            0,
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
        ]);
        m.put(&0u32.to_ne_bytes());
        m.attr(libc::RTA_GATEWAY, &gateway.octets());
        self.request(m)
    }
}

/// The result in a batch of netlink messages that answers request `seq`, if there is one.
fn acknowledgement(mut bytes: &[u8], seq: u32) -> Option<io::Result<()>> {
    while bytes.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(bytes[4..6].try_into().unwrap());
        let this_seq = u32::from_ne_bytes(bytes[8..12].try_into().unwrap());
        if len < NLMSG_HDRLEN || len > bytes.len() {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a malformed netlink answer",
            )));
        }
        if kind == libc::NLMSG_ERROR as u16 && this_seq == seq && len >= NLMSG_HDRLEN + 4 {
            let code = i32::from_ne_bytes(bytes[16..20].try_into().unwrap());
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-code))
            });
        }
        bytes = &bytes[align(len).min(bytes.len())..];
    }
    None
}

/// `struct ifinfomsg` for the interface `index` (0: named by an attribute), set up or not
/// touched.
fn ifinfomsg(index: u32, up: bool) -> [u8; IFINFOMSG_LEN] {
    let mut m = [0u8; IFINFOMSG_LEN];
    m[0] = libc::AF_UNSPEC as u8;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    if up {
        let flag = libc::IFF_UP as u32;
        m[8..12].copy_from_slice(&flag.to_ne_bytes());
        m[12..16].copy_from_slice(&flag.to_ne_bytes());
    }
    m
}

fn c_string(s: &str) -> Vec<u8> {
    let mut bytes = s.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A netlink request being written: the header, a fixed part, then attributes, which nest.
struct Message {
    bytes: Vec<u8>,
    /// Where each open nested attribute starts.
    open: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: libc::c_int) -> Self {
        let mut bytes = vec![0u8; NLMSG_HDRLEN];
        bytes[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | flags) as u16;
        bytes[6..8].copy_from_slice(&flags.to_ne_bytes());
        Self {
            bytes,
            open: Vec::new(),
        }
    }

    fn put(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.bytes.resize(align(self.bytes.len()), 0);
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = (4 + value.len()) as u16;
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.put(value);
    }

    fn begin(&mut self, kind: u16) {
        self.open.push(self.bytes.len());
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(kind | libc::NLA_F_NESTED as u16).to_ne_bytes());
    }

    fn end(&mut self) {
        let start = self.open.pop().expect("an attribute is open");
        let len = (self.bytes.len() - start) as u16;
        self.bytes[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        assert!(self.open.is_empty(), "a nested attribute was not closed");
        let len = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.bytes
    }
}

/// Makes `dir` (where named namespaces are mounted) a shared mount point, as `ip netns add`
/// does, so that a namespace mounted there later shows in every mount namespace.
pub fn prepare_netns_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let target = path_c_string(dir)?;
    let shared = || {
        // SAFETY: the strings are NUL-terminated and live for the call.
        unsafe {
            libc::mount(
                c"none".as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        }
    };
    if shared() == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EINVAL) {
        return Err(error);
    }
    // Not a mount point yet: make it one, on itself.
    // SAFETY: as above.
    let bound = unsafe {
        libc::mount(
            target.as_ptr(),
            target.as_ptr(),
            c"none".as_ptr(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if bound != 0 || shared() != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
pub fn make_pod_netns(spec: &PodNetworkSpec<'_>) -> Result<(), String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("pod-netns".into())
            .spawn_scoped(scope, || make_pod_netns_here(spec))
            .map_err(|e| format!("cannot start a thread: {e}"))?
            .join()
            .map_err(|_| "the network namespace setup panicked".to_string())?
    })
}

fn make_pod_netns_here(spec: &PodNetworkSpec<'_>) -> Result<(), String> {
    let context = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| format!("{what}: {e}")
    };
    let mut node = Socket::open().map_err(context("cannot open a netlink socket"))?;
    let bridge = interface_index(spec.bridge)
        .map_err(context(&format!("cannot find the bridge {}", spec.bridge)))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(spec.path)
        .map_err(context(&format!("cannot create {}", spec.path.display())))?;
    // SAFETY: unshare(2) with a constant flag; it moves only this thread, which ends after
    // this function.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(context("cannot make a network namespace")(
            io::Error::last_os_error(),
        ));
    }
    let own = c"/proc/thread-self/ns/net";
    let target = path_c_string(spec.path).map_err(context("bad namespace path"))?;
    // SAFETY: the strings are NUL-terminated and live for the call.
    let mounted = unsafe {
        libc::mount(
            own.as_ptr(),
            target.as_ptr(),
            c"none".as_ptr(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if mounted != 0 {
        return Err(context(&format!("cannot mount {}", spec.path.display()))(
            io::Error::last_os_error(),
        ));
    }
    let netns = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(context("cannot open the new namespace"))?;
    let mut pod = Socket::open().map_err(context("cannot open a netlink socket"))?;
    // A new namespace's loopback is always its first interface.
    pod.set_up(1).map_err(context("cannot set lo up"))?;
    node.add_veth(spec.veth, bridge, "eth0", &netns)
        .map_err(context(&format!("cannot add the veth pair {}", spec.veth)))?;
    let eth0 = interface_index("eth0").map_err(context("cannot find eth0"))?;
    pod.add_address(eth0, spec.address, spec.prefix)
        .map_err(context(&format!("cannot add {} to eth0", spec.address)))?;
    pod.set_up(eth0).map_err(context("cannot set eth0 up"))?;
    pod.add_default_route(spec.gateway)
        .map_err(context(&format!("cannot route via {}", spec.gateway)))?;
    Ok(())
}

/// Removes the namespace mounted at `path`: `Ok(false)` if there was none.
pub fn remove_netns(path: &Path) -> io::Result<bool> {
    let target = path_c_string(path)?;
    // SAFETY: the string is NUL-terminated and lives for the call.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        let error = io::Error::last_os_error();
        // EINVAL: not a mount point (a setup that stopped before mounting).
        if !matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            return Err(error);
        }
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

fn path_c_string(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length_and_are_aligned() {
        let mut m = Message::new(libc::RTM_NEWLINK, 0);
        m.put(&ifinfomsg(7, true));
        m.begin(libc::IFLA_LINKINFO);
        m.attr(libc::IFLA_INFO_KIND, b"veth");
        m.attr(libc::IFLA_IFNAME, b"abcde");
        m.end();
        let bytes = m.finish(9);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 9);
        // The interface index and the up flag in the ifinfomsg.
        assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(bytes[24..28].try_into().unwrap()), 1);
        // The nest: its header, "veth" (4 + 4), "abcde" (4 + 5, padded to 12), as
        // iproute2 measures a nest: to its children's aligned end.
        let nest = NLMSG_HDRLEN + IFINFOMSG_LEN;
        assert_eq!(
            u16::from_ne_bytes(bytes[nest..nest + 2].try_into().unwrap()),
            4 + 8 + 12
        );
        assert_eq!(bytes.len(), nest + 4 + 8 + 12);
    }

    #[test]
    fn acknowledgements_are_matched_to_their_request() {
        let answer = |seq: u32, code: i32| {
            let mut b = vec![0u8; 36];
            b[0..4].copy_from_slice(&36u32.to_ne_bytes());
            b[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
            b[8..12].copy_from_slice(&seq.to_ne_bytes());
            b[16..20].copy_from_slice(&code.to_ne_bytes());
            b
        };
        assert!(acknowledgement(&answer(3, 0), 3).unwrap().is_ok());
        let error = acknowledgement(&answer(3, -libc::EEXIST), 3).unwrap();
        assert_eq!(error.unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert!(acknowledgement(&answer(2, 0), 3).is_none());
        let mut both = answer(2, -libc::EPERM);
        both.extend(answer(3, 0));
        assert!(acknowledgement(&both, 3).unwrap().is_ok());
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
