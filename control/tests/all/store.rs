//! The store suite: every scenario runs against SQLite and PostgreSQL.

use std::time::Duration;

use bosun_api::{fields, labels};
use bosun_control::store::{Error, EventType, Key, ListRequest, Op, Store, WatchRequest};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{Kind, Place};

/// Declares `#[tokio::test]`s `<name>::sqlite` and `<name>::postgres` for a scenario
/// `async fn <name>(kind: Kind)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::support::Kind::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::support::Kind::Postgres).await
            }
        }
    )*};
}

on_both_backends!(
    crud_and_compare_and_swap,
    label_and_field_selectors,
    pagination_is_consistent_at_one_revision,
    list_at_an_older_revision,
    watch_from_a_revision_sees_every_change_in_order,
    watch_with_selectors_sees_objects_enter_and_leave,
    watchers_that_come_and_go_between_writes_miss_nothing,
    a_dropped_watch_ends_without_waiting_for_its_next_event,
    watchers_of_interleaved_resources_see_exactly_their_own,
    pod_watchers_by_node_name_see_their_nodes_pods_come_and_go,
    compaction_makes_old_revisions_gone,
    restart_keeps_data_and_revisions,
    bad_input_is_refused_and_writes_nothing,
    secrets_are_never_stored_in_clear,
    cluster_secrets_need_the_right_token,
    linked_writes_commit_together_or_not_at_all,
);

fn pod(name: &str, labels: Value, node: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": node},
        "status": {"phase": phase}
    })
}

fn pod_key(name: &str) -> Key {
    Key::new("pods", "default", name)
}

fn names(items: &[bosun_control::store::Object]) -> Vec<String> {
    items.iter().map(|o| o.key.name.clone()).collect()
}

