//! The garbage collector: deletes objects whose owners are gone, and carries out the three
//! cascading-deletion policies, as kube-controller-manager's does.
//!
//! It watches every kind Bosun serves (Events aside: nothing owns them) and keeps a graph of
//! owner references by UID. Then:
//! - **Background** (the default): the owner is deleted at once; its dependents find their
//!   owner gone and are deleted in turn (a dependent with other, living owners only loses the
//!   reference).
//! - **Foreground**: the API server marks the owner with the `foregroundDeletion` finalizer;
//!   the collector deletes its dependents (in foreground too, if they have dependents of their
//!   own) and removes the finalizer once no dependent that blocks owner deletion
//!   (`blockOwnerDeletion: true`) is left, so the owner goes last.
//! - **Orphan**: the owner gets the `orphan` finalizer; the collector removes the owner's
//!   reference from each dependent, then the finalizer, and the dependents stay.
//!
//! The graph only ever shortens the work; what is destroyed is decided on live objects, since
//! each kind's watch may be behind the others. An owner missing from the graph is looked up
//! through the API before a dependent is deleted; a dependent is read again before it is
//! deleted for having lost its owners, and deleted only at that resourceVersion; the orphan
//! policy lists the owner's dependents from the API. Every delete carries the dependent's UID
//! as a precondition, so a recreated object of the same name is never hit.

use std::collections::{BTreeSet, HashMap, HashSet};

use bosun_api::resources::{RESOURCES, Resource};
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};

use super::{ControllersConfig, api_resource};
use crate::objects::{json_patch, owners_patch};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// What the collector knows of one object.
#[derive(Debug, Clone)]
struct Item {
    kind: usize,
    namespace: Option<String>,
    name: String,
    object: DynamicObject,
}

impl Item {
    fn uid(&self) -> &str {
        self.object.metadata.uid.as_deref().unwrap_or_default()
    }

    fn owners(&self) -> &[OwnerReference] {
        self.object
            .metadata
            .owner_references
            .as_deref()
            .unwrap_or_default()
    }

    fn deleting(&self) -> bool {
        self.object.metadata.deletion_timestamp.is_some()
    }

    fn has_finalizer(&self, name: &str) -> bool {
        self.object.finalizers().iter().any(|f| f == name)
    }
}

struct Collector {
    client: kube::Client,
    kinds: Vec<&'static Resource>,
    items: HashMap<String, Item>,
    /// Owner UID → dependents' UIDs.
    dependents: HashMap<String, BTreeSet<String>>,
    /// Objects to look at.
    dirty: BTreeSet<String>,
    /// Kinds whose first list has been seen.
    synced: Vec<bool>,
    /// UIDs seen in the list under way, per kind.
    relisting: Vec<Option<HashSet<String>>>,
}

/// Runs until the watches end (never, with a live client).
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let kinds: Vec<&'static Resource> = RESOURCES.iter().filter(|r| r.kind != "Event").collect();
    let streams = kinds.iter().enumerate().map(|(i, resource)| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(resource));
        watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |event| (i, event))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut collector = Collector {
        client,
        synced: vec![false; kinds.len()],
        relisting: vec![None; kinds.len()],
        kinds,
        items: HashMap::new(),
        dependents: HashMap::new(),
        dirty: BTreeSet::new(),
    };
    let mut retry = tokio::time::interval(config.retry);
    loop {
        tokio::select! {
            event = events.next() => {
                let Some((kind, event)) = event else { return };
                collector.observe(kind, event);
                // Take whatever else has arrived before acting.
                while let Some(Some((kind, event))) = events.next().now_or_never() {
                    collector.observe(kind, event);
                }
            }
            _ = retry.tick() => {}
        }
        if collector.synced.iter().all(|s| *s) {
            collector.work().await;
        }
    }
}

impl Collector {
    fn observe(
        &mut self,
        kind: usize,
        event: Result<watcher::Event<DynamicObject>, watcher::Error>,
    ) {
        match event {
            Ok(watcher::Event::Init) => self.relisting[kind] = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(object)) => {
                if let Some(seen) = self.relisting[kind].as_mut()
                    && let Some(uid) = object.metadata.uid.clone()
                {
                    seen.insert(uid);
                }
                self.upsert(kind, object);
            }
            Ok(watcher::Event::InitDone) => {
                let seen = self.relisting[kind].take().unwrap_or_default();
                let gone: Vec<String> = self
                    .items
                    .iter()
                    .filter(|(uid, item)| item.kind == kind && !seen.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in gone {
                    self.remove(&uid);
                }
                self.synced[kind] = true;
            }
            Ok(watcher::Event::Apply(object)) => self.upsert(kind, object),
            Ok(watcher::Event::Delete(object)) => {
                if let Some(uid) = object.metadata.uid.as_deref() {
                    self.remove(uid);
                }
            }
            Err(error) => {
                tracing::warn!(%error, kind = self.kinds[kind].kind, "garbage collector watch")
            }
        }
    }

