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
}

/// `kubectl get --raw /metrics` shows the API server's own series with kube-apiserver's
/// names: requests by verb, resource, scope and code, their durations, and open watches.
#[tokio::test]
async fn the_api_server_serves_its_own_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    server.kubectl(&["get", "pods"]).unwrap();
    let _ = server.kubectl(&["get", "pod", "nobody"]);
    let text = server.kubectl(&["get", "--raw", "/metrics"]).unwrap();
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
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let number = line.rsplit(' ').next().unwrap();
        assert!(number.parse::<f64>().is_ok(), "not a sample: {line:?}");
    }
}
