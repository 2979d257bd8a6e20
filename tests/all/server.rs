//! End-to-end tests of the `bosun server` binary: TLS from the cluster CA, kubeconfig, cluster
//! token handling on SQLite and on a shared PostgreSQL, readiness that follows the datastore.

use std::time::Duration;

use crate::support::{PrivatePostgres, Server, https_client, postgres_db};

#[tokio::test]
async fn serves_health_over_tls_that_its_kubeconfig_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    let client = https_client(&server.ca_pem());
    for path in ["/healthz", "/livez", "/readyz"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    use std::os::unix::fs::PermissionsExt;
    for file in ["admin.kubeconfig", "token"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} must be private");
    }
    let ca = server.ca_pem();
    drop(server);

    // A restart on the same data directory keeps the cluster (same CA).
    let again = Server::start(&["--data-dir", dir.path().to_str().unwrap()]).await;
    assert_eq!(again.ca_pem(), ca);
    let ok = https_client(&ca)
        .get(again.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_second_server_on_postgres_joins_only_with_the_cluster_token() {
    let url = postgres_db().await;
    let first_dir = tempfile::tempdir().unwrap();
    let first = Server::start(&[
        "--data-dir",
        first_dir.path().to_str().unwrap(),
        "--datastore-endpoint",
        &url,
    ])
    .await;
    let token = std::fs::read_to_string(first_dir.path().join("token")).unwrap();
    let token = token.trim();
    assert!(token.starts_with("bosun1."), "{token}");

    let second_dir = tempfile::tempdir().unwrap();
    let dir = second_dir.path().to_str().unwrap();
    let missing = Server::fails(&["--data-dir", dir, "--datastore-endpoint", &url]).await;
    assert!(missing.contains("--token"), "{missing}");
    let wrong = Server::fails(&[
        "--data-dir",
        dir,
        "--datastore-endpoint",
        &url,
        "--token",
        "nope",
    ])
    .await;
    assert!(wrong.contains("does not match"), "{wrong}");

    let second = Server::start(&[
        "--data-dir",
        dir,
        "--datastore-endpoint",
        &url,
        "--token",
        token,
    ])
    .await;
    assert_eq!(second.ca_pem(), first.ca_pem(), "one cluster, one CA");
    let client = https_client(&first.ca_pem());
    for server in [&first, &second] {
        let ready = client.get(server.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
    }
}

#[tokio::test]
async fn readyz_follows_the_datastore() {
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--datastore-endpoint",
        &pg.url,
    ])
    .await;
    let client = https_client(&server.ca_pem());
    let status = |client: reqwest::Client, url: String| async move {
        client.get(url).send().await.unwrap().status().as_u16()
    };
    assert_eq!(status(client.clone(), server.url("/readyz")).await, 200);

    pg.crash();
    assert_eq!(status(client.clone(), server.url("/readyz")).await, 503);
    assert_eq!(status(client.clone(), server.url("/healthz")).await, 200);

    pg.restart();
    let mut ready = false;
    for _ in 0..50 {
        if status(client.clone(), server.url("/readyz")).await == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "ready again once the database is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_the_event_ttl() {
    use k8s_openapi::api::core::v1::Event;
    use kube::api::{Api, PostParams};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--event-ttl",
        "6s",
    ])
    .await;
    let events: Api<Event> = Api::namespaced(server.client().await, "default");
    let event = |name: &str| -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Testing",
            "message": "expires",
        }))
        .unwrap()
    };
    events
        .create(&PostParams::default(), &event("old"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    events
        .create(&PostParams::default(), &event("young"))
        .await
        .unwrap();
    // The first event is past its TTL after 6 s (creation times have whole seconds, and the
    // sweep runs every second); the second is then at most 5 s old.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while events.get_opt("old").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old event never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        events.get_opt("young").await.unwrap().is_some(),
        "an event younger than the TTL is kept"
    );
}