    fn upsert(&mut self, kind: usize, object: DynamicObject) {
        let Some(uid) = object.metadata.uid.clone() else {
            return;
        };
        if let Some(old) = self.items.get(&uid) {
            for owner in old.owners() {
                if let Some(set) = self.dependents.get_mut(&owner.uid) {
                    set.remove(&uid);
                }
            }
        }
        let item = Item {
            kind,
            namespace: object.namespace(),
            name: object.name_any(),
            object,
        };
        for owner in item.owners() {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(uid.clone());
            // An owner waiting for its dependents looks again when one changes.
            self.dirty.insert(owner.uid.clone());
        }
        if !item.owners().is_empty() || item.deleting() {
            self.dirty.insert(uid.clone());
        }
        self.items.insert(uid, item);
    }

    fn remove(&mut self, uid: &str) {
        if let Some(item) = self.items.remove(uid) {
            for owner in item.owners() {
                if let Some(set) = self.dependents.get_mut(&owner.uid) {
                    set.remove(uid);
                }
                self.dirty.insert(owner.uid.clone());
            }
        }
        // Its dependents now have an owner that is gone.
        if let Some(set) = self.dependents.get(uid) {
            self.dirty.extend(set.iter().cloned());
        }
    }

    /// Attends to every dirty object; what fails stays dirty for the next round.
    async fn work(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for uid in dirty {
            let Some(item) = self.items.get(&uid).cloned() else {
                continue;
            };
            let done = if item.deleting() && item.has_finalizer(ORPHAN) {
                self.orphan_dependents(&item).await
            } else if item.deleting() && item.has_finalizer(FOREGROUND) {
                self.delete_dependents(&item).await
            } else {
                Ok(())
            };
            let done = match done {
                Ok(()) if !item.owners().is_empty() => self.check_owners(&item).await,
                other => other,
            };
            if let Err(error) = done {
                tracing::debug!(%error, object = %item.name, "garbage collection; will retry");
                self.dirty.insert(uid);
            }
        }
    }

    fn api(&self, kind: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = api_resource(self.kinds[kind]);
        match namespace {
            Some(ns) if self.kinds[kind].namespaced => {
                Api::namespaced_with(self.client.clone(), ns, &resource)
            }
            _ => Api::all_with(self.client.clone(), &resource),
        }
    }

    fn item_api(&self, item: &Item) -> Api<DynamicObject> {
        self.api(item.kind, item.namespace.as_deref())
    }

