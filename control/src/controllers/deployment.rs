//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets, as
//! kube-controller-manager's does, so that `kubectl rollout status|history|undo|pause|resume|
//! restart` and `kubectl scale` work unchanged.
//!
//! Each template gets its own ReplicaSet, named `<deployment>-<pod-template-hash>` and labelled
//! with that hash (so ReplicaSets of one Deployment never select each other's pods). The
//! ReplicaSet whose template equals the Deployment's is the *new* one, the others are *old*.
//! Every ReplicaSet carries a revision (`deployment.kubernetes.io/revision`); the new one always
//! has the highest, and the Deployment carries it too. `kubectl rollout undo` copies an old
//! ReplicaSet's template back into the Deployment: that ReplicaSet becomes the new one again
//! and gets the next revision.
//!
//! Strategies:
//! - `RollingUpdate`: the new ReplicaSet grows while the total stays within `replicas +
//!   maxSurge`; old ones shrink while at least `replicas - maxUnavailable` pods stay available
//!   (old ReplicaSets' unavailable pods go first).
//! - `Recreate`: old ReplicaSets go to zero; once their pods are gone the new one scales up.
//!
//! Conditions as Kubernetes reports them: `Available` (minimum availability) and `Progressing`
//! (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated, NewReplicaSetAvailable,
//! DeploymentPaused/Resumed, and ProgressDeadlineExceeded when nothing progressed for
//! `progressDeadlineSeconds`). A paused Deployment is scaled but not rolled out. Once a rollout
//! is complete, old ReplicaSets beyond `revisionHistoryLimit` are deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bosun_api::labels::Selector;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::events::{Recorder, reference};
use crate::objects::{
    controller_of, controller_reference, deleting, label_selector, owners_patch, selects,
};

/// The label (and ReplicaSet name suffix) that tells the templates of one Deployment apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision annotation of ReplicaSets and Deployments.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotations of a Deployment that are not copied onto its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

struct Context {
    client: kube::Client,
    recorder: Recorder,
}

/// Runs until the watches end (never, with a live client).
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let context = Arc::new(Context {
        recorder: Recorder::start(client.clone(), "deployment-controller", config.events),
        client,
    });
    let controller = Controller::new(deployments, watcher::Config::default())
        .owns(sets, watcher::Config::default());
    super::drive(controller, "deployment", reconcile, context, config.retry).await;
}

/// One Deployment's ReplicaSets, as this reconcile found them.
struct Sets {
    new: Option<ReplicaSet>,
    /// Oldest revision first.
    old: Vec<ReplicaSet>,
}

