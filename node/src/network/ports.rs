//! `hostPort`: a TCP port of the node forwarded to a port of the pod, as the kubelet's CNI
//! portmap plugin does, here in user space (the machines Bosun is built on have no iptables or
//! nftables). Each accepted connection is joined to a new connection to `podIP:containerPort`
//! and bytes are copied both ways until either side closes.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// One `ports[]` entry of a container that asks for a node port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// `hostIP`; unspecified listens on every address of the node.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
}

/// The forwarders of one pod; dropping it closes their listeners and connections.
pub struct Forwarders {
    tasks: JoinSet<()>,
}

impl Forwarders {
    /// Listens on every `host_ip:host_port` and forwards to `pod_ip:container_port`. Fails
    /// (listening on none) if any port cannot be had.
    pub async fn start(pod_ip: Ipv4Addr, ports: &[HostPort]) -> Result<Self, String> {
        let mut listeners = Vec::new();
        for port in ports {
            let at = SocketAddr::from((port.host_ip, port.host_port));
            let listener = TcpListener::bind(at)
                .await
                .map_err(|e| format!("cannot listen on hostPort {at}: {e}"))?;
            listeners.push((listener, SocketAddr::from((pod_ip, port.container_port))));
        }
        let mut tasks = JoinSet::new();
        for (listener, target) in listeners {
            tasks.spawn(forward(listener, target));
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
