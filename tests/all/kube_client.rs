//! kube-rs, the client library Bosun's controllers and node agent are built on, against a real
//! `bosun server`: typed CRUD, and a `watcher` that survives a forced 410 Gone by re-listing.

use std::time::Duration;

use crate::support::Server;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

async fn client(server: &Server) -> Client {
    server.client().await
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud_through_kube_rs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    let client = client(&server).await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"kube-system".to_string()), "{names:?}");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &configmap("one", "1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    let mut fetched = cms.get("one").await.unwrap();
    assert_eq!(fetched.data.as_ref().unwrap()["v"], "1");
    fetched.data = Some([("v".to_string(), "2".to_string())].into());
    let replaced = cms
        .replace("one", &PostParams::default(), &fetched)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    // A replace with the stale resourceVersion is a 409 Conflict.
    let stale = cms
        .replace("one", &PostParams::default(), &fetched)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, kube::Error::Api(ref e) if e.code == 409),
        "{stale:?}"
    );
    let patched = cms
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"w": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap().len(), 2);
    cms.delete("one", &DeleteParams::default()).await.unwrap();
    let gone = cms.get("one").await.unwrap_err();
    assert!(
        matches!(gone, kube::Error::Api(ref e) if e.code == 404),
        "{gone:?}"
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "reg/web:v1"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let selected = deployments
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let spec = selected.items[0].spec.as_ref().unwrap();
    assert_eq!(spec.revision_history_limit, Some(10), "defaults applied");
    let scale = deployments.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
}

/// The server compacts after one second and the watch is re-opened every second, so the
/// watcher's next watch starts from a compacted revision: it must get 410, re-list, and end up
/// with the right state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_relists_after_a_forced_410() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--compaction-window",
        "1s",
        "--compaction-interval",
        "300ms",
    ])
    .await;
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &configmap("a", "1"))
        .await
        .unwrap();

    let config = watcher::Config::default().timeout(1);
    let mut stream = watcher(cms.clone(), config).boxed();
    let mut init_dones = 0;
    let mut errors_410 = 0;
    let mut names = std::collections::BTreeSet::new();
    let mut during_init = std::collections::BTreeSet::new();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut writes = 0;
    while init_dones < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no re-list after 30 s"
        );
        // Other writes move the revision on, so compaction overtakes the watcher's revision.
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": format!("s{writes}")}})).unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
        writes += 1;
        if writes == 3 {
            cms.create(&PostParams::default(), &configmap("b", "2"))
                .await
                .unwrap();
        }
        match tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
            Err(_) => continue,
            Ok(None) => panic!("watcher stream ended"),
            Ok(Some(Err(watcher::Error::WatchError(e)))) if e.code == 410 => errors_410 += 1,
            Ok(Some(Err(e))) => panic!("watcher error {e:?}"),
            Ok(Some(Ok(event))) => match event {
                watcher::Event::Init => during_init.clear(),
                watcher::Event::InitApply(cm) => {
                    during_init.insert(cm.metadata.name.unwrap());
                }
                watcher::Event::InitDone => {
                    init_dones += 1;
                    names = std::mem::take(&mut during_init);
                }
                watcher::Event::Apply(cm) => {
                    names.insert(cm.metadata.name.unwrap());
                }
                watcher::Event::Delete(cm) => {
                    names.remove(&cm.metadata.name.unwrap());
                }
            },
        }
    }
    assert!(errors_410 >= 1, "the re-list was caused by a 410");
    let actual: std::collections::BTreeSet<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(names, actual);
    assert!(actual.contains("a") && actual.contains("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watches_get_bookmarks_at_the_configured_interval() {
    use kube::api::{WatchEvent, WatchParams};

    let dir = tempfile::tempdir().unwrap();
    // No controllers: nothing else may write a ConfigMap here (the namespace's
    // `kube-root-ca.crt` would), so the watch stays idle.
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--watch-bookmark-interval",
        "300ms",
        "--disable-controllers",
        "*",
    ])
    .await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let created = api
        .create(&PostParams::default(), &configmap("marker", "1"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a bookmark within 5 s on an idle watch")
        .unwrap()
        .unwrap();
    match event {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_the_same_through_core_v1_and_events_k8s_io_v1() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event as NewEvent;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    let client = client(&server).await;
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let regarding =
        json!({"apiVersion": "v1", "kind": "Pod", "name": "p1", "namespace": "default"});
    let written_new: NewEvent = serde_json::from_value(json!({
        "metadata": {"name": "by-new"}, "eventTime": "2026-11-30T00:00:00.000000Z",
        "reason": "Started", "note": "Started container main", "type": "Normal",
        "action": "Start", "reportingController": "bosun-node", "reportingInstance": "n1",
        "regarding": regarding,
    }))
    .unwrap();
    new.create(&PostParams::default(), &written_new)
        .await
        .unwrap();
    let written_core: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "by-core"}, "reason": "Scheduled", "message": "assigned",
        "type": "Normal", "involvedObject": regarding, "count": 2,
        "source": {"component": "default-scheduler"},
    }))
    .unwrap();
    core.create(&PostParams::default(), &written_core)
        .await
        .unwrap();

    let as_core = core.get("by-new").await.unwrap();
    assert_eq!(as_core.involved_object.name.as_deref(), Some("p1"));
    assert_eq!(as_core.message.as_deref(), Some("Started container main"));
    assert_eq!(as_core.reporting_component.as_deref(), Some("bosun-node"));
    let as_new = new.get("by-core").await.unwrap();
    assert_eq!(as_new.regarding.and_then(|r| r.name).as_deref(), Some("p1"));
    assert_eq!(as_new.note.as_deref(), Some("assigned"));
    assert_eq!(as_new.deprecated_count, Some(2));
    let listed: Vec<String> = core
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
}
