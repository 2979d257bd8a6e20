//! HTTP functions in a cluster: a Deployment of the `function` guest (guests/function, a
//! wasi:http component) behind a Service, with readiness from an httpGet probe that invokes
//! the handler, reached through its pod IPs and, from another function, through the Service
//! by name, its ClusterIP and its node port; the node's `/metrics/functions` counts what each
//! pod served; outgoing requests outside the cluster are refused without the egress
//! annotation.

use std::time::{Duration, Instant};

use bosun_node::images::Layout;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::cluster::{Cluster, cluster_with, phase, wait_for};

fn function() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/target/wasm32-wasip2/release/function.wasm"
    );
    std::fs::read(path).expect("build the guests first: scripts/guests.sh")
}

async fn get(url: &str) -> (u16, String) {
    try_get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// A GET that may fail (a Service whose endpoints are not there yet refuses connections).
async fn try_get(url: &str) -> reqwest::Result<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

#[tokio::test]
async fn a_function_deployment_behind_a_service_answers_through_pod_ips_and_the_service() {
    let (c, image) = function_cluster("fn1", &[]).await;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {"containers": [{
                    "name": "fn",
                    "image": image,
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/counter", "port": 8080}, "periodSeconds": 1},
                }]},
            },
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"type": "NodePort", "selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let spec = service.spec.unwrap();
    let cluster_ip = spec.cluster_ip.unwrap();
    let node_port = spec.ports.unwrap()[0].node_port.unwrap();

    // Both replicas become ready through the probe, which invokes the handler.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let pods = c
            .pods
            .list(&ListParams::default().labels("app=hello"))
            .await
            .unwrap();
        let ready: Vec<Pod> = pods
            .items
            .into_iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .collect();
        if ready.len() == 2 {
            break ready;
        }
        assert!(
            Instant::now() < deadline,
            "the function pods never got ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Each pod answers on its IP, with its own name, and every request is a fresh instance.
    for pod in &ready {
        let name = pod.metadata.name.clone().unwrap();
        let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let (status, body) = get(&format!("http://{ip}:8080/hi")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, format!(r#"{{"path":"/hi","pod":{name:?}}}"#));
        assert_eq!(
            get(&format!("http://{ip}:8080/counter")).await,
            (200, "1".to_string())
        );
        assert_eq!(get(&format!("http://{ip}:8080/trap")).await.0, 500);
        assert_eq!(get(&format!("http://{ip}:8080/counter")).await.0, 200);
    }

    // The Service answers on its ClusterIP, and at its node port on the node's addresses
    // other than loopback (as kube-proxy's nftables mode does): here the bridge's, the first
    // of the node's pod block. Both from the host, through the node proxy's rules.
    let node: Node = Api::all(c.client.clone()).get("fn1").await.unwrap();
    let block = node.spec.unwrap().pod_cidr.unwrap();
    let network: std::net::Ipv4Addr = block.split('/').next().unwrap().parse().unwrap();
    let node_ip = std::net::Ipv4Addr::from(u32::from(network) + 1);
    for url in [
        format!("http://{cluster_ip}/via"),
        format!("http://{node_ip}:{node_port}/via"),
    ] {
        // Ready pods reach the proxy's rules through the EndpointSlice, a moment later.
        let (status, body) =
            eventually(&format!("{url} answers"), async || try_get(&url).await.ok()).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert!(
            body.starts_with(r#"{"path":"/via","pod":"hello-"#),
            "{url}: {body}"
        );
    }

    // The node counts each pod's requests, and `kubectl get --raw` reads them through the
    // API server's node proxy. The readiness probe runs every second, so a reading may catch
    // one in flight: read until none is.
    let metrics = eventually("no request in flight", async || {
        let metrics = c
            .server
            .kubectl(&["get", "--raw", "/api/v1/nodes/fn1/proxy/metrics/functions"])
            .unwrap();
        let idle = metrics
            .lines()
            .filter(|l| l.starts_with("bosun_function_requests_in_flight{"))
            .all(|l| l.ends_with(" 0"));
        idle.then_some(metrics)
    })
    .await;
    for pod in &ready {
        let name = pod.metadata.name.as_deref().unwrap();
        let labels = format!(r#"namespace="default",pod="{name}",container="fn""#);
        let count = |series: &str| -> u64 {
            let prefix = format!("{series}{{{labels}");
            metrics
                .lines()
                .find(|l| l.starts_with(&prefix))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
        };
        assert!(
            metrics.contains(&format!(
                r#"bosun_function_requests_total{{{labels},code="5xx"}} 1"#
            )),
            "one trap each:\n{metrics}"
        );
        // Probes, the three requests above, and what came through the Service.
        assert!(
            count("bosun_function_instances_created_total") >= 4,
            "{metrics}"
        );
        assert_eq!(count("bosun_function_requests_in_flight"), 0, "{metrics}");
    }
    let missing = c
        .server
        .kubectl(&["get", "--raw", "/api/v1/nodes/fn1/proxy/nothing/here"])
        .unwrap_err();
    assert!(missing.contains("NotFound"), "{missing}");

    // Another function calls the Service by name (outgoing HTTP inside the cluster), and is
    // refused an address outside it.
    let caller = c
        .create(json!({
            "metadata": {"name": "caller"},
            "spec": {"containers": [{"name": "fn", "image": image, "ports": [{"containerPort": 9000}]}]},
        }))
        .await;
    let pod = wait_for(&c.pods, &caller, "running", |p| phase(p) == "Running").await;
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let (status, body) = get(&format!("http://{ip}:9000/fetch?url=http://hello/who")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with(r#"200 {"path":"/who","pod":"hello-"#),
        "{body}"
    );
    let (status, body) = get(&format!("http://{ip}:9000/fetch?url=http://192.0.2.1:80/")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("Prohibited"), "{body}");
}

/// A HorizontalPodAutoscaler on a function Deployment's `requests_per_second` (a Pods
/// metric read from the node's function metrics) scales it up under load, and shows the
/// reading in its status.
#[tokio::test]
async fn an_hpa_scales_a_function_deployment_on_its_requests_per_second() {
    let c = cluster_with(
        "fn9",
        &["--horizontal-pod-autoscaler-sync-period", "1s"],
        &[],
    )
    .await;
    let image = c
        .registry
        .push("function:v1", function(), Layout::ComponentV0)
        .await;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "busy"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "busy"}},
            "template": {
                "metadata": {"labels": {"app": "busy"}},
                "spec": {"containers": [{"name": "fn", "image": image, "ports": [{"containerPort": 8080}]}]},
            },
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "busy", "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
            "minReplicas": 1, "maxReplicas": 3,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": "requests_per_second"},
                "target": {"type": "AverageValue", "averageValue": "5"},
            }}],
        },
    });
    let hpas: Api<kube::api::DynamicObject> = Api::namespaced_with(
        c.client.clone(),
        "default",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
        )),
    );
    hpas.create(
        &PostParams::default(),
        &serde_json::from_value(hpa).unwrap(),
    )
    .await
    .unwrap();

    let pod = eventually("a running replica", async || {
        let pods = c
            .pods
            .list(&ListParams::default().labels("app=busy"))
            .await
            .ok()?;
        pods.items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
    })
    .await;
    let ip = pod.status.unwrap().pod_ip.unwrap();
    // About 50 requests a second to the one replica, against 5 per replica.
    let load = tokio::spawn(async move {
        loop {
            let _ = try_get(&format!("http://{ip}:8080/hi")).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let scaled = eventually("the HPA scales to its max", async || {
        let hpa = hpas.get("busy").await.ok()?;
        (hpa.data["status"]["desiredReplicas"] == 3).then_some(hpa)
    })
    .await;
    load.abort();
    let current = &scaled.data["status"]["currentMetrics"][0]["pods"];
    assert_eq!(
        current["metric"]["name"], "requests_per_second",
        "{scaled:?}"
    );
    let average = current["current"]["averageValue"].as_str().unwrap();
    assert!(
        bosun_api::quantity::parse(average).unwrap() > 10.0,
        "{average} requests/s"
    );
    let deployment = deployments.get("busy").await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(3));
    let events = c
        .server
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=busy,involvedObject.kind=HorizontalPodAutoscaler",
        ])
        .unwrap();
    assert!(
        events.contains("New size: 3; reason: pods metric requests_per_second above target"),
        "{events}"
    );
}