async fn crud_and_compare_and_swap(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let key = pod_key("web");
    let created = store
        .create(&key, pod("web", json!({"app": "web"}), "", "Pending"))
        .await
        .unwrap();
    assert!(created.revision > 0);
    assert_eq!(created.create_revision, created.revision);
    assert_eq!(
        created.value["metadata"]["resourceVersion"],
        created.revision.to_string()
    );

    let again = store.create(&key, pod("web", json!({}), "", "")).await;
    assert!(
        matches!(again, Err(Error::AlreadyExists { .. })),
        "{again:?}"
    );

    let got = store.get(&key).await.unwrap();
    assert_eq!(got, created);

    let updated = store
        .update(
            &key,
            pod("web", json!({"app": "web"}), "n1", "Running"),
            Some(created.revision),
        )
        .await
        .unwrap();
    assert!(updated.revision > created.revision);
    assert_eq!(updated.create_revision, created.create_revision);
    assert_eq!(updated.value["spec"]["nodeName"], "n1");

    let stale = store
        .update(
            &key,
            pod("web", json!({}), "n2", ""),
            Some(created.revision),
        )
        .await;
    match stale {
        Err(Error::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (created.revision, updated.revision)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.get(&key).await.unwrap().value["spec"]["nodeName"],
        "n1"
    );

    let unconditional = store
        .update(&key, pod("web", json!({}), "n3", ""), None)
        .await
        .unwrap();
    assert!(unconditional.revision > updated.revision);

    let wrong_precondition = store.delete(&key, Some(updated.revision)).await;
    assert!(matches!(wrong_precondition, Err(Error::Conflict { .. })));
    let deleted = store
        .delete(&key, Some(unconditional.revision))
        .await
        .unwrap();
    assert!(deleted.revision > unconditional.revision);
    assert_eq!(deleted.value["spec"]["nodeName"], "n3");

    assert!(matches!(store.get(&key).await, Err(Error::NotFound { .. })));
    assert!(matches!(
        store
            .update(&key, pod("web", json!({}), "", ""), None)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.delete(&key, None).await,
        Err(Error::NotFound { .. })
    ));

    // A re-created key is a new incarnation.
    let reborn = store
        .create(&key, pod("web", json!({}), "", ""))
        .await
        .unwrap();
    assert_eq!(reborn.create_revision, reborn.revision);
    assert!(reborn.revision > deleted.revision);
}

async fn seed_pods(store: &dyn Store) {
    let pods = [
        ("a", json!({"app": "web", "tier": "front"}), "n1", "Running"),
        ("b", json!({"app": "web", "tier": "back"}), "n2", "Running"),
        ("c", json!({"app": "db"}), "n1", "Pending"),
        ("d", json!({}), "", "Pending"),
    ];
    for (name, l, node, phase) in pods {
        store
            .create(&pod_key(name), pod(name, l, node, phase))
            .await
            .unwrap();
    }
    let mut other = pod("e", json!({"app": "web"}), "n1", "Running");
    other["metadata"]["namespace"] = json!("other");
    store
        .create(&Key::new("pods", "other", "e"), other)
        .await
        .unwrap();
    store
        .create(
            &Key::new("configmaps", "default", "a"),
            json!({"metadata": {"name": "a", "labels": {"app": "web"}}}),
        )
        .await
        .unwrap();
}

async fn list_names(store: &dyn Store, ns: Option<&str>, l: &str, f: &str) -> Vec<String> {
    let result = store
        .list(&ListRequest {
            resource: "pods".into(),
            namespace: ns.map(String::from),
            labels: labels::Selector::parse(l).unwrap(),
            fields: fields::Selector::parse(f).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    names(&result.items)
}

async fn label_and_field_selectors(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    seed_pods(&*store).await;
    let s = &*store;
    assert_eq!(list_names(s, None, "", "").await, ["a", "b", "c", "d", "e"]);
    assert_eq!(
        list_names(s, Some("default"), "", "").await,
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        list_names(s, Some("default"), "app=web", "").await,
        ["a", "b"]
    );
    assert_eq!(
        list_names(s, Some("default"), "app!=web", "").await,
        ["c", "d"]
    );
    assert_eq!(
        list_names(s, None, "app in (web,db)", "").await,
        ["a", "b", "c", "e"]
    );
    assert_eq!(list_names(s, None, "app notin (web)", "").await, ["c", "d"]);
    assert_eq!(list_names(s, None, "tier", "").await, ["a", "b"]);
    assert_eq!(list_names(s, None, "!app", "").await, ["d"]);
    assert_eq!(
        list_names(s, None, "", "spec.nodeName=n1").await,
        ["a", "c", "e"]
    );
    assert_eq!(list_names(s, None, "", "spec.nodeName=").await, ["d"]);
    assert_eq!(
        list_names(s, None, "", "status.phase!=Running").await,
        ["c", "d"]
    );
    assert_eq!(list_names(s, None, "", "metadata.name=b").await, ["b"]);
    assert_eq!(
        list_names(s, None, "", "metadata.namespace=other").await,
        ["e"]
    );
    assert_eq!(
        list_names(
            s,
            None,
            "app=web",
            "spec.nodeName=n1,metadata.namespace=default"
        )
        .await,
        ["a"]
    );
}

async fn pagination_is_consistent_at_one_revision(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    for i in 0..25 {
        let name = format!("p{i:02}");
        store
            .create(
                &pod_key(&name),
                pod(&name, json!({"i": i.to_string()}), "", ""),
            )
            .await
            .unwrap();
    }
    let mut request = ListRequest {
        resource: "pods".into(),
        limit: 10,
        ..Default::default()
    };
    let first = store.list(&request).await.unwrap();
    assert_eq!(first.items.len(), 10);
    let token = first.continue_token.clone().expect("more pages");

    // Change the world between pages: the next pages must still show the first page's revision.
    store.delete(&pod_key("p15"), None).await.unwrap();
    store
        .update(
            &pod_key("p20"),
            pod("p20", json!({"changed": "yes"}), "", ""),
            None,
        )
        .await
        .unwrap();
    store
        .create(&pod_key("p12a"), pod("p12a", json!({}), "", ""))
        .await
        .unwrap();

    let mut all = names(&first.items);
    request.continue_token = Some(token);
    loop {
        let page = store.list(&request).await.unwrap();
        assert_eq!(page.revision, first.revision);
        all.extend(names(&page.items));
        for item in &page.items {
            assert!(item.revision <= first.revision);
            assert!(item.value["metadata"]["labels"].get("changed").is_none());
        }
        match page.continue_token {
            Some(t) => request.continue_token = Some(t),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(all, expected);

    // A fresh list sees the new state.
    let now = list_names(&*store, None, "", "").await;
    assert!(now.contains(&"p12a".to_string()) && !now.contains(&"p15".to_string()));

    // A selector with a limit still pages through everything it matches.
    let mut request = ListRequest {
        resource: "pods".into(),
        labels: labels::Selector::parse("i in (1,3,5,7,9,11,13)").unwrap(),
        limit: 2,
        ..Default::default()
    };
    let mut matched = Vec::new();
    loop {
        let page = store.list(&request).await.unwrap();
        assert!(page.items.len() <= 2);
        matched.extend(names(&page.items));
        match page.continue_token {
            Some(t) => request.continue_token = Some(t),
            None => break,
        }
    }
    assert_eq!(matched, ["p01", "p03", "p05", "p07", "p09", "p11", "p13"]);

    let bad = store
        .list(&ListRequest {
            resource: "pods".into(),
            continue_token: Some("garbage!".into()),
            ..Default::default()
        })
        .await;
    assert!(matches!(bad, Err(Error::InvalidContinue(_))));
}

async fn list_at_an_older_revision(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let a = store
        .create(&pod_key("a"), pod("a", json!({"v": "1"}), "", ""))
        .await
        .unwrap();
    store
        .create(&pod_key("b"), pod("b", json!({}), "", ""))
        .await
        .unwrap();
    let at = store.revisions().await.unwrap().current;
    store
        .update(&pod_key("a"), pod("a", json!({"v": "2"}), "", ""), None)
        .await
        .unwrap();
    store.delete(&pod_key("b"), None).await.unwrap();
    store
        .create(&pod_key("c"), pod("c", json!({}), "", ""))
        .await
        .unwrap();

    let old = store
        .list(&ListRequest {
            resource: "pods".into(),
            revision: Some(at),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(old.revision, at);
    assert_eq!(names(&old.items), ["a", "b"]);
    assert_eq!(old.items[0].value["metadata"]["labels"]["v"], "1");
    assert_eq!(old.items[0].revision, a.revision);

    let future = store
        .list(&ListRequest {
            resource: "pods".into(),
            revision: Some(at + 1000),
            ..Default::default()
        })
        .await;
    assert!(matches!(future, Err(Error::TooNew { .. })), "{future:?}");
}

async fn next_event(stream: &mut bosun_control::store::WatchStream) -> bosun_control::store::Event {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
        .expect("no watch error")
}

async fn watch_from_a_revision_sees_every_change_in_order(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let start = store.revisions().await.unwrap().current;
    // A watcher started before the writes ...
    let mut live = store
        .watch(WatchRequest {
            resource: "pods".into(),
            after: start,
            ..Default::default()
        })
        .await
        .unwrap();
    let created = store
        .create(&pod_key("w"), pod("w", json!({}), "", ""))
        .await
        .unwrap();
    store
        .create(
            &Key::new("configmaps", "default", "noise"),
            json!({"metadata": {}}),
        )
        .await
        .unwrap();
    let updated = store
        .update(&pod_key("w"), pod("w", json!({}), "n1", ""), None)
        .await
        .unwrap();
    let deleted = store.delete(&pod_key("w"), None).await.unwrap();

    // ... and one started afterwards from the same revision see the same history.
    let mut replay = store
        .watch(WatchRequest {
            resource: "pods".into(),
            namespace: Some("default".into()),
            after: start,
            ..Default::default()
        })
        .await
        .unwrap();
    for stream in [&mut live, &mut replay] {
        let e = next_event(stream).await;
        assert_eq!((e.kind, e.revision), (EventType::Added, created.revision));
        let e = next_event(stream).await;
        assert_eq!(
            (e.kind, e.revision),
            (EventType::Modified, updated.revision)
        );
        assert_eq!(e.object.value["spec"]["nodeName"], "n1");
        assert_eq!(
            e.object.value["metadata"]["resourceVersion"],
            updated.revision.to_string()
        );
        let e = next_event(stream).await;
        assert_eq!((e.kind, e.revision), (EventType::Deleted, deleted.revision));
        assert_eq!(
            e.object.value["metadata"]["resourceVersion"],
            deleted.revision.to_string()
        );
    }

    // Starting from the middle skips what came before.
    let mut middle = store
        .watch(WatchRequest {
            resource: "pods".into(),
            after: updated.revision,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next_event(&mut middle).await.revision, deleted.revision);

    // A watch on another namespace sees nothing of these.
    let mut elsewhere = store
        .watch(WatchRequest {
            resource: "pods".into(),
            namespace: Some("other".into()),
            after: start,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut other = pod("x", json!({}), "", "");
    other["metadata"]["namespace"] = json!("other");
    let x = store
        .create(&Key::new("pods", "other", "x"), other)
        .await
        .unwrap();
    assert_eq!(next_event(&mut elsewhere).await.revision, x.revision);
}

async fn watch_with_selectors_sees_objects_enter_and_leave(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let start = store.revisions().await.unwrap().current;
    let mut stream = store
        .watch(WatchRequest {
            resource: "pods".into(),
            labels: labels::Selector::parse("app=web").unwrap(),
            fields: fields::Selector::parse("spec.nodeName=n1").unwrap(),
            after: start,
            ..Default::default()
        })
        .await
        .unwrap();
    let k = pod_key("s");
    store
        .create(&k, pod("s", json!({"app": "db"}), "n1", ""))
        .await
        .unwrap();
    let enter = store
        .update(&k, pod("s", json!({"app": "web"}), "n1", ""), None)
        .await
        .unwrap();
    let stay = store
        .update(&k, pod("s", json!({"app": "web"}), "n1", "Running"), None)
        .await
        .unwrap();
    let leave = store
        .update(&k, pod("s", json!({"app": "web"}), "n2", ""), None)
        .await
        .unwrap();
    store.delete(&k, None).await.unwrap();
    let back = store
        .create(&k, pod("s", json!({"app": "web"}), "n1", ""))
        .await
        .unwrap();
    let gone = store.delete(&k, None).await.unwrap();

    let mut got = Vec::new();
    for _ in 0..5 {
        let e = next_event(&mut stream).await;
        got.push((e.kind, e.revision));
    }
    assert_eq!(
        got,
        [
            (EventType::Added, enter.revision),
            (EventType::Modified, stay.revision),
            (EventType::Deleted, leave.revision),
            (EventType::Added, back.revision),
            (EventType::Deleted, gone.revision),
        ]
    );
}

async fn compaction_makes_old_revisions_gone(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let start = store.revisions().await.unwrap().current;
    for i in 0..5 {
        let name = format!("c{i}");
        store
            .create(&pod_key(&name), pod(&name, json!({}), "", ""))
            .await
            .unwrap();
    }
    // Nothing is old enough for a one-hour window.
    assert_eq!(store.compact(Duration::from_secs(3600)).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let compacted = store.compact(Duration::ZERO).await.unwrap();
    let revisions = store.revisions().await.unwrap();
    assert_eq!(compacted, revisions.current);
    assert_eq!(revisions.compacted, compacted);

    let watch = store
        .watch(WatchRequest {
            resource: "pods".into(),
            after: start,
            ..Default::default()
        })
        .await;
    assert!(
        matches!(watch, Err(Error::Gone { .. })),
        "watch from a compacted revision"
    );
    let list = store
        .list(&ListRequest {
            resource: "pods".into(),
            revision: Some(start + 1),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(list, Err(Error::Gone { .. })),
        "list at a compacted revision"
    );

    // The current state is untouched, and watching from the compaction point works.
    assert_eq!(list_names(&*store, None, "", "").await.len(), 5);
    let mut stream = store
        .watch(WatchRequest {
            resource: "pods".into(),
            after: compacted,
            ..Default::default()
        })
        .await
        .unwrap();
    let next = store
        .create(&pod_key("after"), pod("after", json!({}), "", ""))
        .await
        .unwrap();
    assert_eq!(next_event(&mut stream).await.revision, next.revision);
}

async fn restart_keeps_data_and_revisions(kind: Kind) {
    let place = Place::new(kind).await;
    let before = {
        let store = place.open().await;
        store
            .create(&pod_key("keep"), pod("keep", json!({"a": "b"}), "", ""))
            .await
            .unwrap();
        store
            .create(
                &Key::new("secrets", "default", "s"),
                json!({"metadata": {"name": "s"}, "data": {"k": "dg=="}}),
            )
            .await
            .unwrap();
        store.revisions().await.unwrap()
    };
    let store = place.open().await;
    assert_eq!(store.revisions().await.unwrap(), before);
    let kept = store.get(&pod_key("keep")).await.unwrap();
    assert_eq!(kept.value["metadata"]["labels"]["a"], "b");
    let secret = store
        .get(&Key::new("secrets", "default", "s"))
        .await
        .unwrap();
    assert_eq!(secret.value["data"]["k"], "dg==");
    let next = store
        .create(&pod_key("new"), pod("new", json!({}), "", ""))
        .await
        .unwrap();
    assert_eq!(next.revision, before.current + 1);
}

async fn bad_input_is_refused_and_writes_nothing(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let before = store.revisions().await.unwrap();
    let cases: Vec<(Key, Value)> = vec![
        (Key::new("pods", "default", "a/b"), json!({})),
        (Key::new("pods", "default", ".."), json!({})),
        (Key::new("pods", "default", ""), json!({})),
        (Key::new("pods", "Not-A-Namespace", "x"), json!({})),
        (Key::new("Pods!", "default", "x"), json!({})),
        (Key::new("pods", "default", "x".repeat(254)), json!({})),
        (pod_key("array"), json!([1, 2, 3])),
        (pod_key("string"), json!("just a string")),
        (pod_key("meta"), json!({"metadata": 5})),
        (
            pod_key("huge"),
            json!({"data": "x".repeat(3 * 1024 * 1024 + 1)}),
        ),
    ];
    for (key, value) in cases {
        let err = store
            .create(&key, value)
            .await
            .expect_err("must be refused");
        assert!(
            matches!(
                err,
                Error::InvalidKey { .. } | Error::InvalidValue { .. } | Error::TooLarge { .. }
            ),
            "{key}: {err}"
        );
        assert!(!err.is_unavailable());
    }
    assert_eq!(store.revisions().await.unwrap(), before);
    assert!(list_names(&*store, None, "", "").await.is_empty());
}

async fn secrets_are_never_stored_in_clear(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let key = Key::new("secrets", "default", "db");
    store
        .create(
            &key,
            json!({"metadata": {"name": "db"}, "stringData": {"password": "hunter2-plain"}}),
        )
        .await
        .unwrap();
    store
        .update(
            &key,
            json!({"metadata": {"name": "db"}, "stringData": {"password": "hunter3-plain"}}),
            None,
        )
        .await
        .unwrap();
    store
        .create(
            &Key::new("configmaps", "default", "cm"),
            json!({"data": {"visible": "plain-config"}}),
        )
        .await
        .unwrap();
    let raw = place.raw_values().await;
    let text: Vec<String> = raw
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        text.iter().any(|t| t.contains("plain-config")),
        "the check can see plain text"
    );
    assert!(
        !text.iter().any(|t| t.contains("hunter")),
        "secret material in the database: {text:?}"
    );
    assert_eq!(
        store.get(&key).await.unwrap().value["stringData"]["password"],
        "hunter3-plain"
    );
}

async fn cluster_secrets_need_the_right_token(kind: Kind) {
    let place = Place::new(kind).await;
    {
        let store = place.open().await;
        store
            .create(
                &Key::new("secrets", "default", "s"),
                json!({"data": {"k": "dg=="}}),
            )
            .await
            .unwrap();
    }
    let wrong = place
        .open_with_token(Some("not-the-token"))
        .await
        .err()
        .expect("refused");
    assert!(wrong.to_string().contains("does not match"), "{wrong}");
    let missing = place.open_with_token(None).await.err().expect("refused");
    assert!(missing.to_string().contains("--token"), "{missing}");
    let store = place.open().await;
    let secret = store
        .get(&Key::new("secrets", "default", "s"))
        .await
        .unwrap();
    assert_eq!(secret.value["data"]["k"], "dg==");
}

async fn watchers_that_come_and_go_between_writes_miss_nothing(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let start = store.revisions().await.unwrap().current;
    let write = |n: usize| {
        let store = store.clone();
        async move {
            let name = format!("p{n}");
            store
                .create(&pod_key(&name), pod(&name, json!({}), "", ""))
                .await
                .unwrap()
                .revision
        }
    };
    let watch = || {
        store.watch(WatchRequest {
            resource: "pods".into(),
            after: start,
            ..Default::default()
        })
    };
    let mut revisions = Vec::new();
    // Nobody watches: the hub is idle.
    for n in 0..3 {
        revisions.push(write(n).await);
    }
    let mut first = watch().await.unwrap();
    for n in 3..6 {
        revisions.push(write(n).await);
    }
    for expected in &revisions {
        assert_eq!(next_event(&mut first).await.revision, *expected);
    }
    drop(first);
    // The only watcher left; the hub goes idle again at the next write.
    for n in 6..8 {
        revisions.push(write(n).await);
    }
    let mut second = watch().await.unwrap();
    revisions.push(write(8).await);
    for expected in &revisions {
        assert_eq!(next_event(&mut second).await.revision, *expected);
    }
}

async fn a_dropped_watch_ends_without_waiting_for_its_next_event(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let start = store.revisions().await.unwrap().current;
    let mut streams = Vec::new();
    for resource in ["pods", "pods", "secrets"] {
        streams.push(
            store
                .watch(WatchRequest {
                    resource: resource.into(),
                    after: start,
                    ..Default::default()
                })
                .await
                .unwrap(),
        );
    }
    assert_eq!(store.watches(), 3);
    // Events of another resource keep coming, none of them for the dropped watches.
    let configmap = |n: u32| Key::new("configmaps", "default", format!("c{n}"));
    store
        .create(&configmap(0), json!({"metadata": {"name": "c0"}}))
        .await
        .unwrap();
    streams.truncate(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut n = 1;
    while store.watches() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} watches still served after their streams were dropped",
            store.watches()
        );
        store
            .create(
                &configmap(n),
                json!({"metadata": {"name": format!("c{n}")}}),
            )
            .await
            .unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.watches(), 1, "the watch still held must stay");
    drop(streams);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.watches() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the last watch was not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn watchers_of_interleaved_resources_see_exactly_their_own(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let start = store.revisions().await.unwrap().current;
    let watch = |resource: &str, after: i64| {
        store.watch(WatchRequest {
            resource: resource.into(),
            after,
            ..Default::default()
        })
    };
    let mut pods = watch("pods", start).await.unwrap();
    let mut configmaps = watch("configmaps", start).await.unwrap();
    let (mut pod_revisions, mut configmap_revisions) = (Vec::new(), Vec::new());
    let mut late = None;
    for n in 0..30u32 {
        let key = Key::new(
            ["pods", "configmaps", "secrets"][n as usize % 3],
            "default",
            format!("o{n}"),
        );
        let revision = store
            .create(&key, json!({"metadata": {"name": key.name}}))
            .await
            .unwrap()
            .revision;
        match n % 3 {
            0 => pod_revisions.push(revision),
            1 => configmap_revisions.push(revision),
            _ => {}
        }
        // A second pod watcher joins halfway, from the current revision.
        if n == 14 {
            late = Some((revision, watch("pods", revision).await.unwrap()));
        }
    }
    for expected in &pod_revisions {
        assert_eq!(next_event(&mut pods).await.revision, *expected);
    }
    for expected in &configmap_revisions {
        let event = next_event(&mut configmaps).await;
        assert_eq!(event.revision, *expected);
        assert_eq!(event.object.key.resource, "configmaps");
    }
    let (joined_at, mut late) = late.unwrap();
    for expected in pod_revisions.iter().filter(|r| **r > joined_at) {
        assert_eq!(next_event(&mut late).await.revision, *expected);
    }
    // And nothing more: the secrets went to nobody.
    for stream in [&mut pods, &mut configmaps, &mut late] {
        assert!(
            tokio::time::timeout(Duration::from_millis(300), stream.next())
                .await
                .is_err()
        );
    }
}

async fn pod_watchers_by_node_name_see_their_nodes_pods_come_and_go(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let start = store.revisions().await.unwrap().current;
    let watch = |fields: &str| {
        store.watch(WatchRequest {
            resource: "pods".into(),
            fields: fields::Selector::parse(fields).unwrap(),
            after: start,
            ..Default::default()
        })
    };
    // As the scheduler (unscheduled pods) and two node agents watch.
    let mut pending = watch("spec.nodeName=").await.unwrap();
    let mut n1 = watch("spec.nodeName=n1,status.phase!=Succeeded")
        .await
        .unwrap();
    let mut n2 = watch("spec.nodeName=n2").await.unwrap();
    let mut all = watch("").await.unwrap();
    let (a, b) = (pod_key("a"), pod_key("b"));
    let mut every = Vec::new();
    let mut write = |revision: i64| every.push(revision);
    let a_created = store.create(&a, pod("a", json!({}), "", "")).await.unwrap();
    write(a_created.revision);
    let b_created = store
        .create(&b, pod("b", json!({}), "n2", ""))
        .await
        .unwrap();
    write(b_created.revision);
    let a_bound = store
        .update(&a, pod("a", json!({}), "n1", ""), None)
        .await
        .unwrap();
    write(a_bound.revision);
    let a_done = store
        .update(&a, pod("a", json!({}), "n1", "Succeeded"), None)
        .await
        .unwrap();
    write(a_done.revision);
    let b_moved = store
        .update(&b, pod("b", json!({}), "n1", ""), None)
        .await
        .unwrap();
    write(b_moved.revision);
    let b_gone = store.delete(&b, None).await.unwrap();
    write(b_gone.revision);
    let a_gone = store.delete(&a, None).await.unwrap();
    write(a_gone.revision);

    expect_events(
        &mut pending,
        vec![
            (EventType::Added, a_created.revision),
            (EventType::Deleted, a_bound.revision),
        ],
    )
    .await;
    expect_events(
        &mut n1,
        vec![
            (EventType::Added, a_bound.revision),
            (EventType::Deleted, a_done.revision),
            (EventType::Added, b_moved.revision),
            (EventType::Deleted, b_gone.revision),
        ],
    )
    .await;
    expect_events(
        &mut n2,
        vec![
            (EventType::Added, b_created.revision),
            (EventType::Deleted, b_moved.revision),
        ],
    )
    .await;
    let kinds = [
        EventType::Added,
        EventType::Added,
        EventType::Modified,
        EventType::Modified,
        EventType::Modified,
        EventType::Deleted,
        EventType::Deleted,
    ];
    expect_events(&mut all, kinds.into_iter().zip(every).collect()).await;
}

/// Exactly these events (kind, revision), then nothing more.
async fn expect_events(
    stream: &mut bosun_control::store::WatchStream,
    want: Vec<(EventType, i64)>,
) {
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let e = next_event(stream).await;
        got.push((e.kind, e.revision));
    }
    assert_eq!(got, want);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err(),
        "nothing more"
    );
}

fn counter(count: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "ResourceQuota",
           "metadata": {"name": "q", "namespace": "default"}, "status": {"used": count}})
}

/// Creates pod `name` and counts it in the counter read at `seen`, in one transaction.
async fn create_counted(
    store: &dyn Store,
    name: &str,
    seen: &bosun_control::store::Object,
) -> Result<Vec<bosun_control::store::Object>, Error> {
    let count = seen.value["status"]["used"].as_i64().unwrap();
    store
        .transact(vec![
            Op::Create {
                key: pod_key(name),
                value: pod(name, json!({}), "", "Pending"),
            },
            Op::Update {
                key: seen.key.clone(),
                value: counter(count + 1),
                expected: Some(seen.revision),
            },
        ])
        .await
}

async fn linked_writes_commit_together_or_not_at_all(kind: Kind) {
    let place = Place::new(kind).await;
    let store = place.open().await;
    let quota = Key::new("resourcequotas", "default", "q");
    let first = store.create(&quota, counter(0)).await.unwrap();
    let mut watch = store
        .watch(WatchRequest {
            resource: "pods".into(),
            after: first.revision,
            ..Default::default()
        })
        .await
        .unwrap();

    let written = create_counted(&*store, "a", &first).await.unwrap();
    assert_eq!(written.len(), 2);
    assert_eq!(written[0].revision, first.revision + 1);
    assert_eq!(written[1].revision, first.revision + 2);
    assert_eq!(written[1].value["status"]["used"], 1);
    assert_eq!(next_event(&mut watch).await.revision, first.revision + 1);

    // A stale counter: neither the pod nor the counter is written, and no revision is taken.
    let before = store.revisions().await.unwrap();
    let stale = create_counted(&*store, "b", &first).await;
    assert!(
        matches!(&stale, Err(Error::Conflict { key, .. }) if *key == quota),
        "{stale:?}"
    );
    // A pod that exists: the counter is not written either.
    let counted = store.get(&quota).await.unwrap();
    let exists = create_counted(&*store, "a", &counted).await;
    assert!(
        matches!(&exists, Err(Error::AlreadyExists { key }) if *key == pod_key("a")),
        "{exists:?}"
    );
    assert_eq!(store.revisions().await.unwrap(), before);
    assert!(matches!(
        store.get(&pod_key("b")).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(store.get(&quota).await.unwrap(), counted);

    let twice = store
        .transact(vec![
            Op::Delete {
                key: quota.clone(),
                expected: None,
            },
            Op::Delete {
                key: quota.clone(),
                expected: None,
            },
        ])
        .await;
    assert!(matches!(twice, Err(Error::Duplicate { .. })), "{twice:?}");
    assert!(store.transact(Vec::new()).await.unwrap().is_empty());

    // Writers racing for a counter limited to 10, beside plain writes in the same batches:
    // exactly 10 pods are counted, and the count is theirs.
    let racers = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                let seen = store
                    .get(&Key::new("resourcequotas", "default", "q"))
                    .await
                    .unwrap();
                if seen.value["status"]["used"].as_i64().unwrap() >= 11 {
                    return false;
                }
                match create_counted(&*store, &format!("racer-{i}"), &seen).await {
                    Ok(_) => return true,
                    Err(Error::Conflict { .. }) => continue,
                    Err(other) => panic!("{other}"),
                }
            }
        })
    });
    let plain = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let key = Key::new("configmaps", "default", format!("plain-{i}"));
            store.create(&key, json!({"data": {}})).await.unwrap();
            true
        })
    });
    let won = futures::future::join_all(racers.chain(plain).collect::<Vec<_>>())
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 10 + 20);
    let pods = list_names(&*store, Some("default"), "", "").await;
    assert_eq!(pods.len(), 11, "{pods:?}");
    assert_eq!(store.get(&quota).await.unwrap().value["status"]["used"], 11);

    // A delete counted down with its object.
    let counted = store.get(&quota).await.unwrap();
    let gone = store
        .transact(vec![
            Op::Delete {
                key: pod_key("a"),
                expected: None,
            },
            Op::Update {
                key: quota.clone(),
                value: counter(10),
                expected: Some(counted.revision),
            },
        ])
        .await
        .unwrap();
    assert_eq!(gone[0].value["metadata"]["name"], "a");
    assert_eq!(list_names(&*store, Some("default"), "", "").await.len(), 10);
}
