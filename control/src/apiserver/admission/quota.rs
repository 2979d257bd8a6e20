//! ResourceQuota: every create (and a Service's update, which can add node ports) is charged
//! to the quotas of its namespace that apply to it, **in the same store transaction as the
//! object's write** ([`Store::transact`]): the object, and each charged quota with its new
//! `status.used` as a compare-and-swap on the revision the charge was computed from. Racing
//! creates, on one server or several, can therefore never exceed `hard`, and `status.used`
//! never counts an object that was not written. (Upstream's plugin writes the quota, then the
//! object, and the two drift apart when the second write fails.)
//!
//! Writes to one namespace's quotas are combined, as upstream's evaluator does: whoever finds
//! no batch in flight for the namespace takes every write queued for it, charges them in
//! order, and commits them with the quotas' new usage in one transaction. When another server
//! changed a quota first (the compare-and-swap fails), the quota is read again and the batch
//! charged anew. Quotas come from a followed view of the store, updated at once with what this
//! server writes; a quota whose `status.used` lacks a resource (the controller has not counted
//! it yet) has that usage counted from the namespace's objects first. Deletions and pods that
//! finish are given back by the quota controller (`controllers/resourcequota.rs`), which also
//! repairs anything else.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use bosun_api::resources::Resource;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::apiserver::status::{ApiError, ApiResult};
use crate::quota::{self, Quota, Usage};
use crate::store::{self, Key, ListRequest, Object, Op, Store, follow};

const QUOTAS: &str = "resourcequotas";

/// How many times a batch is charged anew when other servers keep changing its quotas.
const ATTEMPTS: usize = 16;

/// An admitted write, as it is to be stored.
pub struct Write {
    resource: &'static Resource,
    key: Key,
    object: Value,
    kind: Kind,
}

enum Kind {
    Create,
    /// `old` is kept only where an update can change the usage (a Service's type).
    Update {
        expected: Option<i64>,
        old: Option<Value>,
    },
}

impl Write {
    pub fn create(resource: &'static Resource, key: Key, object: Value) -> Self {
        Self {
            resource,
            key,
            object,
            kind: Kind::Create,
        }
    }

    /// Replaces `old` with `object`, only at revision `expected` when given.
    pub fn update(
        resource: &'static Resource,
        key: Key,
        object: Value,
        old: &Value,
        expected: Option<i64>,
    ) -> Self {
        // Upstream's evaluators handle updates of no other kind.
        let counted = resource.group.is_empty() && resource.plural == "services";
        Self {
            resource,
            key,
            object,
            kind: Kind::Update {
                expected,
                old: counted.then(|| old.clone()),
            },
        }
    }

    fn op(&self) -> Op {
        let (key, value) = (self.key.clone(), self.object.clone());
        match self.kind {
            Kind::Create => Op::Create { key, value },
            Kind::Update { expected, .. } => Op::Update {
                key,
                value,
                expected,
            },
        }
    }

    fn is_create(&self) -> bool {
        matches!(self.kind, Kind::Create)
    }

    /// What the write adds to the namespace's usage; nothing for writes quota ignores.
    fn delta(&self, now: SystemTime) -> Usage {
        let new = quota::usage(self.resource, &self.object, now);
        let change = match &self.kind {
            Kind::Create => new,
            Kind::Update { old: Some(old), .. } => {
                quota::subtract(&new, &quota::usage(self.resource, old, now))
            }
            Kind::Update { old: None, .. } => Usage::new(),
        };
        change.into_iter().filter(|(_, v)| v.milli != 0).collect()
    }
}

/// A write waiting for its namespace's batch.
struct Pending {
    write: Write,
    reply: oneshot::Sender<ApiResult<Object>>,
}

/// The writes queued for one namespace, and the turn to charge them.
#[derive(Default)]
struct Namespace {
    queue: Mutex<Vec<Pending>>,
    turn: tokio::sync::Mutex<()>,
}

/// One quota as a batch charges it.
struct Charged {
    quota: Arc<Quota>,
    used: Usage,
    changed: bool,
}

pub struct ResourceQuota {
    /// namespace → name → quota, as last seen (the newest revision wins).
    quotas: RwLock<HashMap<String, BTreeMap<String, Arc<Quota>>>>,
    namespaces: Mutex<HashMap<String, Arc<Namespace>>>,
}

impl follow::Sink for ResourceQuota {
    fn reset(&self, _resource: &str, objects: &[Object]) {
        let mut quotas = self.quotas.write().expect("quota view not poisoned");
        quotas.clear();
        for object in objects {
            quotas
                .entry(object.key.namespace.clone())
                .or_default()
                .insert(
                    object.key.name.clone(),
                    Arc::new(Quota::read(object.value.clone())),
                );
        }
    }