#[tracing::instrument(name = "reconcile", skip_all, fields(deployment = %kube::ResourceExt::name_any(&*d), namespace = ?d.metadata.namespace))]
async fn reconcile(d: Arc<Deployment>, context: Arc<Context>) -> Result<Action, Error> {
    if deleting(&d.metadata) {
        return Ok(Action::await_change());
    }
    let namespace = d.namespace().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let selector = match label_selector(&spec.selector) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            context.recorder.warning(
                reference(d.as_ref()),
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required."
                    .to_string(),
            );
            return Ok(Action::await_change());
        }
        Err(reason) => {
            context.recorder.warning(
                reference(d.as_ref()),
                "InvalidSelector",
                format!("invalid selector: {reason}"),
            );
            return Ok(Action::await_change());
        }
    };
    let api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
    let mut sets = owned_sets(&api, &d, &selector).await?;
    let paused = spec.paused == Some(true);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let mut created = None;
    let mut recheck = None;

    if sets.new.is_none() && !paused {
        // A first rollout starts at full size; later ones grow as the strategy allows.
        let initial = if recreate {
            0
        } else if sets.old.is_empty() {
            replicas
        } else {
            new_replicas(&d, 0, total_replicas(sets.old.iter()))?
        };
        created = create_new_set(&context, &api, &d, &sets, initial).await?;
        if created.is_none() {
            // A hash collision: the bumped collisionCount names the next try.
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        sets.new = created.clone();
    } else if let Some(new) = sets.new.as_mut() {
        sync_new_set(&api, &d, new, &sets.old).await?;
    }
    sync_revision(&context, &d, sets.new.as_ref()).await?;

    if paused {
        // Scaling without rolling out: a single active ReplicaSet follows `replicas`.
        let active: Vec<&ReplicaSet> = sets
            .new
            .iter()
            .chain(sets.old.iter())
            .filter(|rs| spec_replicas(rs) > 0)
            .collect();
        if let [only] = active.as_slice()
            && spec_replicas(only) != replicas
        {
            let only = (*only).clone();
            scale(&context, &api, &d, &only, replicas).await?;
        }
    } else if recreate {
        recheck = rollout_recreate(&context, &api, &d, &mut sets, replicas).await?;
    } else {
        rollout_rolling(&context, &api, &d, &mut sets, replicas).await?;
    }

    let status = status_of(&d, &sets, created.as_ref(), Timestamp::now());
    if complete(&d, &status) && !paused {
        cleanup(&api, &d, &sets).await?;
    }
    if d.status.as_ref() != Some(&status) {
        let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
        deployments
            .patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    // While a rollout is under way, look again when its progress deadline would pass.
    if !complete(&d, &status)
        && !paused
        && let Some(deadline) = spec.progress_deadline_seconds
    {
        let wait = Duration::from_secs(deadline.max(0) as u64 + 1);
        recheck = Some(recheck.map_or(wait, |r: Duration| r.min(wait)));
    }
    Ok(match recheck {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// The Deployment's ReplicaSets after claiming (adopting orphans its selector matches,
/// releasing owned ones it no longer matches), split into new and old.
async fn owned_sets(
    api: &Api<ReplicaSet>,
    d: &Deployment,
    selector: &Selector,
) -> Result<Sets, Error> {
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let mut owned = Vec::new();
    for rs in api.list(&ListParams::default()).await?.items {
        let matches = selects(selector, &rs.metadata);
        match controller_of(&rs.metadata) {
            Some(owner) if owner.uid == uid => {
                if matches {
                    owned.push(rs);
                } else {
                    set_owners(api, &rs, |owners| owners.retain(|o| o.uid != uid)).await?;
                }
            }
            Some(_) => {}
            None if matches && !deleting(&rs.metadata) => {
                let reference = controller_reference(d);
                if let Some(rs) = set_owners(api, &rs, |owners| owners.push(reference)).await? {
                    owned.push(rs);
                }
            }
            None => {}
        }
    }
    let template = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    owned.sort_by_key(|rs| (revision(rs), rs.metadata.creation_timestamp.clone()));
    let new = owned
        .iter()
        .position(|rs| same_template(rs, &template))
        .map(|i| owned.remove(i));
    Ok(Sets { new, old: owned })
}

/// Rewrites a ReplicaSet's owner references if they did not change meanwhile; `None` if
/// they did or it is gone.
async fn set_owners(
    api: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    change: impl FnOnce(&mut Vec<OwnerReference>),
) -> Result<Option<ReplicaSet>, Error> {
    let mut owners = rs.metadata.owner_references.clone().unwrap_or_default();
    change(&mut owners);
    let patch = owners_patch(&rs.metadata, &owners);
    match api
        .patch(&rs.name_any(), &PatchParams::default(), &patch)
        .await
    {
        Ok(rs) => Ok(Some(rs)),
        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether the ReplicaSet runs `template` (its own template without the hash label).
fn same_template(rs: &ReplicaSet, template: &PodTemplateSpec) -> bool {
    let Some(mut own) = rs.spec.as_ref().and_then(|s| s.template.clone()) else {
        return false;
    };
    let mut wanted = template.clone();
    for t in [&mut own, &mut wanted] {
        if let Some(meta) = t.metadata.as_mut() {
            if let Some(labels) = meta.labels.as_mut() {
                labels.remove(HASH_LABEL);
                if labels.is_empty() {
                    meta.labels = None;
                }
            }
            if meta.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
                meta.annotations = None;
            }
        }
        if t.metadata
            .as_ref()
            .is_some_and(|m| *m == ObjectMeta::default())
        {
            t.metadata = None;
        }
    }
    own == wanted
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn total_replicas<'a>(sets: impl Iterator<Item = &'a ReplicaSet>) -> i32 {
    sets.map(spec_replicas).sum()
}

/// The pod-template hash: FNV-1a (32 bit) of the template and the collision count, its
/// decimal digits spelt in the alphabet Kubernetes uses for names (no vowels, no look-alikes).
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(count) = collision_count {
        feed(&count.to_le_bytes());
    }
    hash.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// Creates the ReplicaSet for the Deployment's current template with `replicas` pods.
/// `None` on a hash collision (a ReplicaSet of that name runs another template): the
/// Deployment's `collisionCount` is bumped so that the next try gets another name.
async fn create_new_set(
    context: &Context,
    api: &Api<ReplicaSet>,
    d: &Deployment,
    sets: &Sets,
    replicas: i32,
) -> Result<Option<ReplicaSet>, Error> {
    let spec = d.spec.clone().unwrap_or_default();
    let collisions = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&spec.template, collisions);
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.clone());
    let mut annotations = copied_annotations(d);
    let next = sets.old.iter().map(revision).max().unwrap_or(0) + 1;
    annotations.insert(REVISION.into(), next.to_string());
    let name = format!("{}-{hash}", d.name_any());
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: d.namespace(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_reference(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &rs).await {
        Ok(rs) => {
            context.recorder.normal(
                reference(d),
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
            );
            Ok(Some(rs))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&name).await?;
            let ours = controller_of(&existing.metadata)
                .is_some_and(|o| Some(&o.uid) == d.metadata.uid.as_ref());
            if ours && same_template(&existing, &spec.template) {
                return Ok(Some(existing));
            }
            let deployments: Api<Deployment> =
                Api::namespaced(context.client.clone(), &d.namespace().unwrap_or_default());
            let bumped = collisions.unwrap_or(0) + 1;
            deployments
                .patch_status(
                    &d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"collisionCount": bumped}})),
                )
                .await?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.annotations()
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Keeps the new ReplicaSet's revision the highest (after a rollback it was an old one) and
/// its copied annotations and minReadySeconds in line with the Deployment.
async fn sync_new_set(
    api: &Api<ReplicaSet>,
    d: &Deployment,
    new: &mut ReplicaSet,
    old: &[ReplicaSet],
) -> Result<(), Error> {
    let max_old = old.iter().map(revision).max().unwrap_or(0);
    let mut annotations = serde_json::Map::new();
    let current = revision(new);
    if current <= max_old {
        annotations.insert(REVISION.into(), json!((max_old + 1).to_string()));
        let history = new
            .annotations()
            .get("deployment.kubernetes.io/revision-history")
            .map(|h| format!("{h},{current}"))
            .unwrap_or_else(|| current.to_string());
        annotations.insert(
            "deployment.kubernetes.io/revision-history".into(),
            json!(history),
        );
    }
    for (k, v) in copied_annotations(d) {
        if new.annotations().get(&k) != Some(&v) {
            annotations.insert(k, json!(v));
        }
    }
    let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
    let new_min_ready = new.spec.as_ref().and_then(|s| s.min_ready_seconds);
    if annotations.is_empty() && min_ready.unwrap_or(0) == new_min_ready.unwrap_or(0) {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"annotations": annotations},
        "spec": {"minReadySeconds": min_ready},
    });
    *new = api
        .patch(
            &new.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    Ok(())
}

/// Writes the new ReplicaSet's revision onto the Deployment (`kubectl rollout undo` and
/// `describe` read it there).
async fn sync_revision(
    context: &Context,
    d: &Deployment,
    new: Option<&ReplicaSet>,
) -> Result<(), Error> {
    let Some(new) = new else { return Ok(()) };
    let wanted = revision(new).to_string();
    if d.annotations().get(REVISION) == Some(&wanted) {
        return Ok(());
    }
    let deployments: Api<Deployment> =
        Api::namespaced(context.client.clone(), &d.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"annotations": {REVISION: wanted}}});
    deployments
        .patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// Sets a ReplicaSet's `spec.replicas`, with the ScalingReplicaSet event.