/// A Function's history (`bosun.dev/v1` FunctionHistory) shows the requests it answered,
/// their latency and its replicas.
#[tokio::test]
async fn a_functions_history_shows_its_requests_and_replicas() {
    use bosun_api::function::Function;
    let c = cluster_with("fn10", &["--metrics-resolution", "1s"], &[]).await;
    let image = c
        .registry
        .push("function:v1", function(), Layout::ComponentV0)
        .await;
    let functions: Api<Function> = Api::namespaced(c.client.clone(), "default");
    let function: Function = serde_json::from_value(json!({
        "apiVersion": "serving.bosun.dev/v1", "kind": "Function",
        "metadata": {"name": "charted"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "fn", "image": image}]}},
            "scale": {"min": 1, "max": 1},
        },
    }))
    .unwrap();
    functions
        .create(&PostParams::default(), &function)
        .await
        .unwrap();
    let ip = eventually("a running replica", async || {
        let pods = c
            .pods
            .list(&ListParams::default().labels("serving.bosun.dev/function=charted"))
            .await
            .ok()?;
        pods.items
            .into_iter()
            .find(|p| phase_of(p) == "Running")?
            .status?
            .pod_ip
    })
    .await;
    let history = eventually("requests in the Function's history", async || {
        for _ in 0..20 {
            try_get(&format!("http://{ip}:8080/hi")).await.ok()?;
        }
        let text = c
            .server
            .kubectl(&[
                "get",
                "--raw",
                "/apis/bosun.dev/v1/namespaces/default/functionhistories/charted",
            ])
            .ok()?;
        let history: serde_json::Value = serde_json::from_str(&text).ok()?;
        let point = history["points"].as_array()?.last()?.clone();
        (point["requestsPerSecond"].as_f64()? > 0.0).then_some(point)
    })
    .await;
    // Averaged over the minute, which began before the replica ran.
    assert!(history["replicas"].as_f64().unwrap() > 0.0, "{history}");
    assert!(
        history["latencyP99Seconds"].as_f64().unwrap() > 0.0,
        "{history}"
    );
}

