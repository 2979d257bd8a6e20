//! The Endpoints and EndpointSlice controllers: which pods stand behind each Service, as
//! kube-controller-manager's `endpoint` and `endpointslice` controllers publish them.
//!
//! For a Service with a selector, one reconcile lists the pods of its namespace that the
//! selector matches and that have an IP, resolves every Service port's `targetPort` on each pod
//! (a number as it is; a name through the pod's container ports, so pods may differ), and
//! groups the pods by the ports they resolve to. Each group becomes one subset of the
//! `Endpoints` named like the Service (ready pods in `addresses`, the others in
//! `notReadyAddresses`; terminating pods are left out) and one `EndpointSlice` (with the
//! `ready`/`serving`/`terminating` conditions the node proxies read). Slices are named
//! `<service>-<hash of their ports>`, labelled `kubernetes.io/service-name`, and owned by the
//! Service, so the garbage collector removes them with it; slices this controller no longer
//! wants are deleted.
//!
//! Any change to a Service, or to a pod of its namespace (readiness included), runs the
//! reconcile again at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use sha2::{Digest, Sha256};

use super::{ControllersConfig, Error};
use crate::objects::{controller_reference, deleting, pod_ready};

/// The label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages an EndpointSlice, and this controller's value of it.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Which of the two objects a controller keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Endpoints,
    Slices,
}

struct Context {
    client: kube::Client,
    output: Output,
}

/// Runs the `endpoint` controller (core/v1 Endpoints).
pub async fn run_endpoints(client: kube::Client, config: ControllersConfig) {
    run(client, config, Output::Endpoints, "endpoint").await;
}

/// Runs the `endpointslice` controller (discovery.k8s.io/v1 EndpointSlices).
pub async fn run_slices(client: kube::Client, config: ControllersConfig) {
    run(client, config, Output::Slices, "endpointslice").await;
}

async fn run(client: kube::Client, config: ControllersConfig, output: Output, name: &'static str) {
    let services: Api<Service> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    let controller = controller.watches(pods, watcher::Config::default(), move |pod| {
        services_of_namespace(&store, &pod)
    });
    let context = Arc::new(Context { client, output });
    super::drive(controller, name, reconcile, context, config.retry).await;
}

/// Every Service with a selector in the pod's namespace: a pod whose labels changed may have
/// left a Service as well as joined one, so each of them looks again.
fn services_of_namespace(store: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let namespace = pod.namespace().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|s| selector(s).is_some())
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// One pod behind a Service, with the ports it serves the Service's ports on.
#[derive(Debug, Clone, PartialEq)]
struct Backend {
    ip: String,
    node: Option<String>,
    target: ObjectReference,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// A Service port resolved on some pods: (name, number, protocol).
type Resolved = (String, i32, String);

/// Resolves `port`'s targetPort on `pod`: `None` if it names a port the pod does not have.
fn resolve(port: &ServicePort, pod: &Pod) -> Option<Resolved> {
    let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => {
                pod.spec
                    .as_ref()?
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|p| {
                        p.name.as_deref() == Some(name.as_str())
                            && p.protocol.as_deref().unwrap_or("TCP") == protocol
                    })?
                    .container_port
            }
        },
    };
    Some((port.name.clone().unwrap_or_default(), number, protocol))
}

/// The pods behind `service`, grouped by the ports they serve it on.
fn groups(service: &Service, pods: &[Pod]) -> BTreeMap<Vec<Resolved>, Vec<Backend>> {
    let spec = service.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let ports = spec.ports.unwrap_or_default();
    let mut groups: BTreeMap<Vec<Resolved>, Vec<Backend>> = BTreeMap::new();
    for pod in pods {
        let status = pod.status.clone().unwrap_or_default();
        let Some(ip) = status.pod_ip.filter(|ip| !ip.is_empty()) else {
            continue;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let resolved: Vec<Resolved> = ports.iter().filter_map(|p| resolve(p, pod)).collect();
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        let terminating = deleting(&pod.metadata);
        let ready = pod_ready(pod);
        groups.entry(resolved).or_default().push(Backend {
            ip,
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target: ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.namespace(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            ready: (ready || publish_not_ready) && !terminating,
            serving: ready || publish_not_ready,
            terminating,
        });
    }
    for backends in groups.values_mut() {
        backends.sort_by(|a, b| a.ip.cmp(&b.ip).then(a.target.name.cmp(&b.target.name)));
    }
    groups
}

fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tracing::instrument(name = "reconcile", skip_all, fields(service = %kube::ResourceExt::name_any(&*service), namespace = ?service.metadata.namespace))]
async fn reconcile(service: Arc<Service>, context: Arc<Context>) -> Result<Action, Error> {
    let Some(selector) = selector(&service) else {
        return Ok(Action::await_change());
    };
    if deleting(&service.metadata) {
        return Ok(Action::await_change());
    }
    let namespace = service.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let listed = pods
        .list(&ListParams::default().labels(&selector_string(selector)))
        .await?;
    let groups = groups(&service, &listed.items);
    match context.output {
        Output::Endpoints => write_endpoints(&context.client, &service, &groups).await?,
        Output::Slices => write_slices(&context.client, &service, &groups).await?,
    }
    Ok(Action::await_change())
}

fn address(backend: &Backend) -> EndpointAddress {
    EndpointAddress {
        ip: backend.ip.clone(),
        node_name: backend.node.clone(),
        target_ref: Some(backend.target.clone()),
        ..Default::default()
    }
}

fn subsets(groups: &BTreeMap<Vec<Resolved>, Vec<Backend>>) -> Vec<EndpointSubset> {
    groups
        .iter()
        .filter_map(|(ports, backends)| {
            let ready: Vec<_> = backends.iter().filter(|b| b.ready).map(address).collect();
            let not_ready: Vec<_> = backends
                .iter()
                .filter(|b| !b.ready && !b.terminating)
                .map(address)
                .collect();
            if ready.is_empty() && not_ready.is_empty() {
                return None;
            }
            Some(EndpointSubset {
                addresses: Some(ready).filter(|a| !a.is_empty()),
                not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: Some(name.clone()).filter(|n| !n.is_empty()),
                            port: *port,
                            protocol: Some(protocol.clone()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            })
        })
        .collect()
}

fn owned_meta(service: &Service, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: service.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![controller_reference(service)]),
        ..Default::default()
    }
}

