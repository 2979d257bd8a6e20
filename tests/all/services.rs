//! Services end to end, with real network namespaces and nftables (the suite runs as root): a
//! real `bosun server` (cluster IPs, node ports, the endpoint controllers) and `bosun node`
//! (the service proxy and the resolver), with the `netcheck` guest as servers and clients.
//!
//! Every cluster has its own pod block and Service block (`own_blocks`), so the
//! proxies of concurrent tests, which share this network namespace, never see each other's
//! addresses.

use std::time::{Duration, Instant};

use crate::support::cluster::{
    Cluster, finished, netcheck_cluster_with, node_logs, own_blocks, wait_for,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// A cluster whose pods and Services have blocks of their own; returns it, the netcheck image
/// and the Service block.
async fn service_cluster(node: &str) -> (Cluster, String, String) {
    let (pods, services) = own_blocks();
    let (c, image) = netcheck_cluster_with(
        node,
        &["--cluster-cidr", &pods, "--service-cidr", &services],
    )
    .await;
    (c, image, services)
}

async fn create<K>(api: &Api<K>, object: Value) -> K
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap()
}

/// Polls `check` (every 100 ms, 60 s at most) until it gives a value.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    check: impl Fn() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ready and not-ready addresses of the Endpoints `name`.
async fn endpoint_ips(c: &Cluster, name: &str) -> (Vec<String>, Vec<String>) {
    let api: Api<Endpoints> = Api::namespaced(c.client.clone(), "default");
    let Ok(Some(endpoints)) = api.get_opt(name).await else {
        return Default::default();
    };
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in endpoints.subsets.into_iter().flatten() {
        ready.extend(subset.addresses.into_iter().flatten().map(|a| a.ip));
        not_ready.extend(
            subset
                .not_ready_addresses
                .into_iter()
                .flatten()
                .map(|a| a.ip),
        );
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

/// The endpoints the node's proxy sends new connections for port `port` to (its nftables
/// rules, as `nft` lists them).
fn proxied(c: &Cluster, port: u16) -> Vec<String> {
    let table = format!("{}-proxy", c.node.bridge);
    let out = std::process::Command::new("nft")
        .args(["list", "table", "ip", &table])
        .output()
        .unwrap();
    let suffix = format!(":{port}");
    let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_suffix(&suffix))
        .map(String::from)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// Waits until the proxy's rules for `port` name exactly the ready endpoints of `service`
/// (how fast is the benchmark's business, not this test's).
async fn until_proxied(c: &Cluster, service: &str, port: u16) {
    until("the proxy following the endpoints", || async {
        let (ready, _) = endpoint_ips(c, service).await;
        (!ready.is_empty() && proxied(c, port) == ready).then_some(())
    })
    .await;
}

/// A Deployment of netcheck echo servers (TCP on 8080, UDP on 5353) that sign their answers
/// with their pod's name, ready once they listen.
fn echo_deployment(name: &str, image: &str, replicas: i32) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {
                        "name": "echo",
                        "image": image,
                        "args": ["listen", "0.0.0.0:8080"],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"name": "echo", "containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    },
                    {
                        "name": "udp",
                        "image": image,
                        "args": ["udp-echo", "0.0.0.0:5353"],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"name": "dns", "containerPort": 5353, "protocol": "UDP"}],
                    },
                ]},
            },
        },
    })
}

/// Runs a netcheck client pod to its end and returns its log.
async fn client(c: &Cluster, name: &str, image: &str, args: &[&str]) -> String {
    c.create(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": image, "args": args}]},
    }))
    .await;
    let pod = wait_for(&c.pods, name, "finished", finished).await;
    node_logs(&c.node, pod["metadata"]["uid"].as_str().unwrap(), "main")
}

/// `calls ok=N failed=M by: a=1 b=2` → (ok, failed, counts by pod).
fn tally(log: &str) -> (usize, usize, Vec<(String, usize)>) {
    let line = log
        .lines()
        .find(|l| l.starts_with("calls "))
        .unwrap_or_else(|| panic!("no tally in {log}"));
    let number = |key: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    let by = line
        .split_once("by:")
        .map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    (number("ok="), number("failed="), by)
}

