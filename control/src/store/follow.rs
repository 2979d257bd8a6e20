//! Keeping an in-memory view in step with resources of the store: a list, then every change
//! from the list's revision, and a list again when the watch fails (compaction overtook it).
//! The API server's own caches use it (RBAC's index, the ServiceAccount token authenticator's
//! objects), so they decide from memory, never from a store read per request.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::{EventType, Key, ListRequest, Object, Result, Store, WatchRequest};

/// How long a failed list or watch waits before trying again.
const RETRY: Duration = Duration::from_millis(500);

/// What a followed view does with the store's objects.
pub trait Sink: Send + Sync + 'static {
    /// Everything of `resource`, replacing what the view held of it.
    fn reset(&self, resource: &str, objects: &[Object]);
    /// One change: the new value, or `None` when the object is gone.
    fn apply(&self, resource: &str, key: &Key, value: Option<&Value>);
}

/// Lists each of `resources` into `sink` (returning once all are read, so the view is never
/// empty when used), then follows them in the background for as long as `sink` lives.
pub async fn follow<S: Sink>(
    store: Arc<dyn Store>,
    resources: &[&'static str],
    sink: &Arc<S>,
) -> Result<()> {
    for resource in resources {
        let revision = relist(&*store, resource, &**sink).await?;
        tokio::spawn(run(store.clone(), Arc::downgrade(sink), resource, revision));
    }
    Ok(())
}

async fn relist(store: &dyn Store, resource: &str, sink: &dyn Sink) -> Result<i64> {
    let list = store
        .list(&ListRequest {
            resource: resource.to_string(),
            ..Default::default()
        })
        .await?;
    sink.reset(resource, &list.items);
    Ok(list.revision)
}

async fn run<S: Sink>(
    store: Arc<dyn Store>,
    sink: Weak<S>,
    resource: &'static str,
    mut revision: i64,
) {
    loop {
        let watch = store
            .watch(WatchRequest {
                resource: resource.to_string(),
                after: revision,
                ..Default::default()
            })
            .await;
        match watch {
            Ok(mut events) => {
                while let Some(event) = events.next().await {
                    let Some(sink) = sink.upgrade() else { return };
                    match event {
                        Ok(event) => {
                            let value =
                                (event.kind != EventType::Deleted).then_some(&event.object.value);
                            sink.apply(resource, &event.object.key, value);
                            revision = event.revision;
                        }
                        Err(error) => {
                            tracing::info!(%error, resource, "watch ended; listing again");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, resource, "cannot watch"),
        }
        tokio::time::sleep(RETRY).await;
        let Some(sink) = sink.upgrade() else { return };
        match relist(&*store, resource, &*sink).await {
            Ok(listed) => revision = listed,
            Err(error) => tracing::warn!(%error, resource, "cannot list"),
        }
    }
}
