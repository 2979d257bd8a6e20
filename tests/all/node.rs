//! The node agent end to end: a real `bosun server`, a real `bosun node`, a real OCI registry
//! (Debian's docker-registry) and WAT fixtures compiled here. Pods are created through the
//! API and scheduled by the server's scheduler onto the node.

use std::time::{Duration, Instant};

use crate::support::cluster::{cluster, cluster_with, container, finished, node_logs, phase, pod};
use crate::support::{BOSUN, Registry};
use bosun_node::images::Layout;
use bosun_testkit::wasm::{command, component};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node as NodeObject};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// A command that works on the file `path` under its first preopened directory (fd 3):
/// `cat` prints it, `write` replaces it with `text`. Either exits 1 if the file system says no.
fn file_command(op: &str, path: &str, text: &str) -> Vec<u8> {
    let (oflags, rights) = match op {
        "cat" => (0, 0x2),        // fd_read
        _ => (1 | 8, 0x40 | 0x2), // O_CREAT|O_TRUNC, fd_write
    };
    let body = match op {
        "cat" => {
            r#"
            (i32.store (i32.const 32) (i32.const 1024))
            (i32.store (i32.const 36) (i32.const 4096))
            (if (call $fd_read (i32.load (i32.const 8)) (i32.const 32) (i32.const 1) (i32.const 40))
                (then (call $exit (i32.const 1))))
            (i32.store (i32.const 36) (i32.load (i32.const 40)))
            (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 44)))"#
        }
        _ => {
            r#"
            (i32.store (i32.const 32) (i32.const 512))
            (i32.store (i32.const 36) (global.get $text_len))
            (if (call $fd_write (i32.load (i32.const 8)) (i32.const 32) (i32.const 1) (i32.const 44))
                (then (call $exit (i32.const 1))))"#
        }
    };
    wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 256) "{path}")
            (data (i32.const 512) "{text}")
            (global $text_len i32 (i32.const {text_len}))
            (func (export "_start")
                (if (call $open (i32.const 3) (i32.const 0) (i32.const 256) (i32.const {path_len})
                        (i32.const {oflags}) (i64.const {rights}) (i64.const 0) (i32.const 0) (i32.const 8))
                    (then (call $exit (i32.const 1))))
                {body}))"#,
        path_len = path.len(),
        text_len = text.len(),
    ))
    .expect("valid WAT")
}