async fn scale(
    context: &Context,
    api: &Api<ReplicaSet>,
    d: &Deployment,
    rs: &ReplicaSet,
    to: i32,
) -> Result<ReplicaSet, Error> {
    let from = spec_replicas(rs);
    // No resourceVersion precondition: the ReplicaSet controller writes its status all the
    // time, and the size was decided from a fresh read.
    let patch = json!({"spec": {"replicas": to}});
    let scaled = api
        .patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    let direction = if to > from { "up" } else { "down" };
    context.recorder.normal(
        reference(d),
        "ScalingReplicaSet",
        format!(
            "Scaled {direction} replica set {} from {from} to {to}",
            rs.name_any()
        ),
    );
    Ok(scaled)
}

/// maxSurge and maxUnavailable as pod counts for `replicas` (a percentage of it, surge
/// rounded up, unavailability down; both zero would deadlock, so unavailability becomes 1).
pub fn surge_and_unavailable(d: &Deployment, replicas: i32) -> Result<(i32, i32), Error> {
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge = resolve(
        rolling
            .and_then(|r| r.max_surge.as_ref())
            .unwrap_or(&quarter),
        replicas,
        true,
    )?;
    let unavailable = resolve(
        rolling
            .and_then(|r| r.max_unavailable.as_ref())
            .unwrap_or(&quarter),
        replicas,
        false,
    )?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

fn resolve(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, Error> {
    match value {
        IntOrString::Int(n) => Ok((*n).max(0)),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    Error::Invalid(format!("invalid value {s:?}: an integer or a percentage"))
                })?;
            let scaled = i64::from(total) * percent;
            let n = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            Ok(n.clamp(0, i64::from(i32::MAX)) as i32)
        }
    }
}

