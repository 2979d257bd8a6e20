//! `bosun server`: flags → [`ServerConfig`] → [`bosun_control::server::run`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bosun_control::server::{ServerConfig, run as run_server};

#[derive(clap::Args)]
pub struct Args {
    /// Where the server keeps its state (SQLite file, kubeconfig, token).
    /// Default: /var/lib/bosun as root, ~/.local/share/bosun otherwise.
    #[arg(long, env = "BOSUN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user:pass@host:port/db). Without it the state is SQLite in
    /// the data directory.
    #[arg(long, env = "BOSUN_DATASTORE_ENDPOINT")]
    datastore_endpoint: Option<String>,
    /// The cluster token. The first server makes one (written to DATA_DIR/token); further
    /// servers on the same PostgreSQL must be given it.
    #[arg(long, env = "BOSUN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "BOSUN_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// HTTPS port of the API server (0 picks a free one).
    #[arg(long, env = "BOSUN_PORT", default_value_t = 6443)]
    port: u16,
    /// Extra name or address for the serving certificate (repeatable).
    #[arg(long = "tls-san", env = "BOSUN_TLS_SAN", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// How much of the event log to keep (watches and lists may start that far back).
    #[arg(long, env = "BOSUN_COMPACTION_WINDOW", default_value = "5m", value_parser = duration)]
    compaction_window: Duration,
    /// How often the event log is compacted.
    #[arg(long, env = "BOSUN_COMPACTION_INTERVAL", default_value = "1m", value_parser = duration)]
    compaction_interval: Duration,
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    bosun_api::duration::parse(s)
}

/// `/var/lib/bosun` for root, `~/.local/share/bosun` for anyone else.
pub(crate) fn default_data_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    match std::env::var_os("HOME") {
        Some(home) if !is_root => PathBuf::from(home).join(".local/share/bosun"),
        _ => PathBuf::from("/var/lib/bosun"),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = ServerConfig {
        data_dir: args.data_dir.unwrap_or_else(default_data_dir),
        datastore_endpoint: args.datastore_endpoint,
        token: args.token,
        bind_address: args.bind_address,
        port: args.port,
        tls_sans: args.tls_sans,
        compaction_window: args.compaction_window,
        compaction_interval: args.compaction_interval,
    };
    let data_dir = config.data_dir.clone();
    run_server(
        config,
        |started| {
            tracing::info!(
                address = %started.addr,
                kubeconfig = %started.kubeconfig.display(),
                "bosun server is listening"
            );
            println!("bosun server listening on https://{}", started.addr);
            println!("kubeconfig: {}", started.kubeconfig.display());
            println!("cluster token: {}/token", data_dir.display());
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        },
    )
    .await
    .context("bosun server failed")
}