#[tokio::test]
async fn node_registers_renews_its_lease_and_runs_a_pod_from_the_registry() {
    let c = cluster("n1").await;
    let nodes: Api<NodeObject> = Api::all(c.client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let node = loop {
        if let Ok(n) = nodes.get("n1").await
            && n.status.as_ref().is_some_and(|s| s.conditions.is_some())
        {
            break serde_json::to_value(n).unwrap();
        }
        assert!(Instant::now() < deadline, "the node never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = &node["status"];
    assert_eq!(
        node["metadata"]["labels"]["bosun.dev/runtime.wasmtime"],
        "true"
    );
    assert!(
        status["capacity"]["cpu"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 1
    );
    assert!(
        status["capacity"]["memory"]
            .as_str()
            .unwrap()
            .ends_with("Ki")
    );
    assert_eq!(status["capacity"]["pods"], "110");
    let conditions = status["conditions"].as_array().unwrap();
    let condition = |kind: &str| conditions.iter().find(|c| c["type"] == kind).unwrap();
    assert_eq!(condition("Ready")["status"], "True");
    // The pressure conditions are real readings of this machine (a shared CI disk can be
    // under 10% free), so only their form is checked here; the thresholds are unit-tested.
    for (kind, ok, bad) in [
        (
            "MemoryPressure",
            "KubeletHasSufficientMemory",
            "KubeletHasInsufficientMemory",
        ),
        (
            "DiskPressure",
            "KubeletHasNoDiskPressure",
            "KubeletHasDiskPressure",
        ),
        (
            "PIDPressure",
            "KubeletHasSufficientPID",
            "KubeletHasInsufficientPID",
        ),
    ] {
        let c = condition(kind);
        let expected = if c["status"] == "True" { bad } else { ok };
        assert_eq!(c["reason"], expected, "{kind}: {c}");
        assert!(c["lastHeartbeatTime"].is_string() && c["lastTransitionTime"].is_string());
    }
    assert!(
        status["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("wasmtime://48.")
    );
    assert!(
        !status["nodeInfo"]["kernelVersion"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(status["addresses"][0]["address"], "127.0.0.1");

    // The lease is renewed every quarter of --lease-duration (4s).
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let renew = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    let first = loop {
        if let Ok(l) = leases.get("n1").await {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        first.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("n1")
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = leases.get("n1").await.unwrap();
    assert_ne!(renew(&first), renew(&second), "the lease was not renewed");

    let image = c.push_command("hello:v1", "(call $hello)").await;
    let name = c.create(pod("hello", &image, json!({}))).await;
    let done = c
        .wait(&name, "succeeded", |p| phase(p) == "Succeeded")
        .await;
    let status = container(&done);
    assert_eq!(status["state"]["terminated"]["exitCode"], 0);
    assert_eq!(status["state"]["terminated"]["reason"], "Completed");
    assert_eq!(status["restartCount"], 0);
    assert!(
        status["imageID"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/hello@sha256:", c.registry.host)),
        "{status}"
    );
    assert_eq!(done["spec"]["nodeName"], "n1");
    assert!(done["status"]["startTime"].is_string());
    let conditions = done["status"]["conditions"].as_array().unwrap();
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(
            conditions.iter().any(|c| c["type"] == kind),
            "{kind} missing: {conditions:?}"
        );
    }
    let uid = done["metadata"]["uid"].as_str().unwrap();
    assert_eq!(node_logs(&c.node, uid, "main"), "hello from wasm\n");

    // The node's events about the pod arrive through its rate-limited writer, worded as the
    // kubelet's.
    for (reason, note) in [
        ("Pulled", "Successfully pulled image"),
        ("Created", "Created container main"),
        ("Started", "Started container main"),
    ] {
        let events = node_events(&c, reason, 1).await;
        let event = events
            .iter()
            .find(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid))
            .unwrap_or_else(|| panic!("no {reason} event about the pod"));
        let text = event.note.as_deref().unwrap_or_default();
        assert!(text.starts_with(note), "{reason}: {text}");
    }
}

/// Waits for `count` events with `reason` written by the node agent, oldest first.
async fn node_events(
    c: &crate::support::cluster::Cluster,
    reason: &str,
    count: usize,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(c.client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut found: Vec<_> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("bosun-node"))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect();
        if found.len() >= count {
            found.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} {reason} events arrived",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_nodes_events_are_paced_by_event_qps() {
    let c = cluster_with("n1", &[], &["--event-qps", "2", "--event-burst", "1"]).await;
    let image = c.push_command("hello:v1", "(call $hello)").await;
    for n in 0..4 {
        c.create(pod(&format!("hello-{n}"), &image, json!({})))
            .await;
    }
    let started = node_events(&c, "Started", 4).await;
    let at = |n: usize| started[n].event_time.as_ref().unwrap().0;
    // The node's events (three a pod) leave one at once, then one every half second: the
    // fourth pod's Started is at least 1.5 s after the first's, however fast the pods start.
    let spread = at(3).duration_since(at(0));
    assert!(
        spread >= k8s_openapi::jiff::SignedDuration::from_millis(1400),
        "four events at 2/s took {spread:?}"
    );
}

#[tokio::test]
async fn all_four_wasm_artifact_families_run() {
    let c = cluster("n2").await;
    let cases = [
        ("v0", Layout::ConfigV0, command("(call $hello)")),
        ("v1", Layout::ContentV1, command("(call $hello)")),
        ("oci11", Layout::Artifact, command("(call $hello)")),
        ("component", Layout::ComponentV0, component("(call $hello)")),
    ];
    let mut names = Vec::new();
    for (tag, layout, wasm) in cases {
        let image = c
            .registry
            .push(&format!("family:{tag}"), wasm, layout)
            .await;
        names.push(
            c.create(pod(&format!("family-{tag}"), &image, json!({})))
                .await,
        );
    }
    for name in names {
        let done = c.wait(&name, "succeeded", finished).await;
        assert_eq!(phase(&done), "Succeeded", "{name}: {:#}", done["status"]);
        let uid = done["metadata"]["uid"].as_str().unwrap();
        assert_eq!(
            node_logs(&c.node, uid, "main"),
            "hello from wasm\n",
            "{name}"
        );
    }
}

#[tokio::test]
async fn environment_comes_from_values_configmaps_and_the_downward_api() {
    let c = cluster("n3").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"},
        "data": {"COLOR": "blue", "SIZE": "9"},
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let image = c.push_command("env:v1", "(call $env)").await;
    let name = c
        .create(pod(
            "env",
            &image,
            json!({"spec": {"containers": [{
                "name": "main", "image": image,
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                "env": [
                    {"name": "GREETING", "value": "hi"},
                    {"name": "MESSAGE", "value": "$(GREETING) there, $(CFG_COLOR)"},
                    {"name": "ONLY_SIZE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "SIZE"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                ],
                "resources": {"limits": {"memory": "64Mi"}},
            }]}}),
        ))
        .await;
    let done = c
        .wait(&name, "succeeded", |p| phase(p) == "Succeeded")
        .await;
    let uid = done["metadata"]["uid"].as_str().unwrap();
    let logs = node_logs(&c.node, uid, "main");
    // Every pod also has the `kubernetes` Service's variables (services.rs tests them).
    let mut lines: Vec<&str> = logs
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("KUBERNETES_"))
        .collect();
    assert!(logs.contains("KUBERNETES_SERVICE_PORT=443"), "{logs}");
    lines.sort();
    assert_eq!(
        lines,
        [
            "CFG_COLOR=blue",
            "CFG_SIZE=9",
            "GREETING=hi",
            "MEM=64",
            "MESSAGE=hi there, blue",
            "NODE=n3",
            "ONLY_SIZE=9",
            "POD_NAME=env",
        ],
        "the guest sees exactly its environment, nothing of the host's"
    );

    // A missing ConfigMap is a CreateContainerConfigError until it appears.
    let name = c
        .create(pod(
            "env-missing",
            &image,
            json!({"spec": {"containers": [{
                "name": "main", "image": image,
                "envFrom": [{"configMapRef": {"name": "later"}}],
            }]}}),
        ))
        .await;
    let waiting = c
        .wait(&name, "waited for its configmap", |p| {
            container(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        })
        .await;
    assert!(
        container(&waiting)["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("later"),
    );
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "later"}, "data": {"X": "1"},
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    c.wait(&name, "succeeded once its configmap existed", |p| {
        phase(p) == "Succeeded"
    })
    .await;
}

#[tokio::test]
async fn pull_and_start_failures_have_kubernetes_reasons() {
    let c = cluster("n4").await;
    let missing = format!("{}/nothing-here:v1", c.registry.host);
    let name = c.create(pod("missing", &missing, json!({}))).await;
    let waiting = c
        .wait(&name, "failed to pull", |p| {
            matches!(
                container(p)["state"]["waiting"]["reason"].as_str(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        })
        .await;
    let message = container(&waiting)["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("nothing-here"), "{message}");
    assert_eq!(phase(&waiting), "Pending");
    c.wait(&name, "backed off", |p| {
        container(p)["state"]["waiting"]["reason"] == "ImagePullBackOff"
    })
    .await;

    let image = c
        .registry
        .push(
            "garbage:v1",
            b"this is not wasm at all".to_vec(),
            Layout::ConfigV0,
        )
        .await;
    let name = c.create(pod("garbage", &image, json!({}))).await;
    let waiting = c
        .wait(&name, "failed to start", |p| {
            container(p)["state"]["waiting"]["reason"] == "CreateContainerError"
        })
        .await;
    let message = container(&waiting)["state"]["waiting"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("not a WebAssembly module"), "{message}");

    let name = c
        .create(pod("bad-name", "UPPER/Case::bad", json!({})))
        .await;
    c.wait(&name, "rejected its image name", |p| {
        container(p)["state"]["waiting"]["reason"] == "InvalidImageName"
    })
    .await;
}

#[tokio::test]
async fn a_failing_container_restarts_with_growing_back_off_and_deletion_stops_a_spinner() {
    let c = cluster("n5").await;
    let image = c
        .push_command("fail:v1", "(call $hello) (call $proc_exit (i32.const 3))")
        .await;
    let name = c
        .create(pod(
            "crash",
            &image,
            json!({"spec": {"restartPolicy": "OnFailure"}}),
        ))
        .await;
    // Back-off 1s, 2s, 4s (the test node's --backoff-initial is 1s): record when each restart
    // is seen.
    let mut seen = Vec::new();
    let start = Instant::now();
    for count in 1..=3 {
        let p = c
            .wait(&name, "restarted", |p| {
                container(p)["restartCount"] == count
            })
            .await;
        seen.push(start.elapsed());
        assert_eq!(phase(&p), "Running", "a restarting pod is Running");
    }
    let p = c
        .wait(&name, "crash-looped", |p| {
            container(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        })
        .await;
    assert_eq!(container(&p)["lastState"]["terminated"]["exitCode"], 3);
    assert!(
        seen[2] - seen[1] > seen[1] - seen[0],
        "back-off grows: {seen:?}"
    );

    // A guest that never returns is stopped when its pod is deleted, within the grace period.
    let image = c.push_command("spin:v1", "(loop (br 0))").await;
    let name = c
        .create(pod(
            "spinner",
            &image,
            json!({"spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 2}}),
        ))
        .await;
    c.wait(&name, "ran", |p| {
        container(p)["state"]["running"].is_object()
    })
    .await;
    let took = c
        .delete_and_wait(&name, Duration::from_secs(30), "the pod was never removed")
        .await;
    assert!(took < Duration::from_secs(6), "removed after {took:?}");

    // A guest that watches bosun:lifecycle exits as soon as it is asked, long before its
    // 30 s grace period ends.
    let polite = wat::parse_str(
        r#"(module
            (import "bosun_lifecycle" "shutdown_requested" (func $requested (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (loop (br_if 0 (i32.eqz (call $requested))))
                (call $proc_exit (i32.const 0))))"#,
    )
    .unwrap();
    let image = c.registry.push("polite:v1", polite, Layout::ConfigV0).await;
    let name = c
        .create(pod(
            "polite",
            &image,
            json!({"spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 30}}),
        ))
        .await;
    c.wait(&name, "ran", |p| {
        container(p)["state"]["running"].is_object()
    })
    .await;
    let took = c
        .delete_and_wait(
            &name,
            Duration::from_secs(20),
            "the polite guest was not told",
        )
        .await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn a_restarted_agent_restarts_the_containers_of_its_pods() {
    let mut c = cluster("n6").await;
    let image = c.push_command("spin:v1", "(loop (br 0))").await;
    let name = c
        .create(pod(
            "long",
            &image,
            json!({"spec": {"restartPolicy": "Always"}}),
        ))
        .await;
    c.wait(&name, "ran", |p| {
        container(p)["state"]["running"].is_object()
    })
    .await;
    c.node.restart(&[]);
    let p = c
        .wait(&name, "restarted by the new agent", |p| {
            container(p)["restartCount"] == 1 && container(p)["state"]["running"].is_object()
        })
        .await;
    assert_eq!(
        container(&p)["lastState"]["terminated"]["reason"],
        "ContainerStatusUnknown"
    );
}

#[tokio::test]
async fn kubectl_logs_reads_the_nodes_log_server_through_the_api() {
    let c = cluster("n7").await;
    let ticker = c.push_command("ticker:v1", "(call $oops) (call $hello) (call $sleep) (call $hello) (call $sleep) (call $hello) (call $sleep) (call $hello)").await;
    let name = c.create(pod("ticker", &ticker, json!({}))).await;
    c.wait(&name, "started", |p| {
        container(p)["state"]["running"].is_object() || phase(p) == "Succeeded"
    })
    .await;
    // -f streams until the container ends.
    let server = &c.server;
    let followed = server.kubectl(&["logs", "-f", "ticker"]).unwrap();
    assert_eq!(
        followed,
        "oops\n".to_string() + &"hello from wasm\n".repeat(4)
    );
    c.wait(&name, "succeeded", |p| phase(p) == "Succeeded")
        .await;
    assert_eq!(
        server.kubectl(&["logs", "ticker", "--tail", "2"]).unwrap(),
        "hello from wasm\n".repeat(2)
    );
    let stamped = server
        .kubectl(&["logs", "ticker", "--timestamps", "--tail", "1"])
        .unwrap();
    let (time, line) = stamped.split_once(' ').unwrap();
    assert!(time.starts_with("20") && time.ends_with('Z'), "{stamped}");
    assert_eq!(line, "hello from wasm\n");
    assert_eq!(
        server
            .kubectl(&["logs", "ticker", "--since", "1h", "--limit-bytes", "7"])
            .unwrap(),
        "oops\nhe"
    );

    // --previous reads the attempt before the current one; -c picks a container.
    let crash = c
        .push_command("crash:v1", "(call $hello) (call $proc_exit (i32.const 3))")
        .await;
    let name = c
        .create(json!({
            "metadata": {"name": "two"},
            "spec": {"restartPolicy": "OnFailure", "containers": [
                {"name": "crash", "image": crash},
                {"name": "tick", "image": ticker},
            ]},
        }))
        .await;
    c.wait(&name, "restarted", |p| {
        p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["name"] == "crash" && c["restartCount"].as_i64() >= Some(1))
            })
    })
    .await;
    assert_eq!(
        server
            .kubectl(&["logs", "two", "-c", "crash", "--previous"])
            .unwrap(),
        "hello from wasm\n"
    );
    // kubectl picks the first container itself; the API asks for one, as Kubernetes does.
    let err = c
        .pods
        .logs("two", &Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a container name must be specified for pod two, choose one of: [crash tick]"),
        "{err}"
    );
    let err = server.kubectl(&["logs", "two", "-c", "nope"]).unwrap_err();
    assert!(
        err.contains("container nope is not valid for pod two"),
        "{err}"
    );

    // The node's log server itself refuses a caller without a cluster client certificate.
    let nodes: Api<NodeObject> = Api::all(c.client.clone());
    let node = nodes.get("n7").await.unwrap();
    let port = node
        .status
        .unwrap()
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    let stranger = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let direct = stranger
        .get(format!(
            "https://127.0.0.1:{port}/containerLogs/default/ticker/main"
        ))
        .send()
        .await;
    assert!(
        direct.is_err(),
        "the log server answered a stranger: {direct:?}"
    );
}

#[tokio::test]
async fn volumes_are_the_directories_a_guest_sees() {
    let c = cluster("n8").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "app-config"}, "data": {"greeting": "hello from a configmap"},
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(c.client.clone(), "default");
    let secret = serde_json::from_value(json!({
        "metadata": {"name": "app-secret"}, "stringData": {"password": "s3cret"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let push = |name: &'static str, wasm: Vec<u8>| {
        let registry = &c.registry;
        async move { registry.push(name, wasm, Layout::ConfigV0).await }
    };
    let write_note = push(
        "write-note:v1",
        file_command("write", "note.txt", "from init"),
    )
    .await;
    let cat_note = push("cat-note:v1", file_command("cat", "note.txt", "")).await;
    let cat_hello = push("cat-hello:v1", file_command("cat", "hello.txt", "")).await;
    let cat_password = push("cat-password:v1", file_command("cat", "password", "")).await;
    let write_config = push("write-config:v1", file_command("write", "hacked.txt", "x")).await;
    let spin = push("spin:v1", command("(loop (br 0))")).await;
    let name = c
        .create(json!({
            "metadata": {"name": "volumes"},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "app-config",
                        "items": [{"key": "greeting", "path": "hello.txt"}]}},
                    {"name": "creds", "secret": {"secretName": "app-secret", "defaultMode": 0o400}},
                ],
                "initContainers": [{"name": "writer", "image": write_note,
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
                "containers": [
                    {"name": "note", "image": cat_note,
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
                    {"name": "config", "image": cat_hello,
                        "volumeMounts": [{"name": "cfg", "mountPath": "/config"}]},
                    {"name": "secret", "image": cat_password,
                        "volumeMounts": [{"name": "creds", "mountPath": "/secret"}]},
                    {"name": "readonly", "image": write_config,
                        "volumeMounts": [{"name": "cfg", "mountPath": "/config"}]},
                    {"name": "watcher", "image": spin,
                        "volumeMounts": [{"name": "cfg", "mountPath": "/config"}]},
                ],
            },
        }))
        .await;
    let done = c
        .wait(&name, "ran its containers", |p| {
            p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter()
                        .filter(|c| c["name"] != "watcher")
                        .all(|c| c["state"]["terminated"].is_object())
                })
        })
        .await;
    let uid = done["metadata"]["uid"].as_str().unwrap().to_string();
    let exit = |name: &str| {
        done["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["state"]["terminated"]["exitCode"]
            .clone()
    };
    assert_eq!(
        node_logs(&c.node, &uid, "note"),
        "from init\n",
        "emptyDir shared with the init container"
    );
    assert_eq!(
        node_logs(&c.node, &uid, "config"),
        "hello from a configmap\n"
    );
    assert_eq!(node_logs(&c.node, &uid, "secret"), "s3cret\n");
    assert_eq!(exit("note"), 0);
    assert_eq!(
        exit("readonly"),
        1,
        "a configMap volume is read-only to the guest"
    );

    // The files follow the ConfigMap while the pod runs.
    let file = c
        .node
        .dir
        .path()
        .join("pods")
        .join(&uid)
        .join("volumes/files/cfg/hello.txt");
    let mode = std::fs::metadata(
        c.node
            .dir
            .path()
            .join("pods")
            .join(&uid)
            .join("volumes/files/creds/password"),
    )
    .unwrap()
    .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o400
    );
    cms.patch(
        "app-config",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"data": {"greeting": "updated"}})),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&file).unwrap() != "updated" {
        assert!(
            Instant::now() < deadline,
            "the configMap volume was not updated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU time of the thread named `name` in process `pid`, from /proc (10 ms ticks).
fn thread_cpu(pid: u32, name: &str) -> Option<Duration> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
            return Some(Duration::from_millis(ticks * 10));
        }
    }
    None
}

#[tokio::test]
async fn memory_and_cpu_limits_hold_for_pods() {
    let c = cluster("n9").await;
    let bomb = c
        .push_command(
            "bomb:v1",
            "(loop (drop (memory.grow (i32.const 1))) (br 0))",
        )
        .await;
    let name = c
        .create(pod(
            "bomb",
            &bomb,
            json!({"spec": {"containers": [{"name": "main", "image": bomb,
                "resources": {"limits": {"memory": "8Mi"}}}]}}),
        ))
        .await;
    let done = c.wait(&name, "was killed", |p| phase(p) == "Failed").await;
    let terminated = &container(&done)["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{terminated}");
    assert_eq!(terminated["exitCode"], 137);

    // A busy loop limited to 250m, measured on its thread in the agent's process.
    let busy = c.push_command("busy:v1", "(loop (br 0))").await;
    let name = c
        .create(pod(
            "busy",
            &busy,
            json!({"spec": {"containers": [{"name": "busy", "image": busy,
                "resources": {"limits": {"cpu": "250m"}}}]}}),
        ))
        .await;
    c.wait(&name, "ran", |p| {
        container(p)["state"]["running"].is_object()
    })
    .await;
    let pid = c.node.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = thread_cpu(pid, "wasm-busy").expect("the guest's thread in the agent");
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let used = thread_cpu(pid, "wasm-busy").unwrap() - before;
    let share = used.as_secs_f64() / started.elapsed().as_secs_f64();
    eprintln!("cpu: a 250m pod used {share:.3} CPU-seconds per second");
    assert!(
        (0.20..=0.30).contains(&share),
        "a 250m pod used {share:.3} CPU-seconds per second"
    );
}

#[tokio::test]
async fn a_registry_that_wants_a_login_gets_the_pods_image_pull_secret() {
    let mut c = cluster("n10").await;
    let private = Registry::start_with_auth("robot", "hunter2").await;
    let credential = bosun_node::images::Credential {
        registry: private.host.clone(),
        username: "robot".to_string(),
        password: "hunter2".to_string(),
    };
    let image = private
        .push_as(
            "private:v1",
            command("(call $hello)"),
            Layout::ConfigV0,
            Some(&credential),
        )
        .await;
    // The node trusts this registry over plain HTTP too.
    c.node_restart_with(&["--insecure-registry", &private.host]);

    let name = c.create(pod("anonymous", &image, json!({}))).await;
    let failed = c
        .wait(&name, "was refused", |p| {
            matches!(
                container(p)["state"]["waiting"]["reason"].as_str(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        })
        .await;
    let message = container(&failed)["state"]["waiting"]["message"]
        .as_str()
        .unwrap();
    assert!(message.to_lowercase().contains("authorized"), "{message}");

    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(c.client.clone(), "default");
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "robot:hunter2");
    let config = json!({"auths": {private.host.clone(): {"auth": auth}}}).to_string();
    let secret = serde_json::from_value(json!({
        "metadata": {"name": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let name = c
        .create(pod(
            "with-secret",
            &image,
            json!({"spec": {"imagePullSecrets": [{"name": "pull"}]}}),
        ))
        .await;
    let done = c
        .wait(&name, "succeeded", |p| phase(p) == "Succeeded")
        .await;
    let uid = done["metadata"]["uid"].as_str().unwrap();
    assert_eq!(node_logs(&c.node, uid, "main"), "hello from wasm\n");
}

#[tokio::test]
async fn a_sidecar_starts_first_restarts_when_it_stops_and_stops_when_the_app_is_done() {
    let c = cluster("n-sidecar").await;
    // The sidecar lives 300 ms and fails; the app sleeps 3 s and completes.
    let sidecar = c
        .push_command(
            "sidecar:v1",
            "(call $sleep) (call $proc_exit (i32.const 1))",
        )
        .await;
    let app = c.push_command("app:v1", "(call $sleep) (call $sleep) (call $sleep) (call $sleep) (call $sleep) (call $sleep) (call $sleep) (call $sleep) (call $sleep) (call $sleep) (call $hello)").await;
    let name = c
        .create(pod(
            "with-sidecar",
            &app,
            json!({"spec": {"initContainers": [
                {"name": "helper", "image": sidecar, "restartPolicy": "Always"}]}}),
        ))
        .await;
    let running = c
        .wait(&name, "ran its app beside the sidecar", |p| {
            container(p)["state"]["running"].is_object()
        })
        .await;
    assert_eq!(phase(&running), "Running");
    let p = c.wait(&name, "finished", finished).await;
    assert_eq!(phase(&p), "Succeeded", "{:#}", p["status"]);
    let helper = &p["status"]["initContainerStatuses"][0];
    assert!(
        helper["restartCount"].as_i64() >= Some(1),
        "the sidecar was restarted while the app ran: {helper:#}"
    );
    assert_eq!(container(&p)["state"]["terminated"]["exitCode"], 0);
    let uid = p["metadata"]["uid"].as_str().unwrap();
    assert!(node_logs(&c.node, uid, "main").contains("hello from wasm"));
}

#[tokio::test]
async fn a_node_that_disagrees_with_the_clusters_blocks_refuses_to_start() {
    // Outside the blocks the other clusters of the test process take (10.100-249).
    let c = cluster_with(
        "blocks",
        &[
            "--cluster-cidr",
            "10.60.0.0/16",
            "--service-cidr",
            "10.61.0.0/16",
        ],
        &[],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let run = |flags: &[&str]| {
        std::process::Command::new(BOSUN)
            .arg("node")
            .arg("--kubeconfig")
            .arg(&c.server.kubeconfig)
            .args(["--name", "rebel", "--port", "0", "--bridge", "brebel0"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(flags)
            .output()
            .unwrap()
    };
    let out = run(&["--cluster-cidr", "10.62.0.0/16"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--cluster-cidr 10.62.0.0/16 disagrees with the cluster's 10.60.0.0/16"),
        "{stderr}"
    );
    let out = run(&["--service-cidr", "10.63.0.0/16"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--service-cidr 10.63.0.0/16 disagrees with the cluster's 10.61.0.0/16"),
        "{stderr}"
    );
    let nodes: Api<NodeObject> = Api::all(c.client.clone());
    assert!(
        nodes.get_opt("rebel").await.unwrap().is_none(),
        "the refused node did not register"
    );
}

/// The node serves its containers' usage with the kubelet's names and shapes, read through the
/// API server's node proxy as `kubectl get --raw` reads it: a guest that spins and grew its
/// memory to 1 MiB shows CPU time that grows and exactly that working set, per container and
/// per pod, beside the node's own; `/metrics` counts it with the kubelet's series.
#[tokio::test]
async fn the_node_serves_resource_metrics_and_a_summary_of_its_pods() {
    let c = cluster("n11").await;
    let image = c
        .push_command(
            "spinner:v1",
            "(drop (memory.grow (i32.const 14))) (loop (br 0))",
        )
        .await;
    c.create(pod("spinner", &image, json!({}))).await;
    c.wait("spinner", "running", |p| phase(p) == "Running")
        .await;
    let raw = |path: &str| {
        c.server
            .kubectl(&["get", "--raw", &format!("/api/v1/nodes/n11/proxy/{path}")])
            .unwrap()
    };
    let cpu = || -> f64 {
        let text = raw("metrics/resource");
        let line = text
            .lines()
            .find(|l| l.starts_with("container_cpu_usage_seconds_total{container=\"main\""))
            .unwrap_or_else(|| panic!("no CPU series for the spinner in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let first = cpu();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = cpu();
    assert!(
        second > first + 0.5,
        "a spinner's CPU time grows: {first} → {second}"
    );
    let text = raw("metrics/resource");
    for line in [
        r#"container_memory_working_set_bytes{container="main",namespace="default",pod="spinner"} 1048576.0"#,
        r#"pod_memory_working_set_bytes{namespace="default",pod="spinner"} 1048576.0"#,
        "# TYPE node_cpu_usage_seconds_total counter",
        "scrape_error 0.0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let summary: serde_json::Value = serde_json::from_str(&raw("stats/summary")).unwrap();
    assert_eq!(summary["node"]["nodeName"], "n11");
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap()
            > 0
    );
    let pods = summary["pods"].as_array().unwrap();
    let spinner = pods
        .iter()
        .find(|p| p["podRef"]["name"] == "spinner")
        .unwrap_or_else(|| panic!("no spinner in {summary}"));
    assert_eq!(
        spinner["containers"][0]["memory"]["workingSetBytes"],
        1048576
    );
    assert!(spinner["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 1_000_000_000);

    crate::metrics::assert_every_line_parses(&raw("metrics/resource"));
    // The agent's own series, with the kubelet's names.
    let text = raw("metrics");
    crate::metrics::assert_every_line_parses(&text);
    let value = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("kubelet_running_pods "), 1.0);
    assert_eq!(
        value(r#"kubelet_running_containers{container_state="running"} "#),
        1.0
    );
    assert_eq!(value("kubelet_pod_start_duration_seconds_count "), 1.0);
    assert_eq!(value("kubelet_image_pull_duration_seconds_count "), 1.0);
    assert!(value(r#"kubelet_pod_start_duration_seconds_bucket{le="+Inf"} "#) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reads_its_service_account_token_and_the_api_accepts_it() {
    let c = cluster("n-sa").await;
    // The namespace's default account comes from a controller moments after the start.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(c.client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    while accounts.get_opt("default").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "no default ServiceAccount");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cat_token = c
        .registry
        .push(
            "cat-token:v1",
            file_command("cat", "token", ""),
            Layout::ConfigV0,
        )
        .await;
    let name = c
        .create(json!({
            "metadata": {"name": "reads-its-token"},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "cat", "image": cat_token}]},
        }))
        .await;
    let done = c.wait(&name, "finished", finished).await;
    let volume = done["spec"]["volumes"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(volume.starts_with("kube-api-access-"), "{done:#}");
    assert_eq!(done["spec"]["serviceAccountName"], "default");
    assert_eq!(container(&done)["state"]["terminated"]["exitCode"], 0);
    let uid = done["metadata"]["uid"].as_str().unwrap().to_string();
    let token = node_logs(&c.node, &uid, "cat");
    let token = token.trim();
    assert!(token.starts_with("eyJ"), "{token:?}");
    // The volume also holds the namespace and the cluster CA.
    let files = c
        .node
        .dir
        .path()
        .join("pods")
        .join(&uid)
        .join("volumes/files")
        .join(&volume);
    assert_eq!(
        std::fs::read_to_string(files.join("namespace")).unwrap(),
        "default"
    );
    assert_eq!(
        std::fs::read_to_string(files.join("ca.crt")).unwrap(),
        c.server.ca_pem()
    );

    // The token is the pod's account's: with `view` in its namespace, it lists ConfigMaps
    // there and nowhere else.
    c.server.grant_default_account_view();
    let ca = c.node.dir.path().join("api-ca.crt");
    std::fs::write(&ca, c.server.ca_pem()).unwrap();
    let with_token = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .env_remove("KUBECONFIG")
            .args([
                "--kubeconfig=/dev/null",
                &format!("--server=https://{}", c.server.addr),
                &format!("--certificate-authority={}", ca.display()),
                &format!("--token={token}"),
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = with_token(&["get", "configmaps", "-n", "default", "-o", "name"]);
        if listed.status.success() {
            assert!(String::from_utf8_lossy(&listed.stdout).contains("kube-root-ca.crt"));
            break;
        }
        assert!(Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !with_token(&["get", "configmaps", "-n", "kube-system"])
            .status
            .success()
    );

    // A pod that opts out gets no token.
    let name = c
        .create(json!({
            "metadata": {"name": "no-token"},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
                     "containers": [{"name": "cat", "image": cat_token}]},
        }))
        .await;
    let done = c.wait(&name, "finished", finished).await;
    assert!(done["spec"]["volumes"].is_null(), "{done:#}");
}
