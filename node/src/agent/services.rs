//! The service watch: every agent follows all Services and EndpointSlices and, on every
//! change, gives the node's proxy ([`crate::network::proxy`]) the endpoints each Service port
//! may send new connections to, and the resolver ([`crate::network::names`]) what the
//! Services' names mean, and the function gateway ([`crate::gateway`]) where each Function's
//! requests go.
//!
//! An endpoint takes new connections while its `ready` condition is not false; when a Service
//! has none but some that are still `serving` while terminating, those take them, as
//! kube-proxy does.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_api::function::{FUNCTION_LABEL, TIMEOUT_ANNOTATION};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use super::Agent;
use crate::gateway::{FunctionRoute, RouteTable};
use crate::network::names::{Directory, ServiceEntry, Target};
use crate::network::proxy::{Protocol, ServicePort};

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Follows Services and EndpointSlices until the client goes; `synced` turns true once both
/// were listed and the resolver has them (whether or not the rules could be applied).
pub(crate) async fn keep(agent: Arc<Agent>, synced: watch::Sender<bool>) {
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let service_events = reflector::reflector(
        services_writer,
        watcher(
            Api::<Service>::all(agent.client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()));
    let slice_events = reflector::reflector(
        slices_writer,
        watcher(
            Api::<EndpointSlice>::all(agent.client.clone()),
            watcher::Config::default().labels(SERVICE_NAME_LABEL),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()));
    let mut events = futures::stream::select(service_events, slice_events).boxed();
    let mut last: Option<Vec<ServicePort>> = None;
    while let Some(event) = events.next().await {
        if let Err(error) = event {
            tracing::warn!(%error, "watching services and endpoint slices");
            continue;
        }
        // Take everything that arrived together, then apply once.
        while let Some(Some(_)) = events.next().now_or_never() {}
        // Until both have been listed, a Service may look as if it had no endpoints.
        let listed = matches!(services.wait_until_ready().now_or_never(), Some(Ok(())))
            && matches!(slices.wait_until_ready().now_or_never(), Some(Ok(())));
        if !listed {
            continue;
        }
        let (ports, directory) = build(&services, &slices);
        agent.policies.set_services(
            ports
                .iter()
                .filter_map(|p| {
                    let protocol = match p.protocol {
                        Protocol::Tcp => bosun_api::netpol::Protocol::Tcp,
                        Protocol::Udp => bosun_api::netpol::Protocol::Udp,
                    };
                    Some(((p.cluster_ip?, p.port, protocol), p.endpoints.clone()))
                })
                .collect(),
        );
        agent.resolver.update(directory);
        agent.routes.update(function_routes(&services, &ports));
        // Names and variables are right from here on, rules or not: pods need not wait.
        synced.send_replace(true);
        if last.as_ref() != Some(&ports) {
            let started = Instant::now();
            match agent
                .network()
                .apply_services(&ports, agent.activator.get().copied())
                .await
            {
                Ok(true) => {
                    tracing::debug!(ports = ports.len(), took = ?started.elapsed(), "service rules applied");
                }
                Ok(false) => {}
                Err(error) => {
                    // Tried again on the next change.
                    tracing::warn!(%error, "cannot apply the service rules");
                    continue;
                }
            }
            last = Some(ports);
        }
    }
}

/// The function gateway's routes: each Function's Service (labelled
/// `serving.bosun.dev/function`), its first port's endpoints and its timeout annotation.
fn function_routes(services: &Store<Service>, ports: &[ServicePort]) -> RouteTable {
    let mut routes = RouteTable::new();
    for service in services.state() {
        if !service.labels().contains_key(FUNCTION_LABEL) {
            continue;
        }
        let (namespace, name) = (service.namespace().unwrap_or_default(), service.name_any());
        let timeout = service
            .annotations()
            .get(TIMEOUT_ANNOTATION)
            .and_then(|t| bosun_api::duration::parse(t).ok())
            .unwrap_or(Duration::from_secs(60));
        let port = ports
            .iter()
            .find(|p| p.namespace == namespace && p.service == name);
        routes.insert(
            (namespace, name),
            FunctionRoute {
                endpoints: port.map(|p| p.endpoints.clone()).unwrap_or_default(),
                timeout,
                service: port.and_then(|p| Some(SocketAddrV4::new(p.cluster_ip?, p.port))),
            },
        );
    }
    routes
}

/// Whether an endpoint takes new connections (`ready` unset counts as ready).
fn ready(endpoint: &Endpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .and_then(|c| c.ready)
        .unwrap_or(true)
}

fn serving_while_terminating(endpoint: &Endpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .is_some_and(|c| c.serving.unwrap_or(false) && c.terminating.unwrap_or(false))
}

fn ipv4(endpoint: &Endpoint) -> Option<Ipv4Addr> {
    endpoint.addresses.first()?.parse().ok()
}

/// The proxy's ports and the resolver's directory for the Services and slices in the stores.
fn build(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> (Vec<ServicePort>, Directory) {
    let mut by_service: BTreeMap<(String, String), Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in slices.state() {
        if slice.address_type != "IPv4" {
            continue;
        }
        if let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) {
            by_service
                .entry((slice.namespace().unwrap_or_default(), service.clone()))
                .or_default()
                .push(slice);
        }
    }
    let mut ports = Vec::new();
    let mut directory = Directory::new();
    for service in services.state() {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let key = (service.namespace().unwrap_or_default(), service.name_any());
        let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        let service_ports: Vec<_> = spec.ports.iter().flatten().collect();
        let target = match cluster_ip {
            Some(ip) => Target::ClusterIp(ip),
            None => {
                let mut ips: Vec<Ipv4Addr> = slices
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| ready(e))
                    .filter_map(ipv4)
                    .collect();
                ips.sort();
                ips.dedup();
                Target::Headless(ips)
            }
        };
        directory.insert(
            key.clone(),
            ServiceEntry {
                target,
                ports: service_ports
                    .iter()
                    .filter_map(|p| {
                        Some((
                            p.name.clone().unwrap_or_default(),
                            u16::try_from(p.port).ok()?,
                            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        ))
                    })
                    .collect(),
            },
        );
        let Some(cluster_ip) = cluster_ip else {
            continue;
        };
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(10800)
        });
        for port in service_ports {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let name = port.name.clone().unwrap_or_default();
            let endpoints_where = |usable: fn(&Endpoint) -> bool| -> Vec<SocketAddrV4> {
                let mut found: Vec<SocketAddrV4> = slices
                    .iter()
                    .flat_map(|slice| {
                        let target = slice.ports.iter().flatten().find(|p| {
                            p.name.as_deref().unwrap_or("") == name
                                && p.protocol.as_deref().unwrap_or("TCP") == protocol.name()
                        });
                        let target = target
                            .and_then(|p| p.port)
                            .and_then(|p| u16::try_from(p).ok());
                        slice
                            .endpoints
                            .iter()
                            .filter(move |e| target.is_some() && usable(e))
                            .filter_map(move |e| Some(SocketAddrV4::new(ipv4(e)?, target?)))
                    })
                    .collect();
                found.sort();
                found.dedup();
                found
            };
            let mut endpoints = endpoints_where(ready);
            if endpoints.is_empty() {
                endpoints = endpoints_where(serving_while_terminating);
            }
            ports.push(ServicePort {
                namespace: key.0.clone(),
                service: key.1.clone(),
                port_name: name,
                protocol,
                cluster_ip: Some(cluster_ip),
                port: number,
                node_port: port.node_port.and_then(|p| u16::try_from(p).ok()),
                affinity_seconds,
                endpoints,
                activate: service.labels().contains_key(FUNCTION_LABEL),
            });
        }
    }
    ports.sort();
    (ports, directory)
}