fn phase_of(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// The Function kind through the real kubectl: apply, defaults, the table, short name,
/// `kubectl explain`, and field-path errors for bad specs.
#[tokio::test]
async fn functions_are_a_kind_kubectl_applies_lists_and_explains() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let server = crate::support::Server::start(&["--data-dir", data.to_str().unwrap()]).await;
    let k = |args: &[&str]| {
        server
            .kubectl(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let manifest = dir.path().join("fn.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: serving.bosun.dev/v1\nkind: Function\nmetadata: {name: hello}\nspec:\n  \
         template:\n    spec:\n      containers: [{name: fn, image: \"reg/hello:v1\"}]\n  \
         scale: {max: 10, metric: rps}\n  \
         triggers:\n  - cron: {schedule: \"*/5 * * * *\", timeZone: Europe/Paris, path: /tick, method: POST, body: \"{}\"}\n",
    )
    .unwrap();
    let applied = k(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        applied.contains("function.serving.bosun.dev/hello created"),
        "{applied}"
    );
    // Applied again: kubectl merge-patches a kind it has no Go type for, replacing the
    // containers list the server defaulted, which changes nothing.
    k(&["apply", "-f", manifest.to_str().unwrap()]);

    // Defaults: the metric's target, the windows, the timeout.
    let stored: serde_json::Value =
        serde_json::from_str(&k(&["get", "fn", "hello", "-o", "json"])).unwrap();
    assert_eq!(
        stored["spec"]["scale"],
        json!({"min": 0, "max": 10, "metric": "rps", "target": 100,
               "scaleToZeroAfter": "30s", "stableWindow": "60s"})
    );
    assert_eq!(stored["spec"]["timeout"], "60s");
    assert_eq!(
        stored["metadata"]["generation"], 1,
        "the second apply changed nothing"
    );
    assert_eq!(stored["spec"]["containerConcurrency"], 0);

    let table = k(&["get", "functions"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "URL", "READY", "REPLICAS", "METRIC", "AGE"]
    );
    assert!(table.contains("rps"), "{table}");
    assert!(k(&["get", "all"]).contains("function.serving.bosun.dev/hello"));
    let explained = k(&["explain", "function.spec.scale"]);
    assert!(
        explained.contains("scaleToZeroAfter") && explained.contains("scale to zero"),
        "{explained}"
    );

    // Bad specs: a 422 naming each field.
    for (spec, field) in [
        (
            "scale: {min: 5, max: 2}",
            "spec.scale.min: Invalid value: 5: must be less than or equal to spec.scale.max (2)",
        ),
        ("scale: {target: 0}", "spec.scale.target: Invalid value: 0"),
        (
            "scale: {metric: cpu}",
            "spec.scale.metric: Unsupported value: \"cpu\"",
        ),
        (
            "triggers: [{cron: {schedule: \"61 * * * *\"}}]",
            "spec.triggers[0].cron.schedule: Invalid value: \"61 * * * *\"",
        ),
        (
            "triggers: [{cron: {schedule: \"@hourly\", timeZone: Mars/Olympus}}]",
            "spec.triggers[0].cron.timeZone: Invalid value",
        ),
        ("timeout: 0s", "spec.timeout: Invalid value: \"0s\""),
        (
            "template: {spec: {containers: []}}",
            "spec.template.spec.containers: Required value",
        ),
    ] {
        let bad = dir.path().join("bad.yaml");
        let template = if spec.starts_with("template") {
            String::new()
        } else {
            "  template: {spec: {containers: [{name: fn, image: \"reg/hello:v1\"}]}}\n".to_string()
        };
        std::fs::write(
            &bad,
            format!(
                "apiVersion: serving.bosun.dev/v1\nkind: Function\nmetadata: {{name: bad}}\nspec:\n{template}  {spec}\n"
            ),
        )
        .unwrap();
        let refused = server
            .kubectl(&["apply", "-f", bad.to_str().unwrap()])
            .unwrap_err();
        assert!(
            refused.contains("is invalid") && refused.contains(field),
            "{spec}: {refused}"
        );
    }
    assert!(server.kubectl(&["get", "fn", "bad"]).is_err());

    // `bosun fn`: deploy creates or updates with only its flags' fields, beside kubectl.
    let bosun = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::BOSUN)
            .args(args)
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let deployed = bosun(&["fn", "deploy", "web", "--image", "reg/web:v1", "--max", "4"]);
    assert!(
        deployed.contains("function.serving.bosun.dev/web deployed")
            && deployed.contains("http://web.default.fn.local"),
        "{deployed}"
    );
    k(&[
        "patch",
        "fn",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"timeout":"5s"}}"#,
    ]);
    bosun(&["fn", "deploy", "web", "--image", "reg/web:v2", "--max", "6"]);
    let web: serde_json::Value =
        serde_json::from_str(&k(&["get", "fn", "web", "-o", "json"])).unwrap();
    assert_eq!(web["spec"]["scale"]["max"], 6);
    assert_eq!(web["spec"]["timeout"], "5s", "kubectl's field stays");
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"],
        "reg/web:v2"
    );
    let listed = bosun(&["fn", "list"]);
    assert!(
        listed.starts_with("NAME") && listed.contains("web") && listed.contains("hello"),
        "{listed}"
    );
}

