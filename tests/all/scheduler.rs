//! The scheduler inside a real `bosun server`, with registered Node objects (no agents):
//! selectors, taints, anti-affinity, RuntimeClass node selectors, the Unschedulable message
//! and events, retry when the cluster grows, and leader failover between two servers.

use std::time::{Duration, Instant};

use crate::support::Server;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

/// A Ready node with the given cpu and memory; `extra` is merged in (labels, taints, …).
fn node(name: &str, cpu: &str, memory: &str, extra: Value) -> Node {
    let mut value = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Registered"}],
        },
    });
    merge(&mut value, extra);
    serde_json::from_value(value).unwrap()
}

fn pod(name: &str, cpu: &str, extra: Value) -> Pod {
    let mut value = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]},
    });
    merge(&mut value, extra);
    serde_json::from_value(value).unwrap()
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// Polls until `check` returns `Some`, or fails after `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn node_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get(name)
        .await
        .ok()?
        .spec?
        .node_name
        .filter(|n| !n.is_empty())
}

async fn wait_bound(pods: &Api<Pod>, name: &str) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("pod {name} to be bound"),
        || node_of(pods, name),
    )
    .await
}

/// The PodScheduled=False message, once the scheduler has written it.
async fn unschedulable_message(pods: &Api<Pod>, name: &str) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("{name} marked unschedulable"),
        || async {
            let pod = pods.get(name).await.ok()?;
            pod.status?.conditions?.into_iter().find_map(|c| {
                (c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable"))
                .then(|| c.message.unwrap_or_default())
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_land_only_where_their_constraints_allow() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--pod-initial-backoff",
        "100ms",
        "--pod-max-backoff",
        "500ms",
    ])
    .await;
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    for n in [
        node(
            "small",
            "1",
            "2Gi",
            json!({"metadata": {"labels": {"runtime.bosun.dev/runc": "true"}}}),
        ),
        node(
            "big",
            "8",
            "16Gi",
            json!({"metadata": {"labels": {"disk": "ssd"}}}),
        ),
        node(
            "db",
            "8",
            "16Gi",
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
        ),
        node(
            "cordoned",
            "8",
            "16Gi",
            json!({"spec": {"unschedulable": true}}),
        ),
        node(
            "down",
            "8",
            "16Gi",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        ),
    ] {
        nodes.create(&pp, &n).await.unwrap();
    }
    let runc: RuntimeClass = serde_json::from_value(json!({
        "metadata": {"name": "runc"}, "handler": "runc",
        "scheduling": {"nodeSelector": {"runtime.bosun.dev/runc": "true"}}}))
    .unwrap();
    Api::<RuntimeClass>::all(client.clone())
        .create(&pp, &runc)
        .await
        .unwrap();

    pods.create(
        &pp,
        &pod(
            "wants-ssd",
            "100m",
            json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
        ),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("tolerates-db", "100m", json!({"spec": {
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["db"]}]}]}}}}})))
        .await
        .unwrap();
    pods.create(
        &pp,
        &pod(
            "linux",
            "100m",
            json!({"spec": {"runtimeClassName": "runc"}}),
        ),
    )
    .await
    .unwrap();
    let solo = |name: &str| {
        pod(
            name,
            "100m",
            json!({"metadata": {"labels": {"app": "solo"}}, "spec": {"affinity": {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["small", "big"]}]}]}},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
        )
    };
    for name in ["solo-1", "solo-2", "solo-3"] {
        pods.create(&pp, &solo(name)).await.unwrap();
    }
    pods.create(&pp, &pod("huge", "64", json!({})))
        .await
        .unwrap();

    assert_eq!(wait_bound(&pods, "wants-ssd").await, "big");
    assert_eq!(wait_bound(&pods, "tolerates-db").await, "db");
    assert_eq!(
        wait_bound(&pods, "linux").await,
        "small",
        "the runc RuntimeClass's node selector applies"
    );

    // Two solo pods fit (one per allowed node); the third has nowhere to go. Wait for two
    // bindings rather than sleeping, so that a slow machine cannot mistake "not yet" for
    // "never".
    let (mut solo_nodes, pending_solo) =
        eventually(Duration::from_secs(20), "two solo pods bound", || async {
            let mut bound = Vec::new();
            let mut pending = Vec::new();
            for name in ["solo-1", "solo-2", "solo-3"] {
                match node_of(&pods, name).await {
                    Some(n) => bound.push(n),
                    None => pending.push(name),
                }
            }
            (bound.len() == 2).then(|| (bound, pending[0]))
        })
        .await;
    solo_nodes.sort();
    assert_eq!(solo_nodes, ["big", "small"]);
    let message = unschedulable_message(&pods, pending_solo).await;
    assert_eq!(
        message,
        "0/5 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were not ready, \
         1 node(s) were unschedulable, 2 node(s) didn't match pod anti-affinity rules."
    );

    let message = unschedulable_message(&pods, "huge").await;
    assert_eq!(
        message,
        "0/5 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were not ready, \
         1 node(s) were unschedulable, 2 Insufficient cpu."
    );
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let warnings = eventually(
        Duration::from_secs(10),
        "a FailedScheduling event",
        || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=huge"))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
        },
    )
    .await;
    assert_eq!(warnings.type_.as_deref(), Some("Warning"));
    assert_eq!(warnings.message.as_deref(), Some(message.as_str()));
    let scheduled = eventually(Duration::from_secs(10), "a Scheduled event", || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=wants-ssd"))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Scheduled"))
    })
    .await;
    assert_eq!(
        scheduled.message.as_deref(),
        Some("Successfully assigned default/wants-ssd to big")
    );

    // The bound pod's PodScheduled condition is True.
    let bound = pods.get("wants-ssd").await.unwrap();
    assert!(
        bound
            .status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );

    // A node big enough arrives: the waiting pod is retried and placed there.
    nodes
        .create(&pp, &node("huge-node", "128", "256Gi", json!({})))
        .await
        .unwrap();
    assert_eq!(wait_bound(&pods, "huge").await, "huge-node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_never_overcommits_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    for name in ["a", "b", "c"] {
        nodes
            .create(&pp, &node(name, "1", "4Gi", json!({})))
            .await
            .unwrap();
    }
    // 3 nodes × 1 cpu, 40 pods of 100m created at once: exactly 30 fit.
    let creates = (0..40).map(|i| {
        let pods = pods.clone();
        async move {
            pods.create(
                &PostParams::default(),
                &pod(&format!("p{i}"), "100m", json!({})),
            )
            .await
            .unwrap()
        }
    });
    futures::future::join_all(creates).await;
    let placed = eventually(Duration::from_secs(30), "30 pods bound", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let bound: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (bound.len() == 30).then_some(bound)
    })
    .await;
    for name in ["a", "b", "c"] {
        assert_eq!(
            placed.iter().filter(|n| *n == name).count(),
            10,
            "node {name}"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let list = pods.list(&ListParams::default()).await.unwrap();
    let still_pending = list
        .items
        .iter()
        .filter(|p| p.spec.as_ref().unwrap().node_name.is_none())
        .count();
    assert_eq!(still_pending, 10, "no pod beyond capacity is bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_scheduler_takes_over_when_the_leader_dies() {
    let db = crate::support::postgres_db().await;
    let (mut first, dir_a) = crate::support::replica(&db, None).await;
    let client_a = first.client().await;
    let leases: Api<Lease> = Api::namespaced(client_a.clone(), "kube-system");
    let leader = eventually(
        Duration::from_secs(20),
        "the first server to lead",
        || async {
            leases
                .get("bosun-scheduler")
                .await
                .ok()?
                .spec?
                .holder_identity
        },
    )
    .await;

    let (second, _dir_b) = crate::support::replica(&db, Some(dir_a.path())).await;
    let client_b = second.client().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leases: Api<Lease> = Api::namespaced(client_b.clone(), "kube-system");
    let lease = leases.get("bosun-scheduler").await.unwrap().spec.unwrap();
    assert_eq!(
        lease.holder_identity.as_ref(),
        Some(&leader),
        "the standby waits while the leader renews"
    );

    // The leader dies without releasing its lease.
    first.kill();
    let pods: Api<Pod> = Api::namespaced(client_b.clone(), "default");
    Api::<Node>::all(client_b.clone())
        .create(&PostParams::default(), &node("n1", "4", "8Gi", json!({})))
        .await
        .unwrap();
    let killed = Instant::now();
    pods.create(
        &PostParams::default(),
        &pod("after-failover", "100m", json!({})),
    )
    .await
    .unwrap();
    assert_eq!(wait_bound(&pods, "after-failover").await, "n1");
    let took = killed.elapsed();
    let lease = leases.get("bosun-scheduler").await.unwrap().spec.unwrap();
    assert_ne!(lease.holder_identity.as_ref(), Some(&leader));
    assert!(lease.lease_transitions.unwrap_or(0) >= 1);
    eprintln!("failover: the standby bound a pod {took:?} after the leader was killed");
    // The lease lasts 2 s; on a quiet machine the bind lands about 2.1 s after the kill. The
    // bound allows for the standby's retry period and jitter, its scheduler's start-up list,
    // and a machine shared with a parallel CI run.
    assert!(
        took < Duration::from_secs(8),
        "failover took {took:?} with a 2 s lease"
    );
}
