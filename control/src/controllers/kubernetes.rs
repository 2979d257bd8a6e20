//! The `kubernetes` Service in `default`, through which pods reach the API (upstream's
//! `kubernetesservice` controller with the lease endpoint reconciler). Unlike the other
//! controllers it runs in every API server, not only in the elected one: each server keeps a
//! Lease `kube-system/bosun-apiserver-…` naming its advertised address, and makes the
//! Service's endpoints (EndpointSlices and the Endpoints object) the addresses of the servers
//! whose leases are current. A server that stops deletes its lease; one that dies drops out
//! when its lease runs out.
//!
//! The Service has the first address of the service block (the allocator never hands it out)
//! and port 443 named `https`; each endpoint has its server's own port, so servers on one
//! machine with different ports each get an EndpointSlice of their own.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

/// The Service's name, in `default`.
pub const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";
const LEASE_NAMESPACE: &str = "kube-system";
/// Marks the API servers' Leases (the value is the server's `IP:PORT`).
const LEASE_LABEL: &str = "bosun.dev/apiserver";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = super::endpoints::MANAGED_BY_LABEL;
const MANAGED_BY: &str = "bosun-apiserver";

/// Where this server is reached, and how long its lease lasts.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Service's cluster IP: the first address of the service block.
    pub service_ip: IpAddr,
    /// This server's address as pods reach it (`--advertise-address`) and its port.
    pub address: IpAddr,
    pub port: u16,
    /// The lease lasts this long and is renewed every third of it.
    pub lease_duration: Duration,
}

/// Keeps the Service and this server's lease until `stopped` turns true, then gives the
/// lease up and takes the server out of the endpoints.
pub async fn run(
    client: kube::Client,
    config: Config,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let period = (config.lease_duration / 3).max(Duration::from_millis(100));
    loop {
        if let Err(error) = reconcile(&client, &config).await {
            tracing::warn!(%error, "cannot reconcile the kubernetes Service");
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    if let Err(error) = leases
        .delete(&lease_name(&config), &DeleteParams::default())
        .await
    {
        tracing::debug!(%error, "cannot delete the API server's lease");
    }
    if let Err(error) = write_endpoints(
        &client,
        &live_servers(&client, None).await.unwrap_or_default(),
    )
    .await
    {
        tracing::debug!(%error, "cannot take this server out of the kubernetes endpoints");
    }
}

fn lease_name(config: &Config) -> String {
    let address = config.address.to_string().replace(['.', ':'], "-");
    format!("bosun-apiserver-{address}-{}", config.port)
}

async fn reconcile(client: &kube::Client, config: &Config) -> kube::Result<()> {
    ensure_service(client, config).await?;
    renew_lease(client, config).await?;
    let servers = live_servers(client, Some(config)).await?;
    write_endpoints(client, &servers).await
}

async fn ensure_service(client: &kube::Client, config: &Config) -> kube::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    if services.get_opt(NAME).await?.is_some() {
        return Ok(());
    }
    let service: Service = serde_json::from_value(json!({
        "metadata": {
            "name": NAME,
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": config.service_ip.to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": config.port}],
            "sessionAffinity": "None",
        },
    }))
    .expect("a valid Service");
    match services.create(&PostParams::default(), &service).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn renew_lease(client: &kube::Client, config: &Config) -> kube::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let name = lease_name(config);
    let holder = std::net::SocketAddr::new(config.address, config.port).to_string();
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let seconds = i32::try_from(config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    match leases.get_opt(&name).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.holder_identity = Some(holder);
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(now);
            leases
                .replace(&name, &PostParams::default(), &lease)
                .await?;
        }
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {LEASE_LABEL: "true"}},
                "spec": {
                    "holderIdentity": holder,
                    "leaseDurationSeconds": seconds,
                    "acquireTime": now,
                    "renewTime": now,
                },
            }))
            .expect("a valid Lease");
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

/// The `IP:PORT` of every server whose lease is current (this one's included, when given,
/// whatever its lease says).
async fn live_servers(
    client: &kube::Client,
    this: Option<&Config>,
) -> kube::Result<Vec<std::net::SocketAddr>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut servers: Vec<std::net::SocketAddr> = leases
        .list(&ListParams::default().labels(LEASE_LABEL))
        .await?
        .items
        .into_iter()
        .filter_map(|lease| {
            let spec = lease.spec?;
            let renewed = spec.renew_time?.0;
            let lasts =
                k8s_openapi::jiff::SignedDuration::from_secs(spec.lease_duration_seconds?.into());
            (renewed.checked_add(lasts).ok()? > now)
                .then(|| spec.holder_identity?.parse().ok())
                .flatten()
        })
        .collect();
    if let Some(config) = this {
        servers.push(std::net::SocketAddr::new(config.address, config.port));
    }
    servers.sort();
    servers.dedup();
    Ok(servers)
}

/// One EndpointSlice per port (`kubernetes` for the lowest, `kubernetes-PORT` for others)
/// and the Endpoints object with a subset per port.
async fn write_endpoints(
    client: &kube::Client,
    servers: &[std::net::SocketAddr],
) -> kube::Result<()> {
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for server in servers.iter().filter(|s| s.is_ipv4()) {
        by_port
            .entry(server.port())
            .or_default()
            .push(server.ip().to_string());
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let mut wanted = Vec::new();
    for (index, (port, addresses)) in by_port.iter().enumerate() {
        let name = if index == 0 {
            NAME.to_string()
        } else {
            format!("{NAME}-{port}")
        };
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": {SERVICE_NAME_LABEL: NAME, MANAGED_BY_LABEL: MANAGED_BY},
            },
            "addressType": "IPv4",
            "endpoints": addresses.iter().map(|a| json!({
                "addresses": [a],
                "conditions": {"ready": true, "serving": true, "terminating": false},
            })).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }))
        .expect("a valid EndpointSlice");
        put(&slices, &name, slice, |old, new| {
            old.endpoints == new.endpoints && old.ports == new.ports
        })
        .await?;
        wanted.push(name);
    }
    let existing = slices
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={NAME},{MANAGED_BY_LABEL}={MANAGED_BY}"
        )))
        .await?;
    for slice in existing.items {
        let name = slice.name_any();
        if !wanted.contains(&name) {
            match slices.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
    let object: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": NAME},
        "subsets": by_port.iter().map(|(port, addresses)| json!({
            "addresses": addresses.iter().map(|a| json!({"ip": a})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        })).collect::<Vec<_>>(),
    }))
    .expect("valid Endpoints");
    put(&endpoints, NAME, object, |old, new| {
        old.subsets == new.subsets
    })
    .await
}

/// Creates `object`, or replaces the stored one unless `same` says it already says that.
async fn put<K>(
    api: &Api<K>,
    name: &str,
    mut object: K,
    same: impl Fn(&K, &K) -> bool,
) -> kube::Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await? {
        Some(old) if same(&old, &object) => Ok(()),
        Some(old) => {
            object.meta_mut().resource_version = old.meta().resource_version.clone();
            api.replace(name, &PostParams::default(), &object).await?;
            Ok(())
        }
        None => match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            // Another server made it first: the next round compares with it.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
    }
}