/// Polls `check` for up to a minute.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Function runs as a Deployment and a Service of its name: reachable through the Service,
/// its status and table follow the replicas, a template change rolls out, `scale.min: 0`
/// leaves no pod, and deleting the Function takes its Deployment and Service along.
#[tokio::test]
async fn a_function_runs_as_its_own_deployment_and_service() {
    use bosun_api::function::Function;
    let (c, image) = function_cluster("fn2", &[]).await;
    let functions: Api<Function> = Api::namespaced(c.client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let function_of = |env: &str| -> Function {
        serde_json::from_value(json!({
            "apiVersion": "serving.bosun.dev/v1", "kind": "Function",
            "metadata": {"name": "hello"},
            "spec": {
                "template": {"spec": {"containers": [{
                    "name": "fn", "image": image,
                    "env": [{"name": "POD_NAME", "value": env}],
                    "readinessProbe": {"httpGet": {"path": "/counter", "port": 8080}, "periodSeconds": 1},
                }]}},
                "scale": {"min": 1, "max": 3},
                "timeout": "5s",
            },
        }))
        .unwrap()
    };
    functions
        .create(&PostParams::default(), &function_of("first"))
        .await
        .unwrap();

    // Its Deployment and Service, owned by it; the pod carries the Function's label.
    let deployment = eventually("the Deployment", async || {
        deployments.get_opt("hello").await.ok()?
    })
    .await;
    let owner = deployment.metadata.owner_references.clone().unwrap();
    assert_eq!(
        (owner[0].kind.as_str(), owner[0].name.as_str()),
        ("Function", "hello")
    );
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(1));
    let template = deployment.spec.unwrap().template.metadata.unwrap();
    assert_eq!(
        template.annotations.unwrap()["bosun.dev/request-timeout"],
        "5s"
    );
    let service = eventually("the Service", async || {
        services.get_opt("hello").await.ok()?
    })
    .await;
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();

    // Ready once its pod is; it answers through the Service.
    let ready = eventually("the Function is ready", async || {
        let f = functions.get("hello").await.ok()?;
        let status = f.status?;
        (status.ready_replicas == Some(1)).then_some(status)
    })
    .await;
    assert_eq!(ready.url.as_deref(), Some("http://hello.default.fn.local"));
    let active = ready
        .conditions
        .iter()
        .find(|c| c.type_ == "Active")
        .unwrap();
    assert_eq!(active.status, "True");
    let answer = eventually("an answer through the Service", async || {
        let (status, body) = try_get(&format!("http://{cluster_ip}/who")).await.ok()?;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(answer, r#"{"path":"/who","pod":"first"}"#);
    let table = c
        .server
        .kubectl(&["get", "fn", "hello", "--no-headers"])
        .unwrap();
    let cells: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        [
            "hello",
            "http://hello.default.fn.local",
            "True",
            "1",
            "concurrency"
        ]
    );
    let pods = c
        .pods
        .list(&ListParams::default().labels("serving.bosun.dev/function=hello"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1);

    // A changed template rolls out.
    // (Merge patches: the controller writes the status meanwhile, so a get-then-replace could
    // meet a conflict.)
    let template = serde_json::to_value(function_of("second").spec.template).unwrap();
    functions
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": template}})),
        )
        .await
        .unwrap();
    eventually("the new template answers", async || {
        let (_, body) = try_get(&format!("http://{cluster_ip}/who")).await.ok()?;
        (body == r#"{"path":"/who","pod":"second"}"#).then_some(())
    })
    .await;

    // The replicas stay within [min, max] (the rest is the autoscaler's).
    functions
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"scale": {"min": 2}}})),
        )
        .await
        .unwrap();
    eventually("the Deployment is raised to the new minimum", async || {
        let d = deployments.get("hello").await.ok()?;
        (d.spec?.replicas == Some(2)).then_some(())
    })
    .await;

    // Deleting the Function takes its Deployment, Service and pods along.
    functions
        .delete("hello", &Default::default())
        .await
        .unwrap();
    eventually("the Deployment and Service are gone", async || {
        let d = deployments.get_opt("hello").await.ok()?;
        let s = services.get_opt("hello").await.ok()?;
        (d.is_none() && s.is_none()).then_some(())
    })
    .await;

    // A Function whose container is no wasi:http component (here a preview 1 module) is not
    // Ready, and says why; its pod waits with the node's message.
    let module =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .unwrap();
    let command = c
        .registry
        .push("command:v1", module, Layout::ConfigV0)
        .await;
    let mut broken = function_of("broken");
    broken.metadata.name = Some("broken".to_string());
    broken.spec.template.spec.as_mut().unwrap().containers[0].image = Some(command);
    broken.spec.template.spec.as_mut().unwrap().containers[0].readiness_probe = None;
    functions
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    let ready = eventually("the broken Function is reported", async || {
        let status = functions.get("broken").await.ok()?.status?;
        let ready = status.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (ready.reason == "NotAFunction").then_some(ready)
    })
    .await;
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("not a wasi:http component")
            && ready.message.contains("preview 1 module"),
        "{}",
        ready.message
    );

    // A Function at the default minimum has no pod, and says so.
    let mut idle = function_of("idle");
    idle.metadata.name = Some("idle".to_string());
    idle.spec.scale = None;
    functions
        .create(&PostParams::default(), &idle)
        .await
        .unwrap();
    let status = eventually("the idle Function's status", async || {
        functions.get("idle").await.ok()?.status
    })
    .await;
    let active = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Active")
        .unwrap();
    assert_eq!(
        (active.status.as_str(), active.reason.as_str()),
        ("False", "ScaledToZero")
    );
    assert_eq!(status.replicas, Some(0));
    let idle_pods = c
        .pods
        .list(&ListParams::default().labels("serving.bosun.dev/function=idle"))
        .await
        .unwrap();
    assert!(idle_pods.items.is_empty());
}

