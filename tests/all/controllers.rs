//! The controllers end to end: a real `bosun server` (whose controller manager runs the
//! ReplicaSet and Deployment controllers), a real node running the pods, and the real kubectl
//! driving rollouts as a user would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::Server;
use crate::support::cluster::cluster;
use bosun_node::images::Layout;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

/// A WASI preview 1 command that sleeps forever, 10 s at a time; `tag` goes into a data
/// segment so that every version is a different image.
fn sleeper(tag: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 512) "{tag}")
            (func (export "_start")
                (loop $forever
                    (i64.store (i32.const 0) (i64.const 0))
                    (i32.store8 (i32.const 8) (i32.const 0))
                    (i32.store (i32.const 16) (i32.const 1))
                    (i64.store (i32.const 24) (i64.const 10000000000))
                    (i64.store (i32.const 32) (i64.const 0))
                    (i32.store16 (i32.const 40) (i32.const 0))
                    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
                    (br $forever))))"#
    ))
    .expect("valid WAT")
}

fn deployment(name: &str, image: &str, replicas: i32, extra: Value) -> Deployment {
    let mut d = json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": image}],
                },
            },
        },
    });
    crate::support::cluster::merge(&mut d, extra);
    serde_json::from_value(d).unwrap()
}

/// Waits until `ok` holds, polling every 100 ms; panics with `what` after `secs`.
async fn until<F, Fut>(secs: u64, what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image_of(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// What a watch of a deployment's pods saw: the fewest ready pods at any moment once `floor`
/// was first reached, and every (image → live pod names) overlap of two images.
#[derive(Default)]
struct Watched {
    pods: BTreeMap<String, Pod>,
    armed: bool,
    fewest_ready: Option<usize>,
    /// Moments at which pods of more than one image existed (for Recreate).
    mixed: usize,
}

/// Follows the pods labelled `app=<name>` from a watch stream, event by event.
fn watch_pods(client: kube::Client, name: &str, floor: usize) -> Arc<Mutex<Watched>> {
    let watched = Arc::new(Mutex::new(Watched::default()));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let config = watcher::Config::default().labels(&format!("app={name}"));
    let state = watched.clone();
    tokio::spawn(async move {
        let mut stream = watcher(pods, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let mut w = state.lock().unwrap();
            match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    w.pods.insert(pod.metadata.name.clone().unwrap(), pod);
                }
                Ok(watcher::Event::Delete(pod)) => {
                    w.pods.remove(pod.metadata.name.as_deref().unwrap());
                }
                _ => continue,
            }
            let count = w.pods.values().filter(|p| ready(p)).count();
            if count >= floor {
                w.armed = true;
            }
            if w.armed {
                w.fewest_ready = Some(w.fewest_ready.map_or(count, |f| f.min(count)));
            }
            let images: BTreeSet<String> = w.pods.values().map(image_of).collect();
            if images.len() > 1 {
                w.mixed += 1;
            }
        }
    });
    watched
}

