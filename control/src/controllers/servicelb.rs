//! The service load-balancer controller: Bosun has no cloud load balancer, so a
//! `type: LoadBalancer` Service is served like a NodePort Service (every node's proxy answers
//! on its node ports) and this controller publishes the nodes' addresses as its
//! `status.loadBalancer.ingress`, as k3s' ServiceLB does. Services of other types get an empty
//! `status.loadBalancer`.
//!
//! A change to a Service or to any Node (one joining, leaving or changing its address) runs it
//! again.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::objects::deleting;

struct Context {
    client: kube::Client,
}

pub async fn run(client: kube::Client, config: ControllersConfig) {
    let services: Api<Service> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    let controller = controller.watches(nodes, watcher::Config::default(), move |_node| {
        load_balancers(&store)
    });
    let context = Arc::new(Context { client });
    super::drive(controller, "servicelb", reconcile, context, config.retry).await;
}

fn is_load_balancer(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

fn load_balancers(store: &Store<Service>) -> Vec<ObjectRef<Service>> {
    store
        .state()
        .iter()
        .filter(|s| is_load_balancer(s))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The address a node is reached on: its InternalIP, else its ExternalIP.
pub(crate) fn node_ip(node: &Node) -> Option<String> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    ["InternalIP", "ExternalIP"].iter().find_map(|kind| {
        addresses
            .iter()
            .find(|a| a.type_ == *kind)
            .map(|a| a.address.clone())
    })
}

#[tracing::instrument(name = "reconcile", skip_all, fields(service = %kube::ResourceExt::name_any(&*service), namespace = ?service.metadata.namespace))]
async fn reconcile(service: Arc<Service>, context: Arc<Context>) -> Result<Action, Error> {
    if deleting(service.meta()) {
        return Ok(Action::await_change());
    }
    let wanted = if is_load_balancer(&service) {
        let nodes: Api<Node> = Api::all(context.client.clone());
        let mut ips: Vec<String> = nodes
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|n| !deleting(n.meta()))
            .filter_map(node_ip)
            .collect();
        ips.sort();
        ips.dedup();
        LoadBalancerStatus {
            ingress: Some(
                ips.into_iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: Some(ip),
                        ip_mode: Some("VIP".into()),
                        ..Default::default()
                    })
                    .collect(),
            )
            .filter(|i: &Vec<_>| !i.is_empty()),
        }
    } else {
        LoadBalancerStatus::default()
    };
    let current = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.clone())
        .unwrap_or_default();
    if current != wanted {
        let api: Api<Service> = Api::namespaced(
            context.client.clone(),
            &service.namespace().unwrap_or_default(),
        );
        api.patch_status(
            &service.name_any(),
            &PatchParams::default(),
            // `null` removes ingress a merge patch would otherwise keep.
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": wanted.ingress}}})),
        )
        .await?;
    }
    Ok(Action::await_change())
}
