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
    let dir = tempfile::tempdir().unwrap();
    let (store, secrets) = SqliteStore::open(&dir.path().join("state.db"), Some("t"))
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let state = ApiState {
        store: store.clone(),
        authorizer: Arc::new(auth::AllowAuthenticated),
        bookmark_interval: Duration::from_secs(60),
        node_clients: None,
        default_tolerations: Default::default(),
        service_ranges: Default::default(),
    };
    let router = apiserver::router(
        state,
        Arc::new(auth::Authenticator::with_admin(secrets.admin_token_hash())),
    );
    // A quiet resource and no bookmarks: nothing is ever sent on this watch after its start.
    let request = Request::get("/api/v1/namespaces/default/configmaps?watch=true")
        .header("authorization", format!("Bearer {}", secrets.admin_token))
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