async fn replica_sets(client: &kube::Client, app: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn revision(rs: &ReplicaSet) -> String {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .cloned()
        .unwrap_or_default()
}

fn rs_image(rs: &ReplicaSet) -> String {
    rs.spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

async fn running_images(pods: &Api<Pod>, app: &str) -> Vec<String> {
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap();
    let mut images: Vec<String> = list
        .items
        .iter()
        .filter(|p| ready(p))
        .map(image_of)
        .collect();
    images.sort();
    images
}

#[tokio::test]
async fn rolling_update_keeps_every_replica_ready_rolls_back_and_stalls_on_a_broken_image() {
    let c = cluster("ctl-roll").await;
    let v1 = c
        .registry
        .push("app:v1", sleeper("v1"), Layout::ConfigV0)
        .await;
    let v2 = c
        .registry
        .push("app:v2", sleeper("v2"), Layout::ConfigV0)
        .await;
    // A tag that was never pushed: its pods never start (ErrImagePull).
    let broken = format!("{}/app:missing", c.registry.host);
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let d = deployment(
        "web",
        &v1,
        3,
        json!({"spec": {
            "progressDeadlineSeconds": 6,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        }}),
    );
    let watched = watch_pods(c.client.clone(), "web", 3);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let status = c
        .server
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .unwrap();
    assert!(status.contains("successfully rolled out"), "{status}");
    assert_eq!(running_images(&c.pods, "web").await, vec![v1.clone(); 3]);

    // v1 → v2: never fewer than 3 ready pods, judged from the watch stream.
    c.server
        .kubectl(&["set", "image", "deployment/web", &format!("main={v2}")])
        .unwrap();
    let status = c
        .server
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .unwrap();
    assert!(status.contains("successfully rolled out"), "{status}");
    until(20, "only v2 pods are ready", || async {
        running_images(&c.pods, "web").await == vec![v2.clone(); 3]
    })
    .await;
    let history = c
        .server
        .kubectl(&["rollout", "history", "deployment/web"])
        .unwrap();
    assert!(
        history.lines().any(|l| l.trim_start().starts_with('1'))
            && history.lines().any(|l| l.trim_start().starts_with('2')),
        "{history}"
    );

    // Undo: back to v1, whose ReplicaSet becomes revision 3.
    let undo = c
        .server
        .kubectl(&["rollout", "undo", "deployment/web"])
        .unwrap();
    assert!(undo.contains("rolled back"), "{undo}");
    c.server
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .unwrap();
    until(20, "only v1 pods are ready again", || async {
        running_images(&c.pods, "web").await == vec![v1.clone(); 3]
    })
    .await;
    let sets = replica_sets(&c.client, "web").await;
    assert_eq!(sets.len(), 2, "undo reuses the v1 ReplicaSet");
    let v1_set = sets.iter().find(|rs| rs_image(rs) == v1).unwrap();
    assert_eq!(revision(v1_set), "3");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "3"
    );

    // A broken image stalls, reports ProgressDeadlineExceeded, and v1 keeps serving.
    c.server
        .kubectl(&["set", "image", "deployment/web", &format!("main={broken}")])
        .unwrap();
    let stalled = c
        .server
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .unwrap_err();
    assert!(
        stalled.contains("exceeded its progress deadline"),
        "{stalled}"
    );
    let d = deployments.get("web").await.unwrap();
    let progressing = d
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
    assert_eq!(running_images(&c.pods, "web").await, vec![v1.clone(); 3]);

    let w = watched.lock().unwrap();
    assert!(w.armed, "the watch saw the deployment become ready");
    assert!(
        w.fewest_ready.unwrap() >= 3,
        "a moment with only {:?} ready pods",
        w.fewest_ready
    );
}

#[tokio::test]
async fn recreate_scale_pause_resume_and_restart() {
    let c = cluster("ctl-recreate").await;
    let v1 = c
        .registry
        .push("app:v1", sleeper("v1"), Layout::ConfigV0)
        .await;
    let v2 = c
        .registry
        .push("app:v2", sleeper("v2"), Layout::ConfigV0)
        .await;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let d = deployment(
        "batch",
        &v1,
        2,
        json!({"spec": {"strategy": {"type": "Recreate"}}}),
    );
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    c.server
        .kubectl(&["rollout", "status", "deployment/batch", "--timeout=60s"])
        .unwrap();

    // kubectl scale goes through the /scale subresource.
    c.server
        .kubectl(&["scale", "deployment/batch", "--replicas=4"])
        .unwrap();
    c.server
        .kubectl(&["rollout", "status", "deployment/batch", "--timeout=60s"])
        .unwrap();
    until(20, "4 ready pods", || async {
        running_images(&c.pods, "batch").await.len() == 4
    })
    .await;

    // Recreate: no v2 pod exists while a v1 pod still does.
    let watched = watch_pods(c.client.clone(), "batch", 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.server
        .kubectl(&["set", "image", "deployment/batch", &format!("main={v2}")])
        .unwrap();
    c.server
        .kubectl(&["rollout", "status", "deployment/batch", "--timeout=60s"])
        .unwrap();
    until(20, "4 v2 pods ready", || async {
        running_images(&c.pods, "batch").await == vec![v2.clone(); 4]
    })
    .await;
    assert_eq!(
        watched.lock().unwrap().mixed,
        0,
        "v1 and v2 pods existed at once"
    );

    // Paused: a template change makes no new ReplicaSet; resumed, it rolls out.
    c.server
        .kubectl(&["rollout", "pause", "deployment/batch"])
        .unwrap();
    c.server
        .kubectl(&["set", "image", "deployment/batch", &format!("main={v1}")])
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replica_sets(&c.client, "batch").await.len(), 2);
    assert_eq!(running_images(&c.pods, "batch").await, vec![v2.clone(); 4]);
    let d = deployments.get("batch").await.unwrap();
    let reason = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap()
        .reason;
    assert_eq!(reason.as_deref(), Some("DeploymentPaused"));
    c.server
        .kubectl(&["rollout", "resume", "deployment/batch"])
        .unwrap();
    c.server
        .kubectl(&["rollout", "status", "deployment/batch", "--timeout=60s"])
        .unwrap();
    until(20, "4 v1 pods ready", || async {
        running_images(&c.pods, "batch").await == vec![v1.clone(); 4]
    })
    .await;

    // restart: same image, a new template (restartedAt), a new ReplicaSet and new pods.
    let before: BTreeSet<String> = c
        .pods
        .list(&ListParams::default().labels("app=batch"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    c.server
        .kubectl(&["rollout", "restart", "deployment/batch"])
        .unwrap();
    c.server
        .kubectl(&["rollout", "status", "deployment/batch", "--timeout=60s"])
        .unwrap();
    until(30, "4 new pods ready", || async {
        let list = c
            .pods
            .list(&ListParams::default().labels("app=batch"))
            .await
            .unwrap();
        let fresh = list
            .items
            .iter()
            .filter(|p| ready(p) && !before.contains(p.metadata.name.as_ref().unwrap()))
            .count();
        fresh == 4 && list.items.len() == 4
    })
    .await;
    assert_eq!(replica_sets(&c.client, "batch").await.len(), 3);
}

/// The ReplicaSet controller alone needs no node: pods stay unscheduled.
#[tokio::test]
async fn replica_set_adopts_orphans_releases_relabelled_pods_and_scales_down_unscheduled_first() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", data.path().to_str().unwrap()]).await;
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "rs"}},
        "spec": {"containers": [{"name": "main", "image": "nowhere/app:v1"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "rs"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "rs"}},
            "template": {"metadata": {"labels": {"app": "rs"}},
                         "spec": {"containers": [{"name": "main", "image": "nowhere/app:v1"}]}},
        },
    }))
    .unwrap();
    let rs = sets.create(&PostParams::default(), &rs).await.unwrap();
    let uid = rs.metadata.uid.clone().unwrap();
    let owned_by_rs = |pod: &Pod| {
        pod.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true))
    };
    until(20, "the orphan is adopted and 2 pods are made", || async {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        list.len() == 3 && list.iter().all(&owned_by_rs)
    })
    .await;
    until(10, "status says 3 replicas", || async {
        let rs = sets.get("rs").await.unwrap();
        let status = rs.status.unwrap_or_default();
        status.replicas == 3 && status.observed_generation == rs.metadata.generation
    })
    .await;
    let made: Vec<Pod> = pods.list(&ListParams::default()).await.unwrap().items;
    assert!(
        made.iter()
            .filter(|p| p.metadata.name.as_deref() != Some("orphan"))
            .all(|p| p.metadata.name.as_ref().unwrap().starts_with("rs-")),
        "pods are named after their ReplicaSet"
    );

    // Relabelled: released (no longer owned), and replaced.
    pods.patch(
        "orphan",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "elsewhere"}}})),
    )
    .await
    .unwrap();
    until(
        20,
        "the relabelled pod is released and replaced",
        || async {
            let list = pods.list(&ListParams::default()).await.unwrap().items;
            let released = list
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some("orphan"))
                .is_some_and(|p| !owned_by_rs(p));
            released && list.iter().filter(|p| owned_by_rs(p)).count() == 3
        },
    )
    .await;

    // Scale down to 1 through /scale: the pods being deleted are among the unscheduled ones
    // (all are, here), and exactly one stays.
    server
        .kubectl(&["scale", "replicaset/rs", "--replicas=1"])
        .unwrap();
    until(20, "one pod left", || async {
        let list = pods
            .list(&ListParams::default().labels("app=rs"))
            .await
            .unwrap()
            .items;
        list.iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count()
            == 1
    })
    .await;
    let events = server
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=rs",
        ])
        .unwrap();
    assert!(events.contains("SuccessfulCreate"), "{events}");
    assert!(events.contains("SuccessfulDelete"), "{events}");
}

