//! Multi-tenancy through the real kubectl: users from `--token-auth-file`, RBAC with the
//! bootstrap roles, upstream's Forbidden messages, `kubectl auth can-i|whoami`, escalation
//! prevention and impersonation.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bosun_testkit::eventually;

use crate::support::Server;

/// A server with users `alice` (group `dev`) and `bob` from a token file.
struct Tenants {
    server: Server,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tenants {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(
            &tokens,
            "alice-token,alice,1001,\"dev\"\nbob-token,bob,1002\n",
        )
        .unwrap();
        let data = dir.path().join("data");
        let server = Server::start(&[
            "--data-dir",
            data.to_str().unwrap(),
            "--token-auth-file",
            tokens.to_str().unwrap(),
            "--disable-scheduler",
        ])
        .await;
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, server.ca_pem()).unwrap();
        for ns in ["team-a", "team-b"] {
            server.kubectl(&["create", "namespace", ns]).unwrap();
        }
        Self {
            server,
            ca,
            _dir: dir,
        }
    }

    /// kubectl as the user of `token`; `Err` has what it printed.
    fn kubectl_as(&self, token: &str, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new("kubectl");
        command
            .env_remove("KUBECONFIG")
            .args([
                "--kubeconfig=/dev/null",
                &format!("--server=https://{}", self.server.addr),
                &format!("--certificate-authority={}", self.ca.display()),
                &format!("--token={token}"),
            ])
            .args(args);
        crate::support::run(command)
    }

    fn alice(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_as("alice-token", args)
    }

    fn bob(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_as("bob-token", args)
    }

    /// Waits until `check` passes: a binding reaches the authorizer through its watch.
    async fn until(&self, what: &str, check: impl Fn() -> bool) {
        eventually(
            what,
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                let ok = check();
                async move { ok.then_some(()) }
            },
        )
        .await
    }
}