/// How many pods the new ReplicaSet should have in a rolling update, given how many it has
/// and how many all the old ones have.
fn new_replicas(d: &Deployment, new: i32, old_total: i32) -> Result<i32, Error> {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0);
    if new >= replicas {
        return Ok(replicas);
    }
    let (surge, _) = surge_and_unavailable(d, replicas)?;
    let room = replicas + surge - (new + old_total);
    if room <= 0 {
        return Ok(new);
    }
    Ok(new + room.min(replicas - new))
}

/// Old ReplicaSets' new sizes for one rolling step: `(index in old, new size)`. First the
/// old ReplicaSets' unavailable pods go (they serve nobody), then available ones while at
/// least `replicas - maxUnavailable` pods stay available across all ReplicaSets.
fn scale_down_old(
    replicas: i32,
    max_unavailable: i32,
    new: (i32, i32),
    old: &[(i32, i32)],
) -> Vec<(usize, i32)> {
    let (new_spec, new_available) = new;
    let all: i32 = new_spec + old.iter().map(|(s, _)| s).sum::<i32>();
    let min_available = replicas - max_unavailable;
    let new_unavailable = (new_spec - new_available).max(0);
    let mut budget = all - min_available - new_unavailable;
    let mut sizes: Vec<i32> = old.iter().map(|(s, _)| *s).collect();
    if budget <= 0 {
        return Vec::new();
    }
    // Unhealthy pods of old ReplicaSets, oldest first.
    for (i, (spec, available)) in old.iter().enumerate() {
        if budget == 0 {
            break;
        }
        let unhealthy = (spec - available).max(0).min(budget);
        sizes[i] -= unhealthy;
        budget -= unhealthy;
    }
    // Then available pods, while availability stays above the minimum.
    let available: i32 = new_available + old.iter().map(|(_, a)| a).sum::<i32>();
    let mut excess = (available - min_available).max(0);
    for (i, (_, avail)) in old.iter().enumerate() {
        if excess == 0 {
            break;
        }
        let take = sizes[i].min(excess).min(*avail);
        sizes[i] -= take;
        excess -= take;
    }
    sizes
        .into_iter()
        .enumerate()
        .filter(|(i, size)| *size != old[*i].0)
        .collect()
}