#[tokio::test]
async fn cascading_deletion_in_background_foreground_and_orphan_mode() {
    let c = cluster("ctl-gc").await;
    let image = c
        .registry
        .push("app:v1", sleeper("v1"), Layout::ConfigV0)
        .await;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    for name in ["bg", "fg", "or"] {
        deployments
            .create(
                &PostParams::default(),
                &deployment(name, &image, 2, json!({})),
            )
            .await
            .unwrap();
    }
    for name in ["bg", "fg", "or"] {
        c.server
            .kubectl(&[
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "--timeout=60s",
            ])
            .unwrap();
    }
    let count = |app: &'static str| {
        let pods = c.pods.clone();
        let sets = sets.clone();
        async move {
            let selector = ListParams::default().labels(&format!("app={app}"));
            (
                sets.list(&selector).await.unwrap().items.len(),
                pods.list(&selector).await.unwrap().items.len(),
            )
        }
    };

    // Background: the Deployment goes at once, then its ReplicaSet and pods.
    c.server.kubectl(&["delete", "deployment", "bg"]).unwrap();
    assert!(deployments.get_opt("bg").await.unwrap().is_none());
    until(30, "bg's ReplicaSet and pods are gone", || async {
        count("bg").await == (0, 0)
    })
    .await;

    // Foreground: the Deployment stays (with the finalizer) until its pods are gone.
    c.server
        .kubectl(&[
            "delete",
            "deployment",
            "fg",
            "--cascade=foreground",
            "--wait=false",
        ])
        .unwrap();
    let marked = deployments.get("fg").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        marked
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exists = deployments.get_opt("fg").await.unwrap().is_some();
        let left = count("fg").await;
        if !exists {
            assert_eq!(left, (0, 0), "the owner went before its dependents");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fg was never deleted: {left:?} left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Orphan: the Deployment goes, its ReplicaSet and pods stay, no longer owned.
    c.server
        .kubectl(&["delete", "deployment", "or", "--cascade=orphan"])
        .unwrap();
    assert!(deployments.get_opt("or").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = sets
        .list(&ListParams::default().labels("app=or"))
        .await
        .unwrap()
        .items;
    assert_eq!(kept.len(), 1);
    assert!(
        kept[0]
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty())
    );
    assert_eq!(running_images(&c.pods, "or").await.len(), 2);
}

