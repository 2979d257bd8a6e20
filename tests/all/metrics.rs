//! Resource metrics with nothing to install: `kubectl top` against `metrics.k8s.io/v1beta1`,
//! which `bosun server` serves from the nodes' usage (read every `--metrics-resolution`).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::cluster::{Cluster, cluster_with, phase, pod};

/// Runs `kubectl top ARGS` until it answers (the first rate needs two readings), and returns
/// its table's rows after the header, split into columns.
async fn top(c: &Cluster, args: &[&str]) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = c.server.kubectl(&[&["top"][..], args].concat());
        match answer {
            Ok(text) if text.lines().count() > 1 => {
                return text
                    .lines()
                    .skip(1)
                    .map(|l| l.split_whitespace().map(str::to_string).collect())
                    .collect();
            }
            other => assert!(
                Instant::now() < deadline,
                "kubectl top {args:?} never answered: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn millicores(text: &str) -> u64 {
    text.strip_suffix('m')
        .map(|m| m.parse().unwrap())
        .unwrap_or_else(|| text.parse::<u64>().unwrap() * 1000)
}

/// A guest held to a quarter of a core that spins, and grew its memory to 1 MiB, shows as
/// 250m (within 20%) and 1Mi in `kubectl top pod`, per container, by label and sorted above
/// one that sleeps; the node shows in `kubectl top node`; the API lists both kinds in
/// discovery.
#[tokio::test]
async fn kubectl_top_shows_what_guests_use() {
    let c = cluster_with("top1", &["--metrics-resolution", "1s"], &[]).await;
    let image = c
        .push_command(
            "spinner:v1",
            "(drop (memory.grow (i32.const 14))) (loop (br 0))",
        )
        .await;
    c.create(pod(
        "spinner",
        &image,
        json!({
            "metadata": {"labels": {"app": "spin"}},
            "spec": {"containers": [{"name": "main", "image": image,
                      "resources": {"limits": {"cpu": "250m", "memory": "16Mi"}}}]},
        }),
    ))
    .await;
    let sleeper = c
        .push_command("sleeper:v1", "(loop (call $sleep) (br 0))")
        .await;
    c.create(pod(
        "idle",
        &sleeper,
        json!({"metadata": {"labels": {"app": "other"}}}),
    ))
    .await;
    c.wait("spinner", "running", |p| phase(p) == "Running")
        .await;

    let groups = c
        .server
        .kubectl(&["api-resources", "--api-group=metrics.k8s.io"])
        .unwrap();
    assert!(
        groups.contains("PodMetrics") && groups.contains("NodeMetrics"),
        "{groups}"
    );

    // Readings a second apart are noisy; the rate over several settles.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows = top(&c, &["pod", "spinner"]).await;
    assert_eq!(rows[0][0], "spinner", "{rows:?}");
    let cpu = millicores(&rows[0][1]);
    assert!(
        (200..=300).contains(&cpu),
        "a 250m spinner shows {cpu}m: {rows:?}"
    );
    assert_eq!(rows[0][2], "1Mi", "{rows:?}");

    let rows = top(&c, &["pod", "-l", "app=spin", "--containers"]).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0][0].as_str(), rows[0][1].as_str()),
        ("spinner", "main")
    );

    c.wait("idle", "running", |p| phase(p) == "Running").await;
    let rows = top(&c, &["pods", "--sort-by=cpu"]).await;
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names.first(), Some(&"spinner"), "{rows:?}");

    let rows = top(&c, &["pods", "-A"]).await;
    assert!(
        rows.iter().any(|r| r[..2] == ["default", "spinner"]),
        "{rows:?}"
    );

    let rows = top(&c, &["node"]).await;
    assert_eq!(rows[0][0], "top1", "{rows:?}");
    assert!(
        rows[0][2].ends_with('%') && rows[0][4].ends_with('%'),
        "{rows:?}"
    );
    assert!(
        millicores(&rows[0][1]) >= 200,
        "the node runs the spinner: {rows:?}"
    );

    let missing = c.server.kubectl(&["top", "pod", "nobody"]).unwrap_err();
    assert!(missing.contains("not found"), "{missing}");

    // The same readings go into an hour of history under bosun.dev/v1.
    let groups = c
        .server
        .kubectl(&["api-resources", "--api-group=bosun.dev"])
        .unwrap();
    assert!(
        groups.contains("podhistories") && groups.contains("FunctionHistory"),
        "{groups}"
    );
    let raw = |path: &str| -> serde_json::Value {
        serde_json::from_str(&c.server.kubectl(&["get", "--raw", path]).unwrap()).unwrap()
    };
    let pod = raw("/apis/bosun.dev/v1/namespaces/default/podhistories/spinner");
    assert_eq!(pod["kind"], "PodHistory");
    let points = pod["points"].as_array().unwrap();
    let cpu = points.last().unwrap()["cpu"].as_f64().unwrap();
    assert!((0.1..=0.4).contains(&cpu), "{pod:#}");
    let nodes = raw("/apis/bosun.dev/v1/nodehistories");
    assert_eq!(nodes["items"][0]["metadata"]["name"], "top1", "{nodes:#}");
    let all = raw("/apis/bosun.dev/v1/podhistories");
    assert!(all["items"].as_array().unwrap().len() >= 2, "{all:#}");
    let missing = c
        .server
        .kubectl(&[
            "get",
            "--raw",
            "/apis/bosun.dev/v1/namespaces/default/podhistories/nobody",
        ])
        .unwrap_err();
    assert!(missing.contains("NotFound"), "{missing}");
}