async fn rollout_rolling(
    context: &Context,
    api: &Api<ReplicaSet>,
    d: &Deployment,
    sets: &mut Sets,
    replicas: i32,
) -> Result<(), Error> {
    let Some(new) = sets.new.clone() else {
        return Ok(());
    };
    let old_total = total_replicas(sets.old.iter());
    let wanted = new_replicas(d, spec_replicas(&new), old_total)?;
    if wanted != spec_replicas(&new) {
        sets.new = Some(scale(context, api, d, &new, wanted).await?);
    }
    let new = sets.new.as_ref().expect("set above");
    let (_, max_unavailable) = surge_and_unavailable(d, replicas)?;
    let old: Vec<(i32, i32)> = sets
        .old
        .iter()
        .map(|rs| (spec_replicas(rs), available_replicas(rs)))
        .collect();
    let steps = scale_down_old(
        replicas,
        max_unavailable,
        (spec_replicas(new), available_replicas(new)),
        &old,
    );
    for (i, size) in steps {
        let rs = sets.old[i].clone();
        sets.old[i] = scale(context, api, d, &rs, size).await?;
    }
    Ok(())
}

/// Old ReplicaSets to zero; the new one scales up only once no old pod runs. Returns when to
/// look again while old pods are still stopping.
async fn rollout_recreate(
    context: &Context,
    api: &Api<ReplicaSet>,
    d: &Deployment,
    sets: &mut Sets,
    replicas: i32,
) -> Result<Option<Duration>, Error> {
    for i in 0..sets.old.len() {
        if spec_replicas(&sets.old[i]) > 0 {
            let rs = sets.old[i].clone();
            sets.old[i] = scale(context, api, d, &rs, 0).await?;
        }
    }
    if old_pods_remain(context, d, &sets.old).await? {
        return Ok(Some(Duration::from_millis(500)));
    }
    if let Some(new) = sets.new.clone()
        && spec_replicas(&new) != replicas
    {
        sets.new = Some(scale(context, api, d, &new, replicas).await?);
    }
    Ok(None)
}

/// Whether any pod of the old ReplicaSets still exists and has not finished.
async fn old_pods_remain(
    context: &Context,
    d: &Deployment,
    old: &[ReplicaSet],
) -> Result<bool, Error> {
    if old.is_empty() {
        return Ok(false);
    }
    let pods: Api<Pod> =
        Api::namespaced(context.client.clone(), &d.namespace().unwrap_or_default());
    let uids: Vec<&str> = old
        .iter()
        .filter_map(|rs| rs.metadata.uid.as_deref())
        .collect();
    Ok(pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|pod| {
            let finished = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            !finished
                && controller_of(&pod.metadata).is_some_and(|o| uids.contains(&o.uid.as_str()))
        }))
}