async fn write_endpoints(
    client: &kube::Client,
    service: &Service,
    groups: &BTreeMap<Vec<Resolved>, Vec<Backend>>,
) -> Result<(), Error> {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &namespace);
    let subsets = subsets(groups);
    let wanted = Endpoints {
        metadata: owned_meta(service, name.clone(), service.labels().clone()),
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    };
    match api.get_opt(&name).await? {
        None => {
            api.create(&PostParams::default(), &wanted).await?;
        }
        Some(current) if current.subsets == wanted.subsets => {}
        Some(current) => {
            let mut next = wanted;
            next.metadata.resource_version = current.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &next).await?;
        }
    }
    Ok(())
}

/// The name of a Service's slice for one set of ports.
fn slice_name(service: &str, ports: &[Resolved]) -> String {
    let mut hash = Sha256::new();
    for (name, port, protocol) in ports {
        hash.update(format!("{name}/{port}/{protocol};"));
    }
    let digest = hash.finalize();
    let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let base: String = service.chars().take(253 - 9).collect();
    format!("{base}-{suffix}")
}

fn slice(service: &Service, ports: &[Resolved], backends: &[Backend]) -> EndpointSlice {
    let labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_string(), service.name_any()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ]);
    EndpointSlice {
        metadata: owned_meta(service, slice_name(&service.name_any(), ports), labels),
        address_type: "IPv4".into(),
        endpoints: backends
            .iter()
            .map(|b| Endpoint {
                addresses: vec![b.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(b.ready),
                    serving: Some(b.serving),
                    terminating: Some(b.terminating),
                }),
                node_name: b.node.clone(),
                target_ref: Some(b.target.clone()),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(name, port, protocol)| SlicePort {
                    name: Some(name.clone()),
                    port: Some(*port),
                    protocol: Some(protocol.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

async fn write_slices(
    client: &kube::Client,
    service: &Service,
    groups: &BTreeMap<Vec<Resolved>, Vec<Backend>>,
) -> Result<(), Error> {
    let namespace = service.namespace().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let mut wanted: Vec<EndpointSlice> = groups
        .iter()
        .map(|(ports, backends)| slice(service, ports, backends))
        .collect();
    if wanted.is_empty() {
        // Kubernetes keeps a placeholder slice for a Service without endpoints.
        wanted.push(slice(service, &[], &[]));
    }
    let existing = api
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
            service.name_any()
        )))
        .await?
        .items;
    let names: BTreeSet<String> = wanted.iter().map(|s| s.name_any()).collect();
    for slice in wanted {
        let name = slice.name_any();
        match existing.iter().find(|e| e.name_any() == name) {
            // A conflict (made meanwhile) retries the reconcile at once.
            None => {
                api.create(&PostParams::default(), &slice).await?;
            }
            Some(current)
                if current.endpoints == slice.endpoints
                    && current.ports == slice.ports
                    && current.metadata.owner_references == slice.metadata.owner_references => {}
            Some(current) => {
                let mut next = slice;
                next.metadata.resource_version = current.metadata.resource_version.clone();
                api.replace(&name, &PostParams::default(), &next).await?;
            }
        }
    }
    for stale in existing.iter().filter(|e| !names.contains(&e.name_any())) {
        match api
            .delete(&stale.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn service(ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc"},
            "spec": {"selector": {"app": "web"}, "ports": ports},
        }))
        .unwrap()
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_group_pods() {
        let service =
            service(json!([{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]));
        let pods = [
            pod("a", "10.88.0.2", true, "web", 8080),
            pod("b", "10.88.0.3", false, "web", 8080),
            pod("c", "10.88.0.4", true, "web", 9090),
            pod("d", "10.88.0.5", true, "other", 8080),
        ];
        let groups = groups(&service, &pods);
        let keys: Vec<_> = groups.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                vec![("http".to_string(), 8080, "TCP".to_string())],
                vec![("http".to_string(), 9090, "TCP".to_string())],
            ]
        );
        let subsets = subsets(&groups);
        let ips = |a: &Option<Vec<EndpointAddress>>| -> Vec<String> {
            a.iter().flatten().map(|a| a.ip.clone()).collect()
        };
        assert_eq!(ips(&subsets[0].addresses), ["10.88.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.88.0.3"]);
        assert_eq!(ips(&subsets[1].addresses), ["10.88.0.4"]);
        assert_ne!(
            slice_name("web", &keys[0]),
            slice_name("web", &keys[1]),
            "each port set has its own slice"
        );
    }

    #[test]
    fn terminating_pods_serve_in_slices_but_leave_endpoints() {
        let service = service(json!([{"port": 80}]));
        let mut gone = pod("a", "10.88.0.2", true, "web", 80);
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let groups = groups(&service, &[gone]);
        let backend = &groups.values().next().unwrap()[0];
        assert!(backend.terminating && backend.serving && !backend.ready);
        assert!(subsets(&groups).is_empty());
    }
}