/// `kubectl get --raw /metrics` shows the API server's own series with kube-apiserver's
/// names: requests by verb, resource, scope and code, their durations, and open watches; and
/// the store's latency, the scheduler's attempts, the controllers' work and leader status
/// with the names of etcd, kube-scheduler, client-go's work queues and leader election.
#[tokio::test]
async fn the_api_server_serves_its_own_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    server.kubectl(&["get", "pods"]).unwrap();
    let _ = server.kubectl(&["get", "pod", "nobody"]);
    // A Deployment's pod, which the scheduler tries and cannot place (there is no node).
    server
        .kubectl(&[
            "create",
            "deployment",
            "web",
            "--image=registry.invalid/web:v1",
        ])
        .unwrap();
    let attempt =
        r#"scheduler_schedule_attempts_total{result="unschedulable",profile="default-scheduler"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = server.kubectl(&["get", "--raw", "/metrics"]).unwrap();
        if text.contains(attempt) {
            break text;
        }
        assert!(Instant::now() < deadline, "no {attempt} in\n{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let value = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let list = r#"apiserver_request_total{verb="LIST",group="",version="v1",resource="pods",subresource="",scope="namespace",component="apiserver",code="200"}"#;
    assert!(value(list) >= 1.0);
    let missing = r#"apiserver_request_total{verb="GET",group="",version="v1",resource="pods",subresource="",scope="resource",component="apiserver",code="404"}"#;
    assert!(value(missing) >= 1.0);
    assert!(
        value(
            r#"apiserver_request_duration_seconds_count{verb="LIST",group="",version="v1",resource="pods""#
        ) >= 1.0
    );
    // The scheduler and the controllers watch pods.
    assert!(value(r#"apiserver_registered_watchers{group="",version="v1",kind="Pod"}"#) >= 1.0);
    // The store, the controllers' work, and the leases this server holds.
    assert!(
        value(r#"etcd_request_duration_seconds_count{operation="create",type="deployments.apps"}"#)
            >= 1.0
    );
    assert!(value(r#"workqueue_adds_total{name="deployment"}"#) >= 1.0);
    assert!(value(r#"workqueue_work_duration_seconds_count{name="replicaset"}"#) >= 1.0);
    assert!(value(r#"workqueue_depth{name="deployment"}"#) >= 0.0);
    assert_eq!(
        value(r#"leader_election_master_status{name="bosun-scheduler"}"#),
        1.0
    );
    assert_eq!(
        value(r#"leader_election_master_status{name="bosun-controller-manager"}"#),
        1.0
    );
    assert_every_line_parses(&text);
}

/// Every line of a Prometheus text is a comment or a sample the parser reads.
pub fn assert_every_line_parses(text: &str) {
    let lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let samples = bosun_api::promtext::samples(text).count();
    assert_eq!(samples, lines, "some lines are not samples:\n{text}");
}

/// `kubectl autoscale` on a Deployment of guests that each burn twice their CPU request: the
/// HPA scales it up to its max with upstream's Event, conditions and TARGETS column; when
/// the Deployment rolls to guests that sleep, it scales down to its min after the
/// (shortened) stabilization window.
#[tokio::test]
async fn an_hpa_scales_a_cpu_burning_deployment_up_and_back_down() {
    let c = cluster_with(
        "hpa1",
        &[
            "--metrics-resolution",
            "1s",
            "--horizontal-pod-autoscaler-sync-period",
            "1s",
            "--horizontal-pod-autoscaler-downscale-stabilization",
            "5s",
        ],
        &[],
    )
    .await;
    let spinner = c.push_command("burner:v1", "(loop (br 0))").await;
    let sleeper = c
        .push_command("rester:v1", "(loop (call $sleep) (br 0))")
        .await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(c.client.clone(), "default");
    let deployment = serde_json::from_value(json!({
        "metadata": {"name": "burn"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "burn"}},
            "template": {
                "metadata": {"labels": {"app": "burn"}},
                "spec": {"containers": [{"name": "main", "image": spinner, "resources": {
                    "requests": {"cpu": "100m"},
                    "limits": {"cpu": "200m", "memory": "16Mi"},
                }}]},
            },
        },
    }))
    .unwrap();
    deployments
        .create(&Default::default(), &deployment)
        .await
        .unwrap();
    let k = |args: &[&str]| {
        c.server
            .kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    };
    k(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);

    let condition = |hpa: &serde_json::Value, type_: &str| -> (String, String) {
        let found = hpa["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_)
            .cloned()
            .unwrap_or_default();
        (
            found["status"].as_str().unwrap_or_default().to_string(),
            found["reason"].as_str().unwrap_or_default().to_string(),
        )
    };

    // ~200% of the request against 50%: four replicas wanted, three allowed.
    let up = hpa_until(&c, "burn", "scaled up to 3", |h| {
        h["status"]["desiredReplicas"] == 3
    })
    .await;
    assert_eq!(up["spec"]["minReplicas"], 1);
    assert_eq!(
        condition(&up, "ScalingActive"),
        ("True".into(), "ValidMetricFound".into())
    );
    assert_eq!(
        condition(&up, "ScalingLimited"),
        ("True".into(), "TooManyReplicas".into())
    );
    assert_eq!(condition(&up, "AbleToScale").0, "True");
    let utilization =
        up["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
            .as_i64()
            .unwrap();
    assert!(utilization > 100, "{up:#}");
    let table = k(&["get", "hpa", "burn"]);
    assert!(
        table.contains("Deployment/burn") && table.contains("/50%"),
        "{table}"
    );
    let events = k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=burn,involvedObject.kind=HorizontalPodAutoscaler",
    ]);
    assert!(
        events.contains("SuccessfulRescale")
            && events.contains(
                "New size: 3; reason: cpu resource utilization (percentage of request) above target"
            ),
        "{events}"
    );
    let scale = k(&[
        "get",
        "deployment",
        "burn",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(scale, "3");

    // The load stops: the guests roll to ones that sleep, and after the stabilization window
    // the HPA goes back to its min.
    k(&[
        "set",
        "image",
        "deployment/burn",
        &format!("main={sleeper}"),
    ]);
    hpa_until(&c, "burn", "scaled down to 1", |h| {
        h["status"]["desiredReplicas"] == 1 && h["status"]["currentReplicas"] == 1
    })
    .await;
    let events = k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=burn,involvedObject.kind=HorizontalPodAutoscaler",
    ]);
    assert!(
        events.contains("New size: 1; reason: All metrics below target"),
        "{events}"
    );
}

/// Reads HPA `name` until `ok` holds (for up to two minutes).
async fn hpa_until(
    c: &Cluster,
    name: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = c
            .server
            .kubectl(&["get", "hpa", name, "-o", "json"])
            .unwrap();
        let hpa: serde_json::Value = serde_json::from_str(&text).unwrap();
        if ok(&hpa) {
            return hpa;
        }
        assert!(Instant::now() < deadline, "{what}: {hpa:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An HPA whose target does not exist says so in its conditions and Events, with upstream's
/// reasons, and scales nothing; bad specs are refused with the field named.
#[tokio::test]
async fn an_hpa_without_a_target_reports_it_and_bad_specs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--horizontal-pod-autoscaler-sync-period",
        "1s",
    ])
    .await;
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "ghost", "namespace": "default"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ghost"},
                 "maxReplicas": 3},
    });
    let file = dir.path().join("hpa.json");
    std::fs::write(&file, hpa.to_string()).unwrap();
    server
        .kubectl(&["apply", "-f", file.to_str().unwrap()])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = server
            .kubectl(&[
                "get",
                "hpa",
                "ghost",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"AbleToScale\")].reason}",
            ])
            .unwrap();
        if text == "FailedGetScale" {
            break;
        }
        assert!(Instant::now() < deadline, "no FailedGetScale: {text:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let active = server
        .kubectl(&[
            "get",
            "hpa",
            "ghost",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"ScalingActive\")].status}",
        ])
        .unwrap();
    assert_eq!(active, "False");
    let described = server.kubectl(&["describe", "hpa", "ghost"]).unwrap();
    assert!(
        described.contains("the HPA controller was unable to get the target's current scale")
            && described.contains("FailedGetScale"),
        "{described}"
    );

    let mut bad = hpa.clone();
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["minReplicas"] = json!(5);
    std::fs::write(&file, bad.to_string()).unwrap();
    let refused = server
        .kubectl(&["apply", "-f", file.to_str().unwrap()])
        .unwrap_err();
    assert!(
        refused.contains("spec.maxReplicas") && refused.contains("minReplicas"),
        "{refused}"
    );
}
