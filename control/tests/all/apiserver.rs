//! The API server in process, over a real SQLite store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bosun_control::apiserver::{self, ApiState, auth};
use bosun_control::store::{SqliteStore, Store};
use futures::StreamExt;
use tower::ServiceExt;

async fn wait_for_watches(store: &dyn Store, expected: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.watches() != expected {
        assert!(
            Instant::now() < deadline,
            "{what}: {} watches served, expected {expected}",
            store.watches()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_request_lets_go_of_the_store_when_its_client_leaves() {
    let (_dir, store, router, token) = in_process().await;
    // A quiet resource and no bookmarks: nothing is ever sent on this watch after its start.
    let request = Request::get("/api/v1/namespaces/default/configmaps?watch=true")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    // The `default` namespace's configmaps: none, so no initial event either.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), body.next())
            .await
            .is_err(),
        "nothing to send yet"
    );
    wait_for_watches(&*store, 1, "while the client reads").await;
    drop(body);
    wait_for_watches(&*store, 0, "after the client left").await;
}

/// An in-process API server on a fresh SQLite store: the store, the router and the admin's
/// token.
async fn in_process() -> (tempfile::TempDir, Arc<dyn Store>, axum::Router, String) {
    let dir = tempfile::tempdir().unwrap();
    let (store, secrets) = SqliteStore::open(&dir.path().join("state.db"), Some("t"))
        .await
        .unwrap();
    apiserver::ensure_builtin_objects(&store).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let state = ApiState {
        store: store.clone(),
        authorizer: Arc::new(auth::AllowAuthenticated),
        bookmark_interval: Duration::from_secs(60),
        node_clients: None,
        admission: Arc::new(apiserver::admission::Chain::standard(Default::default())),
        metrics: Default::default(),
        history: Default::default(),
        service_accounts: None,
        join: None,
        audit: None,
    };
    let router = apiserver::router(
        state,
        Arc::new(auth::Authenticator::with_admin(secrets.admin_token_hash())),
    );
    (dir, store, router, secrets.admin_token)
}

async fn send(
    router: &axum::Router,
    token: &str,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header(
            "content-type",
            if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            },
        )
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn pod(name: &str, class: Option<&str>) -> serde_json::Value {
    let mut pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:v1"}]}});
    if let Some(class) = class {
        pod["spec"]["priorityClassName"] = class.into();
    }
    pod
}

#[tokio::test]
async fn priority_classes_give_pods_their_priority() {
    let (_dir, _store, router, token) = in_process().await;
    let classes = "/apis/scheduling.k8s.io/v1/priorityclasses";
    let pods = "/api/v1/namespaces/default/pods";
    let (status, class) = send(&router, &token, "POST", classes,
        serde_json::json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"})).await;
    assert_eq!(status, StatusCode::CREATED, "{class}");

    let (status, created) = send(&router, &token, "POST", pods, pod("a", Some("high"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["priority"], 1000);
    assert_eq!(created["spec"]["preemptionPolicy"], "Never");

    let (status, err) = send(&router, &token, "POST", pods, pod("b", Some("missing"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("no PriorityClass with name missing was found"),
        "{err}"
    );
    let mut forged = pod("c", Some("high"));
    forged["spec"]["priority"] = 5.into();
    let (status, err) = send(&router, &token, "POST", pods, forged).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");

    // The system classes exist; a user class may not reach their range.
    let (status, system) = send(
        &router,
        &token,
        "GET",
        &format!("{classes}/system-node-critical"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(system["value"], 2_000_001_000);
    let (status, err) = send(
        &router,
        &token,
        "POST",
        classes,
        serde_json::json!({"metadata": {"name": "huge"}, "value": 1_000_000_001}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");

    // Without a class a pod gets 0, then the global default's value once there is one; and
    // there is only ever one global default.
    let (_, plain) = send(&router, &token, "POST", pods, pod("d", None)).await;
    assert_eq!(plain["spec"]["priority"], 0);
    let (status, _) = send(
        &router,
        &token,
        "POST",
        classes,
        serde_json::json!({"metadata": {"name": "normal"}, "value": 10, "globalDefault": true}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = send(
        &router,
        &token,
        "POST",
        classes,
        serde_json::json!({"metadata": {"name": "other"}, "value": 20, "globalDefault": true}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (_, defaulted) = send(&router, &token, "POST", pods, pod("e", None)).await;
    assert_eq!(defaulted["spec"]["priority"], 10);
    assert_eq!(defaulted["spec"]["priorityClassName"], "normal");

    // A class's value does not change.
    let (status, err) = send(
        &router,
        &token,
        "PATCH",
        &format!("{classes}/high"),
        serde_json::json!({"value": 2000}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
}