#[tokio::test]
async fn a_service_spreads_calls_by_name_over_its_ready_replicas_through_scaling_and_loss() {
    let (c, image, service_block) = service_cluster("svc-spread").await;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    create(&deployments, echo_deployment("echo", &image, 3)).await;
    let service = create(
        &services,
        json!({
            "metadata": {"name": "echo"},
            "spec": {"selector": {"app": "echo"}, "ports": [
                {"name": "tcp", "port": 80, "targetPort": "echo"},
                {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
            ]},
        }),
    )
    .await;
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
    let block: bosun_api::cidr::Ipv4Cidr = service_block.parse().unwrap();
    assert!(
        block.contains(cluster_ip.parse().unwrap()),
        "{cluster_ip} from {service_block}"
    );
    create(
        &services,
        json!({
            "metadata": {"name": "echo-pods"},
            "spec": {"clusterIP": "None", "selector": {"app": "echo"}, "ports": [{"port": 8080}]},
        }),
    )
    .await;
    let ready = until("3 ready endpoints", || async {
        let (ready, _) = endpoint_ips(&c, "echo").await;
        (ready.len() == 3).then_some(ready)
    })
    .await;
    // The slice says the same, with the named port resolved.
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let slice = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=echo"))
        .await
        .unwrap()
        .items;
    assert_eq!(slice.len(), 1, "{slice:?}");
    let ports: Vec<i32> = slice[0]
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.port)
        .collect();
    assert_eq!(ports, [8080, 5353]);

    // 300 calls by the Service's short name: every replica answers, none more than half.
    until_proxied(&c, "echo", 8080).await;
    let log = client(&c, "caller", &image, &["calls", "echo:80", "300"]).await;
    let (ok, failed, by) = tally(&log);
    assert_eq!((ok, failed), (300, 0), "{log}");
    assert_eq!(by.len(), 3, "{log}");
    assert!(by.iter().all(|(_, n)| *n <= 150), "{log}");

    // With ClientIP affinity, one client keeps its replica.
    create(
        &services,
        json!({
            "metadata": {"name": "sticky"},
            "spec": {"selector": {"app": "echo"}, "sessionAffinity": "ClientIP", "ports": [{"port": 80, "targetPort": 8080}]},
        }),
    )
    .await;
    until("the sticky Service's endpoints", || async {
        let (ready, _) = endpoint_ips(&c, "sticky").await;
        (ready.len() == 3).then_some(())
    })
    .await;
    until_proxied(&c, "sticky", 8080).await;
    let log = client(&c, "sticky-caller", &image, &["calls", "sticky:80", "30"]).await;
    let (ok, failed, by) = tally(&log);
    assert_eq!((ok, failed, by.len()), (30, 0, 1), "{log}");

    // Names: the full name gives the cluster IP, the headless one every pod's IP.
    let log = client(
        &c,
        "resolver",
        &image,
        &["resolve", "echo.default.svc.cluster.local"],
    )
    .await;
    assert!(log.contains(&format!("addresses: {cluster_ip}\n")), "{log}");
    let log = client(
        &c,
        "resolver-headless",
        &image,
        &["resolve", "echo-pods.default"],
    )
    .await;
    assert!(
        log.contains(&format!("addresses: {}\n", ready.join(" "))),
        "{log}"
    );
    // UDP through the same Service, by its environment variables.
    let log = client(
        &c,
        "udp",
        &image,
        &[
            "udp-call",
            "$(ECHO_SERVICE_HOST):$(ECHO_SERVICE_PORT_DNS)",
            "hi",
        ],
    )
    .await;
    assert!(log.contains("answer: pong hi from echo-"), "{log}");

    // Scale to one: once the endpoints say so, every call goes to the one left.
    deployments
        .patch(
            "echo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    until("1 endpoint", || async {
        let (ready, not_ready) = endpoint_ips(&c, "echo").await;
        (ready.len() == 1 && not_ready.is_empty()).then_some(())
    })
    .await;
    until_proxied(&c, "echo", 8080).await;
    let log = client(
        &c,
        "caller-one",
        &image,
        &["calls", "$(ECHO_SERVICE_HOST):$(ECHO_SERVICE_PORT)", "60"],
    )
    .await;
    let (ok, failed, by) = tally(&log);
    assert_eq!((ok, failed, by.len()), (60, 0, 1), "{log}");

    // Back to three, then one replica is killed: after the endpoints settle, no call fails.
    deployments
        .patch(
            "echo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let before = until("3 endpoints again", || async {
        let (ready, _) = endpoint_ips(&c, "echo").await;
        (ready.len() == 3).then_some(ready)
    })
    .await;
    // One of the three behind the Service (the pods scaled away may still be terminating).
    let victim = c
        .pods
        .list(&ListParams::default().labels("app=echo"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_some_and(|ip| before.contains(ip))
        })
        .unwrap();
    let victim_ip = victim.status.unwrap().pod_ip.unwrap();
    c.pods
        .delete(&victim.metadata.name.unwrap(), &DeleteParams::default())
        .await
        .unwrap();
    until("the replacement ready, the killed one gone", || async {
        let (ready, _) = endpoint_ips(&c, "echo").await;
        (ready.len() == 3 && !ready.contains(&victim_ip)).then_some(())
    })
    .await;
    until_proxied(&c, "echo", 8080).await;
    let log = client(
        &c,
        "caller-after",
        &image,
        &["calls", "echo.default.svc:80", "90"],
    )
    .await;
    let (ok, failed, by) = tally(&log);
    assert_eq!((ok, failed, by.len()), (90, 0, 3), "{log}");
}