/// The events about the object `name`, as `kubectl get events` prints them.
fn events_of(c: &Cluster, name: &str) -> String {
    let selector = format!("involvedObject.name={name}");
    c.server
        .kubectl(&["get", "events", "--field-selector", &selector])
        .unwrap()
}

/// A cluster named after its node `node`, with the function guest pushed (its image returned).
async fn function_cluster(node: &str, node_args: &[&str]) -> (Cluster, String) {
    function_cluster_with(node, &[], node_args).await
}

/// [`function_cluster`] with flags for the server too.
async fn function_cluster_with(
    node: &str,
    server_args: &[&str],
    node_args: &[&str],
) -> (Cluster, String) {
    let c = cluster_with(node, server_args, node_args).await;
    let image = c
        .registry
        .push("function:v1", function(), Layout::ComponentV0)
        .await;
    (c, image)
}

/// A cluster whose node serves the function gateway on a port of its own (returned), with the
/// function guest pushed (its image returned), and the Functions of `default`.
async fn gateway_cluster(
    node: &str,
) -> (Cluster, String, String, Api<bosun_api::function::Function>) {
    gateway_cluster_with(node, &[]).await
}

/// [`gateway_cluster`] with flags for the server.
async fn gateway_cluster_with(
    node: &str,
    server_args: &[&str],
) -> (Cluster, String, String, Api<bosun_api::function::Function>) {
    let port = bosun_testkit::free_port().to_string();
    let (c, image) = function_cluster_with(node, server_args, &["--function-port", &port]).await;
    // The node opens the gateway once it is registered (after getting its certificate).
    bosun_testkit::eventually(
        "the function gateway listening",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let open =
                std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok();
            async move { open.then_some(()) }
        },
    )
    .await;
    let functions = Api::namespaced(c.client.clone(), "default");
    (c, port, image, functions)
}

/// A GET through a node's gateway (`http://127.0.0.1:PORT`) with `Host: host`.
async fn through_gateway(port: &str, host: &str, path: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("Host", host)
        .timeout(Duration::from_secs(90))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} for {host}: {e}"));
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A Function named `name` of the function guest `image`, with `spec` merged in.
fn function_named(
    name: &str,
    image: &str,
    spec: serde_json::Value,
) -> bosun_api::function::Function {
    let mut function = json!({
        "apiVersion": "serving.bosun.dev/v1", "kind": "Function",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{
            "name": "fn", "image": image,
            "env": [{"name": "POD_NAME", "value": name}],
        }]}}},
    });
    crate::support::cluster::merge(&mut function["spec"], spec);
    serde_json::from_value(function).unwrap()
}

/// Creates `function` and waits until its controller has it at zero replicas.
async fn create_at_zero(
    functions: &Api<bosun_api::function::Function>,
    function: &bosun_api::function::Function,
) {
    functions
        .create(&PostParams::default(), function)
        .await
        .unwrap();
    let name = function.metadata.name.as_deref().unwrap();
    eventually("the Function is at zero", async || {
        let status = functions.get(name).await.ok()?.status?;
        (status.replicas == Some(0)).then_some(())
    })
    .await;
}

