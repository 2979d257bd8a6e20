//! The examples (examples/), driven as their READMEs say: `bosun up`, `bosun push` to a
//! local registry, `kubectl apply` of the example's manifest, then what the user would look
//! at (logs, status, answers). The modules come from scripts/guests.sh, which builds them
//! from source (guests/target/examples/).

use std::time::Duration;

use crate::support::up::Up;
use serde_json::Value;

/// The JSON log lines in `logs` whose `msg` is `msg`.
fn log_lines(logs: &str, msg: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["msg"] == msg)
        .collect()
}

#[tokio::test]
async fn jobs_in_rust_and_c_a_cronjob_and_the_sdk_tests_run_to_completion() {
    let up = Up::start("jobs").await;
    for name in ["hello", "c-hello", "bosun-sdk-tests"] {
        up.push(name);
    }
    up.apply("examples/hello/job.yaml");
    up.apply("examples/c-hello/job.yaml");
    up.apply("examples/cron/cronjob.yaml");
    up.apply("wasm-sdk/test-pod.yaml");

    for job in ["hello", "c-hello"] {
        up.kubectl(&[
            "wait",
            "--for=condition=complete",
            &format!("job/{job}"),
            "--timeout=90s",
        ])
        .unwrap_or_else(|e| panic!("job {job} did not complete: {e}"));
    }
    let hello = up.kubectl(&["logs", "job/hello"]).unwrap();
    assert!(
        hello.starts_with("Hello, Bosun user! This is WebAssembly, run by Bosun.\n"),
        "{hello}"
    );
    let greeted = log_lines(&hello, "greeted");
    assert_eq!(greeted.len(), 1, "{hello}");
    assert_eq!(greeted[0]["level"], "INFO");
    assert_eq!(greeted[0]["node"], "jobs");
    assert!(
        greeted[0]["pod"]
            .as_str()
            .unwrap()
            .starts_with("default/hello-"),
        "{hello}"
    );
    let c = up.kubectl(&["logs", "job/c-hello"]).unwrap();
    assert!(
        c.starts_with("Hello from C on WebAssembly, pod c-hello-"),
        "{c}"
    );
    assert!(c.contains("argument 1: from\nargument 2: C\n"), "{c}");

    // wasm-sdk's unit tests, compiled to wasm, run as a pod on Bosun.
    let tests = up
        .eventually("the sdk tests finish", || {
            let pod = up.json(&["pod", "sdk-tests"]);
            let phase = pod["status"]["phase"].as_str()?.to_string();
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
        })
        .await;
    let report = up.kubectl(&["logs", "sdk-tests"]).unwrap();
    assert_eq!(tests, "Succeeded", "{report}");
    assert!(report.contains("test result: ok."), "{report}");
    assert!(!report.contains("FAILED"), "{report}");

    // The CronJob's first Job starts at the next minute.
    let job = up
        .eventually("the CronJob made a Job", || {
            let jobs = up.json(&["jobs"]);
            jobs["items"].as_array()?.iter().find_map(|j| {
                let name = j["metadata"]["name"].as_str()?;
                name.starts_with("hello-every-minute-")
                    .then(|| name.to_string())
            })
        })
        .await;
    up.kubectl(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{job}"),
        "--timeout=60s",
    ])
    .unwrap();
    let cron = up.kubectl(&["logs", &format!("job/{job}")]).unwrap();
    assert!(cron.starts_with("Hello, cron!"), "{cron}");
    let cronjob = up.json(&["cronjob", "hello-every-minute"]);
    assert!(
        cronjob["status"]["lastScheduleTime"].is_string(),
        "{cronjob:#}"
    );
}

/// The body of `GET url`.
async fn body(http: &reqwest::Client, url: String) -> String {
    let response = http.get(&url).send().await;
    let response = response.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response.text().await.unwrap()
}