/// The collector watches each kind on its own, so an owner's orphan deletion can reach it
/// before dependents of other kinds made a moment earlier. Those are kept all the same, and no
/// stale view of them (still naming the owner) gets them collected afterwards.
#[tokio::test]
async fn orphan_deletion_keeps_dependents_the_collector_has_not_seen_yet() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
    use kube::api::DeleteParams;
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", data.path().to_str().unwrap()]).await;
    let client = server.client().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let rounds = 8;
    for round in 0..rounds {
        let owner: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("owner-{round}")}}))
                .unwrap();
        let owner = maps.create(&PostParams::default(), &owner).await.unwrap();
        let metadata = |i: usize| {
            json!({
                "name": format!("dep-{round}-{i}"),
                "labels": {"gc-test": "orphan"},
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "name": owner.metadata.name, "uid": owner.metadata.uid,
                }],
            })
        };
        for i in 0..3 {
            let secret: Secret = serde_json::from_value(json!({"metadata": metadata(i)})).unwrap();
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
            let account: ServiceAccount =
                serde_json::from_value(json!({"metadata": metadata(i)})).unwrap();
            accounts
                .create(&PostParams::default(), &account)
                .await
                .unwrap();
        }
        maps.delete(&format!("owner-{round}"), &DeleteParams::orphan())
            .await
            .unwrap();
    }
    until(30, "every owner is gone", || async {
        maps.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|m| !m.metadata.name.as_deref().unwrap().starts_with("owner-"))
    })
    .await;
    // Time for a wrongful collection to happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let selector = ListParams::default().labels("gc-test=orphan");
    let kept_secrets = secrets.list(&selector).await.unwrap().items;
    let kept_accounts = accounts.list(&selector).await.unwrap().items;
    assert_eq!(kept_secrets.len(), rounds * 3, "secrets were collected");
    assert_eq!(
        kept_accounts.len(),
        rounds * 3,
        "service accounts were collected"
    );
    for meta in kept_secrets
        .iter()
        .map(|s| &s.metadata)
        .chain(kept_accounts.iter().map(|a| &a.metadata))
    {
        assert!(
            meta.owner_references.as_ref().is_none_or(|o| o.is_empty()),
            "{:?} still names its owner",
            meta.name
        );
    }
}