/// The node's gateway routes by Host, and wakes a Function at zero: held requests all get
/// their answer once the first replica is ready; unknown hosts get a 404 Status. Idle, the
/// autoscaler takes it back to zero; a burst of slow requests scales it up in panic.
#[tokio::test]
async fn the_gateway_wakes_a_function_at_zero_and_the_autoscaler_follows_its_load() {
    let (c, port, image, functions) = gateway_cluster("fn3").await;
    let function: bosun_api::function::Function = serde_json::from_value(json!({
        "apiVersion": "serving.bosun.dev/v1", "kind": "Function",
        "metadata": {"name": "sleepy"},
        "spec": {"template": {"spec": {"containers": [{
            "name": "fn", "image": image,
            "env": [{"name": "POD_NAME", "value": "awake"}],
            "readinessProbe": {"httpGet": {"path": "/counter", "port": 8080}, "periodSeconds": 1},
        }]}},
        "scale": {"max": 3, "target": 1, "scaleToZeroAfter": "2s", "stableWindow": "10s"}},
    }))
    .unwrap();
    create_at_zero(&functions, &function).await;

    let ask = |host: &'static str, path: &'static str| through_gateway(&port, host, path);
    let (status, body) = ask("nobody.default.fn.local", "/").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no function nobody.default"), "{body}");

    // Fifty requests at zero: all held, all answered by the replica that wakes.
    let started = Instant::now();
    let answers =
        futures::future::join_all((0..50).map(|_| ask("sleepy.default.fn.local", "/hello"))).await;
    let woke = started.elapsed();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body, r#"{"path":"/hello","pod":"awake"}"#);
    }
    let status = functions.get("sleepy").await.unwrap().status.unwrap();
    assert_eq!(status.replicas, Some(1), "one replica woke");
    assert!(
        !functions
            .get("sleepy")
            .await
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(bosun_api::function::ACTIVATION_ANNOTATION),
        "the activation request is cleared once answered"
    );
    eprintln!("woke from zero and answered 50 held requests in {woke:?}");
    // Awake: requests go straight through.
    assert_eq!(
        ask("sleepy.default.fn.local:8081", "/counter").await,
        (200, "1".to_string())
    );

    // Idle for its scaleToZeroAfter (2 s): back to zero, and no pod is left.
    let pods_of = async || {
        c.pods
            .list(&ListParams::default().labels("serving.bosun.dev/function=sleepy"))
            .await
            .unwrap()
            .items
            .len()
    };
    eventually("scaled to zero with no pod left", async || {
        let status = functions.get("sleepy").await.ok()?.status?;
        (status.replicas == Some(0) && pods_of().await == 0).then_some(())
    })
    .await;
    let events = events_of(&c, "sleepy");
    assert!(
        events.contains("Activated") && events.contains("ScaledToZero"),
        "{events}"
    );

    // Six slow requests at a target of one in flight per replica: woken, then scaled up in
    // panic to the maximum (3), and every request answered.
    let slow = (0..6).map(|_| ask("sleepy.default.fn.local", "/sleep?ms=4000"));
    let scaled = async {
        eventually("scaled up to the maximum", async || {
            let status = functions.get("sleepy").await.ok()?.status?;
            (status.replicas == Some(3)).then_some(())
        })
        .await
    };
    let (answers, ()) = tokio::join!(futures::future::join_all(slow), scaled);
    for (status, body) in &answers {
        assert_eq!((*status, body.as_str()), (200, "slept"));
    }
    let events = events_of(&c, "sleepy");
    assert!(events.contains("ScaledUp"), "{events}");
}

/// A cron trigger calls a Function that sits at zero: it is woken through a node's gateway, the
/// call shows in its log, and the call is an Event naming its method, path and status.
#[tokio::test]
async fn a_cron_trigger_calls_a_function_at_zero() {
    let (c, _, image, functions) = gateway_cluster("fn4").await;
    let function: bosun_api::function::Function = serde_json::from_value(json!({
        "apiVersion": "serving.bosun.dev/v1", "kind": "Function",
        "metadata": {"name": "ticker"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "fn", "image": image}]}},
            "triggers": [{"cron": {"schedule": "* * * * *", "path": "/print", "method": "POST"}}],
        },
    }))
    .unwrap();
    functions
        .create(&PostParams::default(), &function)
        .await
        .unwrap();
    // The next minute's tick (at most a minute away).
    let deadline = Instant::now() + Duration::from_secs(90);
    let called = loop {
        let events = events_of(&c, "ticker");
        if let Some(line) = events.lines().find(|l| l.contains("TriggerCalled")) {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no trigger call: {events}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        called.contains("cron trigger 0: POST /print 200 in"),
        "{called}"
    );
    let events = events_of(&c, "ticker");
    assert!(
        events.contains("Activated"),
        "the call woke it from zero: {events}"
    );
    let status = functions.get("ticker").await.unwrap().status.unwrap();
    assert!(status.triggers[0].last_schedule_time.is_some());
    let logs = c
        .server
        .kubectl(&["logs", "-l", "serving.bosun.dev/function=ticker"])
        .unwrap();
    assert!(logs.contains("hello from a request"), "{logs}");
}

