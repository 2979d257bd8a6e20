//! The API server: the Kubernetes REST surface over the store, served over TLS from the
//! cluster CA.
//!
//! - [`discovery`]: `/version`, `/api`, `/apis`, resource lists built from the registry.
//! - [`openapi`]: `/openapi/v3`, the operations and type schemas of each group version.
//! - [`request`]: what a request names and asks (its target, verb, list and watch options);
//!   [`read`]: reads of the store as the API presents them.
//! - [`rest`]: one generic implementation of get, list, watch, create, update, patch, delete
//!   and deletecollection for every registered kind, plus `status` and `scale`.
//! - [`kinds`]: a strategy per kind (its type, defaults, validation, subresources, deletion
//!   hooks, table columns, protobuf message).
//! - [`admission`]: metadata, the kind's preparation, then the chain of admission plugins.
//! - [`patch`], [`table`], [`watch`]: patch formats, server-side printing, watch streams.
//! - [`auth`]: authentication (tokens, client certificates), impersonation, RBAC and the
//!   review APIs.
//! - [`status`]: the one place errors become `metav1.Status` responses.
//! - [`metrics`]: `metrics.k8s.io` from the nodes' readings; [`history`]: an hour of them,
//!   and of the Functions' figures, under `bosun.dev/v1`; [`instrument`]: `/metrics`.
//!
//! Unauthenticated requests get 401, except `/healthz`, `/livez`, `/readyz` and `/version`;
//! what a user may do is RBAC's decision.

pub mod admission;
mod apply;
pub mod audit;
pub mod auth;
mod discovery;
pub mod expiry;
pub mod history;
pub mod instrument;
pub mod kinds;
pub mod logs;
pub mod metrics;
pub mod nodes;
mod openapi;
mod patch;
mod protobuf;
mod read;
mod request;
mod rest;
pub mod status;
mod table;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{any, get};

use crate::store::Store;

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub authorizer: Arc<dyn auth::Authorizer>,
    /// How often a watch that asked for bookmarks gets one (Kubernetes: about a minute).
    pub bookmark_interval: std::time::Duration,
    /// How the server reaches nodes' ports; `None` answers `pods/log` and `nodes/proxy` with 503.
    pub node_clients: Option<Arc<nodes::NodeClients>>,
    /// The admission plugins every write goes through.
    pub admission: Arc<admission::Chain>,
    /// The nodes' last usage readings, for `metrics.k8s.io`.
    pub metrics: Arc<metrics::Readings>,
    /// An hour of usage and Function figures, for `bosun.dev/v1`.
    pub history: Arc<history::History>,
    /// The audit log; `None` logs nothing.
    pub audit: Option<Arc<audit::Auditor>>,
    /// ServiceAccount tokens' signer and checker; `None` issues none.
    pub service_accounts: Option<Arc<auth::serviceaccount::ServiceAccountTokens>>,
    /// The CA and the cluster token, for nodes that join with the token (`/cacerts`).
    pub join: Option<Arc<auth::join::Join>>,
}

pub fn router(state: ApiState, authenticator: Arc<auth::Authenticator>) -> Router {
    let metrics = Arc::new(instrument::ServerMetrics::default());
    let auth = Arc::new(auth::AuthState {
        authenticator,
        authorizer: state.authorizer.clone(),
    });
    let auditor = state.audit.clone();
    let router = Router::new()
        .route(
            "/metrics",
            get(instrument::serve).with_state(metrics.clone()),
        )
        .route("/healthz", get(alive))
        .route("/livez", get(alive))
        .route("/readyz", get(ready))
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::core_versions))
        .route("/apis", get(discovery::groups))
        .route("/api/{*rest}", any(rest::core))
        .route("/apis/metrics.k8s.io/{*rest}", any(metrics::serve))
        .route(
            "/apis/bosun.dev/v1/accessible-namespaces",
            any(auth::namespaces::serve),
        )
        .route(
            "/apis/bosun.dev/v1/accessiblenamespaces",
            any(auth::namespaces::serve),
        )
        .route("/apis/bosun.dev/{*rest}", any(history::serve))
        .route(
            "/apis/authorization.k8s.io/{*rest}",
            any(auth::review::serve),
        )
        .route(
            "/apis/authentication.k8s.io/{*rest}",
            any(auth::review::serve),
        )
        .route("/apis/{*rest}", any(rest::grouped))
        .route(
            "/.well-known/openid-configuration",
            get(auth::serviceaccount::serve_discovery),
        )
        .route("/openid/v1/jwks", get(auth::serviceaccount::serve_jwks))
        .route("/cacerts", get(auth::join::serve))
        .route("/openapi/v3", get(openapi::index))
        .route("/openapi/v3/{*path}", get(openapi::group_version))
        .layer(DefaultBodyLimit::disable());
    // The audit middleware runs after authentication (inside it), so it knows the user.
    let router = match auditor {
        Some(auditor) => router.layer(axum::middleware::from_fn_with_state(auditor, audit::audit)),
        None => router,
    };
    router
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            instrument::observe,
        ))
        .with_state(state)
}

async fn alive() -> &'static str {
    "ok"
}

/// How long `/readyz` waits for the datastore before calling it unready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

async fn ready(State(state): State<ApiState>) -> (StatusCode, String) {
    let answer = tokio::time::timeout(READY_TIMEOUT, state.store.ready()).await;
    match answer {
        Ok(Ok(())) => (StatusCode::OK, "ok".into()),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("datastore not ready: no answer within {READY_TIMEOUT:?}"),
        ),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("datastore not ready: {error}"),
            )
        }
    }
}

/// Creates the objects every cluster starts with, if they are missing: the namespaces
/// `default`, `kube-system`, `kube-public`, `kube-node-lease`, the `wasmtime` RuntimeClass and
/// the system PriorityClasses.
pub async fn ensure_builtin_objects(store: &dyn Store) -> crate::store::Result<()> {
    use bosun_api::resources::find;
    use serde_json::json;
    let namespaces = find("", "v1", "namespaces").expect("registered");
    let runtime_classes = find("node.k8s.io", "v1", "runtimeclasses").expect("registered");
    let priority_classes = find("scheduling.k8s.io", "v1", "priorityclasses").expect("registered");
    let mut objects = Vec::new();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        objects.push((namespaces, json!({"metadata": {"name": ns}})));
    }
    objects.push((
        runtime_classes,
        json!({"metadata": {"name": "wasmtime"}, "handler": "wasmtime"}),
    ));
    for (name, value) in kinds::SYSTEM_PRIORITY_CLASSES {
        objects.push((
            priority_classes,
            json!({"metadata": {"name": name}, "value": value}),
        ));
    }
    for (resource, mut object) in objects {
        let mut strict = admission::FieldCheck::new(admission::FieldValidation::Strict);
        let name = admission::prepare_create(resource, None, &mut object, &mut strict)
            .expect("built-in objects are valid");
        let key = crate::store::Key::new(resource.storage_name(), "", &name);
        match store.create(&key, object).await {
            Ok(_) | Err(crate::store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