#[tokio::test]
async fn deleting_a_namespace_empties_it_then_removes_it() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    let c = cluster("ctl-ns").await;
    let image = c
        .registry
        .push("app:v1", sleeper("v1"), Layout::ConfigV0)
        .await;
    // (kubectl's `create namespace|configmap` send protobuf, which the API server does not
    // speak yet: these objects are made through kube-rs.)
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    let team: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &team)
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "team");
    let map = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"a": "b"}})).unwrap()
    };
    maps.create(&PostParams::default(), &map("settings"))
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "team");
    deployments
        .create(
            &PostParams::default(),
            &deployment("app", &image, 2, json!({})),
        )
        .await
        .unwrap();
    c.server
        .kubectl(&[
            "-n",
            "team",
            "rollout",
            "status",
            "deployment/app",
            "--timeout=60s",
        ])
        .unwrap();

    let refused = c
        .server
        .kubectl(&["delete", "namespace", "default"])
        .unwrap_err();
    assert!(refused.contains("may not be deleted"), "{refused}");

    c.server
        .kubectl(&["delete", "namespace", "team", "--wait=false"])
        .unwrap();
    let ns = namespaces.get("team").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let late = maps
        .create(&PostParams::default(), &map("late"))
        .await
        .unwrap_err();
    assert!(late.to_string().contains("being terminated"), "{late}");

    until(60, "the namespace is gone", || async {
        namespaces.get_opt("team").await.unwrap().is_none()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "team");
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "team");
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        maps.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        sets.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        deployments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The name can be used again.
    namespaces
        .create(&PostParams::default(), &team)
        .await
        .unwrap();
}

/// A server with fast node monitoring (3 s grace, no toleration) and three node agents.
async fn three_nodes(
    prefix: &str,
) -> (Vec<crate::support::Node>, Server, crate::support::Registry) {
    let data = tempfile::tempdir().unwrap();
    let (pods, services) = crate::support::cluster::own_blocks();
    let server = Server::start(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--cluster-cidr",
        &pods,
        "--service-cidr",
        &services,
        "--node-monitor-grace-period",
        "3s",
        "--node-monitor-period",
        "250ms",
        "--default-unreachable-toleration-seconds",
        "0",
        "--controller-retry",
        "1s",
        "--pod-gc-period",
        "500ms",
    ])
    .await;
    std::mem::forget(data);
    let registry = crate::support::Registry::start().await;
    let nodes = ["a", "b", "c"]
        .iter()
        .map(|n| crate::support::Node::start(&server, &format!("{prefix}-{n}"), &registry, &[]))
        .collect();
    (nodes, server, registry)
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .unwrap()
        .node_name
        .clone()
        .unwrap_or_default()
}

/// Ready pods of `app` not on `excluded`, and all pods of `app` on `excluded`.
async fn placement(pods: &Api<Pod>, app: &str, excluded: &str) -> (usize, Vec<Pod>) {
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items;
    let elsewhere = list
        .iter()
        .filter(|p| ready(p) && node_of(p) != excluded)
        .count();
    let there = list
        .into_iter()
        .filter(|p| node_of(p) == excluded)
        .collect();
    (elsewhere, there)
}