fn can_i(answer: Result<String, String>) -> String {
    // `kubectl auth can-i` exits 1 for "no"; its answer is on stdout either way.
    match answer {
        Ok(out) => out.trim().to_string(),
        Err(out) => out.lines().next().unwrap_or_default().trim().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_bound_to_edit_works_in_its_namespace_and_nowhere_else() {
    let t = Tenants::start().await;
    // Before any binding, alice may do nothing with pods, and says so in upstream's words.
    let refused = t.alice(&["get", "pods", "-n", "team-a"]).unwrap_err();
    assert!(
        refused.contains(r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "team-a""#),
        "{refused}"
    );
    t.server
        .kubectl(&[
            "create",
            "rolebinding",
            "alice-edit",
            "--clusterrole=edit",
            "--user=alice",
            "-n",
            "team-a",
        ])
        .unwrap();
    t.until("alice can list pods in team-a", || {
        t.alice(&["get", "pods", "-n", "team-a"]).is_ok()
    })
    .await;

    // Create and delete in team-a.
    t.alice(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team-a",
        "--from-literal=a=b",
    ])
    .unwrap();
    let read = t
        .alice(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.a}",
        ])
        .unwrap();
    assert_eq!(read, "b");
    t.alice(&["delete", "configmap", "settings", "-n", "team-a"])
        .unwrap();

    // Forbidden in team-b, with the exact message.
    let other = t.alice(&["get", "pods", "-n", "team-b"]).unwrap_err();
    assert!(
        other.contains(r#"Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "team-b""#),
        "{other}"
    );
    let write = t
        .alice(&[
            "create",
            "configmap",
            "x",
            "-n",
            "team-b",
            "--from-literal=a=b",
        ])
        .unwrap_err();
    assert!(
        write.contains(r#"configmaps is forbidden: User "alice" cannot create resource "configmaps" in API group "" in the namespace "team-b""#),
        "{write}"
    );
    // Secrets cluster-wide: no.
    let secrets = t.alice(&["get", "secrets", "-A"]).unwrap_err();
    assert!(
        secrets.contains(r#"secrets is forbidden: User "alice" cannot list resource "secrets" in API group "" at the cluster scope"#),
        "{secrets}"
    );
    let nodes = t.alice(&["get", "nodes"]).unwrap_err();
    assert!(nodes.contains("cannot list resource \"nodes\""), "{nodes}");

    // `kubectl auth can-i` agrees with what happens.
    for (args, expected) in [
        (&["create", "configmaps", "-n", "team-a"][..], "yes"),
        (&["delete", "configmaps", "-n", "team-a"][..], "yes"),
        (&["list", "pods", "-n", "team-a"][..], "yes"),
        (&["list", "pods", "-n", "team-b"][..], "no"),
        (&["create", "configmaps", "-n", "team-b"][..], "no"),
        (&["list", "secrets", "-A"][..], "no"),
        (&["list", "nodes"][..], "no"),
        (&["create", "rolebindings", "-n", "team-a"][..], "no"),
    ] {
        let mut command = vec!["auth", "can-i"];
        command.extend_from_slice(args);
        assert_eq!(can_i(t.alice(&command)), expected, "can-i {args:?}");
    }
    // The rules review lists what edit grants in team-a, and nothing of team-b.
    let list = t
        .alice(&["auth", "can-i", "--list", "-n", "team-a"])
        .unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with("configmaps ") && l.contains("create")),
        "{list}"
    );
    let list_b = t
        .alice(&["auth", "can-i", "--list", "-n", "team-b"])
        .unwrap();
    assert!(
        !list_b.lines().any(|l| l.starts_with("configmaps ")),
        "{list_b}"
    );
    // Who am I: the token file's name, uid and groups.
    let whoami = t.alice(&["auth", "whoami", "-o", "json"]).unwrap();
    let whoami: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(whoami["status"]["userInfo"]["username"], "alice");
    assert_eq!(whoami["status"]["userInfo"]["uid"], "1001");
    assert_eq!(
        whoami["status"]["userInfo"]["groups"],
        serde_json::json!(["dev", "system:authenticated"])
    );
    // Discovery works for every authenticated user; /metrics is the admin's.
    t.alice(&["api-resources", "--api-group=apps"]).unwrap();
    let metrics = t.alice(&["get", "--raw", "/metrics"]).unwrap_err();
    assert!(
        metrics.contains(r#"User \"alice\" cannot get path \"/metrics\""#)
            || metrics.contains(r#"User "alice" cannot get path "/metrics""#),
        "{metrics}"
    );
    // A wrong token is 401, not 403.
    let stranger = t.kubectl_as("nobody", &["get", "pods"]).unwrap_err();
    assert!(stranger.contains("Unauthorized"), "{stranger}");

    // A group binding: bob is not in `dev`, alice is.
    t.server
        .kubectl(&[
            "create",
            "rolebinding",
            "dev-view",
            "--clusterrole=view",
            "--group=dev",
            "-n",
            "team-b",
        ])
        .unwrap();
    t.until("alice (in dev) can list pods in team-b", || {
        t.alice(&["get", "pods", "-n", "team-b"]).is_ok()
    })
    .await;
    assert!(t.bob(&["get", "pods", "-n", "team-b"]).is_err());
    // view does not include secrets.
    assert_eq!(
        can_i(t.alice(&["auth", "can-i", "get", "secrets", "-n", "team-b"])),
        "no"
    );

    // Which namespaces may she use? Not `kubectl get namespaces` (cluster-wide, refused), but
    // Bosun's accessible-namespaces, and `bosun get ns` through it.
    assert!(t.alice(&["get", "namespaces"]).is_err());
    let listed = t
        .alice(&["get", "--raw", "/apis/bosun.dev/v1/accessible-namespaces"])
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-a", "team-b"]);
    assert!(
        t.bob(&["get", "--raw", "/apis/bosun.dev/v1/accessible-namespaces"])
            .unwrap()
            .contains(r#""items":[]"#)
    );
    let kubeconfig = t.ca.with_file_name("alice.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{}\n    certificate-authority: {}\nusers:\n- name: alice\n  user:\n    token: alice-token\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: alice\ncurrent-context: c\n",
            t.server.addr,
            t.ca.display()
        ),
    )
    .unwrap();
    let out = Command::new(crate::support::BOSUN)
        .args(["get", "ns", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(rows, ["team-a", "team-b"], "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_or_binding_that_grants_more_than_its_writer_holds_is_refused() {
    let t = Tenants::start().await;
    t.server
        .kubectl(&[
            "create",
            "rolebinding",
            "bob-admin",
            "--clusterrole=admin",
            "--user=bob",
            "-n",
            "team-a",
        ])
        .unwrap();
    t.until("bob can create rolebindings in team-a", || {
        can_i(t.bob(&["auth", "can-i", "create", "rolebindings", "-n", "team-a"])) == "yes"
    })
    .await;
    // admin holds edit's rules: bob may hand edit on.
    t.bob(&[
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        "--user=alice",
        "-n",
        "team-a",
    ])
    .unwrap();
    // Not cluster-admin, not even in his own namespace.
    let escalation = t
        .bob(&[
            "create",
            "rolebinding",
            "bob-root",
            "--clusterrole=cluster-admin",
            "--user=bob",
            "-n",
            "team-a",
        ])
        .unwrap_err();
    assert!(
        escalation.contains(r#"rolebindings.rbac.authorization.k8s.io "bob-root" is forbidden: user "bob" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held"#),
        "{escalation}"
    );
    // Nor a Role with rules he lacks.
    let role = t
        .bob(&[
            "create",
            "role",
            "nodes-reader",
            "--verb=get",
            "--resource=nodes",
            "-n",
            "team-a",
        ])
        .unwrap_err();
    assert!(role.contains("not currently held"), "{role}");
    t.bob(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get",
        "--resource=pods",
        "-n",
        "team-a",
    ])
    .unwrap();
    // With `bind` on cluster-admin, he may bind it.
    t.server
        .kubectl(&[
            "create",
            "clusterrole",
            "bind-cluster-admin",
            "--verb=bind",
            "--resource=clusterroles",
            "--resource-name=cluster-admin",
        ])
        .unwrap();
    t.server
        .kubectl(&[
            "create",
            "clusterrolebinding",
            "bob-binds",
            "--clusterrole=bind-cluster-admin",
            "--user=bob",
        ])
        .unwrap();
    t.until("bob may bind cluster-admin in team-a", || {
        t.bob(&[
            "create",
            "rolebinding",
            "bob-root",
            "--clusterrole=cluster-admin",
            "--user=bob",
            "-n",
            "team-a",
        ])
        .is_ok()
    })
    .await;

    // Impersonation: refused without the verb, allowed with it.
    let refused = t
        .bob(&["get", "pods", "-n", "team-a", "--as=alice"])
        .unwrap_err();
    assert!(
        refused.contains(r#"users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{refused}"
    );
    let as_alice = t
        .server
        .kubectl(&[
            "auth",
            "whoami",
            "--as=alice",
            "--as-group=dev",
            "-o",
            "json",
        ])
        .unwrap();
    let as_alice: serde_json::Value = serde_json::from_str(&as_alice).unwrap();
    assert_eq!(as_alice["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        as_alice["status"]["userInfo"]["groups"],
        serde_json::json!(["dev", "system:authenticated"])
    );
    let denied = t
        .server
        .kubectl(&["get", "pods", "-n", "team-b", "--as=alice"])
        .unwrap_err();
    assert!(denied.contains(r#"User "alice" cannot list"#), "{denied}");
}

/// Runs `bosun ARGS` with the admin kubeconfig; `Err` has what it printed.
fn bosun(server: &Server, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new(crate::support::BOSUN);
    command.env("KUBECONFIG", &server.kubeconfig).args(args);
    crate::support::run(command)
}

fn csr_manifest(name: &str, user: &str) -> String {
    use base64::Engine as _;
    let (request, _key) = bosun_control::pki::client_request(user, &["ops"]).unwrap();
    let request = base64::engine::general_purpose::STANDARD.encode(request);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 3600\n  usages: [\"client auth\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_come_from_approved_requests_and_name_their_user() {
    let t = Tenants::start().await;
    let dir = tempfile::tempdir().unwrap();
    // `bosun kubeconfig` runs the whole flow with the admin's credentials.
    let carol = dir.path().join("carol.kubeconfig");
    let printed = bosun(
        &t.server,
        &[
            "kubeconfig",
            "--user",
            "carol",
            "--group",
            "qa",
            "--namespace",
            "team-a",
            "--expiry",
            "24h",
            "-o",
            carol.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(printed.is_empty(), "-o writes the file only: {printed:?}");
    let as_carol = |args: &[&str]| {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &carol)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, whoami) = as_carol(&["auth", "whoami", "-o", "jsonpath={.status.userInfo}"]);
    assert!(ok, "{whoami}");
    let whoami: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(whoami["username"], "carol");
    assert_eq!(
        whoami["groups"],
        serde_json::json!(["qa", "system:authenticated"])
    );
    // The context's namespace is team-a, where carol may do nothing yet.
    let (ok, refused) = as_carol(&["get", "pods"]);
    assert!(!ok);
    assert!(
        refused.contains(
            r#"User "carol" cannot list resource "pods" in API group "" in the namespace "team-a""#
        ),
        "{refused}"
    );
    t.server
        .kubectl(&[
            "create",
            "rolebinding",
            "qa-view",
            "--clusterrole=view",
            "--group=qa",
            "-n",
            "team-a",
        ])
        .unwrap();
    t.until("carol (in qa) can list pods", || {
        as_carol(&["get", "pods"]).0
    })
    .await;
    // The certificate lives as long as asked.
    let requests = t.server.kubectl(&["get", "csr", "-o", "json"]).unwrap();
    let requests: serde_json::Value = serde_json::from_str(&requests).unwrap();
    let issued = &requests["items"][0];
    assert_eq!(
        issued["spec"]["username"], "system:admin",
        "the requester is recorded"
    );
    assert_eq!(issued["spec"]["expirationSeconds"], 86400);

    // kubectl's own flow: a denied request gets no certificate; an approved one does.
    for name in ["denied", "approved"] {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, csr_manifest(name, "dave")).unwrap();
        t.server
            .kubectl(&["apply", "-f", file.to_str().unwrap()])
            .unwrap();
    }
    // alice may not approve anything.
    let refused = t
        .alice(&["certificate", "approve", "approved"])
        .unwrap_err();
    assert!(refused.contains("Forbidden"), "{refused}");
    t.server
        .kubectl(&["certificate", "deny", "denied"])
        .unwrap();
    t.server
        .kubectl(&["certificate", "approve", "approved"])
        .unwrap();
    let certificate = |name: &str| {
        t.server
            .kubectl(&["get", "csr", name, "-o", "jsonpath={.status.certificate}"])
            .unwrap()
    };
    eventually(
        "the approved request is signed",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let issued = !certificate("approved").is_empty();
            async move { issued.then_some(()) }
        },
    )
    .await;
    assert_eq!(
        certificate("denied"),
        "",
        "a denied request is never signed"
    );
    let table = t.server.kubectl(&["get", "csr"]).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("denied ") && l.contains("Denied")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("approved ") && l.contains("Approved,Issued")),
        "{table}"
    );
    // A denial is final.
    let again = t
        .server
        .kubectl(&["certificate", "approve", "denied"])
        .unwrap_err();
    assert!(again.contains("already Denied"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_work_until_their_account_or_pod_goes() {
    let t = Tenants::start().await;
    let k = |args: &[&str]| t.server.kubectl(args);
    // Every namespace gets its default ServiceAccount and the cluster CA.
    t.until("team-a has its default ServiceAccount and CA", || {
        k(&["get", "serviceaccount", "default", "-n", "team-a"]).is_ok()
            && k(&["get", "configmap", "kube-root-ca.crt", "-n", "team-a"]).is_ok()
    })
    .await;
    let ca = k(&[
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ])
    .unwrap();
    assert_eq!(ca, t.server.ca_pem());

    k(&["create", "serviceaccount", "builder", "-n", "team-a"]).unwrap();
    k(&[
        "create",
        "rolebinding",
        "builder-edit",
        "--clusterrole=edit",
        "--serviceaccount=team-a:builder",
        "-n",
        "team-a",
    ])
    .unwrap();
    let token = k(&["create", "token", "builder", "-n", "team-a"]).unwrap();
    let token = token.trim();
    t.until("the builder's token lists pods in team-a", || {
        t.kubectl_as(token, &["get", "pods", "-n", "team-a"])
            .is_ok()
    })
    .await;
    let other = t
        .kubectl_as(token, &["get", "pods", "-n", "team-b"])
        .unwrap_err();
    assert!(
        other.contains(r#"pods is forbidden: User "system:serviceaccount:team-a:builder" cannot list resource "pods" in API group "" in the namespace "team-b""#),
        "{other}"
    );
    let whoami = t
        .kubectl_as(token, &["auth", "whoami", "-o", "json"])
        .unwrap();
    let whoami: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "system:authenticated"
        ])
    );

    // Tampered, for another audience, or too short-lived: refused.
    let mut tampered: Vec<char> = token.chars().collect();
    let middle = token.find('.').unwrap() + 5;
    tampered[middle] = if tampered[middle] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let refused = t
        .kubectl_as(&tampered, &["get", "pods", "-n", "team-a"])
        .unwrap_err();
    assert!(refused.contains("Unauthorized"), "{refused}");
    let vault = k(&[
        "create",
        "token",
        "builder",
        "-n",
        "team-a",
        "--audience=vault",
    ])
    .unwrap();
    let refused = t
        .kubectl_as(vault.trim(), &["get", "pods", "-n", "team-a"])
        .unwrap_err();
    assert!(refused.contains("Unauthorized"), "{refused}");
    let short = k(&[
        "create",
        "token",
        "builder",
        "-n",
        "team-a",
        "--duration=1m",
    ])
    .unwrap_err();
    assert!(short.contains("less than 10 minutes"), "{short}");

    // A token bound to a pod dies with the pod.
    k(&[
        "run",
        "bound",
        "--image=registry.invalid/app:v1",
        "-n",
        "team-a",
    ])
    .unwrap();
    let bound = k(&[
        "create",
        "token",
        "builder",
        "-n",
        "team-a",
        "--bound-object-kind=Pod",
        "--bound-object-name=bound",
    ])
    .unwrap();
    let bound = bound.trim().to_string();
    t.kubectl_as(&bound, &["get", "pods", "-n", "team-a"])
        .unwrap();
    k(&[
        "delete",
        "pod",
        "bound",
        "-n",
        "team-a",
        "--grace-period=0",
        "--force",
    ])
    .unwrap();
    t.until("the pod-bound token is refused", || {
        t.kubectl_as(&bound, &["get", "pods", "-n", "team-a"])
            .is_err_and(|e| e.contains("Unauthorized"))
    })
    .await;
    // And every token dies with its ServiceAccount.
    t.kubectl_as(token, &["get", "pods", "-n", "team-a"])
        .unwrap();
    k(&["delete", "serviceaccount", "builder", "-n", "team-a"]).unwrap();
    t.until("the account's token is refused", || {
        t.kubectl_as(token, &["get", "pods", "-n", "team-a"])
            .is_err_and(|e| e.contains("Unauthorized"))
    })
    .await;

    // The issuer's documents are public, so others can check tokens.
    let client = crate::support::https_client(&t.server.ca_pem());
    let discovery: serde_json::Value = client
        .get(t.server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], "https://kubernetes.default.svc");
    let jwks: serde_json::Value = client
        .get(t.server.url("/openid/v1/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    let anonymous = client
        .get(t.server.url("/api/v1/pods"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_follows_its_policy_and_never_holds_secret_data() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "alice-token,alice,1001,\"dev\"\n").unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  userGroups: ["system:nodes"]
- level: None
  users: ["system:kube-scheduler", "system:kube-controller-manager"]
- level: RequestResponse
  resources: [{group: "", resources: ["secrets", "configmaps"]}]
- level: Metadata
"#,
    )
    .unwrap();
    let log = dir.path().join("audit").join("audit.log");
    let server = Server::start(&[
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--token-auth-file",
        tokens.to_str().unwrap(),
        "--audit-policy-file",
        policy.to_str().unwrap(),
        "--audit-log-path",
        log.to_str().unwrap(),
    ])
    .await;
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, server.ca_pem()).unwrap();
    let alice = |args: &[&str]| {
        Command::new("kubectl")
            .env_remove("KUBECONFIG")
            .args([
                "--kubeconfig=/dev/null",
                &format!("--server=https://{}", server.addr),
                &format!("--certificate-authority={}", ca.display()),
                "--token=alice-token",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    server
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=password=hunter2",
        ])
        .unwrap();
    server
        .kubectl(&[
            "create",
            "configmap",
            "settings",
            "--from-literal=color=blue",
        ])
        .unwrap();
    assert!(!alice(&["get", "pods", "-n", "default"]).status.success());
    server
        .kubectl(&["get", "secret", "db", "-o", "yaml", "--as=alice"])
        .unwrap_err();

    let events = eventually(
        "the audit log has the forbidden request",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let done = text.contains(r#""username":"alice""#) && text.contains("impersonatedUser");
            async move { done.then_some(text) }
        },
    )
    .await;
    // Never a secret's value, in clear or base64.
    assert!(!events.contains("hunter2"), "{events}");
    assert!(!events.contains("aHVudGVyMg"), "{events}");
    let events: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert!(events.iter().all(|e| e["kind"] == "Event"
        && e["apiVersion"] == "audit.k8s.io/v1"
        && e["stage"] == "ResponseComplete"));
    // The components' own requests are not logged.
    assert!(events.iter().all(|e| {
        !e["user"]["username"]
            .as_str()
            .unwrap()
            .starts_with("system:kube-")
    }),);
    let find = |verb: &str, resource: &str| {
        events
            .iter()
            .find(|e| e["verb"] == verb && e["objectRef"]["resource"] == resource)
            .unwrap_or_else(|| panic!("no {verb} {resource} in {events:#?}"))
    };
    // Secrets: at Metadata, whatever the policy says.
    let secret = find("create", "secrets");
    assert_eq!(secret["level"], "Metadata");
    assert!(secret.get("requestObject").is_none());
    assert_eq!(secret["responseStatus"]["code"], 201);
    // ConfigMaps: the request and the response.
    let configmap = find("create", "configmaps");
    assert_eq!(configmap["level"], "RequestResponse");
    assert_eq!(configmap["requestObject"]["data"]["color"], "blue");
    assert_eq!(configmap["responseObject"]["metadata"]["name"], "settings");
    assert_eq!(configmap["user"]["username"], "system:admin");
    // A refusal, with the decision and the reason.
    let refused = events
        .iter()
        .find(|e| e["user"]["username"] == "alice" && e["objectRef"]["resource"] == "pods")
        .unwrap();
    assert_eq!(refused["level"], "Metadata");
    assert_eq!(refused["responseStatus"]["code"], 403);
    assert_eq!(
        refused["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert_eq!(refused["objectRef"]["namespace"], "default");
    assert!(!refused["sourceIPs"].as_array().unwrap().is_empty());
    // Impersonation: who did it, and as whom.
    let impersonated = events
        .iter()
        .find(|e| e.get("impersonatedUser").is_some())
        .unwrap();
    assert_eq!(impersonated["user"]["username"], "system:admin");
    assert_eq!(impersonated["impersonatedUser"]["username"], "alice");
    assert_eq!(impersonated["responseStatus"]["code"], 403);
    // An allowed request says why.
    let allowed = find("create", "configmaps");
    assert_eq!(
        allowed["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
}

/// A throwaway OIDC issuer over HTTPS: its discovery document and JWKS, and ID tokens signed
/// with its ES256 key.
struct Issuer {
    url: String,
    ca_pem: String,
    key: ring::signature::EcdsaKeyPair,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Issuer {
    async fn start() -> Self {
        use base64::Engine as _;
        use ring::signature::KeyPair as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = key.public_key().as_ref().to_vec();
        let ca = bosun_control::pki::Ca::generate("issuer-ca").unwrap();
        let serving = ca.issue_server("issuer", &["127.0.0.1".into()]).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let discovery = serde_json::json!({
            "issuer": url,
            "jwks_uri": format!("{url}/keys"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
            "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
        }]});
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/keys",
                axum::routing::get(move || async move { axum::Json(jwks) }),
            );
        let tls = bosun_tls::server_config(
            &serving.cert_pem,
            &serving.key_pem,
            bosun_tls::ClientCerts::None,
        )
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bosun_tls::serve(listener, tls, app, async {
            let _ = stopped.await;
        }));
        Self {
            url,
            ca_pem: ca.cert_pem,
            key,
            _stop: stop,
        }
    }

    /// An ID token with `claims` (iss, aud and times filled in unless given).
    fn token(&self, claims: serde_json::Value, lifetime: i64) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut body = serde_json::json!({
            "iss": self.url, "aud": "bosun", "iat": now, "exp": now + lifetime,
        });
        for (k, v) in claims.as_object().unwrap() {
            body[k] = v.clone();
        }
        let signed = format!(
            "{}.{}",
            b64.encode(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#),
            b64.encode(body.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let signature = self.key.sign(&rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64.encode(signature.as_ref()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_id_tokens_from_an_external_issuer_name_their_user_and_groups() {
    let issuer = Issuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let issuer_ca = dir.path().join("issuer-ca.pem");
    std::fs::write(&issuer_ca, &issuer.ca_pem).unwrap();
    let server = Server::start(&[
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--disable-scheduler",
        "--oidc-issuer-url",
        &issuer.url,
        "--oidc-client-id",
        "bosun",
        "--oidc-username-claim",
        "email",
        "--oidc-groups-claim",
        "groups",
        "--oidc-ca-file",
        issuer_ca.to_str().unwrap(),
    ])
    .await;
    let t = Tenants {
        ca: {
            let ca = dir.path().join("ca.crt");
            std::fs::write(&ca, server.ca_pem()).unwrap();
            ca
        },
        server,
        _dir: tempfile::tempdir().unwrap(),
    };
    t.server
        .kubectl(&["create", "namespace", "team-a"])
        .unwrap();
    t.server
        .kubectl(&[
            "create",
            "rolebinding",
            "devs-edit",
            "--clusterrole=edit",
            "--group=devs",
            "-n",
            "team-a",
        ])
        .unwrap();
    let token = issuer.token(
        serde_json::json!({"email": "erin@example.com", "email_verified": true, "groups": ["devs"]}),
        600,
    );
    t.until("the issuer's token lists pods in team-a", || {
        t.kubectl_as(&token, &["get", "pods", "-n", "team-a"])
            .is_ok()
    })
    .await;
    let whoami = t
        .kubectl_as(
            &token,
            &["auth", "whoami", "-o", "jsonpath={.status.userInfo}"],
        )
        .unwrap();
    let whoami: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(whoami["username"], "erin@example.com");
    assert_eq!(
        whoami["groups"],
        serde_json::json!(["devs", "system:authenticated"])
    );
    let refused = t
        .kubectl_as(&token, &["get", "pods", "-n", "default"])
        .unwrap_err();
    assert!(
        refused.contains(r#"User "erin@example.com" cannot list resource "pods""#),
        "{refused}"
    );
    // Expired, for another client, unverified, or tampered: 401.
    let expired = issuer.token(serde_json::json!({"email": "erin@example.com"}), -10);
    let other_client = issuer.token(
        serde_json::json!({"email": "erin@example.com", "aud": "someone-else"}),
        600,
    );
    let unverified = issuer.token(
        serde_json::json!({"email": "erin@example.com", "email_verified": false}),
        600,
    );
    let mut tampered = token.clone().into_bytes();
    let at = token.find('.').unwrap() + 8;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (what, bad) in [
        ("expired", expired),
        ("another client", other_client),
        ("unverified email", unverified),
        ("tampered", tampered),
    ] {
        let refused = t
            .kubectl_as(&bad, &["get", "pods", "-n", "team-a"])
            .unwrap_err();
        assert!(refused.contains("Unauthorized"), "{what}: {refused}");
    }
}

/// kubectl with a node's own identity (the files in its data directory).
fn kubectl_as_node(
    server: &Server,
    node: &crate::support::Node,
    args: &[&str],
) -> Result<String, String> {
    let identity = node.dir.path().join("identity");
    let mut command = Command::new("kubectl");
    command
        .env_remove("KUBECONFIG")
        .args([
            "--kubeconfig=/dev/null",
            &format!("--server=https://{}", server.addr),
        ])
        .arg(format!(
            "--certificate-authority={}",
            identity.join("ca.crt").display()
        ))
        .arg(format!(
            "--client-certificate={}",
            identity.join("node.crt").display()
        ))
        .arg(format!(
            "--client-key={}",
            identity.join("node.key").display()
        ))
        .args(args);
    crate::support::run(command)
}

/// The CertificateSigningRequests for `user`'s certificate: (requester, approval reason,
/// issued).
fn node_requests(server: &Server, user: &str) -> Vec<(String, String, bool)> {
    let listed = server
        .kubectl(&["get", "csr", "-o", "json"])
        .expect("list CSRs");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|csr| {
            let pem = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                csr["spec"]["request"].as_str().unwrap(),
            )
            .unwrap();
            bosun_control::pki::parse_request(&String::from_utf8(pem).unwrap())
                .unwrap()
                .params
                .distinguished_name
                .get(&rcgen::DnType::CommonName)
                .is_some_and(|cn| matches!(cn, rcgen::DnValue::Utf8String(s) if s == user))
        })
        .map(|csr| {
            let reason = csr["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Approved")
                .map(|c| c["reason"].as_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            (
                csr["spec"]["username"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                reason,
                csr["status"]["certificate"].is_string(),
            )
        })
        .collect()
}

async fn until_ready(server: &Server, node: &str) {
    eventually(
        &format!("node {node} Ready"),
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let ready = server
                .kubectl(&[
                    "get",
                    "node",
                    node,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .is_ok_and(|s| s.trim() == "True");
            async move { ready.then_some(()) }
        },
    )
    .await
}

/// Node identities: a node joins with the cluster token (after the server proves it holds
/// it), another gets its certificate with the admin kubeconfig; each is `system:node:NAME`
/// in `system:nodes`, reads the Secrets of its own pods and no others, and writes only its
/// own Node and pods (NodeRestriction). A restarted node keeps its certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_with_the_cluster_token_and_touch_only_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]).await;
    let registry = crate::support::Registry::start().await;
    let token = std::fs::read_to_string(data.join("token"))
        .unwrap()
        .trim()
        .to_string();

    // A wrong token: the node refuses the server's CA (and never sends the token on).
    let refused = dir.path().join("refused");
    let out = Command::new(crate::support::BOSUN)
        .args(["node", "--server", &format!("https://{}", server.addr)])
        .args(["--token", "bosun1.0000", "--name", "nope", "--port", "0"])
        .arg("--data-dir")
        .arg(&refused)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("could not prove it holds the cluster token"),
        "{said}"
    );
    assert!(!refused.join("identity").exists());

    let mut a = crate::support::Node::join(&server, "join-a", &registry, &token, &[]);
    let b = crate::support::Node::start(&server, "join-b", &registry, &[]);
    until_ready(&server, "join-a").await;
    until_ready(&server, "join-b").await;
    assert_eq!(
        node_requests(&server, "system:node:join-a"),
        vec![(
            "system:bootstrap:cluster-token".to_string(),
            "AutoApproved".to_string(),
            true
        )]
    );
    // The admin's request is approved by the node itself or, first, by the control plane
    // (the admin may have any node's certificate approved).
    let requests = node_requests(&server, "system:node:join-b");
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (requester, reason, issued) = &requests[0];
    assert_eq!(requester, "system:admin");
    assert!(["NodeBootstrap", "AutoApproved"].contains(&reason.as_str()) && *issued);
    let whoami = kubectl_as_node(&server, &a, &["auth", "whoami", "-o", "json"]).unwrap();
    let whoami: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        "system:node:join-a"
    );
    assert!(
        whoami["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .contains(&"system:nodes".into())
    );

    // Secrets: each node reads those of its own pods.
    for node in ["a", "b"] {
        server
            .kubectl(&[
                "create",
                "secret",
                "generic",
                &format!("for-{node}"),
                "--from-literal=k=v",
            ])
            .unwrap();
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{node}\nspec:\n  nodeName: join-{node}\n  containers:\n  - name: main\n    image: {}/none:v1\n    env:\n    - name: K\n      valueFrom:\n        secretKeyRef: {{name: for-{node}, key: k}}\n",
            registry.host
        );
        let file = dir.path().join(format!("pod-{node}.yaml"));
        std::fs::write(&file, pod).unwrap();
        server
            .kubectl(&["apply", "-f", file.to_str().unwrap()])
            .unwrap();
    }
    eventually(
        "node A reads its pod's Secret",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let ok = kubectl_as_node(&server, &a, &["get", "secret", "for-a"]).is_ok();
            async move { ok.then_some(()) }
        },
    )
    .await;
    let refused = kubectl_as_node(&server, &a, &["get", "secret", "for-b"]).unwrap_err();
    assert!(
        refused.contains(
            r#"secrets "for-b" is forbidden: User "system:node:join-a" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'join-a' and this object"#
        ),
        "{refused}"
    );
    assert!(kubectl_as_node(&server, &a, &["get", "secrets"]).is_err());
    assert!(kubectl_as_node(&server, &a, &["get", "configmaps", "-n", "kube-system"]).is_err());

    // Writes: its own Node and pods only.
    let refused = kubectl_as_node(&server, &a, &["label", "node", "join-b", "x=y"]).unwrap_err();
    assert!(
        refused.contains(r#"node "join-a" is not allowed to modify node "join-b""#),
        "{refused}"
    );
    kubectl_as_node(&server, &a, &["label", "node", "join-a", "x=y"]).unwrap();
    let refused = kubectl_as_node(
        &server,
        &a,
        &[
            "label",
            "node",
            "join-a",
            "node-restriction.kubernetes.io/zone=z",
        ],
    )
    .unwrap_err();
    assert!(
        refused.contains("is not allowed to modify labels"),
        "{refused}"
    );
    let refused = kubectl_as_node(&server, &a, &["delete", "pod", "pod-b"]).unwrap_err();
    assert!(
        refused.contains("can only delete pods with spec.nodeName set to itself"),
        "{refused}"
    );
    let refused = kubectl_as_node(
        &server,
        &a,
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=pod-b",
        ],
    )
    .unwrap_err();
    assert!(
        refused.contains("no relationship found") || refused.contains("different node"),
        "{refused}"
    );
    assert!(
        kubectl_as_node(
            &server,
            &a,
            &[
                "create",
                "token",
                "default",
                "--bound-object-kind=Pod",
                "--bound-object-name=pod-a"
            ],
        )
        .unwrap()
        .starts_with("eyJ")
    );
    assert!(kubectl_as_node(&server, &a, &["create", "namespace", "mine"]).is_err());
    drop(b);

    // A restart keeps the certificate: no new request.
    a.restart(&[]);
    server
        .kubectl(&["label", "node", "join-a", "restarted=yes"])
        .unwrap();
    until_ready(&server, "join-a").await;
    assert_eq!(node_requests(&server, "system:node:join-a").len(), 1);
}

/// A node renews its certificate before it expires, with itself (approved because a node
/// may renew its own), and keeps working past the first certificate's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_renews_its_certificate_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--cluster-signing-duration",
        "12s",
    ])
    .await;
    let registry = crate::support::Registry::start().await;
    let node = crate::support::Node::start(&server, "renews", &registry, &[]);
    until_ready(&server, "renews").await;
    let first = std::fs::read_to_string(node.dir.path().join("identity/node.crt")).unwrap();
    let started = std::time::Instant::now();
    eventually(
        "two renewals",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || {
            let renewed = node_requests(&server, "system:node:renews")
                .into_iter()
                .filter(|(who, reason, issued)| {
                    who == "system:node:renews" && reason == "AutoApproved" && *issued
                })
                .count();
            async move { (renewed >= 2).then_some(()) }
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(12),
        "renewed too early"
    );
    assert_ne!(
        std::fs::read_to_string(node.dir.path().join("identity/node.crt")).unwrap(),
        first
    );
    // Past the first certificate's end, the node still writes: its Lease is fresh.
    let renew_time = || {
        server
            .kubectl(&[
                "get",
                "lease",
                "renews",
                "-n",
                "kube-node-lease",
                "-o",
                "jsonpath={.spec.renewTime}",
            ])
            .unwrap()
    };
    let before = renew_time();
    eventually(
        "a lease renewal with the new certificate",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || {
            let now = renew_time();
            let moved = now != before;
            async move { moved.then_some(()) }
        },
    )
    .await;
    until_ready(&server, "renews").await;
}