/// Inside the cluster, a Function at zero is woken through its Service: a guest's request to
/// `http://NAME.NAMESPACE` goes (by the node's proxy) to the node's activator, which holds it
/// until the replica it asked for is ready, then answers it. A Function's URL names the
/// domain its nodes' gateways serve.
#[tokio::test]
async fn a_guest_wakes_a_function_at_zero_through_its_service() {
    // A domain of the node's own, which the Functions' URLs follow.
    let port = bosun_testkit::free_port().to_string();
    let (c, image) = function_cluster(
        "fn5",
        &["--function-port", &port, "--function-domain", "fn.example"],
    )
    .await;
    let functions: Api<bosun_api::function::Function> =
        Api::namespaced(c.client.clone(), "default");
    let asleep = function_named("asleep", &image, json!({}));
    let caller = function_named("caller", &image, json!({"scale": {"min": 1}}));
    for function in [asleep, caller] {
        functions
            .create(&PostParams::default(), &function)
            .await
            .unwrap();
    }
    eventually("asleep at zero, caller awake", async || {
        let asleep = functions.get("asleep").await.ok()?.status?;
        let caller = functions.get("caller").await.ok()?.status?;
        (asleep.replicas == Some(0) && caller.ready_replicas == Some(1)).then_some(())
    })
    .await;
    let url = functions.get("caller").await.unwrap().status.unwrap().url;
    assert_eq!(url.as_deref(), Some("http://caller.default.fn.example"));
    let (status, body) = through_gateway(
        &port,
        "caller.default.fn.example",
        "/fetch?url=http://asleep.default/woken",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"{\"path\":\"/woken\",\"pod\":\"asleep\"}"#)
            || body.contains(r#""path":"/woken","pod":"asleep""#),
        "{body}"
    );
    let status = functions.get("asleep").await.unwrap().status.unwrap();
    assert_eq!(status.replicas, Some(1), "woken by the request");
}

/// Knative's acceptance test of 2019, on one node: at most 10 replicas, a target of one
/// request in flight each, and 300 simultaneous requests of 100 ms to a Function at zero
/// all succeed.
#[tokio::test]
async fn three_hundred_simultaneous_requests_to_a_function_at_zero_all_succeed() {
    let (_c, port, image, functions) = gateway_cluster("fn6").await;
    let function = function_named(
        "burst",
        &image,
        json!({"scale": {"max": 10, "target": 1, "stableWindow": "10s"}}),
    );
    create_at_zero(&functions, &function).await;
    let started = Instant::now();
    let answers = futures::future::join_all(
        (0..300).map(|_| through_gateway(&port, "burst.default.fn.local", "/sleep?ms=100")),
    )
    .await;
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    eprintln!(
        "300 requests of 100 ms from zero in {:?}",
        started.elapsed()
    );
    let replicas = functions
        .get("burst")
        .await
        .unwrap()
        .status
        .unwrap()
        .replicas;
    assert!(
        matches!(replicas, Some(1..=10)),
        "woken, within its maximum: {replicas:?}"
    );
}

/// Requests never fail while a Function's template rolls out, nor while it scales down:
/// replicas that go finish what they hold (and their last answers reach the gateway before
/// their network goes), and requests refused by one that just went are sent to another.
#[tokio::test]
async fn requests_keep_succeeding_through_a_rollout_and_a_scale_down() {
    let (c, port, image, functions) = gateway_cluster("fn7").await;
    let function = function_named(
        "steady",
        &image,
        json!({"scale": {"min": 3, "max": 3}, "timeout": "10s"}),
    );
    functions
        .create(&PostParams::default(), &function)
        .await
        .unwrap();
    eventually("three replicas ready", async || {
        let status = functions.get("steady").await.ok()?.status?;
        (status.ready_replicas == Some(3)).then_some(())
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (port, stop) = (port.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    answers.push(
                        through_gateway(&port, "steady.default.fn.local", "/sleep?ms=20").await,
                    );
                }
                answers
            })
        })
        .collect();
    let pods_named = async |name: &str| -> (usize, usize) {
        let pods = c
            .pods
            .list(&ListParams::default().labels("serving.bosun.dev/function=steady"))
            .await
            .unwrap()
            .items;
        let named = pods
            .iter()
            .filter(|p| {
                p.spec.as_ref().unwrap().containers[0].env.as_ref().unwrap()[0]
                    .value
                    .as_deref()
                    == Some(name)
            })
            .count();
        (pods.len(), named)
    };
    // A new template: every replica replaced.
    let rollout = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "fn", "image": image, "env": [{"name": "POD_NAME", "value": "second"}],
    }]}}}});
    functions
        .patch("steady", &PatchParams::default(), &Patch::Merge(rollout))
        .await
        .unwrap();
    eventually("rolled out", async || {
        (pods_named("second").await == (3, 3)).then_some(())
    })
    .await;
    // Down to one replica.
    let down = json!({"spec": {"scale": {"min": 1, "max": 1}}});
    functions
        .patch("steady", &PatchParams::default(), &Patch::Merge(down))
        .await
        .unwrap();
    eventually("scaled down", async || {
        (pods_named("second").await == (1, 1)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut served = 0;
    for task in load {
        for (status, body) in task.await.unwrap() {
            assert_eq!((status, body.as_str()), (200, "slept"));
            served += 1;
        }
    }
    eprintln!("{served} requests, none failed, through a rollout and a scale-down");
    assert!(served > 20, "{served}");
}

/// The server that leads the controllers (the autoscaler among them) is killed with -9
/// while requests wait for a Function to wake: once the other server takes over, the held
/// requests are answered; none hangs, and none is lost.
#[tokio::test]
async fn held_requests_survive_the_death_of_the_leading_server() {
    let db = crate::support::postgres_db().await;
    let (pods, services) = crate::support::cluster::own_blocks();
    let blocks = ["--cluster-cidr", &pods, "--service-cidr", &services];
    let (mut leader, leader_dir) = crate::support::replica_with(&db, None, &blocks).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(leader.client().await, "kube-system");
    eventually("the first server leads", async || {
        leases
            .get("bosun-controller-manager")
            .await
            .ok()?
            .spec?
            .holder_identity
    })
    .await;
    let (standby, _standby_dir) =
        crate::support::replica_with(&db, Some(leader_dir.path()), &blocks).await;
    let registry = crate::support::Registry::start().await;
    let image = registry
        .push("function:v1", function(), Layout::ComponentV0)
        .await;
    let port = bosun_testkit::free_port().to_string();
    let _node =
        crate::support::Node::start(&standby, "fn8", &registry, &["--function-port", &port]);
    let functions: Api<bosun_api::function::Function> =
        Api::namespaced(standby.client().await, "default");
    functions
        .create(
            &PostParams::default(),
            &function_named("phoenix", &image, json!({})),
        )
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(standby.client().await);
    eventually("the node ready and the Function at zero", async || {
        let node = nodes.get("fn8").await.ok()?;
        let ready = node
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let status = functions.get("phoenix").await.ok()?.status?;
        (ready && status.replicas == Some(0)).then_some(())
    })
    .await;
    let held = futures::future::join_all(
        (0..10).map(|_| through_gateway(&port, "phoenix.default.fn.local", "/held")),
    );
    let kill = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.kill();
    };
    let started = Instant::now();
    let (answers, ()) = tokio::join!(held, kill);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body, r#"{"path":"/held","pod":"phoenix"}"#);
    }
    eprintln!(
        "10 held requests answered {:?} after the leader died",
        started.elapsed()
    );
}