#[tokio::test]
async fn pods_of_a_lost_node_are_replaced_and_a_frozen_node_stops_its_evicted_pods() {
    let (mut nodes, server, registry) = three_nodes("heal").await;
    let client = server.client().await;
    let image = registry
        .push("app:v1", sleeper("v1"), Layout::ConfigV0)
        .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    deployments
        .create(
            &PostParams::default(),
            &deployment("heal", &image, 6, json!({})),
        )
        .await
        .unwrap();
    server
        .kubectl(&["rollout", "status", "deployment/heal", "--timeout=90s"])
        .unwrap();

    // kill -9 the agent with the most pods: its pods are replaced on the other two.
    let list = pods.list(&ListParams::default()).await.unwrap().items;
    let busiest = (0..3)
        .max_by_key(|i| list.iter().filter(|p| node_of(p) == nodes[*i].name).count())
        .unwrap();
    let lost = nodes[busiest].name.clone();
    nodes[busiest].kill();
    let started = Instant::now();
    until(60, "6 ready pods on the other nodes", || async {
        placement(&pods, "heal", &lost).await.0 == 6
    })
    .await;
    eprintln!("node loss recovered in {:?}", started.elapsed());
    let node: k8s_openapi::api::core::v1::Node = Api::all(client.clone()).get(&lost).await.unwrap();
    let ready_condition = node
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready_condition.status, "Unknown");
    assert!(
        node.spec
            .unwrap()
            .taints
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
    );
    until(20, "the Deployment is back to 6 available", || async {
        let d = deployments.get("heal").await.unwrap();
        d.status.and_then(|s| s.available_replicas) == Some(6)
    })
    .await;
    let events = server
        .kubectl(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=TaintManagerEviction",
        ])
        .unwrap();
    assert!(events.contains("TaintManagerEviction"), "{events}");
    // Its evicted pods stay Terminating (nobody can confirm they stopped) until the node is
    // deleted; then pod garbage collection removes them.
    let (_, stranded) = placement(&pods, "heal", &lost).await;
    assert!(!stranded.is_empty());
    assert!(
        stranded
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
    );
    server.kubectl(&["delete", "node", &lost]).unwrap();
    until(20, "the lost node's pods are gone", || async {
        placement(&pods, "heal", &lost).await.1.is_empty()
    })
    .await;

    // Freeze another agent that runs pods (SIGSTOP): they are replaced; thawed, it finds them
    // evicted and stops them, so no two copies keep running.
    let list = pods.list(&ListParams::default()).await.unwrap().items;
    let frozen_index = (0..3)
        .filter(|i| *i != busiest)
        .max_by_key(|i| {
            list.iter()
                .filter(|p| node_of(p) == nodes[*i].name && p.metadata.deletion_timestamp.is_none())
                .count()
        })
        .unwrap();
    let frozen = nodes[frozen_index].name.clone();
    let pid = nodes[frozen_index].child.id().to_string();
    let (_, before) = placement(&pods, "heal", &frozen).await;
    assert!(!before.is_empty(), "the frozen node runs pods");
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    until(60, "6 ready pods off the frozen node", || async {
        placement(&pods, "heal", &frozen).await.0 == 6
    })
    .await;
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    until(
        20,
        "the thawed node stopped and released its evicted pods",
        || async {
            let (_, there) = placement(&pods, "heal", &frozen).await;
            there
                .iter()
                .all(|p| !before.iter().any(|b| b.metadata.uid == p.metadata.uid))
        },
    )
    .await;
    until(
        20,
        "the thawed node is Ready and untainted again",
        || async {
            let node: k8s_openapi::api::core::v1::Node =
                Api::all(client.clone()).get(&frozen).await.unwrap();
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let tainted = node
                .spec
                .and_then(|s| s.taints)
                .unwrap_or_default()
                .iter()
                .any(|t| t.effect == "NoExecute");
            ready && !tainted
        },
    )
    .await;
}

/// A command that sleeps 300 ms, then exits with `code`.
fn short_task(code: i32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (i64.store (i32.const 0) (i64.const 0))
                (i32.store8 (i32.const 8) (i32.const 0))
                (i32.store (i32.const 16) (i32.const 1))
                (i64.store (i32.const 24) (i64.const 300000000))
                (i64.store (i32.const 32) (i64.const 0))
                (i32.store16 (i32.const 40) (i32.const 0))
                (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
                (call $exit (i32.const {code}))))"#
    ))
    .expect("valid WAT")
}

fn job(name: &str, image: &str, spec: Value) -> k8s_openapi::api::batch::v1::Job {
    let mut j = json!({
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": image}],
            }},
        },
    });
    crate::support::cluster::merge(&mut j, json!({ "spec": spec }));
    serde_json::from_value(j).unwrap()
}