#[tokio::test]
async fn a_pod_failing_readiness_leaves_the_endpoints_and_the_proxy() {
    let (c, image, _) = service_cluster("svc-ready").await;
    for (name, probe_path) in [("steady", "/ready"), ("flaky", "/live")] {
        c.create(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "web",
                "image": image,
                "args": ["http", "0.0.0.0:8080", "3"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": probe_path, "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
            }]},
        }))
        .await;
    }
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    create(
        &services,
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
    )
    .await;
    let pods = &c.pods;
    let ip_of = |name: &'static str| async move {
        let pod = pods.get(name).await.ok()?;
        pod.status?.pod_ip
    };
    let (steady, flaky) = until("both pods have IPs", || async {
        Some((ip_of("steady").await?, ip_of("flaky").await?))
    })
    .await;
    // The flaky pod is ready for its first three probes, then not.
    until("flaky not ready, steady ready", || async {
        let (ready, not_ready) = endpoint_ips(&c, "web").await;
        (ready == [steady.clone()] && not_ready == [flaky.clone()]).then_some(())
    })
    .await;
    // The EndpointSlice is written after the Endpoints: it follows.
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    until(
        "the EndpointSlice marks the flaky pod not ready",
        || async {
            let slice = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                .await
                .ok()?
                .items
                .pop()?;
            let readiness: Vec<(String, Option<bool>)> = slice
                .endpoints
                .iter()
                .map(|e| {
                    (
                        e.addresses[0].clone(),
                        e.conditions.as_ref().and_then(|c| c.ready),
                    )
                })
                .collect();
            readiness
                .contains(&(flaky.clone(), Some(false)))
                .then_some(())
        },
    )
    .await;
    // The node's rules send new connections only to the ready pod.
    until("the proxy leaving the flaky pod out", || async {
        (proxied(&c, 8080) == [steady.clone()]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cluster_ips_and_node_ports_are_allocated_once_and_load_balancers_get_node_addresses() {
    let (c, _, service_block) = service_cluster("svc-alloc").await;
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let prefix = service_block.trim_end_matches(".0/17");
    let wanted = format!("{prefix}.77");
    let first = create(
        &services,
        json!({"metadata": {"name": "first"}, "spec": {"clusterIP": wanted, "type": "NodePort", "ports": [{"port": 80, "nodePort": 30777}]}}),
    )
    .await;
    assert_eq!(
        first.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some(wanted.as_str())
    );
    let taken = |body: Value| {
        let services = services.clone();
        async move {
            let object: Service = serde_json::from_value(body).unwrap();
            match services.create(&PostParams::default(), &object).await {
                Err(kube::Error::Api(e)) => (e.code, e.message),
                other => panic!("{other:?}"),
            }
        }
    };
    let (code, message) = taken(json!({"metadata": {"name": "second"}, "spec": {"clusterIP": wanted, "ports": [{"port": 80}]}})).await;
    assert_eq!(code, 422);
    assert!(message.contains("already allocated"), "{message}");
    let (code, message) = taken(json!({"metadata": {"name": "third"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30777}]}})).await;
    assert_eq!(code, 422);
    assert!(
        message.contains("30777") && message.contains("already allocated"),
        "{message}"
    );
    let (code, message) = taken(json!({"metadata": {"name": "fourth"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}})).await;
    assert_eq!(code, 422);
    assert!(message.contains("not in the valid range"), "{message}");
    // Deleting the Service frees both at once.
    services
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    let again = create(
        &services,
        json!({"metadata": {"name": "again"}, "spec": {"clusterIP": wanted, "type": "NodePort", "ports": [{"port": 80, "nodePort": 30777}]}}),
    )
    .await;
    assert_eq!(
        again.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some(wanted.as_str())
    );
    // `kubectl replace` without the cluster IP keeps it; changing it is refused.
    let mut replaced = again.clone();
    replaced.spec.as_mut().unwrap().cluster_ip = None;
    replaced.spec.as_mut().unwrap().cluster_ips = None;
    replaced.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = None;
    let replaced = services
        .replace("again", &PostParams::default(), &replaced)
        .await
        .unwrap();
    let spec = replaced.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some(wanted.as_str()));
    assert_eq!(
        spec.ports.unwrap()[0].node_port,
        Some(30777),
        "the node port is kept"
    );
    let changed = services
        .patch(
            "again",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"clusterIP": format!("{prefix}.78")}})),
        )
        .await;
    assert!(matches!(changed, Err(kube::Error::Api(e)) if e.code == 422));

    // A LoadBalancer gets a node port and the node's address.
    create(
        &services,
        json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}}),
    )
    .await;
    let lb = until("the load balancer's ingress", || async {
        let lb = services.get("lb").await.ok()?;
        let ingress = lb
            .status
            .as_ref()?
            .load_balancer
            .as_ref()?
            .ingress
            .clone()?;
        (!ingress.is_empty()).then_some(lb)
    })
    .await;
    let ingress = lb.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("127.0.0.1"));
    let node_port = lb.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&node_port));
    // kubectl shows it as Kubernetes does.
    let table = c.server.kubectl(&["get", "service", "lb"]).unwrap();
    assert!(table.contains(&format!("443:{node_port}/TCP")), "{table}");
}

