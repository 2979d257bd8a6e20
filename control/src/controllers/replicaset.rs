//! The ReplicaSet controller: keeps `spec.replicas` active pods matching each ReplicaSet's
//! selector, as kube-controller-manager's does.
//!
//! One reconcile of a ReplicaSet:
//! 1. looks at the pods of its namespace in the controller's pod cache (a reflector fed by the
//!    same watch that triggers reconciles, so the pod whose change triggered it is there). If
//!    they are as they should be (as many active pods as wanted, none to adopt or release),
//!    only the status is written, from the cache. Otherwise it acts, and what it acts on is
//!    listed from the API (a consistent read, so pods the previous reconcile created or deleted
//!    are always seen, even when the cache has not caught up: no expectations are needed);
//! 2. claims pods: adopts orphans its selector matches, releases owned pods whose labels no
//!    longer match, ignores pods another controller owns;
//! 3. creates the missing pods from the template in slow-start batches (1, 2, 4, …, so a
//!    template the API refuses costs one request, not `replicas`), or deletes the surplus,
//!    least valuable first (unscheduled, pending, not ready, newest);
//! 4. writes `status` (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas after
//!    `minReadySeconds`, observedGeneration, the ReplicaFailure condition) when it changed.
//!
//! The reconcile runs again on any change to the ReplicaSet or to a pod it owns or could adopt.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use bosun_api::labels::Selector;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::events::{Recorder, reference};
use crate::objects::{
    controller_of, controller_reference, deleting, label_selector, owners_patch, pod_active,
    pod_available, pod_ready, selects,
};

/// Most pods one reconcile creates or deletes (Kubernetes' `burstReplicas`).
const BURST: usize = 500;

struct Context {
    client: kube::Client,
    recorder: Recorder,
    /// Every pod, as the watch that triggers reconciles has delivered them.
    pods: Store<Pod>,
}

/// Runs until the watches end (never, with a live client).
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let (pods, cache) = reflector::store();
    // The cache is written before the event goes on to trigger a reconcile.
    let pod_events = reflector::reflector(
        cache,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .touched_objects();
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    let context = Arc::new(Context {
        recorder: Recorder::start(client.clone(), "replicaset-controller", config.events),
        client,
        pods,
    });
    let controller = controller.watches_stream(pod_events, move |pod| interested(&store, &pod));
    super::drive(controller, "replicaset", reconcile, context, config.retry).await;
}

/// The ReplicaSets a change to `pod` concerns: its controller if that is a ReplicaSet, else
/// (an orphan) every ReplicaSet of its namespace that could adopt it.
fn interested(store: &Store<ReplicaSet>, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
    let namespace = pod.namespace().unwrap_or_default();
    if let Some(owner) = controller_of(&pod.metadata) {
        if owner.kind == "ReplicaSet" && owner.api_version == "apps/v1" {
            return vec![ObjectRef::new(&owner.name).within(&namespace)];
        }
        return Vec::new();
    }
    store
        .state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|rs| selector_of(rs).is_ok_and(|selector| selects(&selector, &pod.metadata)))
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

fn selector_of(rs: &ReplicaSet) -> Result<Selector, bosun_api::labels::Reason> {
    let selector = rs
        .spec
        .as_ref()
        .map(|s| &s.selector)
        .cloned()
        .unwrap_or_default();
    label_selector(&selector)
}

