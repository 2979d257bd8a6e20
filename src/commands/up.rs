//! `bosun up`: the API server (on embedded SQLite unless given a datastore) and a node agent
//! in one process. The two still meet only over the API, as separate processes would: the
//! agent reads the kubeconfig the server writes and connects to its HTTPS port.

use anyhow::Context as _;
use bosun_control::server::run as run_server;
use bosun_node::agent::run as run_agent;
use bosun_node::credentials::Bootstrap;
use tokio::sync::{oneshot, watch};

use super::node::{AgentFlags, host_name, kube_config};
use super::server;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    server: server::Args,
    /// The local node's name. Default: the host name.
    #[arg(long, env = "BOSUN_NODE_NAME")]
    node_name: Option<String>,
    /// HTTPS port of the local node's log server (`kubectl logs` goes through it; 0 picks a
    /// free one).
    #[arg(long, env = "BOSUN_AGENT_PORT", default_value_t = 10250)]
    agent_port: u16,
    #[command(flatten)]
    agent: AgentFlags,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let data_dir = args.server.data_dir();
    let node = args.agent.config(
        args.node_name.unwrap_or_else(host_name),
        data_dir.clone(),
        args.agent_port,
        // The node learns the blocks from the server, as any node does.
        None,
        None,
    );
    let server = args.server.config()?;
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = Box::pin(shutdown_signal());

    let (started_tx, started_rx) = oneshot::channel();
    let mut server_task = tokio::spawn(run_server(
        server,
        move |started| {
            let _ = started_tx.send((started.addr, started.advertised, started.kubeconfig.clone()));
        },
        until_stopped(stopped.clone()),
    ));
    let (addr, advertised, kubeconfig) = tokio::select! {
        started = started_rx => match started {
            Ok(started) => started,
            // The server ended before it listened: its error says why.
            Err(_) => return server_ended(server_task.await),
        },
        () = &mut shutdown => {
            let _ = stop.send(true);
            return server_ended(server_task.await);
        }
    };

    let kube = match kube_config(&kubeconfig, "bosun-node").await {
        Ok(kube) => kube,
        Err(e) => {
            let _ = stop.send(true);
            let _ = server_task.await;
            return Err(e);
        }
    };
    let node_name = node.name.clone();
    // The node gets its own `system:node:NAME` certificate with the admin's credentials.
    let mut node_task = tokio::spawn(run_agent(
        Bootstrap::Kubeconfig(Box::new(kube)),
        node,
        until_stopped(stopped),
    ));
    // The kubeconfig names a loopback address when the server listens on all of them.
    let local = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    print_welcome(
        &local.to_string(),
        &kubeconfig,
        &node_name,
        advertised,
        &data_dir,
    );

    // Whichever ends first (Ctrl-C, or a part failing) stops the rest: the node before the
    // server, so that it can still reach the API while it stops.
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        ended = &mut node_task => flatten(ended).context("the node agent stopped"),
        ended = &mut server_task => {
            let _ = stop.send(true);
            let _ = node_task.await;
            return server_ended(ended);
        }
    };
    let _ = stop.send(true);
    if !node_task.is_finished() {
        flatten(node_task.await).context("the node agent failed while stopping")?;
    }
    let server_result = server_ended(server_task.await);
    result.and(server_result)
}

fn print_welcome(
    addr: &str,
    kubeconfig: &std::path::Path,
    node: &str,
    advertised: std::net::SocketAddr,
    data_dir: &std::path::Path,
) {
    let kubeconfig = kubeconfig.display();
    println!("bosun is up");
    println!("API server: https://{addr}");
    println!("node: {node}");
    println!("kubeconfig: {kubeconfig}");
    println!();
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  kubectl get nodes");
    println!("  kubectl apply -f examples/hello/job.yaml");
    println!();
    println!("More machines join as nodes with the cluster token:");
    println!(
        "  bosun node --server https://{advertised} --token \"$(cat {}/token)\"",
        data_dir.display()
    );
    println!();
    println!("Ctrl-C stops everything; the cluster's state stays for the next `bosun up`.");
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn flatten<E>(ended: Result<Result<(), E>, tokio::task::JoinError>) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    ended.context("task panicked")?.map_err(anyhow::Error::from)
}

fn server_ended<E>(ended: Result<Result<(), E>, tokio::task::JoinError>) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    flatten(ended).context("bosun server failed")
}
