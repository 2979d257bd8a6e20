//! `bosun tenant create NAME --user U [--group G]… [--cpu 4 --memory 8Gi --pods 50]
//! [--kubeconfig-out FILE]` and `bosun tenant list`: a tenant in one command.
//!
//! A tenant is plain Kubernetes objects, each labelled `bosun.dev/tenant: NAME`, written by
//! server-side apply (so running `create` again updates them, and kubectl shows and edits them):
//! - the namespace NAME;
//! - the RoleBinding `tenant-admin` of the ClusterRole `admin` to the users and groups;
//! - the ResourceQuota `tenant` (`pods`, and `requests.*`/`limits.*` of cpu and memory);
//! - the LimitRange `tenant-defaults`, whose defaults fill what the quota makes pods state;
//! - the NetworkPolicy `tenant-isolation`: the namespace's pods accept connections from pods
//!   of the same namespace only.
//!
//! With `--kubeconfig-out`, the user's kubeconfig is issued through the CSR flow (as `bosun
//! kubeconfig`), with NAME as its namespace.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::client::{api_error, default_kubeconfig};
use super::node::kube_config;
use super::server::duration;

/// The label every object of a tenant carries.
pub const TENANT_LABEL: &str = "bosun.dev/tenant";

#[derive(clap::Subcommand)]
pub enum TenantCommand {
    /// Create (or update) a tenant: its namespace, admin binding, quota, default limits and
    /// network isolation.
    Create(CreateArgs),
    /// List the tenants with their usage against their quota.
    List(ListArgs),
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The tenant's name, which is its namespace's.
    name: String,
    /// A user who administers the namespace (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// A group that administers the namespace (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// CPU the namespace's pods may request and use in all.
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Memory the namespace's pods may request and use in all.
    #[arg(long, default_value = "8Gi")]
    memory: String,
    /// How many pods the namespace may have.
    #[arg(long, default_value_t = 50)]
    pods: u32,
    /// Also issue the (first) user's kubeconfig, and write it here (0600).
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// The caller's kubeconfig. Default: $KUBECONFIG (its first file), else the admin
    /// kubeconfig in the default data directory.
    #[arg(long, env = "BOSUN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// How long to wait for the user's certificate.
    #[arg(long, default_value = "15m", value_parser = duration)]
    timeout: Duration,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// The caller's kubeconfig (as for `create`).
    #[arg(long, env = "BOSUN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

pub async fn run(command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create(args) => create(args).await,
        TenantCommand::List(args) => list(args).await,
    }
}

async fn client(kubeconfig: &Option<PathBuf>) -> anyhow::Result<(kube::Client, PathBuf)> {
    let path = match kubeconfig {
        Some(path) => path.clone(),
        None => default_kubeconfig()?,
    };
    let config = kube_config(&path, "bosun-tenant").await?;
    let client = kube::Client::try_from(config)
        .with_context(|| format!("cannot make a client from {}", path.display()))?;
    Ok((client, path))
}

/// The objects that make tenant `args.name`.
fn objects(args: &CreateArgs) -> Vec<Value> {
    let name = &args.name;
    let labels = json!({ TENANT_LABEL: name });
    let meta = |object: &str| json!({"name": object, "namespace": name, "labels": labels});
    let subjects: Vec<Value> =
        args.users
            .iter()
            .map(|u| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u}))
            .chain(args.groups.iter().map(
                |g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g}),
            ))
            .collect();
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": labels}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": meta("tenant-admin"),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
               "subjects": subjects}),
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta("tenant"),
               "spec": {"hard": {
                   "pods": args.pods.to_string(),
                   "requests.cpu": args.cpu, "limits.cpu": args.cpu,
                   "requests.memory": args.memory, "limits.memory": args.memory}}}),
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": meta("tenant-defaults"),
               "spec": {"limits": [{"type": "Container",
                   "default": {"cpu": "500m", "memory": "128Mi"},
                   "defaultRequest": {"cpu": "100m", "memory": "64Mi"}}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": meta("tenant-isolation"),
               "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                        "ingress": [{"from": [{"podSelector": {}}]}]}}),
    ]
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    bosun_api::names::check_dns1123_label(&args.name).map_err(|e| {
        anyhow::anyhow!(
            "a tenant's name is its namespace's, and {:?} {e}",
            args.name
        )
    })?;
    if args.users.is_empty() && args.groups.is_empty() {
        bail!("name the tenant's administrators with --user or --group");
    }
    for (flag, value) in [("--cpu", &args.cpu), ("--memory", &args.memory)] {
        bosun_api::quantity::parse(value).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    }
    if args.kubeconfig_out.is_some() && args.users.is_empty() {
        bail!("--kubeconfig-out issues a user's kubeconfig: name the user with --user");
    }
    let (client, path) = client(&args.kubeconfig).await?;
    let params = PatchParams::apply("bosun-tenant").force();
    for object in objects(&args) {
        let api_version = object["apiVersion"].as_str().expect("set above");
        let kind = object["kind"].as_str().expect("set above");
        let resource = bosun_api::resources::by_kind(api_version, kind).expect("a served kind");
        let api_resource = kube::api::ApiResource {
            group: resource.group.to_string(),
            version: resource.version.to_string(),
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            plural: resource.plural.to_string(),
        };
        let name = object["metadata"]["name"].as_str().expect("set above");
        let api: Api<DynamicObject> = match resource.namespaced {
            true => Api::namespaced_with(client.clone(), &args.name, &api_resource),
            false => Api::all_with(client.clone(), &api_resource),
        };
        api.patch(name, &params, &Patch::Apply(&object))
            .await
            .map_err(api_error)
            .with_context(|| format!("cannot apply {kind} {name}"))?;
        println!("{} {name} applied", kind.to_lowercase());
    }
    if let Some(out) = &args.kubeconfig_out {
        let kubeconfig = super::kubeconfig::user_kubeconfig(
            &path,
            &args.users[0],
            &args.groups,
            Some(&args.name),
            None,
            args.timeout,
        )
        .await?;
        super::kubeconfig::write_private(out, &kubeconfig)?;
        println!(
            "kubeconfig for {} written to {}",
            args.users[0],
            out.display()
        );
    }
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let (client, _) = client(&args.kubeconfig).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let tenants = namespaces
        .list(&ListParams::default().labels(TENANT_LABEL))
        .await
        .map_err(api_error)?;
    let mut rows = vec![[
        "TENANT".to_string(),
        "PODS".to_string(),
        "CPU (REQUESTS)".to_string(),
        "MEMORY (REQUESTS)".to_string(),
    ]];
    for namespace in tenants.items {
        let name = namespace.metadata.name.unwrap_or_default();
        let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &name);
        let status = quotas
            .get_opt("tenant")
            .await
            .map_err(api_error)?
            .and_then(|q| q.status)
            .unwrap_or_default();
        let (used, hard) = (
            status.used.unwrap_or_default(),
            status.hard.unwrap_or_default(),
        );
        let cell = |key: &str| match hard.get(key) {
            Some(hard) => format!("{}/{}", used.get(key).map_or("0", |u| u.0.as_str()), hard.0),
            None => "-".to_string(),
        };
        rows.push([
            name,
            cell("pods"),
            cell("requests.cpu"),
            cell("requests.memory"),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("   ").trim_end());
    }
    Ok(())
}