/// Deletes old ReplicaSets without pods beyond `revisionHistoryLimit`, oldest first.
async fn cleanup(api: &Api<ReplicaSet>, d: &Deployment, sets: &Sets) -> Result<(), Error> {
    let limit = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let idle: Vec<&ReplicaSet> = sets
        .old
        .iter()
        .filter(|rs| {
            spec_replicas(rs) == 0
                && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
                && !deleting(&rs.metadata)
        })
        .collect();
    for rs in idle.iter().take(idle.len().saturating_sub(limit)) {
        match api
            .delete(&rs.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Whether the rollout is done: every replica updated and available, nothing old left.
fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.updated_replicas == Some(replicas)
        && status.replicas == Some(replicas)
        && status.available_replicas == Some(replicas)
        && status.observed_generation >= d.metadata.generation
}

/// The Deployment's status from its ReplicaSets, with the Available and Progressing
/// conditions carried forward as Kubernetes does.
fn status_of(
    d: &Deployment,
    sets: &Sets,
    created: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let all = sets.new.iter().chain(sets.old.iter());
    let sum = |f: fn(&ReplicaSet) -> i32| all.clone().map(f).sum::<i32>();
    let status_replicas = sum(|rs| rs.status.as_ref().map_or(0, |s| s.replicas));
    let ready = sum(|rs| {
        rs.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    });
    let available = sum(available_replicas);
    let updated = sets
        .new
        .as_ref()
        .and_then(|rs| rs.status.as_ref())
        .map_or(0, |s| s.replicas);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        replicas: Some(status_replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        observed_generation: d.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    let (_, max_unavailable) = surge_and_unavailable(d, replicas).unwrap_or((1, 1));
    if available >= replicas - max_unavailable {
        set_condition(
            &mut status,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        );
    } else {
        set_condition(
            &mut status,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        );
    }
    // A ReplicaSet that cannot create its pods (a quota, admission) says so here too, as
    // upstream's `ReplicaFailure`.
    let failure = sets
        .new
        .iter()
        .chain(sets.old.iter())
        .flat_map(|rs| rs.status.iter().flat_map(|s| s.conditions.iter().flatten()))
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        .cloned();
    match failure {
        Some(failure) => set_condition(
            &mut status,
            "ReplicaFailure",
            "True",
            failure.reason.as_deref().unwrap_or("FailedCreate"),
            failure.message.unwrap_or_default(),
            now,
        ),
        None => {
            if let Some(conditions) = status.conditions.as_mut() {
                conditions.retain(|c| c.type_ != "ReplicaFailure");
            }
        }
    }
    let new_name = sets
        .new
        .as_ref()
        .map(|rs| rs.name_any())
        .unwrap_or_default();
    let progressing = condition(&old, "Progressing").cloned();
    if spec.paused == Some(true) {
        set_condition(
            &mut status,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            now,
        );
        return status;
    }
    if progressing
        .as_ref()
        .is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"))
    {
        set_condition(
            &mut status,
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed".into(),
            now,
        );
    }
    if let Some(rs) = created {
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{}\"", rs.name_any()),
            now,
        );
        return status;
    }
    if condition(&status, "Progressing").is_none() && sets.new.is_some() {
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "FoundNewReplicaSet",
            format!("Found new replica set \"{new_name}\""),
            now,
        );
    }
    let current = condition(&status, "Progressing").cloned();
    let done = current.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable")
        && status_replicas == updated;
    if done {
        return status;
    }
    if complete(d, &status) {
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            now,
        );
    } else if progressed(&old, &status) {
        // Progress refreshes lastUpdateTime (the deadline counts from there).
        let transition = current
            .as_ref()
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        replace_condition(
            &mut status,
            DeploymentCondition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: Some("ReplicaSetUpdated".into()),
                message: Some(format!("ReplicaSet \"{new_name}\" is progressing.")),
                last_update_time: Some(Time(now)),
                last_transition_time: Some(transition),
            },
        );
    } else if let Some(deadline) = spec.progress_deadline_seconds
        && let Some(since) = current.as_ref().and_then(|c| c.last_update_time.as_ref())
        && now.duration_since(since.0).as_secs() > i64::from(deadline)
    {
        set_condition(
            &mut status,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            now,
        );
    }
    status
}

/// Whether the rollout moved since the last status (Kubernetes' `DeploymentProgressing`).
fn progressed(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let olds = |s: &DeploymentStatus| s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0);
    new.updated_replicas > old.updated_replicas
        || olds(new) < olds(old)
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
}

fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// Sets a condition unless one of that type already has that status and reason (then its
/// times stay); a changed reason with the same status keeps the transition time.
fn set_condition(
    status: &mut DeploymentStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let current = condition(status, type_);
    if current.is_some_and(|c| c.status == value && c.reason.as_deref() == Some(reason)) {
        return;
    }
    let transition = current
        .filter(|c| c.status == value)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    replace_condition(
        status,
        DeploymentCondition {
            type_: type_.into(),
            status: value.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_update_time: Some(Time(now)),
            last_transition_time: Some(transition),
        },
    );
}

