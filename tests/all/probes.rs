//! Container probes end to end: a real server, node and registry, and the `netcheck` guest
//! serving TCP and HTTP in its pod's network namespace, probed from the node.

use crate::support::cluster::{Cluster, netcheck_cluster};
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

fn condition<'a>(pod: &'a Value, kind: &str) -> &'a Value {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .map_or(&Value::Null, |c| &c["status"])
}

fn main_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

async fn events_of(c: &Cluster, pod: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn readiness_follows_the_probe_and_a_failing_liveness_probe_restarts_the_container() {
    let (c, image, _) = netcheck_cluster("probes").await;
    let pod = |name: &str, probes: Value| {
        let mut container = json!({"name": "main", "image": image,
            "args": ["http", "0.0.0.0:8080", "3"],
            "ports": [{"name": "http", "containerPort": 8080}]});
        crate::support::cluster::merge(&mut container, probes);
        json!({"metadata": {"name": name},
               "spec": {"restartPolicy": "Always", "containers": [container]}})
    };

    // Ready once the startup and readiness probes pass (a named port, HTTP and TCP).
    let ready = c
        .create(pod(
            "ready",
            json!({
                "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 30},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
            }),
        ))
        .await;
    let p = c
        .wait(&ready, "became ready", |p| condition(p, "Ready") == "True")
        .await;
    assert_eq!(main_status(&p)["ready"], true);
    assert_eq!(main_status(&p)["started"], true);
    assert_eq!(condition(&p, "ContainersReady"), "True");

    // Never ready: the readiness probe asks a port nothing listens on.
    let unready = c
        .create(pod(
            "unready",
            json!({"readinessProbe": {"tcpSocket": {"port": 9999}, "periodSeconds": 1}}),
        ))
        .await;
    let p = c
        .wait(&unready, "ran, unready", |p| {
            main_status(p)["state"]["running"].is_object()
        })
        .await;
    // A few probe periods later it still runs and is still not ready.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let p2 = serde_json::to_value(c.pods.get(&unready).await.unwrap()).unwrap();
    assert_eq!(condition(&p2, "Ready"), "False", "{:#}", p2["status"]);
    assert_eq!(main_status(&p2)["ready"], false);
    assert_eq!(
        main_status(&p2)["restartCount"],
        main_status(&p)["restartCount"]
    );
    let events = events_of(&c, &unready).await;
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Unhealthy" && m.contains("Readiness probe failed")),
        "{events:?}"
    );

    // Healthy for 3 checks, then 500: killed after 2 failures and restarted.
    let sick = c
        .create(pod(
            "sick",
            json!({"livenessProbe": {"httpGet": {"path": "/live", "port": "http"},
                                     "periodSeconds": 1, "failureThreshold": 2}}),
        ))
        .await;
    let p = c
        .wait(&sick, "restarted by its liveness probe", |p| {
            main_status(p)["restartCount"].as_i64() >= Some(1)
        })
        .await;
    assert_eq!(main_status(&p)["lastState"]["terminated"]["exitCode"], 137);
    let events = events_of(&c, &sick).await;
    assert!(
        events.iter().any(|(r, m)| r == "Unhealthy"
            && m.contains("Liveness probe failed: HTTP probe failed with statuscode: 500")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Killing" && m.contains("failed liveness probe, will be restarted")),
        "{events:?}"
    );
}
