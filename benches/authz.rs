//! What authorization and the audit log cost: creates of ConfigMaps by 8 closed-loop clients
//! against a real `bosun server` (SQLite), as the admin (`system:masters`, allowed before RBAC
//! looks) and as a user whom RBAC allows through the last of 100 RoleBindings (each to its own
//! Role, so every decision walks all of them); then the admin's creates on a second server
//! that writes every request to an audit log at `Metadata`, beside the first. Phases
//! alternate (admin, user, admin, user…, plain, audited, plain, audited…) and each ratio is
//! the median of its rounds, because this machine is shared and noisy.
//!
//! Run: `cargo bench --bench authz` (BOSUN_BENCH_SECONDS sets each phase's length, default 5;
//! BOSUN_BENCH_ROUNDS the rounds, default 3). Prints a Markdown table for docs/benchmarks.md.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CLIENTS: usize = 8;
const ROLES: usize = 100;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// An HTTPS client of one server, with its URL and CA from the admin kubeconfig.
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn of(dir: &Path) -> Self {
        let admin = common::Admin::read(&common::kubeconfig(dir));
        Self {
            client: admin.https_client(),
            base: admin.server,
        }
    }

    async fn post(&self, token: &str, path: &str, body: &Value) -> reqwest::StatusCode {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn admin_token(dir: &Path) -> String {
    common::Admin::read(&common::kubeconfig(dir)).token
}

/// Creates per second by CLIENTS closed-loop clients with `token`, names prefixed `tag`.
async fn creates(api: &Arc<Api>, token: &str, tag: &str) -> f64 {
    let seconds = env_or("BOSUN_BENCH_SECONDS", 5);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let api = api.clone();
        let token = token.to_string();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let body = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("{tag}-{c}-{n}")},
                    "data": {"v": "x".repeat(200)},
                });
                let status = api
                    .post(&token, "/api/v1/namespaces/bench/configmaps", &body)
                    .await;
                assert_eq!(status, 201);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plain_dir = tempfile::tempdir().unwrap();
    let audited_dir = tempfile::tempdir().unwrap();
    let tokens = plain_dir.path().join("tokens.csv");
    std::fs::write(&tokens, "bench-token,bench,1000\n").unwrap();
    let policy = audited_dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
    )
    .unwrap();
    let log = audited_dir.path().join("audit.log");
    let quiet = ["--disable-scheduler", "--disable-controllers", "*"];
    let mut plain = common::server(
        plain_dir.path(),
        &[&quiet[..], &["--token-auth-file", tokens.to_str().unwrap()]].concat(),
        None,
    );
    let mut audited = common::server(
        audited_dir.path(),
        &[
            &quiet[..],
            &[
                "--audit-policy-file",
                policy.to_str().unwrap(),
                "--audit-log-path",
                log.to_str().unwrap(),
            ],
        ]
        .concat(),
        None,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rounds = env_or("BOSUN_BENCH_ROUNDS", 3);
    let rows = runtime.block_on(async {
        let plain_api = Arc::new(Api::of(plain_dir.path()));
        let audited_api = Arc::new(Api::of(audited_dir.path()));
        let plain_admin = admin_token(plain_dir.path());
        let audited_admin = admin_token(audited_dir.path());
        for (api, token) in [(&plain_api, &plain_admin), (&audited_api, &audited_admin)] {
            let status = api
                .post(token, "/api/v1/namespaces", &json!({"metadata": {"name": "bench"}}))
                .await;
            assert_eq!(status, 201);
        }
        // 100 Roles, each bound to the user; only the last grants the creates.
        for i in 0..ROLES {
            let rules = if i == ROLES - 1 {
                json!([{"verbs": ["create"], "apiGroups": [""], "resources": ["configmaps"]}])
            } else {
                json!([{"verbs": ["get"], "apiGroups": ["example.com"], "resources": [format!("things{i}")]}])
            };
            let role = json!({"metadata": {"name": format!("role-{i:03}")}, "rules": rules});
            let binding = json!({
                "metadata": {"name": format!("binding-{i:03}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("role-{i:03}")},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bench"}],
            });
            let base = "/apis/rbac.authorization.k8s.io/v1/namespaces/bench";
            assert_eq!(plain_api.post(&plain_admin, &format!("{base}/roles"), &role).await, 201);
            assert_eq!(
                plain_api
                    .post(&plain_admin, &format!("{base}/rolebindings"), &binding)
                    .await,
                201
            );
        }
        // The index follows the store: wait until the user may create.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body = json!({"metadata": {"name": "probe"}});
            match plain_api
                .post("bench-token", "/api/v1/namespaces/bench/configmaps", &body)
                .await
            {
                s if s == 201 => break,
                s => assert!(Instant::now() < deadline, "the user is still refused: {s}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut rbac_ratios = Vec::new();
        let mut audit_ratios = Vec::new();
        let (mut admin_rates, mut user_rates, mut plain_rates, mut audited_rates) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let admin = creates(&plain_api, &plain_admin, &format!("a{round}")).await;
            let user = creates(&plain_api, "bench-token", &format!("u{round}")).await;
            rbac_ratios.push(user / admin);
            admin_rates.push(admin);
            user_rates.push(user);
            let unaudited = creates(&plain_api, &plain_admin, &format!("p{round}")).await;
            let with_audit = creates(&audited_api, &audited_admin, &format!("m{round}")).await;
            audit_ratios.push(with_audit / unaudited);
            plain_rates.push(unaudited);
            audited_rates.push(with_audit);
        }
        let lines = std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        vec![
            "| measure | result | beside baseline |".to_string(),
            "|---|---|---|".to_string(),
            format!(
                "| create ConfigMap as admin (`system:masters`), {CLIENTS} clients (baseline) | {:.0} req/s | baseline |",
                median(admin_rates)
            ),
            format!(
                "| create ConfigMap as a user allowed by the last of {ROLES} RoleBindings | {:.0} req/s | {:.2}× (median of {rounds} rounds) |",
                median(user_rates),
                median(rbac_ratios)
            ),
            format!(
                "| create ConfigMap as admin, no audit log (baseline) | {:.0} req/s | baseline |",
                median(plain_rates)
            ),
            format!(
                "| create ConfigMap as admin, audit log at Metadata ({lines} lines written) | {:.0} req/s | {:.2}× (median of {rounds} rounds) |",
                median(audited_rates),
                median(audit_ratios)
            ),
        ]
    });
    for child in [&mut plain, &mut audited] {
        let _ = child.kill();
        let _ = child.wait();
    }
    println!("\n{}", rows.join("\n"));
}