/// A function calls the Kubernetes API from inside the cluster as its pod's ServiceAccount,
/// with the SDK (`kubernetes_get`: the `kubernetes` Service's variables, the projected token,
/// the cluster CA the node trusts for functions): it lists its namespace's ConfigMaps with
/// `view` there, and is refused elsewhere.
#[tokio::test]
async fn a_function_calls_the_api_as_its_service_account() {
    // Pods reach the server at the host's address (the `kubernetes` Service's endpoint).
    let (c, port, image, functions) =
        gateway_cluster_with("fn-api", &["--bind-address", "0.0.0.0"]).await;
    c.server.grant_default_account_view();
    // The namespace's default ServiceAccount (and so the token volume) comes from a
    // controller moments after the start.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(c.client.clone(), "default");
    eventually("the default ServiceAccount", async || {
        accounts.get_opt("default").await.ok()?
    })
    .await;
    let function: bosun_api::function::Function = serde_json::from_value(json!({
        "apiVersion": "serving.bosun.dev/v1", "kind": "Function",
        "metadata": {"name": "insider"},
        "spec": {"template": {"spec": {"containers": [{"name": "fn", "image": image}]}},
                 "scale": {"min": 1, "max": 1}},
    }))
    .unwrap();
    functions
        .create(&PostParams::default(), &function)
        .await
        .unwrap();
    let ask = |path: &'static str| through_gateway(&port, "insider.default.fn.local", path);
    // The gateway knows the Function once its watch has it.
    let (status, body) = eventually("the gateway routing the Function", async || {
        let answer = ask("/kubernetes?path=/api/v1/namespaces/default/configmaps").await;
        (answer.0 != 404).then_some(answer)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("200 "), "{body}");
    assert!(body.contains("kube-root-ca.crt"), "{body}");
    let (status, body) = ask("/kubernetes?path=/api/v1/namespaces/kube-system/configmaps").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("403 "), "{body}");
    assert!(
        body.contains(
            r#"User \"system:serviceaccount:default:default\" cannot list resource \"configmaps\""#
        ),
        "{body}"
    );
}