#[tracing::instrument(name = "reconcile", skip_all, fields(replicaset = %kube::ResourceExt::name_any(&*rs), namespace = ?rs.metadata.namespace))]
async fn reconcile(rs: Arc<ReplicaSet>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let selector = match selector_of(&rs) {
        Ok(s) => s,
        Err(reason) => {
            context.recorder.warning(
                reference(rs.as_ref()),
                "InvalidSelector",
                format!("invalid selector: {reason}"),
            );
            return Ok(Action::await_change());
        }
    };
    let wanted = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    // The cache is enough to tell that nothing needs doing; acting needs a consistent read.
    if context.pods.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut cached = Vec::new();
    let mut settled = true;
    for pod in context.pods.state() {
        if pod.metadata.namespace.as_deref() != Some(namespace.as_str()) {
            continue;
        }
        match claim(&rs, &selector, &pod) {
            Claim::Owned => cached.push(Pod::clone(&pod)),
            Claim::NotOurs => {}
            Claim::Adopt | Claim::Release => settled = false,
        }
    }
    settled = settled && cached.iter().filter(|pod| pod_active(pod)).count() == wanted;
    let pods = if settled || deleting(&rs.metadata) {
        cached
    } else {
        pods_api.list(&ListParams::default()).await?.items
    };
    let mut owned = Vec::new();
    for pod in pods {
        match claim(&rs, &selector, &pod) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => {
                if let Some(pod) = adopt(&pods_api, &rs, pod).await? {
                    owned.push(pod);
                }
            }
            Claim::Release => release(&pods_api, &rs, &pod).await?,
            Claim::NotOurs => {}
        }
    }
    let active: Vec<Pod> = owned.into_iter().filter(pod_active).collect();
    let mut failure = None;
    if !deleting(&rs.metadata) {
        if active.len() < wanted {
            let missing = (wanted - active.len()).min(BURST);
            failure = create_pods(&context, &rs, missing).await;
        } else if active.len() > wanted {
            let surplus = (active.len() - wanted).min(BURST);
            delete_pods(&context, &rs, &pods_api, &active, surplus).await;
        }
    }
    let now = Timestamp::now();
    let min_ready = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let (status, recheck) = status_of(&rs, &active, min_ready, now, failure);
    if rs.status.as_ref() != Some(&status) {
        let sets: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
        sets.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    Ok(match recheck {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Claim {
    Owned,
    Adopt,
    Release,
    NotOurs,
}

/// What the ReplicaSet does with `pod` (Kubernetes' ControllerRefManager).
fn claim(rs: &ReplicaSet, selector: &Selector, pod: &Pod) -> Claim {
    let matches = selects(selector, &pod.metadata);
    match controller_of(&pod.metadata) {
        Some(owner) if Some(&owner.uid) == rs.metadata.uid.as_ref() => {
            if matches {
                Claim::Owned
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::NotOurs,
        None if matches && !deleting(&pod.metadata) && !deleting(&rs.metadata) => Claim::Adopt,
        None => Claim::NotOurs,
    }
}

/// Makes `rs` the controller of an orphan pod; `None` if the pod changed meanwhile (the
/// next reconcile sees it as it is now).
async fn adopt(api: &Api<Pod>, rs: &ReplicaSet, pod: Pod) -> Result<Option<Pod>, Error> {
    let mut owners = pod.metadata.owner_references.clone().unwrap_or_default();
    owners.push(controller_reference(rs));
    set_owners(api, &pod, &owners).await
}

/// Drops `rs` from the owners of a pod whose labels it no longer selects.
async fn release(api: &Api<Pod>, rs: &ReplicaSet, pod: &Pod) -> Result<(), Error> {
    let owners: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| Some(&r.uid) != rs.metadata.uid.as_ref())
        .cloned()
        .collect();
    set_owners(api, pod, &owners).await.map(|_| ())
}

/// Sets a pod's owners if they did not change meanwhile; `None` if they did or the pod is
/// gone (the next reconcile sees it as it is now).
async fn set_owners(
    api: &Api<Pod>,
    pod: &Pod,
    owners: &[OwnerReference],
) -> Result<Option<Pod>, Error> {
    let patch = owners_patch(&pod.metadata, owners);
    match api
        .patch(&pod.name_any(), &PatchParams::default(), &patch)
        .await
    {
        Ok(pod) => Ok(Some(pod)),
        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The pod the ReplicaSet creates from its template.
pub fn pod_from_template(rs: &ReplicaSet, template: &PodTemplateSpec) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(rs)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Creates `count` pods in slow-start batches; the first failure stops it and is returned
/// (as a ReplicaFailure message).
async fn create_pods(context: &Context, rs: &ReplicaSet, count: usize) -> Option<String> {
    let namespace = rs.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let Some(template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else {
        return Some("the ReplicaSet has no pod template".to_string());
    };
    let pod = pod_from_template(rs, template);
    let params = PostParams::default();
    let mut created = 0;
    let mut batch = 1;
    while created < count {
        let size = batch.min(count - created);
        let results = futures::future::join_all((0..size).map(|_| api.create(&params, &pod))).await;
        for result in results {
            match result {
                Ok(pod) => {
                    created += 1;
                    context.recorder.normal(
                        reference(rs),
                        "SuccessfulCreate",
                        format!("Created pod: {}", pod.name_any()),
                    );
                }
                Err(error) => {
                    let message = match &error {
                        kube::Error::Api(e) => e.message.clone(),
                        other => other.to_string(),
                    };
                    context.recorder.warning(
                        reference(rs),
                        "FailedCreate",
                        format!("Error creating: {message}"),
                    );
                    return Some(message);
                }
            }
        }
        batch *= 2;
    }
    None
}

/// Deletes the `count` least valuable of the active pods.
async fn delete_pods(
    context: &Context,
    rs: &ReplicaSet,
    api: &Api<Pod>,
    active: &[Pod],
    count: usize,
) {
    let mut victims: Vec<&Pod> = active.iter().collect();
    victims.sort_by_key(|pod| deletion_rank(pod));
    let results = futures::future::join_all(victims.iter().take(count).map(|pod| async move {
        (
            pod.name_any(),
            api.delete(&pod.name_any(), &DeleteParams::default()).await,
        )
    }))
    .await;
    for (pod, result) in results {
        match result {
            Ok(_) => context.recorder.normal(
                reference(rs),
                "SuccessfulDelete",
                format!("Deleted pod: {pod}"),
            ),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => context.recorder.warning(
                reference(rs),
                "FailedDelete",
                format!("Error deleting pod {pod}: {error}"),
            ),
        }
    }
}

/// Sorts pods so that the first ones are the first to go when scaling down (Kubernetes'
/// `ActivePods` order): unscheduled before scheduled, Pending before Unknown before Running,
/// not ready before ready, ready for less time first, more restarts first, newer first.
pub fn deletion_rank(pod: &Pod) -> impl Ord {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready_since = crate::objects::pod_ready_since(pod);
    let restarts: i32 = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        scheduled,
        phase,
        ready_since.is_some(),
        ready_since.map(Reverse),
        Reverse(restarts),
        Reverse(created),
    )
}

/// The status the pods give, and when to look again (a pod turning available after
/// `minReadySeconds`).
fn status_of(
    rs: &ReplicaSet,
    active: &[Pod],
    min_ready_seconds: i32,
    now: Timestamp,
    failure: Option<String>,
) -> (ReplicaSetStatus, Option<Duration>) {
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|pod| {
            let labels = pod.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| pod_ready(p)).count();
    let mut available = 0;
    let mut recheck: Option<Duration> = None;
    for pod in active {
        match pod_available(pod, min_ready_seconds, now) {
            Ok(true) => available += 1,
            Ok(false) => {}
            Err(wait) => recheck = Some(recheck.map_or(wait, |r| r.min(wait))),
        }
    }
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> = old
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "ReplicaFailure")
        .collect();
    if let Some(message) = failure {
        let previous = old
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure" && c.message.as_deref() == Some(&message));
        conditions.push(previous.cloned().unwrap_or(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some(message),
            last_transition_time: Some(Time(now)),
        }));
    }
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available),
        observed_generation: rs.meta().generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    };
    (status, recheck)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, extra: serde_json::Value) -> Pod {
        let mut value = json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n1"},
            "status": {"phase": "Running"},
        });
        merge(&mut value, extra);
        serde_json::from_value(value).unwrap()
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    fn ready(at: &str) -> serde_json::Value {
        json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at}]}})
    }

    fn rs() -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid", "generation": 3},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn scale_down_takes_the_least_valuable_first() {
        let pods = [
            pod("ready-old", ready("2026-01-01T00:01:00Z")),
            pod(
                "unscheduled",
                json!({"spec": {"nodeName": null}, "status": {"phase": "Pending"}}),
            ),
            pod("pending", json!({"status": {"phase": "Pending"}})),
            pod("running-not-ready", json!({})),
            pod("ready-new", ready("2026-01-01T00:05:00Z")),
            pod("ready-old-restarted", {
                let mut r = ready("2026-01-01T00:01:00Z");
                merge(
                    &mut r,
                    json!({"status": {"containerStatuses": [{"name": "c", "restartCount": 4, "ready": true, "image": "i", "imageID": ""}]}}),
                );
                r
            }),
        ];
        let mut order: Vec<&Pod> = pods.iter().collect();
        order.sort_by_key(|p| deletion_rank(p));
        let names: Vec<String> = order.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "running-not-ready",
                "ready-new",
                "ready-old-restarted",
                "ready-old"
            ]
        );
    }

    #[test]
    fn claims_by_selector_and_controller() {
        let rs = rs();
        let selector = selector_of(&rs).unwrap();
        let orphan = pod("a", json!({}));
        assert_eq!(claim(&rs, &selector, &orphan), Claim::Adopt);
        let owned = pod(
            "b",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid", "controller": true}]}}),
        );
        assert_eq!(claim(&rs, &selector, &owned), Claim::Owned);
        let mut relabelled = owned.clone();
        relabelled.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
        assert_eq!(claim(&rs, &selector, &relabelled), Claim::Release);
        let someone_elses = pod(
            "c",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "x-uid", "controller": true}]}}),
        );
        assert_eq!(claim(&rs, &selector, &someone_elses), Claim::NotOurs);
        let going = pod(
            "d",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        assert_eq!(claim(&rs, &selector, &going), Claim::NotOurs);
        let other_labels = pod("e", json!({"metadata": {"labels": {"app": "db"}}}));
        assert_eq!(claim(&rs, &selector, &other_labels), Claim::NotOurs);
    }

    #[test]
    fn status_counts_ready_and_available_after_min_ready_seconds() {
        let rs = rs();
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let pods = [
            pod("long-ready", ready("2026-01-01T00:00:00Z")),
            pod("just-ready", ready("2026-01-01T00:09:58Z")),
            pod("starting", json!({"metadata": {"labels": {"extra": "x"}}})),
        ];
        let (status, recheck) = status_of(&rs, &pods, 5, now, None);
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, Some(3));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(recheck, Some(Duration::from_secs(3)));
        let (status, _) = status_of(&rs, &pods, 5, now, Some("quota".into()));
        let failure = &status.conditions.unwrap()[0];
        assert_eq!(
            (failure.type_.as_str(), failure.reason.as_deref()),
            ("ReplicaFailure", Some("FailedCreate"))
        );
    }
}