#[tokio::test]
async fn jobs_run_to_completion_in_parallel_stop_at_the_backoff_limit_and_index_their_pods() {
    use k8s_openapi::api::batch::v1::Job;
    let c =
        crate::support::cluster::cluster_with("ctl-jobs", &["--job-backoff", "100ms"], &[]).await;
    let ok = c
        .registry
        .push("task:ok", short_task(0), Layout::ConfigV0)
        .await;
    let bad = c
        .registry
        .push("task:bad", short_task(1), Layout::ConfigV0)
        .await;
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");

    // completions 5, parallelism 2: never more than 2 pods at once, 5 successes.
    let most = Arc::new(Mutex::new(0usize));
    let watching = {
        let pods = c.pods.clone();
        let most = most.clone();
        tokio::spawn(async move {
            let config = watcher::Config::default().labels("batch.kubernetes.io/job-name=five");
            let mut live: BTreeMap<String, Pod> = BTreeMap::new();
            let mut stream = watcher(pods, config).default_backoff().boxed();
            while let Some(Ok(event)) = stream.next().await {
                match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        live.insert(p.metadata.name.clone().unwrap(), p);
                    }
                    watcher::Event::Delete(p) => {
                        live.remove(p.metadata.name.as_deref().unwrap());
                    }
                    _ => continue,
                }
                let running = live
                    .values()
                    .filter(|p| {
                        !matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        )
                    })
                    .count();
                let mut m = most.lock().unwrap();
                *m = (*m).max(running);
            }
        })
    };
    jobs.create(
        &PostParams::default(),
        &job("five", &ok, json!({"completions": 5, "parallelism": 2})),
    )
    .await
    .unwrap();
    c.server
        .kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/five",
            "--timeout=90s",
        ])
        .unwrap();
    watching.abort();
    let five = jobs.get("five").await.unwrap().status.unwrap();
    assert_eq!(five.succeeded, Some(5));
    assert!(five.completion_time.is_some());
    assert!(
        *most.lock().unwrap() <= 2,
        "{} pods at once",
        most.lock().unwrap()
    );

    // A failing job: backoffLimit 2 means the third failure fails the Job.
    jobs.create(
        &PostParams::default(),
        &job("failing", &bad, json!({"backoffLimit": 2})),
    )
    .await
    .unwrap();
    c.server
        .kubectl(&[
            "wait",
            "--for=condition=failed",
            "job/failing",
            "--timeout=90s",
        ])
        .unwrap();
    let failing = jobs.get("failing").await.unwrap().status.unwrap();
    assert_eq!(failing.failed, Some(3));
    let reason = failing
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .reason;
    assert_eq!(reason.as_deref(), Some("BackoffLimitExceeded"));

    // Indexed: each pod knows its index; the Job reports every index done, then its TTL
    // removes it and its pods.
    jobs.create(
        &PostParams::default(),
        &job(
            "indexed",
            &ok,
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "ttlSecondsAfterFinished": 1}),
        ),
    )
    .await
    .unwrap();
    let indexes = Arc::new(Mutex::new(BTreeSet::new()));
    until(60, "the indexed job completes", || async {
        let pods = c
            .pods
            .list(&ListParams::default().labels("batch.kubernetes.io/job-name=indexed"))
            .await
            .unwrap()
            .items;
        for pod in &pods {
            let env = pod.spec.as_ref().unwrap().containers[0]
                .env
                .clone()
                .unwrap_or_default();
            let index = env
                .iter()
                .find(|e| e.name == "JOB_COMPLETION_INDEX")
                .unwrap();
            indexes.lock().unwrap().insert(index.value.clone().unwrap());
        }
        jobs.get_opt("indexed")
            .await
            .unwrap()
            .and_then(|j| j.status)
            .and_then(|s| s.completed_indexes)
            .as_deref()
            == Some("0-2")
    })
    .await;
    assert_eq!(
        *indexes.lock().unwrap(),
        ["0", "1", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    until(
        30,
        "the finished indexed job is deleted after its TTL",
        || async {
            jobs.get_opt("indexed").await.unwrap().is_none()
                && c.pods
                    .list(&ListParams::default().labels("batch.kubernetes.io/job-name=indexed"))
                    .await
                    .unwrap()
                    .items
                    .is_empty()
        },
    )
    .await;
}

#[tokio::test]
async fn a_cronjob_runs_a_job_each_minute_and_prunes_its_history() {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    let c = cluster("ctl-cron").await;
    let ok = c
        .registry
        .push("task:ok", short_task(0), Layout::ConfigV0)
        .await;
    let cronjobs: Api<CronJob> = Api::namespaced(c.client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");

    // Bad schedules and zones are refused at the door.
    let mut bad: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"schedule": "61 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "main", "image": ok}]}}}}},
    }))
    .unwrap();
    let refused = cronjobs
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("spec.schedule"), "{refused}");
    bad.spec.as_mut().unwrap().schedule = "@hourly".into();
    bad.spec.as_mut().unwrap().time_zone = Some("Mars/Olympus".into());
    let refused = cronjobs
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("spec.timeZone"), "{refused}");

    // Every minute; no successful Job kept: the first one runs, succeeds and is pruned.
    let cron: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "*/1 * * * *",
            "timeZone": "Europe/Berlin",
            "successfulJobsHistoryLimit": 0,
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": ok}],
            }}}},
        },
    }))
    .unwrap();
    cronjobs
        .create(&PostParams::default(), &cron)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    until(90, "a Job was created", || async {
        for j in jobs.list(&ListParams::default()).await.unwrap().items {
            seen.lock().unwrap().insert(j.metadata.name.unwrap());
        }
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let first = seen.lock().unwrap().iter().next().unwrap().clone();
    assert!(first.starts_with("tick-"), "{first}");
    until(10, "lastScheduleTime is set", || async {
        cronjobs
            .get("tick")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.last_schedule_time.is_some())
    })
    .await;
    until(60, "the finished Job is pruned", || async {
        jobs.get_opt(&first).await.unwrap().is_none()
    })
    .await;
    until(30, "lastSuccessfulTime is set", || async {
        cronjobs
            .get("tick")
            .await
            .unwrap()
            .status
            .unwrap()
            .last_successful_time
            .is_some()
    })
    .await;
    let events = c
        .server
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=tick",
        ])
        .unwrap();
    for reason in ["SuccessfulCreate", "SawCompletedJob", "SuccessfulDelete"] {
        assert!(events.contains(reason), "{reason}: {events}");
    }
}