#[tokio::test]
async fn web_answers_on_every_replica_and_rolls_to_v2_and_back() {
    let up = Up::start("web").await;
    up.push("web");
    up.apply("examples/web/deployment.yaml");
    up.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .unwrap();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Every ready replica answers on its own pod IP, naming itself and its version.
    let answers = |version: &'static str| {
        let up = &up;
        let http = http.clone();
        async move {
            let pods = up.json(&["pods", "-l", "app=web"]);
            let mut seen = Vec::new();
            for pod in pods["items"].as_array().unwrap() {
                if pod["metadata"]["deletionTimestamp"].is_string() {
                    continue;
                }
                let name = pod["metadata"]["name"].as_str().unwrap();
                let ip = pod["status"]["podIP"].as_str().unwrap();
                let body = body(&http, format!("http://{ip}:8080/")).await;
                assert_eq!(body, format!("hello from {name} ({version})\n"));
                seen.push(name.to_string());
            }
            assert_eq!(seen.len(), 3, "{pods:#}");
            seen
        }
    };
    let v1 = answers("v1").await;
    let probes = up.json(&["pods", "-l", "app=web"]);
    for pod in probes["items"].as_array().unwrap() {
        assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    }

    up.kubectl(&["set", "env", "deployment/web", "VERSION=v2"])
        .unwrap();
    up.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .unwrap();
    up.eventually("only v2 replicas are left", || {
        let pods = up.json(&["pods", "-l", "app=web"]);
        (pods["items"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let v2 = answers("v2").await;
    assert!(v2.iter().all(|p| !v1.contains(p)), "{v1:?} {v2:?}");

    up.kubectl(&["rollout", "undo", "deployment/web"]).unwrap();
    up.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .unwrap();
    up.eventually("only v1 replicas are left", || {
        let pods = up.json(&["pods", "-l", "app=web"]);
        (pods["items"].as_array()?.len() == 3).then_some(())
    })
    .await;
    answers("v1").await;
    let history = up
        .kubectl(&["rollout", "history", "deployment/web"])
        .unwrap();
    assert!(history.contains('3'), "{history}");
}

#[tokio::test]
async fn config_follows_its_objects_sidecars_share_localhost_and_up_keeps_its_state() {
    let mut up = Up::start("config").await;
    up.push("config");
    up.push("sidecar");
    up.apply("examples/config/app.yaml");
    up.apply("examples/sidecar/pod.yaml");

    let logs = up.logs_show(&["config"], "\"msg\":\"settings\"").await;
    let started = log_lines(&logs, "started");
    assert_eq!(started[0]["greeting"], "Hello from a ConfigMap");
    assert_eq!(started[0]["api_key_bytes"], 10);
    assert!(!logs.contains("s3cr3t"), "the secret was logged: {logs}");
    let settings = log_lines(&logs, "settings");
    assert_eq!(settings[0]["color"], "blue");
    assert_eq!(settings[0]["size"], 3);
    assert_eq!(settings[0]["password_bytes"], 7);

    // Files follow the ConfigMap without a restart.
    up.kubectl(&[
        "patch",
        "configmap",
        "app-settings",
        "-p",
        r#"{"data":{"color":"green"}}"#,
    ])
    .unwrap();
    up.logs_show(&["config"], "\"color\":\"green\"").await;
    let pod = up.json(&["pod", "config"]);
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);

    // The sidecar reaches the app on the pod's loopback.
    let heard = up
        .logs_show(&["sidecar", "-c", "sidecar"], "app answer #2")
        .await;
    assert!(!log_lines(&heard, "sidecar heard").is_empty(), "{heard}");

    // Ctrl-C stops everything; the next `bosun up` has the same cluster.
    up.interrupt();
    up.restart().await;
    let config = up.json(&["configmap", "app-settings"]);
    assert_eq!(config["data"]["color"], "green");
    up.eventually("the pods run again after the restart", || {
        let pod = up.json(&["pod", "sidecar"]);
        let statuses = pod["status"]["containerStatuses"].as_array()?.clone();
        let again = statuses
            .iter()
            .all(|s| s["ready"] == true && s["restartCount"].as_i64().is_some_and(|n| n >= 1));
        again.then_some(())
    })
    .await;
    up.logs_show(&["config"], "\"color\":\"green\"").await;

    // Deleting the pod asks the guest to stop (wasm-sdk's shutdown): it says goodbye within
    // its grace period instead of being cut off at the end of it.
    let follow = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &up.server.kubeconfig)
        .args(["logs", "-f", "config"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    up.logs_show(&["config"], "\"color\":\"green\"").await;
    up.kubectl(&["delete", "pod", "config", "--wait=false"])
        .unwrap();
    let followed = tokio::task::spawn_blocking(move || follow.wait_with_output().unwrap())
        .await
        .unwrap();
    let followed = String::from_utf8_lossy(&followed.stdout);
    assert_eq!(log_lines(&followed, "stopping").len(), 1, "{followed}");
}

#[tokio::test]
async fn the_function_examples_answer_on_each_replica_and_call_each_other_by_service() {
    let up = Up::start("fnex").await;
    up.push("function-hello");
    up.push("function-proxy");
    up.apply("examples/function-hello/function.yaml");
    up.apply("examples/function-proxy/function.yaml");
    for deployment in ["deployment/function-hello", "deployment/function-proxy"] {
        up.kubectl(&["rollout", "status", deployment, "--timeout=90s"])
            .unwrap();
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let pods = up.json(&["pods", "-l", "app=function-hello"]);
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 2);
    for pod in pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let body = body(&http, format!("http://{ip}:8080/hi")).await;
        assert_eq!(body, format!("{{\"pod\":{name:?},\"path\":\"/hi\"}}\n"));
    }

    // The proxy calls the hello Service by name and hands back what one replica said.
    let proxy = up.json(&["pods", "-l", "app=function-proxy"]);
    let ip = proxy["items"][0]["status"]["podIP"].as_str().unwrap();
    let body = body(&http, format!("http://{ip}:8080/via")).await;
    assert!(
        body.contains(r#"got 200 from http://function-hello/via: {"pod":"function-hello-"#),
        "{body}"
    );
}