    fn dependents_of(&self, uid: &str) -> Vec<Item> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.items.get(d).cloned())
            .collect()
    }

    /// Orphan policy: drop the owner's reference from every dependent, then the finalizer.
    ///
    /// The dependents are listed from the API rather than taken from the graph: each kind has
    /// its own watch, so a dependent made just before the owner's deletion may not have
    /// reached the collector yet, and once the owner is gone it would be collected as an
    /// orphan of a missing owner, the opposite of what was asked.
    async fn orphan_dependents(&mut self, owner: &Item) -> Result<(), kube::Error> {
        for dependent in self.list_dependents(owner).await? {
            let owners: Vec<OwnerReference> = dependent
                .owners()
                .iter()
                .filter(|o| o.uid != owner.uid())
                .cloned()
                .collect();
            self.set_owners(&dependent, &owners).await?;
        }
        self.remove_finalizer(owner, ORPHAN).await
    }

    /// Every object that names `owner` among its owners, read from the API: of the owner's
    /// namespace if it has one (a namespaced object owns only objects of its namespace),
    /// else of the whole cluster.
    async fn list_dependents(&self, owner: &Item) -> Result<Vec<Item>, kube::Error> {
        let mut found = Vec::new();
        for (kind, resource) in self.kinds.iter().enumerate() {
            if owner.namespace.is_some() && !resource.namespaced {
                continue;
            }
            let list = self
                .api(kind, owner.namespace.as_deref())
                .list(&ListParams::default())
                .await?;
            for object in list.items {
                let item = Item {
                    kind,
                    namespace: object.namespace(),
                    name: object.name_any(),
                    object,
                };
                if item.owners().iter().any(|o| o.uid == owner.uid()) {
                    found.push(item);
                }
            }
        }
        Ok(found)
    }

    /// Foreground policy: delete the dependents; once none that blocks is left, remove the
    /// finalizer so that the owner goes.
    async fn delete_dependents(&mut self, owner: &Item) -> Result<(), kube::Error> {
        let mut blocking = 0;
        for dependent in self.dependents_of(owner.uid()) {
            let blocks = dependent
                .owners()
                .iter()
                .any(|o| o.uid == owner.uid() && o.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if !dependent.deleting() {
                let policy = if self
                    .dependents
                    .get(dependent.uid())
                    .is_some_and(|d| !d.is_empty())
                {
                    DeleteParams::foreground()
                } else {
                    DeleteParams::background()
                };
                self.delete(&dependent, policy).await?;
            }
        }
        if blocking == 0 {
            self.remove_finalizer(owner, FOREGROUND).await?;
        }
        Ok(())
    }

    /// A dependent whose owners are all gone is deleted; one with a living owner loses only
    /// the references to owners that are gone. A dependent of an owner being deleted in the
    /// foreground is deleted (in the foreground too if it has dependents of its own).
    async fn check_owners(&mut self, item: &Item) -> Result<(), kube::Error> {
        if item.deleting() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for owner in item.owners() {
            match self.owner_state(item, owner).await? {
                Owner::Alive => solid.push(owner.uid.clone()),
                Owner::Gone => dangling.push(owner.uid.clone()),
                Owner::DeletingForeground => waiting.push(owner.uid.clone()),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            let keep: Vec<OwnerReference> = item
                .owners()
                .iter()
                .filter(|o| solid.contains(&o.uid))
                .cloned()
                .collect();
            return self.set_owners(item, &keep).await;
        }
        let has_dependents = self
            .dependents
            .get(item.uid())
            .is_some_and(|d| !d.is_empty());
        let mut policy = if !waiting.is_empty() && has_dependents {
            DeleteParams::foreground()
        } else {
            DeleteParams::background()
        };
        // The graph may be behind the object: an orphaning owner may just have dropped its
        // reference. Decide on the live object, and delete only the version looked at.
        let Some(live) = self.item_api(item).get_opt(&item.name).await? else {
            return Ok(());
        };
        if live.metadata.uid.as_deref() != Some(item.uid())
            || live.metadata.owner_references != item.object.metadata.owner_references
        {
            // The watch brings the newer version, and with it another look.
            return Ok(());
        }
        tracing::info!(
            kind = self.kinds[item.kind].kind,
            namespace = item.namespace.as_deref().unwrap_or_default(),
            name = %item.name,
            "deleting an object whose owners are gone"
        );
        policy.preconditions = Some(Preconditions {
            uid: Some(item.uid().to_string()),
            resource_version: live.metadata.resource_version,
        });
        self.delete(item, policy).await
    }

    async fn owner_state(&self, item: &Item, owner: &OwnerReference) -> Result<Owner, kube::Error> {
        if let Some(known) = self.items.get(&owner.uid) {
            return Ok(if known.deleting() && known.has_finalizer(FOREGROUND) {
                Owner::DeletingForeground
            } else {
                Owner::Alive
            });
        }
        // Not in the graph: ask the API (the watch of its kind may be behind).
        let (group, version) = match owner.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", owner.api_version.as_str()),
        };
        let Some(kind) = self
            .kinds
            .iter()
            .position(|r| r.group == group && r.version == version && r.kind == owner.kind)
        else {
            // A kind this server does not serve cannot be checked: leave the reference be.
            return Ok(Owner::Alive);
        };
        match self
            .api(kind, item.namespace.as_deref())
            .get_opt(&owner.name)
            .await?
        {
            Some(found) if found.metadata.uid.as_deref() == Some(owner.uid.as_str()) => Ok(
                if found.metadata.deletion_timestamp.is_some()
                    && found.finalizers().iter().any(|f| f == FOREGROUND)
                {
                    Owner::DeletingForeground
                } else {
                    Owner::Alive
                },
            ),
            _ => Ok(Owner::Gone),
        }
    }

    async fn set_owners(&self, item: &Item, owners: &[OwnerReference]) -> Result<(), kube::Error> {
        let patch = owners_patch(&item.object.metadata, owners);
        match self
            .item_api(item)
            .patch(&item.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes `item`, never a replacement of the same name: the UID is a precondition (unless
    /// `params` already carries stricter ones).
    async fn delete(&self, item: &Item, mut params: DeleteParams) -> Result<(), kube::Error> {
        params.preconditions.get_or_insert_with(|| Preconditions {
            uid: Some(item.uid().to_string()),
            resource_version: None,
        });
        // A conflict (a precondition failed: the object was replaced or changed) leaves the
        // item dirty; the next round finds the replacement under its own UID, or tries again.
        match self.item_api(item).delete(&item.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove_finalizer(&self, item: &Item, finalizer: &str) -> Result<(), kube::Error> {
        let current = item.object.finalizers();
        let kept: Vec<&String> = current.iter().filter(|f| *f != finalizer).collect();
        let patch = json_patch(serde_json::json!([
            {"op": "test", "path": "/metadata/uid", "value": item.uid()},
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "replace", "path": "/metadata/finalizers", "value": kept},
        ]));
        match self
            .item_api(item)
            .patch(&item.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

enum Owner {
    Alive,
    Gone,
    DeletingForeground,
}
