//! `bosun`: one binary for the control plane, the node agent and the command line.
//! Each subcommand lives in `src/commands/<name>.rs`; this file only parses and dispatches.

mod commands;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "bosun",
    version,
    about = "A WebAssembly-native orchestrator that speaks the Kubernetes API"
)]
struct Cli {
    /// Log output format.
    #[arg(
        long,
        env = "BOSUN_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: datastore, API server.
    Server(commands::server::Args),
    /// Run a node agent: register a Node and run the pods bound to it as Wasm.
    Node(commands::node::Args),
    /// Run a whole cluster in this process: the server (on SQLite in the data directory) and
    /// a node agent for this machine.
    Up(Box<commands::up::Args>),
    /// Push a Wasm module or component to an OCI registry, as an artifact nodes can pull.
    Push(commands::push::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    install_tracing(cli.log_format);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Server(args) => commands::server::run(args).await,
            Command::Node(args) => commands::node::run(args).await,
            Command::Up(args) => commands::up::run(*args).await,
            Command::Push(args) => commands::push::run(args).await,
        }
    })
}

fn install_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
