//! `bosun fn deploy|list`: Functions without writing YAML.
//!
//! `deploy` server-side applies a Function with only the fields its flags give (field manager
//! `bosun-fn`), so it creates or updates one and works beside `kubectl apply` on the same
//! object: each keeps the fields it set. It prints the Function's URL.

use std::time::Duration;

use anyhow::Context as _;
use bosun_api::function::{API_VERSION, DEFAULT_DOMAIN};
use http::Method;
use serde_json::{Value, json};

use super::client::{ClientArgs, Cluster, api_error, path, resource};
use super::get::render_table;

#[derive(clap::Subcommand)]
pub enum FnCommand {
    /// Create or update a Function serving IMAGE (a wasi:http component), and print its URL.
    Deploy(DeployArgs),
    /// List the Functions of the namespace.
    List {
        /// Functions of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The Function's name (a DNS label: it is also its Service's and its host's).
    name: String,
    /// The component's image, `REGISTRY/REPO:TAG`.
    #[arg(long)]
    image: String,
    /// The fewest replicas (0 lets it scale to zero).
    #[arg(long)]
    min: Option<i32>,
    /// The most replicas.
    #[arg(long)]
    max: Option<i32>,
    /// The load one replica should carry.
    #[arg(long)]
    target: Option<i32>,
    /// What the load is measured in.
    #[arg(long, value_parser = ["concurrency", "rps"])]
    metric: Option<String>,
    /// The port the component serves on (default 8080).
    #[arg(long)]
    port: Option<u16>,
    /// An environment variable, `NAME=VALUE` (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(command: FnCommand) -> anyhow::Result<()> {
    match command {
        FnCommand::Deploy(args) => deploy(args).await,
        FnCommand::List {
            all_namespaces,
            client,
        } => list(all_namespaces, &client).await,
    }
}

/// The manifest `deploy` applies: only what the flags say.
fn manifest(args: &DeployArgs) -> anyhow::Result<Value> {
    let mut container = json!({"name": "fn", "image": args.image});
    if let Some(port) = args.port {
        container["ports"] = json!([{"containerPort": port}]);
    }
    if !args.env.is_empty() {
        let env: Vec<Value> = args
            .env
            .iter()
            .map(|pair| {
                let (name, value) = pair
                    .split_once('=')
                    .with_context(|| format!("--env {pair:?} is not NAME=VALUE"))?;
                Ok(json!({"name": name, "value": value}))
            })
            .collect::<anyhow::Result<_>>()?;
        container["env"] = json!(env);
    }
    let mut scale = serde_json::Map::new();
    for (key, value) in [
        ("min", args.min.map(Value::from)),
        ("max", args.max.map(Value::from)),
        ("target", args.target.map(Value::from)),
        ("metric", args.metric.clone().map(Value::from)),
    ] {
        if let Some(value) = value {
            scale.insert(key.to_string(), value);
        }
    }
    let mut spec = json!({"template": {"spec": {"containers": [container]}}});
    if !scale.is_empty() {
        spec["scale"] = Value::Object(scale);
    }
    Ok(json!({
        "apiVersion": API_VERSION, "kind": "Function",
        "metadata": {"name": args.name},
        "spec": spec,
    }))
}

async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.client).await?;
    let functions = resource("functions")?;
    let url = path(functions, Some(&cluster.namespace), Some(&args.name));
    let body = serde_json::to_vec(&manifest(&args)?)?;
    cluster
        .send(
            Method::PATCH,
            &format!("{url}?fieldManager=bosun-fn&force=true"),
            Some("application/apply-patch+yaml"),
            Some("application/json"),
            body,
        )
        .await
        .map_err(api_error)?;
    // The controller writes the URL soon after; until then it is the default domain's.
    let mut shown = format!(
        "http://{}.{}.{DEFAULT_DOMAIN}",
        args.name, cluster.namespace
    );
    for _ in 0..20 {
        let function = cluster.get_json(&url).await?;
        if let Some(u) = function.pointer("/status/url").and_then(Value::as_str) {
            shown = u.to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("function.serving.bosun.dev/{} deployed", args.name);
    println!("{shown}");
    Ok(())
}

async fn list(all_namespaces: bool, client: &ClientArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(client).await?;
    let functions = resource("functions")?;
    let namespace = (!all_namespaces).then_some(cluster.namespace.as_str());
    let text = cluster
        .send(
            Method::GET,
            &path(functions, namespace, None),
            None,
            Some("application/json;as=Table;v=v1;g=meta.k8s.io"),
            Vec::new(),
        )
        .await
        .map_err(api_error)?;
    let table: Value = serde_json::from_str(&text).context("the server sent a bad Table")?;
    if table["rows"].as_array().is_none_or(Vec::is_empty) {
        eprintln!("No functions found.");
        return Ok(());
    }
    print!("{}", render_table(&table, false, all_namespaces));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: FnCommand,
    }

    #[test]
    fn deploy_applies_only_what_its_flags_say() {
        let cli = Cli::parse_from([
            "fn",
            "deploy",
            "hello",
            "--image",
            "r/hello:v1",
            "--max",
            "5",
            "--metric",
            "rps",
            "-e",
            "A=1",
        ]);
        let FnCommand::Deploy(args) = cli.command else {
            panic!("a deploy");
        };
        assert_eq!(
            manifest(&args).unwrap(),
            json!({
                "apiVersion": "serving.bosun.dev/v1", "kind": "Function",
                "metadata": {"name": "hello"},
                "spec": {
                    "template": {"spec": {"containers": [{
                        "name": "fn", "image": "r/hello:v1", "env": [{"name": "A", "value": "1"}],
                    }]}},
                    "scale": {"max": 5, "metric": "rps"},
                },
            })
        );
        let bad = Cli::parse_from(["fn", "deploy", "x", "--image", "i", "-e", "novalue"]);
        let FnCommand::Deploy(args) = bad.command else {
            panic!("a deploy");
        };
        assert!(manifest(&args).is_err());
    }
}
