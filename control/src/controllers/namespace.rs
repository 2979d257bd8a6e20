//! The namespace controller: empties a namespace that is being deleted, then lets it go.
//!
//! A namespace is created with the `kubernetes` finalizer in `spec.finalizers`; deleting it
//! only marks it (`deletionTimestamp`, phase `Terminating`, and no new objects may be created
//! in it). This controller then deletes every namespaced object in it, kind by kind, waits
//! until they are all gone (pods wait for their node to stop them), and removes its finalizer
//! through the `finalize` subresource, after which the API server deletes the namespace.
//! While objects remain, the namespace carries the `NamespaceContentRemaining` condition.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bosun_api::resources::{RESOURCES, Resource};
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::{ControllersConfig, Error, api_resource};
use crate::objects::deleting;

/// The finalizer of `spec.finalizers` this controller owns.
pub const FINALIZER: &str = "kubernetes";

struct Context {
    client: kube::Client,
    retry: Duration,
}

/// Runs until the watches end (never, with a live client).
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(namespaces, watcher::Config::default());
    let store = controller.store();
    let context = Arc::new(Context {
        client,
        retry: config.retry,
    });
    // The last pods of a terminating namespace going away is what it waits for.
    let controller = controller.watches(pods, watcher::Config::default(), move |pod| {
        let namespace = pod.namespace().unwrap_or_default();
        let object = ObjectRef::new(&namespace);
        store
            .get(&object)
            .filter(|ns| deleting(&ns.metadata))
            .map(|_| object)
    });
    super::drive(controller, "namespace", reconcile, context, config.retry).await;
}

/// The namespaced kinds, each stored resource once (Events are served twice).
fn namespaced_kinds() -> Vec<&'static Resource> {
    let mut seen = BTreeSet::new();
    RESOURCES
        .iter()
        .filter(|r| r.namespaced && seen.insert(r.storage_name()))
        .collect()
}

#[tracing::instrument(name = "reconcile", skip_all, fields(namespace = %kube::ResourceExt::name_any(&*ns), namespace = ?ns.metadata.namespace))]
async fn reconcile(ns: Arc<Namespace>, context: Arc<Context>) -> Result<Action, Error> {
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !deleting(&ns.metadata) || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let mut remaining = Vec::new();
    for resource in namespaced_kinds() {
        let api: Api<DynamicObject> =
            Api::namespaced_with(context.client.clone(), &name, &api_resource(resource));
        let left = api.list(&ListParams::default()).await?.items;
        if left.is_empty() {
            continue;
        }
        // Delete what is not already going; what is going is waited for.
        if left.iter().any(|o| o.metadata.deletion_timestamp.is_none()) {
            api.delete_collection(&DeleteParams::background(), &ListParams::default())
                .await?;
        }
        remaining.push(format!(
            "{} has {} resource instances",
            resource.plural,
            left.len()
        ));
    }
    let namespaces: Api<Namespace> = Api::all(context.client.clone());
    if !remaining.is_empty() {
        let message = format!("Some resources are remaining: {}", remaining.join(", "));
        set_condition(&namespaces, &ns, &message).await?;
        return Ok(Action::requeue(context.retry));
    }
    let mut finalized = (*ns).clone();
    finalized
        .spec
        .get_or_insert_with(Default::default)
        .finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    match namespaces
        .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => tracing::info!(namespace = %name, "namespace emptied and finalized"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Says what is left in the namespace (once per distinct message).
async fn set_condition(api: &Api<Namespace>, ns: &Namespace, message: &str) -> Result<(), Error> {
    let current = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "NamespaceContentRemaining"));
    if current.is_some_and(|c| c.message.as_deref() == Some(message)) {
        return Ok(());
    }
    let condition = NamespaceCondition {
        type_: "NamespaceContentRemaining".into(),
        status: "True".into(),
        reason: Some("SomeResourcesRemain".into()),
        message: Some(message.to_string()),
        last_transition_time: Some(Time(Timestamp::now())),
    };
    let mut conditions: Vec<NamespaceCondition> = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != condition.type_)
        .collect();
    conditions.push(condition);
    match api
        .patch_status(
            &ns.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": conditions}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