/// In-cluster access: the `kubernetes` Service in `default` has the service block's first
/// address and port 443, its endpoints are the API server's advertised address; every pod
/// (in any namespace, with service links or without) has `KUBERNETES_SERVICE_HOST` and
/// `KUBERNETES_SERVICE_PORT`; and from a pod's network namespace the Service's address reaches
/// the API, whose certificate names it, with the pod's own ServiceAccount token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_the_api_through_the_kubernetes_service_as_their_service_account() {
    let (pods, services) = own_blocks();
    let (c, image) = netcheck_cluster_with(
        "svc-kubernetes",
        &[
            "--cluster-cidr",
            &pods,
            "--service-cidr",
            &services,
            "--bind-address",
            "0.0.0.0",
        ],
    )
    .await;
    let first: std::net::Ipv4Addr = {
        let base: std::net::Ipv4Addr = services.split('/').next().unwrap().parse().unwrap();
        (u32::from(base) + 1).into()
    };
    let host = bosun_api::cluster::host_address().unwrap().to_string();
    let port: u16 = c.server.addr.rsplit(':').next().unwrap().parse().unwrap();
    let api: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let service = until("the kubernetes Service", || async {
        api.get_opt("kubernetes").await.unwrap()
    })
    .await;
    let spec = service.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some(first.to_string().as_str()));
    let ports = spec.ports.unwrap();
    assert_eq!(
        (ports[0].port, ports[0].name.as_deref()),
        (443, Some("https"))
    );
    until("the API server among the endpoints", || async {
        (endpoint_ips(&c, "kubernetes").await.0 == vec![host.clone()]).then_some(())
    })
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let slice = slices.get("kubernetes").await.unwrap();
    assert_eq!(slice.ports.unwrap()[0].port, Some(i32::from(port)));

    // The variables, in default and in a namespace with service links off.
    c.server
        .kubectl(&["create", "namespace", "elsewhere"])
        .unwrap();
    let log = client(
        &c,
        "sees-api",
        &image,
        &["resolve", "$(KUBERNETES_SERVICE_HOST)"],
    )
    .await;
    assert!(log.contains(&format!("addresses: {first}")), "{log}");
    let other: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(c.client.clone(), "elsewhere");
    let pod = json!({
        "metadata": {"name": "no-links"},
        "spec": {"restartPolicy": "Never", "enableServiceLinks": false, "containers": [{
            "name": "main", "image": image,
            "args": ["resolve", "$(KUBERNETES_SERVICE_HOST)"],
        }]},
    });
    // The namespace's default ServiceAccount comes from a controller moments after it.
    until("a pod in the new namespace", || async {
        let pod = serde_json::from_value(pod.clone()).unwrap();
        other.create(&PostParams::default(), &pod).await.ok()
    })
    .await;
    let done = wait_for(&other, "no-links", "finished", finished).await;
    let log = node_logs(&c.node, done["metadata"]["uid"].as_str().unwrap(), "main");
    assert!(log.contains(&format!("addresses: {first}")), "{log}");

    // From inside a pod, as its ServiceAccount (bound to `view` here).
    c.server.grant_default_account_view();
    c.create(json!({
        "metadata": {"name": "inside"},
        "spec": {"containers": [{"name": "main", "image": image,
                                 "args": ["listen", "0.0.0.0:8080"]}]},
    }))
    .await;
    let running = wait_for(&c.pods, "inside", "running", |p| {
        p["status"]["phase"] == "Running"
    })
    .await;
    let uid = running["metadata"]["uid"].as_str().unwrap();
    let volume = running["spec"]["volumes"][0]["name"].as_str().unwrap();
    let files = c
        .node
        .dir
        .path()
        .join("pods")
        .join(uid)
        .join("volumes/files")
        .join(volume);
    let script = "import json, ssl, sys, urllib.request\n\
        ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
        token = open(sys.argv[2]).read().strip()\n\
        req = urllib.request.Request(sys.argv[3], headers={'Authorization': 'Bearer ' + token})\n\
        try:\n    body = urllib.request.urlopen(req, context=ctx, timeout=5).read()\n    \
        print(' '.join(i['metadata']['name'] for i in json.loads(body)['items']))\n\
        except urllib.error.HTTPError as e:\n    print('status', e.code)\n";
    let call = |path: &str| {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("bosun-{uid}"),
                "python3",
                "-c",
                script,
            ])
            .arg(files.join("ca.crt"))
            .arg(files.join("token"))
            .arg(format!("https://{first}:443{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let listed = until("the API from the pod", || async {
        let out = call("/api/v1/namespaces/default/configmaps");
        out.contains("kube-root-ca.crt").then_some(out)
    })
    .await;
    assert!(
        listed.split(' ').any(|n| n == "kube-root-ca.crt"),
        "{listed}"
    );
    assert_eq!(
        call("/api/v1/namespaces/kube-system/configmaps"),
        "status 403"
    );
}
