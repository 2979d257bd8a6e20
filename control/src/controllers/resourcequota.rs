//! The ResourceQuota controller (upstream's `resourcequota`): keeps each quota's
//! `status.hard` equal to its `spec.hard`, and recomputes `status.used` from the namespace's
//! objects. Creates are charged by the API server in the object's own transaction
//! (`apiserver/admission/quota.rs`); this gives back what deletions and finished pods free,
//! counts a new quota, and repairs anything else, every `--resource-quota-sync-period`.
//!
//! A recount is exact under concurrent creates: it reads the quota first, then lists the
//! objects, and writes the status only if the quota is still at the revision it read. A
//! create charged after the read changed that revision, so the write fails and the namespace is
//! counted again.

use std::collections::BTreeSet;
use std::time::SystemTime;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource as _, ResourceExt};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{ControllersConfig, Error, api_resource};
use crate::quota;

/// The kinds whose deletions (and, for pods, finishing) give quota back at once; the periodic
/// recount covers the rest.
const GIVEN_BACK: [&str; 4] = ["pods", "services", "configmaps", "secrets"];

pub async fn run(client: kube::Client, config: ControllersConfig) {
    let (queue, mut namespaces) = mpsc::unbounded_channel::<String>();
    let (quotas, writer) = reflector::store::<ResourceQuota>();
    let watched = reflector::reflector(
        writer,
        watcher(
            Api::<ResourceQuota>::all(client.clone()),
            Default::default(),
        ),
    )
    .default_backoff()
    .applied_objects();
    let wanted = queue.clone();
    tokio::spawn(async move {
        futures::pin_mut!(watched);
        while let Some(event) = watched.next().await {
            // A new or changed quota (its hard limits, or a used value it lacks) is counted.
            if let Ok(quota) = event
                && needs_count(&quota)
            {
                let _ = wanted.send(quota.namespace().unwrap_or_default());
            }
        }
    });
    for plural in GIVEN_BACK {
        let resource = bosun_api::resources::find("", "v1", plural).expect("a core resource");
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(resource));
        let queue = queue.clone();
        let quotas = quotas.clone();
        tokio::spawn(async move {
            let events = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                let freed = match event {
                    Ok(watcher::Event::Delete(object)) => Some(object),
                    Ok(watcher::Event::Apply(object)) if plural == "pods" && finished(&object) => {
                        Some(object)
                    }
                    _ => None,
                };
                let Some(namespace) = freed.and_then(|o| o.namespace()) else {
                    continue;
                };
                if quotas
                    .state()
                    .iter()
                    .any(|q| q.namespace().as_deref() == Some(&namespace))
                {
                    let _ = queue.send(namespace);
                }
            }
        });
    }
    let every = queue.clone();
    let resync_quotas = quotas.clone();
    let period = config.resource_quota_sync_period;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let all: BTreeSet<String> = resync_quotas
                .state()
                .iter()
                .filter_map(|q| q.namespace())
                .collect();
            for namespace in all {
                let _ = every.send(namespace);
            }
        }
    });
    while let Some(first) = namespaces.recv().await {
        let mut pending = BTreeSet::from([first]);
        while let Ok(more) = namespaces.try_recv() {
            pending.insert(more);
        }
        for namespace in pending {
            if let Err(error) = count(&client, &namespace).await {
                tracing::warn!(%error, %namespace, "counting quota usage failed; trying again");
                let queue = queue.clone();
                let retry = config.retry;
                tokio::spawn(async move {
                    tokio::time::sleep(retry).await;
                    let _ = queue.send(namespace);
                });
            }
        }
    }
}

/// Whether a quota's status is behind its spec.
fn needs_count(quota: &ResourceQuota) -> bool {
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let status = quota.status.clone().unwrap_or_default();
    let used = status.used.unwrap_or_default();
    status.hard.unwrap_or_default() != hard || hard.keys().any(|k| !used.contains_key(k))
}

/// A pod that no longer holds its compute quota.
fn finished(pod: &DynamicObject) -> bool {
    let phase = pod.data.pointer("/status/phase").and_then(Value::as_str);
    matches!(phase, Some("Succeeded" | "Failed")) || pod.meta().deletion_timestamp.is_some()
}

/// Recounts every quota of `namespace`, until each write lands on the revision it read.
async fn count(client: &kube::Client, namespace: &str) -> Result<(), Error> {
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), namespace);
    for quota in api.list(&ListParams::default()).await?.items {
        for attempt in 0.. {
            match count_one(client, &api, &quota.name_any()).await {
                Err(Error::Api(kube::Error::Api(response))) if response.code == 409 => {
                    if attempt >= 10 {
                        return Err(Error::Api(kube::Error::Api(response)));
                    }
                }
                other => {
                    other?;
                    break;
                }
            }
        }
    }
    Ok(())
}

async fn count_one(
    client: &kube::Client,
    api: &Api<ResourceQuota>,
    name: &str,
) -> Result<(), Error> {
    let Some(current) = api.get_opt(name).await? else {
        return Ok(());
    };
    let namespace = current.namespace().unwrap_or_default();
    let quota = quota::Quota::read(
        serde_json::to_value(&current).map_err(|e| Error::Invalid(e.to_string()))?,
    );
    let mut used = quota::Usage::new();
    for resource in quota.counted_resources() {
        let objects: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &api_resource(resource));
        let items: Vec<Value> = objects
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect();
        used.extend(quota.total(resource, &items, SystemTime::now()));
    }
    let status =
        serde_json::json!({"hard": quota.object["spec"]["hard"], "used": quota::write(&used)});
    if quota.object["status"] == status {
        return Ok(());
    }
    let mut updated = quota.object.clone();
    updated["status"] = status;
    // The revision read above is the precondition: a create charged since then fails this.
    let updated: ResourceQuota =
        serde_json::from_value(updated).map_err(|e| Error::Invalid(e.to_string()))?;
    api.replace_status(name, &PostParams::default(), &updated)
        .await?;
    tracing::debug!(%namespace, quota = name, "counted quota usage");
    Ok(())
}