    fn apply(&self, _resource: &str, key: &Key, value: Option<&Value>) {
        match value {
            Some(value) => self.remember(value.clone()),
            None => {
                let mut quotas = self.quotas.write().expect("quota view not poisoned");
                if let Some(names) = quotas.get_mut(&key.namespace) {
                    names.remove(&key.name);
                }
            }
        }
    }
}

impl ResourceQuota {
    /// Reads every quota, then follows them.
    pub async fn start(store: Arc<dyn Store>) -> store::Result<Arc<Self>> {
        let plugin = Arc::new(Self {
            quotas: Default::default(),
            namespaces: Default::default(),
        });
        follow::follow(store, &[QUOTAS], &plugin).await?;
        Ok(plugin)
    }

    /// Keeps `quota` unless a newer revision of it is known.
    fn remember(&self, quota: Value) {
        let quota = Quota::read(quota);
        let namespace = quota.object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut quotas = self.quotas.write().expect("quota view not poisoned");
        let names = quotas.entry(namespace).or_default();
        if names
            .get(&quota.name)
            .is_none_or(|known| known.revision < quota.revision)
        {
            names.insert(quota.name.clone(), Arc::new(quota));
        }
    }

    fn quotas_of(&self, namespace: &str) -> Vec<Arc<Quota>> {
        let quotas = self.quotas.read().expect("quota view not poisoned");
        quotas
            .get(namespace)
            .map(|names| names.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Stores `write`, charged to the quotas that apply to it.
    pub async fn write(&self, store: &dyn Store, write: Write) -> ApiResult<Object> {
        let namespace = write.key.namespace.clone();
        let quotas = self.quotas_of(&namespace);
        let charged = !quotas.is_empty() && {
            let delta = write.delta(SystemTime::now());
            !delta.is_empty()
                && quotas.iter().any(|q| {
                    q.applies(write.resource, &write.object)
                        && (write.is_create()
                            || delta.keys().any(|k| q.limited(write.resource).contains(k)))
                })
        };
        if !charged {
            return uncharged(store, write).await;
        }
        let queue = self
            .namespaces
            .lock()
            .expect("quota queues not poisoned")
            .entry(namespace)
            .or_default()
            .clone();
        let (reply, answer) = oneshot::channel();
        queue
            .queue
            .lock()
            .expect("quota queue not poisoned")
            .push(Pending { write, reply });
        {
            // Whoever holds the turn charges everything queued, so once we have it our write
            // has been charged, or is charged now.
            let _turn = queue.turn.lock().await;
            let batch = std::mem::take(&mut *queue.queue.lock().expect("quota queue not poisoned"));
            if !batch.is_empty() {
                self.charge(store, batch).await;
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ApiError::internal("the quota batch was dropped")))
    }

    /// Charges a batch of one namespace's writes and commits the admitted ones.
    async fn charge(&self, store: &dyn Store, mut batch: Vec<Pending>) {
        let namespace = batch[0].write.key.namespace.clone();
        for _ in 0..ATTEMPTS {
            let now = SystemTime::now();
            let mut quotas = match self.load(store, &namespace, &batch).await {
                Ok(quotas) => quotas,
                Err(error) => return refuse_all(batch, &error),
            };
            let mut admitted = Vec::with_capacity(batch.len());
            for pending in batch.drain(..) {
                match admit(&mut quotas, &pending.write, now) {
                    Ok(()) => admitted.push(pending),
                    Err(error) => {
                        let _ = pending.reply.send(Err(error));
                    }
                }
            }
            if admitted.is_empty() {
                return;
            }
            let mut ops: Vec<Op> = admitted.iter().map(|p| p.write.op()).collect();
            for (name, charged) in quotas.iter().filter(|(_, c)| c.changed) {
                let mut object = charged.quota.object.clone();
                object["status"]["used"] = quota::write(&charged.used);
                if !object["status"]["hard"].is_object() {
                    object["status"]["hard"] = quota::write(&charged.quota.hard);
                }
                ops.push(Op::Update {
                    key: Key::new(QUOTAS, &namespace, name),
                    value: object,
                    expected: Some(charged.quota.revision),
                });
            }
            match store.transact(ops).await {
                Ok(written) => {
                    let (objects, quotas) = written.split_at(admitted.len());
                    for quota in quotas {
                        self.remember(quota.value.clone());
                    }
                    for (pending, object) in admitted.into_iter().zip(objects) {
                        let _ = pending.reply.send(Ok(object.clone()));
                    }
                    return;
                }
                // Another server charged a quota (or deleted it) first: read it again.
                Err(store::Error::Conflict { key, .. } | store::Error::NotFound { key })
                    if key.resource == QUOTAS && admitted.iter().all(|p| p.write.key != key) =>
                {
                    self.refresh(store, &key).await;
                    batch = admitted;
                }
                // One write failed on its own (it exists already, or was changed): it alone
                // gets the error, and the others are charged again without it.
                Err(
                    error @ (store::Error::Conflict { .. }
                    | store::Error::NotFound { .. }
                    | store::Error::AlreadyExists { .. }
                    | store::Error::InvalidValue { .. }
                    | store::Error::TooLarge { .. }),
                ) => {
                    let key = match &error {
                        store::Error::Conflict { key, .. }
                        | store::Error::NotFound { key }
                        | store::Error::AlreadyExists { key } => Some(key.clone()),
                        _ => None,
                    };
                    let (failed, rest): (Vec<_>, Vec<_>) = admitted
                        .into_iter()
                        .partition(|p| key.as_ref().is_none_or(|k| *k == p.write.key));
                    let message = error.to_string();
                    let mut error = Some(error);
                    for pending in failed {
                        let cause = error
                            .take()
                            .unwrap_or_else(|| store::Error::Unavailable(message.clone()));
                        let name = &pending.write.key.name;
                        let _ = pending.reply.send(Err(ApiError::from_store(
                            cause,
                            pending.write.resource,
                            name,
                        )));
                    }
                    batch = rest;
                    if batch.is_empty() {
                        return;
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    for pending in admitted {
                        let name = pending.write.key.name.clone();
                        let error = store::Error::Unavailable(message.clone());
                        let _ = pending.reply.send(Err(ApiError::from_store(
                            error,
                            pending.write.resource,
                            &name,
                        )));
                    }
                    return;
                }
            }
        }
        for pending in batch {
            let error = ApiError::conflict(
                pending.write.resource,
                &pending.write.key.name,
                "the namespace's quotas kept changing; please try again",
            );
            let _ = pending.reply.send(Err(error));
        }
    }

    async fn refresh(&self, store: &dyn Store, key: &Key) {
        match store.get(key).await {
            Ok(object) => self.remember(object.value),
            Err(store::Error::NotFound { .. }) => {
                let mut quotas = self.quotas.write().expect("quota view not poisoned");
                if let Some(names) = quotas.get_mut(&key.namespace) {
                    names.remove(&key.name);
                }
            }
            Err(error) => tracing::debug!(%error, %key, "reading a quota again failed"),
        }
    }

    /// The namespace's quotas, each with a usage for every resource it limits: what its
    /// status says, and what the namespace's objects count for a resource the status lacks.
    async fn load(
        &self,
        store: &dyn Store,
        namespace: &str,
        batch: &[Pending],
    ) -> ApiResult<BTreeMap<String, Charged>> {
        let mut charged = BTreeMap::new();
        for quota in self.quotas_of(namespace) {
            let mut used = quota.used.clone();
            let mut changed = false;
            let resources: Vec<&'static Resource> = batch
                .iter()
                .map(|p| p.write.resource)
                .chain(quota.counted_resources())
                .collect();
            for resource in resources {
                let limited = quota.limited(resource);
                if limited.iter().all(|k| used.contains_key(k)) {
                    continue;
                }
                let items = list_all(store, resource, namespace).await?;
                let total =
                    quota.total(resource, items.iter().map(|o| &o.value), SystemTime::now());
                for (key, amount) in total {
                    used.entry(key).or_insert(amount);
                }
                changed = true;
            }
            charged.insert(
                quota.name.clone(),
                Charged {
                    quota,
                    used,
                    changed,
                },
            );
        }
        Ok(charged)
    }
}

/// Stores a write that no quota counts.
pub(super) async fn uncharged(store: &dyn Store, write: Write) -> ApiResult<Object> {
    let written = match write.kind {
        Kind::Create => store.create(&write.key, write.object).await,
        Kind::Update { expected, .. } => store.update(&write.key, write.object, expected).await,
    };
    written.map_err(|e| ApiError::from_store(e, write.resource, &write.key.name))
}

/// Charges one write to every quota that applies to it, or refuses it (charging nothing).
fn admit(quotas: &mut BTreeMap<String, Charged>, write: &Write, now: SystemTime) -> ApiResult<()> {
    let delta = write.delta(now);
    let mut charges = Vec::new();
    for (name, charged) in quotas.iter() {
        if !charged.quota.applies(write.resource, &write.object) {
            continue;
        }
        let limited = charged.quota.limited(write.resource);
        if write.is_create() && write.resource.plural == "pods" {
            let missing = quota::missing(&limited, &write.object);
            if !missing.is_empty() {
                return Err(refusal(
                    write,
                    &format!("failed quota: {name}: must specify {}", missing.join(",")),
                ));
            }
        }
        let requested = quota::mask(&delta, &limited);
        if requested.is_empty() {
            continue;
        }
        let wanted = quota::add(&charged.used, &requested);
        let exceeded: std::collections::BTreeSet<String> = requested
            .iter()
            .filter(|(key, amount)| {
                amount.milli > 0
                    && charged
                        .quota
                        .hard
                        .get(*key)
                        .is_some_and(|hard| wanted[*key].milli > hard.milli)
            })
            .map(|(key, _)| key.clone())
            .collect();
        if !exceeded.is_empty() {
            return Err(refusal(
                write,
                &format!(
                    "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                    quota::pretty(&quota::mask(&requested, &exceeded)),
                    quota::pretty(&quota::mask(&charged.used, &exceeded)),
                    quota::pretty(&quota::mask(&charged.quota.hard, &exceeded)),
                ),
            ));
        }
        charges.push((name.clone(), wanted));
    }
    for (name, wanted) in charges {
        let charged = quotas.get_mut(&name).expect("charged a known quota");
        charged.used = wanted;
        charged.changed = true;
    }
    Ok(())
}

fn refusal(write: &Write, why: &str) -> ApiError {
    ApiError::forbidden_by(write.resource, &write.key.name, why)
}

fn refuse_all(batch: Vec<Pending>, error: &ApiError) {
    for pending in batch {
        let _ = pending.reply.send(Err(error.clone()));
    }
}

/// Every object of `resource` in `namespace`.
async fn list_all(
    store: &dyn Store,
    resource: &Resource,
    namespace: &str,
) -> ApiResult<Vec<Object>> {
    let listed = store
        .list(&ListRequest {
            resource: resource.storage_name(),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::from_store(e, resource, ""))?;
    Ok(listed.items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn quota_object(name: &str, hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
               "spec": {"hard": hard}, "status": {"hard": hard, "used": used}})
    }

    fn pods() -> &'static Resource {
        bosun_api::resources::find("", "v1", "pods").unwrap()
    }

    fn charged(object: Value) -> BTreeMap<String, Charged> {
        let quota = Arc::new(Quota::read(object));
        BTreeMap::from([(
            quota.name.clone(),
            Charged {
                used: quota.used.clone(),
                quota,
                changed: false,
            },
        )])
    }

    fn pod_write(name: &str, resources: Value) -> Write {
        Write::create(
            pods(),
            Key::new("pods", "ns", name),
            json!({"metadata": {"name": name, "namespace": "ns"},
                   "spec": {"containers": [{"name": "c", "resources": resources}]}}),
        )
    }

    #[test]
    fn refusals_read_as_upstream_writes_them() {
        let mut quotas = charged(quota_object(
            "q",
            json!({"pods": "5"}),
            json!({"pods": "5"}),
        ));
        let error = admit(&mut quotas, &pod_write("p", json!({})), SystemTime::now()).unwrap_err();
        assert_eq!(
            error.message,
            r#"pods "p" is forbidden: exceeded quota: q, requested: pods=1, used: pods=5, limited: pods=5"#
        );
        let mut quotas = charged(quota_object(
            "compute",
            json!({"requests.cpu": "1", "limits.memory": "1Gi"}),
            json!({"requests.cpu": "0", "limits.memory": "0"}),
        ));
        let error = admit(&mut quotas, &pod_write("p", json!({})), SystemTime::now()).unwrap_err();
        assert_eq!(
            error.message,
            r#"pods "p" is forbidden: failed quota: compute: must specify limits.memory,requests.cpu"#
        );
        let big = json!({"requests": {"cpu": "2"}, "limits": {"memory": "64Mi"}});
        let error = admit(&mut quotas, &pod_write("p", big), SystemTime::now()).unwrap_err();
        assert_eq!(
            error.message,
            r#"pods "p" is forbidden: exceeded quota: compute, requested: requests.cpu=2, used: requests.cpu=0, limited: requests.cpu=1"#
        );
        let fits = json!({"requests": {"cpu": "500m"}, "limits": {"memory": "64Mi"}});
        admit(&mut quotas, &pod_write("p", fits), SystemTime::now()).unwrap();
        let used = &quotas["compute"].used;
        assert_eq!(used["requests.cpu"].to_string(), "500m");
        assert_eq!(used["limits.memory"].to_string(), "64Mi");
        assert!(quotas["compute"].changed);
    }
}
