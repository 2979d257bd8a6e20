//! `bosun apply|get|describe|delete|logs|completion`: the commands for machines without
//! kubectl, against `bosun up`, checked against what kubectl sees.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::support::BOSUN;
use crate::support::up::Up;
use serde_json::Value;

/// Runs `bosun ARGS` with the cluster's kubeconfig and `stdin`: (success, stdout, stderr).
fn bosun(up: &Up, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BOSUN)
        .args(args)
        .env("KUBECONFIG", &up.server.kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(up: &Up, args: &[&str], stdin: &str) -> String {
    let (success, out, err) = bosun(up, args, stdin);
    assert!(success, "bosun {args:?} failed: {out}{err}");
    out
}

#[tokio::test]
async fn apply_get_describe_logs_and_delete_without_kubectl() {
    let up = Up::start("cli").await;
    up.push("hello");
    let job = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/hello/job.yaml"
    ))
    .unwrap()
    .replace("localhost:5000", &up.registry.host);
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {tier: web}\ndata:\n  color: blue\n  size: \"3\"\n";
    let manifests = format!("{job}---\n{config}");

    assert_eq!(
        ok(&up, &["apply", "-f", "-"], &manifests),
        "job.batch/hello created\nconfigmap/settings created\n"
    );
    assert_eq!(
        ok(&up, &["apply", "-f", "-"], &manifests),
        "job.batch/hello unchanged\nconfigmap/settings unchanged\n"
    );
    // A key dropped from the manifest goes; one changed by hand comes back.
    up.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"color":"red"}}"#,
    ])
    .unwrap();
    let changed = config.replace("  size: \"3\"\n", "");
    assert_eq!(
        ok(&up, &["apply", "-f", "-"], &changed),
        "configmap/settings configured\n"
    );
    let live = up.json(&["configmap", "settings"]);
    assert_eq!(live["data"], serde_json::json!({"color": "blue"}));
    assert_eq!(live["metadata"]["labels"]["tier"], "web");

    up.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=90s",
    ])
    .unwrap();
    let logs = ok(&up, &["logs", "job/hello"], "");
    assert!(logs.starts_with("Hello, Bosun user!"), "{logs}");
    let pod = up.json(&["pods", "-l", "job-name=hello"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        ok(&up, &["logs", &pod, "--tail", "1"], ""),
        logs.lines().last().unwrap().to_string() + "\n"
    );

    // The tables are the server's, as kubectl prints them (AGE aside).
    let ours = ok(&up, &["get", "jobs"], "");
    let theirs = up.kubectl(&["get", "jobs"]).unwrap();
    let strip_age = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(strip_age(&ours), strip_age(&theirs), "{ours}\n{theirs}");
    assert!(ours.starts_with("NAME "), "{ours}");
    let wide = ok(&up, &["get", "pods", "-o", "wide", "-A"], "");
    assert!(wide.starts_with("NAMESPACE   NAME"), "{wide}");
    assert!(wide.contains(" IP "), "{wide}");
    assert_eq!(
        ok(&up, &["get", "cm", "-l", "tier=web", "-o", "name"], ""),
        "configmap/settings\n"
    );
    let yaml = ok(&up, &["get", "configmap/settings", "-o", "yaml"], "");
    let parsed: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(parsed["data"]["color"], "blue");
    // As in kubectl, the ownership records only on request.
    assert!(parsed["metadata"].get("managedFields").is_none(), "{yaml}");
    let shown = ok(
        &up,
        &[
            "get",
            "configmap/settings",
            "-o",
            "json",
            "--show-managed-fields",
        ],
        "",
    );
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert!(
        shown["metadata"]["managedFields"][0]["manager"].is_string(),
        "{shown}"
    );
    let list: Value = serde_json::from_str(&ok(&up, &["get", "jobs", "-o", "json"], "")).unwrap();
    assert_eq!(list["items"][0]["kind"], "Job");

    let described = ok(&up, &["describe", "pod", &pod], "");
    assert!(
        described.starts_with(&format!("Name:         {pod}\nNamespace:    default\n")),
        "{described}"
    );
    assert!(described.contains("Started container hello"), "{described}");

    // Bad input changes nothing and says why.
    let (success, _, err) = bosun(
        &up,
        &["apply", "-f", "-"],
        "apiVersion: v9\nkind: Gizmo\nmetadata: {name: g}\n",
    );
    assert!(!success);
    assert!(err.contains("no kind \"Gizmo\""), "{err}");
    let (success, _, err) = bosun(&up, &["get", "configmap", "nope"], "");
    assert!(!success);
    assert_eq!(err, "Error: configmaps \"nope\" not found (NotFound)\n");
    let (success, _, err) = bosun(&up, &["get", "gizmos"], "");
    assert!(!success);
    assert!(
        err.contains("doesn't have a resource type \"gizmos\""),
        "{err}"
    );

    assert_eq!(
        ok(&up, &["delete", "-f", "-"], &manifests),
        "job.batch \"hello\" deleted\nconfigmap \"settings\" deleted\n"
    );
    assert!(up.kubectl(&["get", "configmap", "settings"]).is_err());
    let (success, _, _) = bosun(&up, &["delete", "configmap", "settings"], "");
    assert!(!success);
    ok(
        &up,
        &["delete", "configmap", "settings", "--ignore-not-found"],
        "",
    );

    let completion = ok(&up, &["completion", "bash"], "");
    assert!(completion.contains("_bosun()"), "{completion}");
    assert!(completion.contains("describe"), "{completion}");
}
