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
    Server(Box<commands::server::Args>),
    /// Run a node agent: register a Node and run the pods bound to it as Wasm.
    Node(Box<commands::node::Args>),
    /// Run a whole cluster in this process: the server (on SQLite in the data directory) and
    /// a node agent for this machine.
    Up(Box<commands::up::Args>),
    /// Push a Wasm module or component to an OCI registry, as an artifact nodes can pull.
    Push(commands::push::Args),
    /// Create or update objects from manifests (kubectl's client-side apply).
    Apply(commands::apply::ApplyArgs),
    /// List objects as a table, or print them as YAML, JSON or names.
    Get(commands::get::GetArgs),
    /// Show one object in detail, with its events.
    Describe(commands::get::DescribeArgs),
    /// Delete objects by name or by manifest.
    Delete(commands::apply::DeleteArgs),
    /// Print a container's log.
    Logs(commands::logs::LogsArgs),
    /// Deploy and list Functions (HTTP components that scale to zero).
    #[command(name = "fn", subcommand)]
    Function(commands::function::FnCommand),
    /// Make a kubeconfig for a new user through a CertificateSigningRequest (approved with
    /// your credentials when they allow it), and print it.
    Kubeconfig(commands::kubeconfig::Args),
    /// Create and list tenants: a namespace with an admin binding, a quota, default limits
    /// and network isolation, in one command.
    #[command(subcommand)]
    Tenant(commands::tenant::TenantCommand),
    /// Print a shell completion script: `source <(bosun completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    install_tracing(cli.log_format);
    // One line with the whole chain of causes, as a command-line tool says what went wrong
    // (anyhow's Debug form adds a backtrace when RUST_BACKTRACE is set).
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose words the message
/// before it already has (many errors print their source inside their own message).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Server(args) => commands::server::run(*args).await,
            Command::Node(args) => commands::node::run(*args).await,
            Command::Up(args) => commands::up::run(*args).await,
            Command::Push(args) => commands::push::run(args).await,
            Command::Apply(args) => commands::apply::apply(args).await,
            Command::Get(args) => commands::get::get(args).await,
            Command::Describe(args) => commands::get::describe(args).await,
            Command::Delete(args) => commands::apply::delete(args).await,
            Command::Logs(args) => commands::logs::logs(args).await,
            Command::Function(command) => commands::function::run(command).await,
            Command::Kubeconfig(args) => commands::kubeconfig::run(args).await,
            Command::Tenant(command) => commands::tenant::run(command).await,
            Command::Completion { shell } => {
                print_completion(shell);
                Ok(())
            }
        }
    })
}

fn print_completion(shell: CompletionShell) {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
    };
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "bosun", &mut std::io::stdout());
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