fn replace_condition(status: &mut DeploymentStatus, condition: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(
        replicas: i32,
        surge: serde_json::Value,
        unavailable: serde_json::Value,
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "v1"}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn surge_rounds_up_and_unavailability_down() {
        let d = deployment(10, json!("25%"), json!("25%"));
        assert_eq!(surge_and_unavailable(&d, 10).unwrap(), (3, 2));
        let d = deployment(3, json!(0), json!(0));
        assert_eq!(surge_and_unavailable(&d, 3).unwrap(), (0, 1));
        let d = deployment(3, json!(1), json!("0%"));
        assert_eq!(surge_and_unavailable(&d, 3).unwrap(), (1, 0));
        let d = deployment(3, json!("x"), json!(0));
        assert!(surge_and_unavailable(&d, 3).is_err());
    }

    #[test]
    fn new_set_grows_within_the_surge() {
        let d = deployment(4, json!(1), json!(0));
        // 4 old, 0 new: one more pod allowed.
        assert_eq!(new_replicas(&d, 0, 4).unwrap(), 1);
        // Still 4 old: no room.
        assert_eq!(new_replicas(&d, 1, 4).unwrap(), 1);
        // Old shrank to 3: the new one may reach 2.
        assert_eq!(new_replicas(&d, 1, 3).unwrap(), 2);
        // Never beyond replicas; a scaled-down deployment shrinks it.
        assert_eq!(new_replicas(&d, 4, 0).unwrap(), 4);
        assert_eq!(new_replicas(&d, 6, 0).unwrap(), 4);
    }

    #[test]
    fn old_sets_shrink_only_while_enough_pods_stay_available() {
        // replicas 4, maxUnavailable 0: new has 1 of 1 available, old 4 of 4.
        assert_eq!(scale_down_old(4, 0, (1, 1), &[(4, 4)]), vec![(0, 3)]);
        // The new pod is not yet available: nothing old may go.
        assert!(scale_down_old(4, 0, (1, 0), &[(4, 4)]).is_empty());
        // With room for one unavailable pod, an unavailable old pod goes first.
        assert_eq!(scale_down_old(4, 1, (1, 0), &[(4, 3)]), vec![(0, 3)]);
        assert_eq!(
            scale_down_old(4, 1, (1, 0), &[(2, 1), (2, 2)]),
            vec![(0, 1)]
        );
        // maxUnavailable 2 allows two at once; the oldest set shrinks first.
        assert_eq!(
            scale_down_old(4, 2, (0, 0), &[(2, 2), (2, 2)]),
            vec![(0, 0)]
        );
    }

    #[test]
    fn template_hash_is_stable_and_changes_with_the_template_and_collisions() {
        let d = deployment(1, json!(1), json!(0));
        let template = d.spec.unwrap().template;
        let a = template_hash(&template, None);
        assert_eq!(a, template_hash(&template, None));
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(a, template_hash(&template, Some(1)));
        let mut other = template.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("v2".into());
        assert_ne!(a, template_hash(&other, None));
    }

    #[test]
    fn the_hash_label_does_not_make_a_template_different() {
        let d = deployment(1, json!(1), json!(0));
        let template = d.spec.clone().unwrap().template;
        let mut labelled = template.clone();
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "abc".into());
        let rs = ReplicaSet {
            spec: Some(ReplicaSetSpec {
                template: Some(labelled),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(same_template(&rs, &template));
        let mut changed = template.clone();
        changed.spec.as_mut().unwrap().containers[0].image = Some("v2".into());
        assert!(!same_template(&rs, &changed));
    }

    #[test]
    fn no_progress_past_the_deadline_is_reported() {
        let mut d = deployment(2, json!(1), json!(0));
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(10);
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        d.status = Some(DeploymentStatus {
            replicas: Some(3),
            updated_replicas: Some(1),
            available_replicas: Some(2),
            ready_replicas: Some(2),
            observed_generation: Some(1),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: Some("ReplicaSetUpdated".into()),
                last_update_time: Some(Time(start)),
                last_transition_time: Some(Time(start)),
                message: None,
            }]),
            ..Default::default()
        });
        let rs = |name: &str, replicas: i32, available: i32| -> ReplicaSet {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"replicas": replicas, "selector": {}},
                "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available},
            }))
            .unwrap()
        };
        let sets = Sets {
            new: Some(rs("web-new", 1, 0)),
            old: vec![rs("web-old", 2, 2)],
        };
        let later: Timestamp = "2026-01-01T00:00:05Z".parse().unwrap();
        let status = status_of(&d, &sets, None, later);
        assert_eq!(
            condition(&status, "Progressing").unwrap().reason.as_deref(),
            Some("ReplicaSetUpdated")
        );
        let too_late: Timestamp = "2026-01-01T00:00:11Z".parse().unwrap();
        let status = status_of(&d, &sets, None, too_late);
        let progressing = condition(&status, "Progressing").unwrap();
        assert_eq!(progressing.status, "False");
        assert_eq!(
            progressing.reason.as_deref(),
            Some("ProgressDeadlineExceeded")
        );
        assert_eq!(
            condition(&status, "Available").unwrap().status,
            "True",
            "v1 still serves"
        );
    }
}