#[tokio::test]
async fn pod_gc_removes_pods_of_missing_nodes_and_old_finished_pods() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--pod-gc-period",
        "300ms",
        "--terminated-pod-gc-threshold",
        "2",
    ])
    .await;
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str, node: Option<&str>| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "nowhere/app:v1"}]},
        }))
        .unwrap()
    };
    pods.create(&PostParams::default(), &pod("ghost", Some("no-such-node")))
        .await
        .unwrap();
    for name in ["done-1", "done-2", "done-3", "done-4"] {
        pods.create(&PostParams::default(), &pod(name, None))
            .await
            .unwrap();
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
        // Creation times are in seconds: keep the order unambiguous.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    until(
        20,
        "the orphan and the two oldest finished pods are gone",
        || async {
            let mut names: Vec<String> = pods
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|p| p.metadata.name.unwrap())
                .collect();
            names.sort();
            names == ["done-3", "done-4"]
        },
    )
    .await;
}

#[tokio::test]
async fn a_standby_controller_manager_takes_over_when_the_leader_dies() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Event;
    let db = crate::support::postgres_db().await;
    let (mut first, dir_a) = crate::support::replica(&db, None).await;
    let (second, _dir_b) = crate::support::replica(&db, Some(dir_a.path())).await;
    let client = second.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let holder = || async {
        leases
            .get("bosun-controller-manager")
            .await
            .ok()
            .and_then(|l| l.spec?.holder_identity)
    };
    until(20, "a controller manager leads", || async {
        holder().await.is_some()
    })
    .await;
    let leader = holder().await.unwrap();

    // While the first server leads, only it acts (no node: pods stay unscheduled).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", "nowhere/app:v1", 2, json!({})),
        )
        .await
        .unwrap();
    until(20, "2 pods", || async {
        pods.list(&ListParams::default()).await.unwrap().items.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let controller_events = || async {
        Api::<Event>::namespaced(client.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                matches!(
                    e.reporting_component.as_deref(),
                    Some("deployment-controller" | "replicaset-controller")
                )
            })
            .collect::<Vec<Event>>()
    };
    let before = controller_events().await;
    assert!(!before.is_empty());
    assert!(
        before
            .iter()
            .all(|e| e.reporting_instance.as_deref() == Some(leader.as_str())),
        "the standby wrote events while standing by"
    );
    assert_eq!(holder().await.as_deref(), Some(leader.as_str()));

    // The leader's server dies without releasing the lease; a scale-up still completes.
    first.kill();
    second
        .kubectl(&["scale", "deployment/web", "--replicas=4"])
        .unwrap();
    until(30, "4 pods after the failover", || async {
        pods.list(&ListParams::default()).await.unwrap().items.len() == 4
    })
    .await;
    let successor = holder().await.unwrap();
    assert_ne!(successor, leader);
    until(10, "the successor's events", || async {
        controller_events()
            .await
            .iter()
            .any(|e| e.reporting_instance.as_deref() == Some(successor.as_str()))
    })
    .await;
}
