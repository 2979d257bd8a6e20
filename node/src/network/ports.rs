//! `hostPort`: a port of the node forwarded to a port of the pod, as the kubelet's CNI
//! portmap plugin does, here in user space (the plugin's iptables rules are not available on
//! the machines Bosun is built on). For TCP, each accepted connection is joined to a new connection to
//! `podIP:containerPort` and bytes are copied both ways until either side closes. For UDP,
//! each client address gets a flow: a socket of the node connected to the pod, whose answers
//! go back to that client, until the flow has been idle for [`UDP_FLOW_IDLE`] (as conntrack
//! forgets a UDP flow after 30 s).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long a UDP flow lives without a datagram either way.
pub const UDP_FLOW_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One `ports[]` entry of a container that asks for a node port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// `hostIP`; unspecified listens on every address of the node.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// The forwarders of one pod; dropping it closes their listeners and connections.
pub struct Forwarders {
    tasks: JoinSet<()>,
}

impl Forwarders {
    /// Listens on every `host_ip:host_port` and forwards to `pod_ip:container_port`. Fails
    /// (listening on none) if any port cannot be had.
    pub async fn start(pod_ip: Ipv4Addr, ports: &[HostPort]) -> Result<Self, super::Error> {
        let mut bound = Vec::new();
        for port in ports {
            let at = SocketAddr::from((port.host_ip, port.host_port));
            let socket = match port.protocol {
                Protocol::Tcp => TcpListener::bind(at).await.map(Bound::Tcp),
                Protocol::Udp => UdpSocket::bind(at).await.map(Bound::Udp),
            }
            .map_err(super::Error::io(format!(
                "cannot listen on hostPort {at}/{:?}",
                port.protocol
            )))?;
            bound.push((socket, SocketAddr::from((pod_ip, port.container_port))));
        }
        let mut tasks = JoinSet::new();
        for (socket, target) in bound {
            match socket {
                Bound::Tcp(listener) => tasks.spawn(forward(listener, target)),
                Bound::Udp(socket) => tasks.spawn(relay(socket, target, UDP_FLOW_IDLE)),
            };
        }
        Ok(Self { tasks })
    }
}

impl Drop for Forwarders {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn forward(listener: TcpListener, target: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%target, %error, "hostPort accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Finished connections are reaped as new ones come.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            match TcpStream::connect(target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(error) => {
                    tracing::debug!(%peer, %target, %error, "hostPort: the pod did not answer");
                }
            }
        });
    }
}

/// A client's UDP flow: the node's socket connected to the pod, and when it last carried a
/// datagram either way.
struct Flow {
    upstream: Arc<UdpSocket>,
    last: Arc<Mutex<Instant>>,
    answers: JoinHandle<()>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.answers.abort();
    }
}

async fn relay(socket: UdpSocket, target: SocketAddr, idle: Duration) {
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                tracing::warn!(%target, %error, "hostPort receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Flows whose answering task has ended (idle) are forgotten as new datagrams come.
        flows.retain(|_, flow| !flow.answers.is_finished());
        let flow = match flows.get(&client) {
            Some(flow) => flow,
            None => match open_flow(&socket, client, target, idle).await {
                Ok(flow) => flows.entry(client).or_insert(flow),
                Err(error) => {
                    tracing::debug!(%client, %target, %error, "hostPort: no flow to the pod");
                    continue;
                }
            },
        };
        *flow.last.lock().unwrap() = Instant::now();
        if let Err(error) = flow.upstream.send(&buf[..n]).await {
            tracing::debug!(%client, %target, %error, "hostPort: the pod did not take a datagram");
        }
    }
}

/// Connects a socket of the node to the pod for `client`, and sends the pod's answers back to
/// the client until the flow is idle.
async fn open_flow(
    socket: &Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    idle: Duration,
) -> std::io::Result<Flow> {
    let upstream = Arc::new(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?);
    upstream.connect(target).await?;
    let last = Arc::new(Mutex::new(Instant::now()));
    let answers = tokio::spawn({
        let (socket, upstream, last) = (socket.clone(), upstream.clone(), last.clone());
        async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let deadline = *last.lock().unwrap() + idle;
                match tokio::time::timeout_at(deadline, upstream.recv(&mut buf)).await {
                    Ok(Ok(n)) => {
                        *last.lock().unwrap() = Instant::now();
                        let _ = socket.send_to(&buf[..n], client).await;
                    }
                    // An ICMP error from the pod (nothing listens yet): keep the flow.
                    Ok(Err(_)) => {}
                    // Idle unless the client sent something meanwhile.
                    Err(_) if *last.lock().unwrap() + idle <= Instant::now() => return,
                    Err(_) => {}
                }
            }
        }
    });
    Ok(Flow {
        upstream,
        last,
        answers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP echo server on loopback that prefixes "pong ".
    async fn echo() -> SocketAddr {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = server.recv_from(&mut buf).await {
                let answer = [b"pong ".as_slice(), &buf[..n]].concat();
                let _ = server.send_to(&answer, peer).await;
            }
        });
        at
    }

    async fn call(client: &UdpSocket, message: &str) -> String {
        client.send(message.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1500];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn udp_datagrams_reach_the_target_and_answers_reach_each_client() {
        let target = echo().await;
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = front.local_addr().unwrap();
        tokio::spawn(relay(front, target, Duration::from_secs(30)));
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        );
        a.connect(at).await.unwrap();
        b.connect(at).await.unwrap();
        assert_eq!(call(&a, "from a").await, "pong from a");
        assert_eq!(call(&b, "from b").await, "pong from b");
        assert_eq!(call(&a, "again").await, "pong again");
    }

    #[tokio::test]
    async fn an_idle_udp_flow_ends_and_a_new_one_takes_its_place() {
        let target = echo().await;
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = front.local_addr().unwrap();
        let socket = Arc::new(front);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let flow = open_flow(
            &socket,
            client.local_addr().unwrap(),
            target,
            Duration::from_millis(200),
        )
        .await
        .unwrap();
        flow.upstream.send(b"hello").await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (b"pong hello".as_slice(), at));
        tokio::time::timeout(Duration::from_secs(5), async {
            while !flow.answers.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the idle flow ended");

        // Through the relay: after the idle time the client's next datagram opens a new flow.
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(front.local_addr().unwrap()).await.unwrap();
        tokio::spawn(relay(front, target, Duration::from_millis(200)));
        assert_eq!(call(&client, "one").await, "pong one");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(call(&client, "two").await, "pong two");
    }
}
