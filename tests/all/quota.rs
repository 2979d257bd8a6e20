//! Resource limits per namespace: LimitRanges' defaults in the stored pod, their bounds
//! refused with upstream's messages, and invalid LimitRanges refused with field paths;
//! ResourceQuotas admitting exactly `hard` under concurrent creates on two servers, every
//! compute key and scope refusing with upstream's messages, and usage given back on deletion;
//! `bosun tenant`, whose user works in their namespace, within its quota, and nowhere else.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, ResourceQuota};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_default_and_bound_a_namespaces_pods() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::without_nodes(dir.path()).await;
    server.kubectl(&["create", "namespace", "team"]).unwrap();
    server.apply_yaml(
        dir.path(),
        "limits",
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: limits\n  namespace: team\nspec:\n  limits:\n  - type: Container\n    max: {memory: 512Mi}\n    min: {memory: 16Mi}\n    defaultRequest: {memory: 64Mi}\n    maxLimitRequestRatio: {memory: \"8\"}\n  - type: Pod\n    max: {memory: 1Gi}\n",
    )
    .unwrap();
    // The defaults LimitRange gives an item: the max is the default limit.
    let stored = server
        .kubectl(&[
            "get",
            "limitrange",
            "limits",
            "-n",
            "team",
            "-o",
            "jsonpath={.spec.limits[0].default.memory}",
        ])
        .unwrap();
    assert_eq!(stored, "512Mi");

    // A pod that sets nothing gets the defaults, and says so.
    server
        .kubectl(&[
            "run",
            "plain",
            "-n",
            "team",
            "--image=registry.invalid/app:v1",
        ])
        .unwrap();
    let pod: serde_json::Value = serde_json::from_str(
        &server
            .kubectl(&["get", "pod", "plain", "-n", "team", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["memory"], "512Mi", "{pod:#}");
    assert_eq!(resources["requests"]["memory"], "64Mi", "{pod:#}");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: memory request for container plain; memory limit for container plain"
    );

    // Over the max, under the min, a ratio too high: refused.
    let refused = |name: &str, resources: &str| {
        server.apply_yaml(
            dir.path(),
            name,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: team\nspec:\n  containers:\n  - name: a\n    image: registry.invalid/app:v1\n    resources: {resources}\n"
            ),
        )
        .unwrap_err()
    };
    let said = refused("big", "{limits: {memory: 1Gi}, requests: {memory: 512Mi}}");
    assert!(
        said.contains(r#"pods "big" is forbidden: maximum memory usage per Container is 512Mi, but limit is 1Gi"#),
        "{said}"
    );
    let said = refused("small", "{limits: {memory: 32Mi}, requests: {memory: 8Mi}}");
    assert!(
        said.contains(r#"pods "small" is forbidden: minimum memory usage per Container is 16Mi, but request is 8Mi"#),
        "{said}"
    );
    let said = refused(
        "spiky",
        "{limits: {memory: 512Mi}, requests: {memory: 32Mi}}",
    );
    assert!(
        said.contains(
            "memory max limit to request ratio per Container is 8, but provided ratio is 16.000000"
        ),
        "{said}"
    );
    assert!(
        server
            .kubectl(&["get", "pods", "-n", "team", "-o", "name"])
            .unwrap()
            .trim()
            == "pod/plain"
    );

    // An invalid LimitRange: a 422 with the field.
    let said = server.apply_yaml(
        dir.path(),
        "bad",
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: bad\n  namespace: team\nspec:\n  limits:\n  - type: Container\n    min: {cpu: \"2\"}\n    max: {cpu: \"1\"}\n",
    )
    .unwrap_err();
    assert!(
        said.contains(r#"spec.limits[0].min[cpu]: Invalid value: "2": min value 2 is greater than max value 1"#),
        "{said}"
    );
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/app:v1"}]}
    }))
    .unwrap()
}

/// The quota's `status.used` of `resource`, once the quota has one.
async fn used(quotas: &Api<ResourceQuota>, name: &str, resource: &str) -> Option<String> {
    let quota = quotas.get(name).await.ok()?;
    Some(quota.status?.used?.get(resource)?.0.clone())
}

async fn wait_used(quotas: &Api<ResourceQuota>, name: &str, resource: &str, want: &str) {
    bosun_testkit::eventually(
        &format!("quota {name} to use {want} {resource}"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { (used(quotas, name, resource).await.as_deref() == Some(want)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_on_two_servers_never_exceed_a_quota() {
    let db = crate::support::postgres_db().await;
    let extra = ["--disable-scheduler", "--resource-quota-sync-period", "1s"];
    let (first, dir) = crate::support::replica_with(&db, None, &extra).await;
    let (second, _dir_b) = crate::support::replica_with(&db, Some(dir.path()), &extra).await;
    let clients = [first.client().await, second.client().await];
    let namespaces: Api<Namespace> = Api::all(clients[0].clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    let quotas: Api<ResourceQuota> = Api::namespaced(clients[0].clone(), "team");
    quotas
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    // The controller counts the new quota; then each server charges one pod to it, which
    // shows both have seen it.
    wait_used(&quotas, "q", "pods", "0").await;
    for (i, client) in clients.iter().enumerate() {
        let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
        pods.create(&PostParams::default(), &pod(&format!("seen-{i}")))
            .await
            .unwrap();
        assert_eq!(
            used(&quotas, "q", "pods").await.unwrap(),
            (i + 1).to_string()
        );
    }

    // 48 creates at once, half through each server: exactly 8 more fit.
    let creates = (0..48).map(|i| {
        let pods: Api<Pod> = Api::namespaced(clients[i % 2].clone(), "team");
        async move {
            pods.create(&PostParams::default(), &pod(&format!("p-{i}")))
                .await
        }
    });
    let results = futures::future::join_all(creates).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 8, "{results:?}");
    for result in &results {
        if let Err(kube::Error::Api(status)) = result {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.ends_with(
                    "is forbidden: exceeded quota: q, requested: pods=1, used: pods=10, limited: pods=10"
                ),
                "{}",
                status.message
            );
        }
    }
    let pods: Api<Pod> = Api::namespaced(clients[1].clone(), "team");
    assert_eq!(
        pods.list(&Default::default()).await.unwrap().items.len(),
        10
    );
    assert_eq!(used(&quotas, "q", "pods").await.unwrap(), "10");

    // Deletions give the quota back, and exactly that much can be used again.
    for name in ["seen-0", "seen-1", "p-0"] {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    let remaining = pods.list(&Default::default()).await.unwrap().items.len();
    wait_used(&quotas, "q", "pods", &remaining.to_string()).await;
    let refill = (0..(10 - remaining) + 2).map(|i| {
        let pods: Api<Pod> = Api::namespaced(clients[i % 2].clone(), "team");
        async move {
            pods.create(&PostParams::default(), &pod(&format!("again-{i}")))
                .await
        }
    });
    let again = futures::future::join_all(refill).await;
    assert_eq!(again.iter().filter(|r| r.is_ok()).count(), 10 - remaining);
    assert_eq!(used(&quotas, "q", "pods").await.unwrap(), "10");
    assert_eq!(
        pods.list(&Default::default()).await.unwrap().items.len(),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_compute_and_scoped_pods_as_upstream_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::without_nodes(dir.path()).await;
    server.kubectl(&["create", "namespace", "team"]).unwrap();
    let client = server.client().await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "team");
    server.apply_yaml(
        dir.path(),
        "compute",
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: compute\n  namespace: team\nspec:\n  hard: {requests.cpu: \"1\", requests.memory: 256Mi, limits.cpu: \"2\", limits.memory: 256Mi}\n",
    )
    .unwrap();
    wait_used(&quotas, "compute", "limits.memory", "0").await;
    let pod_with = |name: &str, resources: &str, extra: &str| {
        server.apply_yaml(
            dir.path(),
            name,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: team\nspec:\n{extra}  containers:\n  - name: a\n    image: registry.invalid/app:v1\n    resources: {resources}\n"
            ),
        )
    };
    let said = pod_with("bare", "{}", "").unwrap_err();
    assert!(
        said.contains(r#"pods "bare" is forbidden: failed quota: compute: must specify limits.cpu,limits.memory,requests.cpu,requests.memory"#),
        "{said}"
    );
    let sized = "{requests: {cpu: 500m, memory: 128Mi}, limits: {cpu: \"1\", memory: 128Mi}}";
    pod_with("one", sized, "").unwrap();
    pod_with("two", sized, "").unwrap();
    let said = pod_with("three", sized, "").unwrap_err();
    assert!(
        said.contains(r#"pods "three" is forbidden: exceeded quota: compute, requested: limits.cpu=1,limits.memory=128Mi,requests.cpu=500m,requests.memory=128Mi, used: limits.cpu=2,limits.memory=256Mi,requests.cpu=1,requests.memory=256Mi, limited: limits.cpu=2,limits.memory=256Mi,requests.cpu=1,requests.memory=256Mi"#),
        "{said}"
    );
    let described = server
        .kubectl(&["describe", "quota", "compute", "-n", "team"])
        .unwrap();
    let row = described
        .lines()
        .find(|l| l.starts_with("requests.memory"))
        .unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["requests.memory", "256Mi", "256Mi"],
        "{described}"
    );

    // A LimitRange's defaults fill what the quota requires.
    server
        .kubectl(&["create", "namespace", "defaults"])
        .unwrap();
    server.apply_yaml(
        dir.path(),
        "defaults",
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: limits\n  namespace: defaults\nspec:\n  limits:\n  - type: Container\n    default: {memory: 64Mi}\n    defaultRequest: {memory: 32Mi}\n---\napiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: memory\n  namespace: defaults\nspec:\n  hard: {requests.memory: 100Mi}\n",
    )
    .unwrap();
    let memory: Api<ResourceQuota> = Api::namespaced(client.clone(), "defaults");
    wait_used(&memory, "memory", "requests.memory", "0").await;
    server
        .kubectl(&[
            "run",
            "filled",
            "-n",
            "defaults",
            "--image=registry.invalid/app:v1",
        ])
        .unwrap();
    assert_eq!(
        used(&memory, "memory", "requests.memory").await.unwrap(),
        "32Mi"
    );

    // Scopes: BestEffort pods, Terminating pods and one priority class each have their own
    // count; a pod outside a scope is not counted by it.
    server.kubectl(&["create", "namespace", "scoped"]).unwrap();
    server.apply_yaml(
        dir.path(),
        "scoped",
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: best-effort\n  namespace: scoped\nspec:\n  hard: {pods: \"1\"}\n  scopes: [BestEffort]\n---\napiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: terminating\n  namespace: scoped\nspec:\n  hard: {pods: \"1\"}\n  scopes: [Terminating, NotBestEffort]\n---\napiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: high\n  namespace: scoped\nspec:\n  hard: {pods: \"0\"}\n  scopeSelector:\n    matchExpressions: [{scopeName: PriorityClass, operator: In, values: [high]}]\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: high\nvalue: 1000\n",
    )
    .unwrap();
    let scoped: Api<ResourceQuota> = Api::namespaced(client.clone(), "scoped");
    for name in ["best-effort", "terminating", "high"] {
        wait_used(&scoped, name, "pods", "0").await;
    }
    let in_scoped = |name: &str, resources: &str, extra: &str| {
        server.apply_yaml(
            dir.path(),
            name,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: scoped\nspec:\n{extra}  containers:\n  - name: a\n    image: registry.invalid/app:v1\n    resources: {resources}\n"
            ),
        )
    };
    in_scoped("free-1", "{}", "").unwrap();
    let said = in_scoped("free-2", "{}", "").unwrap_err();
    assert!(
        said.contains(r#"pods "free-2" is forbidden: exceeded quota: best-effort, requested: pods=1, used: pods=1, limited: pods=1"#),
        "{said}"
    );
    let sized = "{requests: {memory: 16Mi}}";
    in_scoped("sized-1", sized, "").unwrap();
    in_scoped("sized-2", sized, "").unwrap();
    in_scoped("deadline-1", sized, "  activeDeadlineSeconds: 60\n").unwrap();
    let said = in_scoped("deadline-2", sized, "  activeDeadlineSeconds: 60\n").unwrap_err();
    assert!(
        said.contains(
            "exceeded quota: terminating, requested: pods=1, used: pods=1, limited: pods=1"
        ),
        "{said}"
    );
    let said = in_scoped("urgent", sized, "  priorityClassName: high\n").unwrap_err();
    assert!(
        said.contains("exceeded quota: high, requested: pods=1, used: pods=0, limited: pods=0"),
        "{said}"
    );

    // Object counts, and a Service's node ports.
    server.apply_yaml(
        dir.path(),
        "objects",
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: objects\n  namespace: scoped\nspec:\n  hard: {configmaps: \"2\", services.nodeports: \"1\", count/deployments.apps: \"0\"}\n",
    )
    .unwrap();
    wait_used(&scoped, "objects", "services.nodeports", "0").await;
    let said = server
        .kubectl(&[
            "create",
            "service",
            "nodeport",
            "two",
            "-n",
            "scoped",
            "--tcp=80:80",
            "--tcp=443:443",
        ])
        .unwrap_err();
    assert!(
        said.contains(r#"services "two" is forbidden: exceeded quota: objects, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1"#),
        "{said}"
    );
    // A type change is charged too.
    server
        .kubectl(&[
            "create",
            "service",
            "clusterip",
            "one",
            "-n",
            "scoped",
            "--tcp=80:80",
            "--tcp=81:81",
        ])
        .unwrap();
    let said = server
        .kubectl(&[
            "patch",
            "service",
            "one",
            "-n",
            "scoped",
            "-p",
            r#"{"spec":{"type":"NodePort"}}"#,
        ])
        .unwrap_err();
    assert!(
        said.contains(r#"services "one" is forbidden: exceeded quota: objects, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1"#),
        "{said}"
    );
    let said = server
        .kubectl(&[
            "create",
            "deployment",
            "web",
            "-n",
            "scoped",
            "--image=registry.invalid/app:v1",
        ])
        .unwrap_err();
    assert!(
        said.contains(r#"deployments.apps "web" is forbidden: exceeded quota: objects, requested: count/deployments.apps=1, used: count/deployments.apps=0, limited: count/deployments.apps=0"#),
        "{said}"
    );
    // The namespace's ServiceAccount CA ConfigMap counts already.
    wait_used(&scoped, "objects", "configmaps", "1").await;
    server
        .kubectl(&["create", "configmap", "a", "-n", "scoped"])
        .unwrap();
    let said = server
        .kubectl(&["create", "configmap", "b", "-n", "scoped"])
        .unwrap_err();
    assert!(said.contains("exceeded quota: objects, requested: configmaps=1, used: configmaps=2, limited: configmaps=2"), "{said}");

    // Bad quotas: a 422 with the field.
    let said = server.apply_yaml(
        dir.path(),
        "bad-quota",
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: bad\n  namespace: team\nspec:\n  hard: {pods: lots, services: \"-1\"}\n  scopes: [Sometimes]\n",
    )
    .unwrap_err();
    for expected in [
        r#"spec.hard[pods]: Invalid value: "lots": quantities must match"#,
        r#"spec.hard[services]: Invalid value: "-1": must be greater than or equal to 0"#,
        r#"spec.scopes[0]: Unsupported value: "Sometimes""#,
    ] {
        assert!(said.contains(expected), "{expected}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_in_one_command_works_in_its_namespace_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::without_nodes(dir.path()).await;
    let bosun = |args: &[&str]| {
        let mut command = std::process::Command::new(crate::support::BOSUN);
        command.env("KUBECONFIG", &server.kubeconfig).args(args);
        crate::support::run(command)
    };
    let alice = dir.path().join("alice.kubeconfig");
    let said = bosun(&[
        "tenant",
        "create",
        "team-a",
        "--user",
        "alice",
        "--pods",
        "2",
        "--cpu",
        "1",
        "--memory",
        "256Mi",
        "--kubeconfig-out",
        alice.to_str().unwrap(),
    ])
    .unwrap();
    assert!(said.contains("kubeconfig for alice written to"), "{said}");
    // Everything it made is plain, labelled objects.
    let made = server
        .kubectl(&[
            "get",
            "namespace,rolebinding,resourcequota,limitrange,networkpolicy",
            "-A",
            "-l",
            "bosun.dev/tenant=team-a",
            "-o",
            "name",
        ])
        .unwrap();
    let mut made: Vec<&str> = made.lines().collect();
    made.sort();
    assert_eq!(
        made,
        [
            "limitrange/tenant-defaults",
            "namespace/team-a",
            "networkpolicy.networking.k8s.io/tenant-isolation",
            "resourcequota/tenant",
            "rolebinding.rbac.authorization.k8s.io/tenant-admin",
        ]
    );

    let as_alice = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .env("KUBECONFIG", &alice)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match out.status.success() {
            true => Ok(text),
            false => Err(text),
        }
    };
    // Her namespace is her context's: she works there, with the LimitRange's defaults filling
    // what the quota asks pods to state, and the quota bounding her.
    as_alice(&["create", "configmap", "settings"]).unwrap();
    as_alice(&["run", "one", "--image=registry.invalid/app:v1"]).unwrap();
    as_alice(&["run", "two", "--image=registry.invalid/app:v1"]).unwrap();
    let said = as_alice(&["run", "three", "--image=registry.invalid/app:v1"]).unwrap_err();
    assert!(
        said.contains(r#"pods "three" is forbidden: exceeded quota: tenant, requested: limits.cpu=500m,limits.memory=128Mi,pods=1, used: limits.cpu=1,limits.memory=256Mi,pods=2, limited: limits.cpu=1,limits.memory=256Mi,pods=2"#),
        "{said}"
    );
    // And nowhere else.
    let said = as_alice(&["get", "pods", "-n", "default"]).unwrap_err();
    assert!(
        said.contains(
            r#"User "alice" cannot list resource "pods" in API group "" in the namespace "default""#
        ),
        "{said}"
    );
    let said = as_alice(&["create", "namespace", "mine"]).unwrap_err();
    assert!(said.contains("forbidden"), "{said}");

    let listed = bosun(&["tenant", "list"]).unwrap();
    let row: Vec<&str> = listed
        .lines()
        .find(|l| l.starts_with("team-a"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row, ["team-a", "2/2", "200m/1", "128Mi/256Mi"], "{listed}");

    // Bad input says what is wrong and makes nothing.
    let said = bosun(&["tenant", "create", "Team_B", "--user", "bob"]).unwrap_err();
    assert!(
        said.contains("a tenant's name is its namespace's"),
        "{said}"
    );
    let said = bosun(&["tenant", "create", "team-b"]).unwrap_err();
    assert!(said.contains("--user or --group"), "{said}");
    let said = bosun(&[
        "tenant", "create", "team-b", "--user", "bob", "--memory", "lots",
    ])
    .unwrap_err();
    assert!(said.contains("--memory"), "{said}");
    assert!(server.kubectl(&["get", "namespace", "team-b"]).is_err());
}

/// A Function whose replicas a quota refuses says so in a condition (its Deployment's
/// `ReplicaFailure`, from its ReplicaSet's), with the quota's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_a_quota_stops_says_so_in_a_condition() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::without_nodes(dir.path()).await;
    server.kubectl(&["create", "namespace", "small"]).unwrap();
    server.apply_yaml(
        dir.path(),
        "small",
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: one-pod\n  namespace: small\nspec:\n  hard: {pods: \"1\"}\n---\napiVersion: serving.bosun.dev/v1\nkind: Function\nmetadata:\n  name: hello\n  namespace: small\nspec:\n  template:\n    spec:\n      containers: [{name: fn, image: registry.invalid/hello:v1}]\n  scale: {min: 2}\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let condition = loop {
        let function: serde_json::Value = serde_json::from_str(
            &server
                .kubectl(&["get", "function", "hello", "-n", "small", "-o", "json"])
                .unwrap(),
        )
        .unwrap();
        let found = function["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "ReplicaFailure")
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ReplicaFailure condition: {function:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "QuotaExceeded");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message
            .contains("exceeded quota: one-pod, requested: pods=1, used: pods=1, limited: pods=1"),
        "{message}"
    );
    // One pod runs, as the quota allows.
    let pods = server
        .kubectl(&["get", "pods", "-n", "small", "-o", "name"])
        .unwrap();
    assert_eq!(pods.lines().count(), 1, "{pods}");
}
