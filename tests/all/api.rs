//! End-to-end tests through the Kubernetes API of a real `bosun server`: durability of
//! acknowledged writes across `kill -9`, watches across servers sharing one PostgreSQL, and
//! the real kubectl.

use std::process::Command;
use std::time::Duration;

use crate::support::{Server, https_client, postgres_db};
use serde_json::{Value, json};

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(server: &Server) -> Self {
        Self {
            client: https_client(&server.ca_pem()),
            base: server.url(""),
            token: server.token(),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"n": name}})
}

/// Writes until the server dies under `kill -9`; after a restart every write that got a 201
/// is there.
async fn acknowledged_writes_survive_kill_9(args: &[&str]) {
    let server_args: Vec<&str> = args.to_vec();
    let mut server = Server::start(&server_args).await;
    let api = Api::new(&server);
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for n in 0..1_000_000 {
            let name = format!("c{n}");
            match api
                .post("/api/v1/namespaces/default/configmaps", &configmap(&name))
                .await
            {
                Ok(r) if r.status() == 201 => {
                    acked.push(name);
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(r) => panic!(
                    "unexpected answer {}: {}",
                    r.status(),
                    r.text().await.unwrap()
                ),
                Err(_) => break,
            }
        }
        acked
    });
    // Kill it mid-stream: once writes are flowing (how fast they flow is not this test's
    // business; a loaded machine is slow).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while count.load(std::sync::atomic::Ordering::Relaxed) <= 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writes never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let acked = writer.await.unwrap();

    let server = Server::start(&server_args).await;
    let api = Api::new(&server);
    let list = api.get("/api/v1/namespaces/default/configmaps").await;
    let stored: std::collections::HashSet<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|n| !stored.contains(n.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    acknowledged_writes_survive_kill_9(&["--data-dir", dir.path().to_str().unwrap()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = postgres_db().await;
    acknowledged_writes_survive_kill_9(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--datastore-endpoint",
        &url,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_server_is_watched_through_another() {
    let url = postgres_db().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(&[
        "--data-dir",
        dir_a.path().to_str().unwrap(),
        "--datastore-endpoint",
        &url,
    ])
    .await;
    let token = std::fs::read_to_string(dir_a.path().join("token")).unwrap();
    let b = Server::start(&[
        "--data-dir",
        dir_b.path().to_str().unwrap(),
        "--datastore-endpoint",
        &url,
        "--token",
        token.trim(),
    ])
    .await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let list = api_b.get("/api/v1/namespaces/default/configmaps").await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = api_b
        .client
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}",
            api_b.base
        ))
        .bearer_auth(&api_b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let created = api_a
        .post(
            "/api/v1/namespaces/default/configmaps",
            &configmap("shared"),
        )
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let started = std::time::Instant::now();
    let mut buffer = Vec::new();
    // The first event about "shared" (the namespace's `kube-root-ca.crt`, written by the
    // controllers, may come before it).
    let event: Value = 'found: loop {
        let chunk = tokio::time::timeout(Duration::from_secs(5), watch.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("stream open");
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let event: Value = serde_json::from_slice(&buffer[..end]).unwrap();
            buffer.drain(..=end);
            if event["object"]["metadata"]["name"] == "shared" {
                break 'found event;
            }
        }
    };
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "shared");
    eprintln!("cross-server watch delivery took {:?}", started.elapsed());
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_the_basics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    let k = |args: &[&str]| kubectl(&server.kubeconfig, args);
    let version = k(&["version"]);
    assert!(version.contains("Server Version: v1.33"), "{version}");
    // Aggregated discovery: /api and /apis say everything, no group version is asked for.
    let cache = dir.path().join("kube-cache");
    let out = Command::new("kubectl")
        .env("KUBECONFIG", &server.kubeconfig)
        .args([
            "get",
            "deploy",
            "-v=6",
            "--cache-dir",
            cache.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(trace.contains("/apis?timeout"), "{trace}");
    assert!(!trace.contains("/apis/apps/v1?timeout"), "{trace}");
    let namespaces = k(&["get", "namespaces"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.contains(ns), "{namespaces}");
    }
    let manifest = dir.path().join("app.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, labels: {tier: front}}\ndata: {a: \"1\"}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  \
         template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: app, image: \"reg/web:v1\", env: [{name: A, value: \"1\"}, {name: B, value: \"2\"}]}\n",
    )
    .unwrap();
    // kubectl's default --validate=strict reads the OpenAPI documents.
    let applied = k(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        applied.contains("configmap/cfg created")
            && applied.contains("deployment.apps/web created"),
        "{applied}"
    );
    let again = k(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(again.contains("configmap/cfg unchanged"), "{again}");
    let misspelt = dir.path().join("misspelt.yaml");
    std::fs::write(
        &misspelt,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo}\ndta: {a: b}\n",
    )
    .unwrap();
    let refused = server
        .kubectl(&["apply", "-f", misspelt.to_str().unwrap()])
        .unwrap_err();
    assert!(refused.contains(r#"unknown field "dta""#), "{refused}");
    assert!(server.kubectl(&["get", "cm", "typo"]).is_err());
    let explained = k(&["explain", "deploy.spec.strategy"]);
    assert!(
        explained.contains("FIELD: strategy <DeploymentStrategy>")
            && explained.contains("rollingUpdate")
            && explained.contains(r#"Can be "Recreate" or "RollingUpdate""#),
        "{explained}"
    );
    let pod_spec = k(&["explain", "pod.spec"]);
    assert!(
        pod_spec.contains("containers\t<[]Container> -required-"),
        "{pod_spec}"
    );
    assert!(k(&["get", "cm", "-l", "tier=front", "-o", "name"]).contains("configmap/cfg"));
    // Only the namespace's CA ConfigMap has no `tier=front`.
    assert!(
        k(&["get", "cm", "-l", "tier!=front", "-o", "name"])
            .lines()
            .all(|l| l == "configmap/kube-root-ca.crt")
    );
    let wide = k(&["get", "deploy", "-o", "wide"]);
    assert!(
        wide.contains("reg/web:v1") && wide.contains("app=web"),
        "{wide}"
    );
    k(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":"B","value":"20"}]}]}}}}"#,
    ]);
    let env = k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[*].value}",
    ]);
    assert_eq!(
        env, "1 20",
        "a strategic patch of one env entry keeps the others"
    );
    k(&["scale", "deploy", "web", "--replicas=4"]);
    assert_eq!(
        k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    k(&["label", "cm", "cfg", "extra=yes"]);
    assert!(k(&["get", "cm", "cfg", "--show-labels"]).contains("extra=yes"));
    k(&["delete", "-f", manifest.to_str().unwrap()]);
    // What is left is the namespace's CA ConfigMap, as in any Kubernetes namespace.
    let left = k(&["get", "cm", "-o", "name"]);
    assert!(
        left.lines().all(|l| l == "configmap/kube-root-ca.crt"),
        "{left}"
    );
}

/// What is wrong, method, path, content type, body, expected code, expected message part.
type BadRequest = (
    &'static str,
    reqwest::Method,
    String,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
);

/// Bad input gets a 4xx `Status` with a clear message, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_status_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing else writes (no scheduler, no controllers, no `kubernetes` Service upkeep: the
    // ClusterRole aggregation and the Leases would), so the store's revision shows whether a
    // bad request wrote anything.
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--disable-scheduler",
        "--disable-controllers",
        "*",
        "--endpoint-reconciler-type",
        "none",
    ])
    .await;
    let api = Api::new(&server);
    let path = "/api/v1/namespaces/default/configmaps";
    let before = api.get(path).await["metadata"]["resourceVersion"].clone();
    let send = |method: reqwest::Method, url: String, content_type: &'static str, body: Vec<u8>| {
        api.client
            .request(method, format!("{}{url}", api.base))
            .bearer_auth(&api.token)
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<BadRequest> = vec![
        (
            "malformed JSON",
            reqwest::Method::POST,
            path.into(),
            "application/json",
            b"{\"metadata\": {".to_vec(),
            400,
            "invalid JSON",
        ),
        (
            "malformed YAML",
            reqwest::Method::POST,
            path.into(),
            "application/yaml",
            b"metadata: [unclosed".to_vec(),
            400,
            "invalid YAML",
        ),
        (
            "not an object",
            reqwest::Method::POST,
            path.into(),
            "application/json",
            b"[1, 2]".to_vec(),
            400,
            "must be an object",
        ),
        (
            "wrong kind",
            reqwest::Method::POST,
            path.into(),
            "application/json",
            br#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}"#.to_vec(),
            400,
            "does not match the expected kind",
        ),
        (
            "wrong apiVersion",
            reqwest::Method::POST,
            path.into(),
            "application/json",
            br#"{"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}}"#
                .to_vec(),
            400,
            "does not match the expected API version",
        ),
        (
            "invalid name",
            reqwest::Method::POST,
            path.into(),
            "application/json",
            br#"{"metadata": {"name": "Not_Valid"}}"#.to_vec(),
            422,
            "metadata.name",
        ),
        (
            "unknown field under Strict",
            reqwest::Method::POST,
            format!("{path}?fieldValidation=Strict"),
            "application/json",
            br#"{"metadata": {"name": "x"}, "dataa": {}}"#.to_vec(),
            400,
            "unknown field \"dataa\"",
        ),
        (
            "wrong field type",
            reqwest::Method::POST,
            path.into(),
            "application/json",
            br#"{"metadata": {"name": "x"}, "data": {"a": 1}}"#.to_vec(),
            400,
            "cannot be handled as a ConfigMap",
        ),
        (
            "body over 3 MiB",
            reqwest::Method::POST,
            path.into(),
            "application/json",
            format!(
                r#"{{"metadata": {{"name": "big"}}, "data": {{"a": "{}"}}}}"#,
                "x".repeat(4 << 20)
            )
            .into_bytes(),
            413,
            "larger than",
        ),
        (
            "unknown resource",
            reqwest::Method::POST,
            "/api/v1/namespaces/default/widgets".into(),
            "application/json",
            b"{}".to_vec(),
            404,
            "could not find",
        ),
        (
            "missing namespace",
            reqwest::Method::POST,
            "/api/v1/namespaces/nope/configmaps".into(),
            "application/json",
            br#"{"metadata": {"name": "x"}}"#.to_vec(),
            404,
            "namespaces \"nope\" not found",
        ),
        (
            "bad label selector",
            reqwest::Method::GET,
            format!("{path}?labelSelector=a%20in%20b"),
            "application/json",
            Vec::new(),
            400,
            "invalid label selector",
        ),
        (
            "unsupported field selector",
            reqwest::Method::GET,
            format!("{path}?fieldSelector=spec.nodeName%3Dx"),
            "application/json",
            Vec::new(),
            400,
            "field label not supported",
        ),
    ];
    for (what, method, url, content_type, body, code, message) in cases {
        let response = send(method, url, content_type, body).await.unwrap();
        assert_eq!(response.status().as_u16(), code, "{what}");
        let status: Value = response.json().await.unwrap();
        assert_eq!(status["kind"], "Status", "{what}");
        assert_eq!(status["code"], code, "{what}");
        let text = status["message"].as_str().unwrap();
        assert!(text.contains(message), "{what}: {text}");
    }

    // A patch that does not apply changes nothing either.
    let created = api.post(path, &configmap("target")).await.unwrap();
    assert_eq!(created.status(), 201);
    let after_create = api.get(path).await["metadata"]["resourceVersion"].clone();
    let response = send(
        reqwest::Method::PATCH,
        format!("{path}/target"),
        "application/json-patch+json",
        br#"[{"op": "remove", "path": "/data/missing"}]"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 422);
    let response = send(
        reqwest::Method::PATCH,
        format!("{path}/target"),
        "text/plain",
        b"x".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(
        api.get(path).await["metadata"]["resourceVersion"],
        after_create
    );
    assert_ne!(before, after_create);
    let unauthenticated = api
        .client
        .get(format!("{}{path}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_owns_fields_and_reports_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    let k = |args: &[&str]| kubectl(&server.kubeconfig, args);
    let manifest = |replicas: u32, env_b: bool| {
        let b = if env_b {
            ", {name: B, value: \"2\"}"
        } else {
            ""
        };
        let path = dir.path().join(format!("ssa-{replicas}-{env_b}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: ssa}}\nspec:\n  replicas: {replicas}\n  \
                 selector: {{matchLabels: {{app: ssa}}}}\n  template:\n    metadata: {{labels: {{app: ssa}}}}\n    \
                 spec:\n      containers:\n      - {{name: app, image: \"reg/x:v1\", env: [{{name: A, value: \"1\"}}{b}]}}\n"
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let first = manifest(2, true);
    assert!(k(&["apply", "--server-side", "-f", &first]).contains("serverside-applied"));
    let managers = k(&[
        "get",
        "deploy",
        "ssa",
        "-o",
        "jsonpath={.metadata.managedFields[?(@.operation==\"Apply\")].manager}",
    ]);
    // (The Deployment controller's writes are Update entries of bosun-server's.)
    assert_eq!(managers, "kubectl");

    // Another manager setting replicas differently conflicts, and changes nothing.
    let theirs = manifest(4, true);
    let refused = server
        .kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=other",
            "-f",
            &theirs,
        ])
        .unwrap_err();
    assert!(
        refused.contains(r#"conflict with "kubectl": .spec.replicas"#),
        "{refused}"
    );
    assert_eq!(
        k(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
    k(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        &theirs,
    ]);
    assert_eq!(
        k(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );

    // kubectl stops applying env B: B stays, because "other" applied it too; then "other"
    // drops it as well and it goes.
    k(&["apply", "--server-side", "-f", &manifest(4, false)]);
    let env = |k: &dyn Fn(&[&str]) -> String| {
        k(&[
            "get",
            "deploy",
            "ssa",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[*].name}",
        ])
    };
    assert_eq!(env(&k), "A B");
    k(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &manifest(4, false),
    ]);
    assert_eq!(env(&k), "A");
    // A client-side write keeps the ownership records, and adds its own: an Update entry of
    // the fields it changed.
    k(&["label", "deploy", "ssa", "touched=yes"]);
    let entries = || {
        k(&[
            "get",
            "deploy",
            "ssa",
            "-o",
            "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation}/{.subresource} {end}",
        ])
    };
    let listed = entries();
    for entry in [
        "kubectl/Apply/",
        "other/Apply/",
        "kubectl-label/Update/",
        "bosun-server/Update/status",
    ] {
        assert!(listed.split(' ').any(|e| e == entry), "{entry}: {listed}");
    }

    // `kubectl scale` takes replicas over (through /scale); applying other replicas then
    // conflicts with it, until forced.
    k(&["scale", "deploy", "ssa", "--replicas=7"]);
    assert!(entries().contains("/Update/scale"), "{}", entries());
    let refused = server
        .kubectl(&["apply", "--server-side", "-f", &manifest(4, false)])
        .unwrap_err();
    assert!(
        refused.contains("using apps/v1: .spec.replicas"),
        "{refused}"
    );
    assert_eq!(
        k(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]),
        "7"
    );
    k(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &manifest(4, false),
    ]);
    assert_eq!(
        k(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    assert!(!entries().contains("/Update/scale"), "{}", entries());

    // From client-side to server-side apply, as Kubernetes allows: what `kubectl apply` set
    // passes to kubectl's server-side apply without a conflict.
    let cm = |a: &str| {
        let path = dir.path().join(format!("cm-{a}.yaml"));
        std::fs::write(
            &path,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: upgraded}}\ndata: {{a: \"{a}\", b: \"2\"}}\n"),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    k(&["apply", "-f", &cm("1")]);
    assert!(k(&["apply", "--server-side", "-f", &cm("3")]).contains("serverside-applied"));
    assert_eq!(
        k(&["get", "cm", "upgraded", "-o", "jsonpath={.data.a}"]),
        "3"
    );
}

/// Every field of `expected` is in `actual` with the same value (the server adds defaults).
fn contains(expected: &serde_json::Value, actual: &serde_json::Value, path: &str) -> Vec<String> {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .filter(|(_, v)| !v.is_null() && *v != &serde_json::json!({}))
            .flat_map(|(k, v)| match a.get(k) {
                Some(av) => contains(v, av, &format!("{path}.{k}")),
                None => vec![format!("{path}.{k} is missing")],
            })
            .collect(),
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .flat_map(|(i, (x, y))| contains(x, y, &format!("{path}[{i}]")))
            .collect(),
        _ if expected == actual => vec![],
        _ => vec![format!("{path}: {expected} != {actual}")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_generators_send_protobuf_and_every_field_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    let k = |args: &[&str]| kubectl(&server.kubeconfig, args);
    // (what to create, how to read it back): kubectl's own JSON of the object
    // (--dry-run=client -o json) is the oracle for what the protobuf body carried.
    let commands: &[(&[&str], &str)] = &[
        (&["create", "namespace", "shop"], "namespace/shop"),
        (
            &[
                "create",
                "configmap",
                "cfg",
                "--from-literal=a=1",
                "--from-literal=b=two",
            ],
            "configmap/cfg",
        ),
        (
            &[
                "create",
                "secret",
                "generic",
                "sec",
                "--from-literal=password=hunter2",
            ],
            "secret/sec",
        ),
        (
            &[
                "create",
                "deployment",
                "web",
                "--image=reg/web:v1",
                "--replicas=2",
                "--port=8080",
            ],
            "deployment/web",
        ),
        (
            &[
                "autoscale",
                "deployment",
                "web",
                "--min=2",
                "--max=5",
                "--cpu-percent=80",
            ],
            "hpa/web",
        ),
        (
            &["create", "job", "j", "--image=reg/x:v1", "--", "run", "now"],
            "job/j",
        ),
        (
            &[
                "create",
                "cronjob",
                "c",
                "--image=reg/x:v1",
                "--schedule=*/5 * * * *",
            ],
            "cronjob/c",
        ),
        (
            &["create", "service", "nodeport", "np", "--tcp=80:8080"],
            "service/np",
        ),
        (
            &["create", "serviceaccount", "robot"],
            "serviceaccount/robot",
        ),
        (
            &[
                "create",
                "quota",
                "q",
                "--hard=pods=10,requests.cpu=2,requests.memory=1Gi",
                "--scopes=NotTerminating",
            ],
            "resourcequota/q",
        ),
        (
            &["create", "role", "r", "--verb=get,list", "--resource=pods"],
            "role/r",
        ),
        (
            &[
                "create",
                "rolebinding",
                "rb",
                "--role=r",
                "--serviceaccount=default:robot",
            ],
            "rolebinding/rb",
        ),
        (
            &[
                "create",
                "clusterrolebinding",
                "crb",
                "--clusterrole=view",
                "--user=alice",
            ],
            "clusterrolebinding/crb",
        ),
    ];
    for (command, object) in commands {
        // The flags go before a `--` (after it they are the container's arguments).
        let mut dry = command.to_vec();
        let at = dry.iter().position(|a| *a == "--").unwrap_or(dry.len());
        dry.splice(at..at, ["--dry-run=client", "-o", "json"]);
        let expected: serde_json::Value = serde_json::from_str(&k(&dry)).unwrap();
        k(command);
        let actual: serde_json::Value =
            serde_json::from_str(&k(&["get", object, "-o", "json"])).unwrap();
        let mut expected = expected;
        expected.as_object_mut().unwrap().remove("status");
        let missing = contains(&expected, &actual, "");
        assert!(missing.is_empty(), "{object}: {missing:?}\n{actual:#}");
    }
    k(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    assert_eq!(
        k(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}"
        ]),
        "8080"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubectl_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    kubectl_suite(&server, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubectl_suite_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = postgres_db().await;
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--datastore-endpoint",
        &url,
    ])
    .await;
    kubectl_suite(&server, dir.path()).await;
}

/// What a kubectl user does day to day, in one namespace, with the kubectl on this machine.
async fn kubectl_suite(server: &Server, dir: &std::path::Path) {
    let k = |args: &[&str]| {
        let mut all = vec!["-n", "suite"];
        all.extend(args);
        kubectl(&server.kubeconfig, &all)
    };
    assert_eq!(
        k(&["create", "namespace", "suite"]),
        "namespace/suite created\n"
    );

    let manifest = |color: &str| {
        let path = dir.join(format!("app-{color}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  \
                 selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    \
                 spec:\n      containers:\n      - {{name: app, image: \"reg/web:v1\"}}\n---\n\
                 apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\n\
                 apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, labels: {{tier: front}}}}\ndata: {{color: {color}}}\n---\n\
                 apiVersion: v1\nkind: Secret\nmetadata: {{name: sec}}\nstringData: {{password: hunter2}}\n"
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let blue = manifest("blue");
    let created = k(&["apply", "-f", &blue]);
    for object in [
        "deployment.apps/web",
        "service/web",
        "configmap/cfg",
        "secret/sec",
    ] {
        assert!(created.contains(&format!("{object} created")), "{created}");
    }
    let again = k(&["apply", "-f", &blue]);
    for object in ["deployment.apps/web", "service/web", "configmap/cfg"] {
        assert!(again.contains(&format!("{object} unchanged")), "{again}");
    }
    // As in Kubernetes: the server turns stringData into data, so kubectl's three-way patch
    // always finds stringData to add (kubernetes/kubernetes#87736).
    assert!(again.contains("secret/sec configured"), "{again}");
    let changed = k(&["apply", "-f", &manifest("green")]);
    assert!(changed.contains("configmap/cfg configured"), "{changed}");
    assert!(
        changed.contains("deployment.apps/web unchanged"),
        "{changed}"
    );

    // Reading: tables, wide, YAML, JSONPath, selectors.
    let table = k(&["get", "configmaps"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("cfg"), "{table}");
    assert!(k(&["get", "svc", "-o", "wide"]).contains("SELECTOR"));
    let yaml = k(&["get", "cm", "cfg", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: ConfigMap") && yaml.contains("color: green"),
        "{yaml}"
    );
    assert_eq!(
        k(&["get", "cm", "cfg", "-o", "jsonpath={.data.color}"]),
        "green"
    );
    assert_eq!(
        k(&["get", "cm", "-l", "tier=front", "-o", "name"]),
        "configmap/cfg\n"
    );
    assert_eq!(
        k(&[
            "get",
            "cm",
            "--field-selector",
            "metadata.name=cfg",
            "-o",
            "name"
        ]),
        "configmap/cfg\n"
    );
    let described = k(&["describe", "deployment", "web"]);
    assert!(
        described.contains("Name:") && described.contains("reg/web:v1"),
        "{described}"
    );

    // Writing: label, annotate, the three patch types, scale, edit.
    k(&["label", "cm", "cfg", "extra=yes"]);
    k(&["annotate", "cm", "cfg", "note=hi"]);
    k(&[
        "patch",
        "cm",
        "cfg",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"size":"3"}}"#,
    ]);
    k(&[
        "patch",
        "cm",
        "cfg",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/data/color","value":"red"}]"#,
    ]);
    k(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"reg/web:v2"}]}}}}"#,
    ]);
    let cm = k(&[
        "get",
        "cm",
        "cfg",
        "-o",
        "jsonpath={.data.color} {.data.size} {.metadata.labels.extra} {.metadata.annotations.note}",
    ]);
    assert_eq!(cm, "red 3 yes hi");
    assert_eq!(
        k(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "reg/web:v2"
    );
    k(&["scale", "deploy", "web", "--replicas=3"]);
    assert_eq!(
        k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    let editor = dir.join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/color: red/color: edited/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("kubectl")
        .env("KUBECONFIG", &server.kubeconfig)
        .env("KUBE_EDITOR", &editor)
        .args(["-n", "suite", "edit", "cm", "cfg"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        k(&["get", "cm", "cfg", "-o", "jsonpath={.data.color}"]),
        "edited"
    );

    // Watching: create, modify and delete seen by `kubectl get -w`.
    let mut watch = Command::new("kubectl")
        .env("KUBECONFIG", &server.kubeconfig)
        .args([
            "-n",
            "suite",
            "get",
            "cm",
            "--field-selector",
            "metadata.name=w1",
            "-w",
            "--output-watch-events",
            "--no-headers",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines, events_in) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // (Blocking is fine here: the server is another process.)
    let next_event = || {
        events_in
            .recv_timeout(Duration::from_secs(30))
            .expect("kubectl get -w printed nothing")
    };
    k(&["create", "configmap", "w1", "--from-literal=a=1"]);
    // The watch has the object (from its list or its stream) before it changes.
    let mut events = vec![next_event()];
    k(&["label", "cm", "w1", "seen=yes"]);
    k(&["delete", "cm", "w1"]);
    events.push(next_event());
    events.push(next_event());
    let _ = watch.kill();
    let _ = watch.wait();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"], "{events:?}");

    // Server-side apply and explain.
    let ssa = dir.join("ssa.yaml");
    std::fs::write(
        &ssa,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {owner: me}\n",
    )
    .unwrap();
    assert!(
        k(&["apply", "--server-side", "-f", ssa.to_str().unwrap()]).contains("serverside-applied")
    );
    assert!(k(&["explain", "svc.spec.ports"]).contains("targetPort"));

    // Deleting with --cascade=orphan keeps the ReplicaSet the controller made, without its
    // owner reference (a Deployment of its own, with one ReplicaSet).
    k(&["create", "deployment", "solo", "--image=reg/solo:v1"]);
    let rs = async {
        for _ in 0..100 {
            let names = k(&["get", "rs", "-l", "app=solo", "-o", "name"]);
            if !names.trim().is_empty() {
                return names.trim().to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no ReplicaSet for the Deployment");
    }
    .await;
    k(&["delete", "deploy", "solo", "--cascade=orphan"]);
    assert!(!k(&["get", "deploy", "-o", "name"]).contains("solo"));
    let owners = async {
        for _ in 0..100 {
            let owners = k(&["get", &rs, "-o", "jsonpath={.metadata.ownerReferences}"]);
            if matches!(owners.trim(), "" | "[]") {
                return owners;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{rs} kept its owner reference");
    }
    .await;
    assert!(!owners.contains("solo"), "{owners}");
    k(&["delete", "-f", &blue, "--ignore-not-found"]);
    assert!(
        k(&["get", "cm,secret,svc", "-o", "name"])
            .lines()
            .all(|l| !l.contains("/cfg") && !l.contains("/sec") && !l.contains("service/web"))
    );
}
