//! The API server's HTTP surface, served over TLS from the cluster CA.
//!
//! Today: `/healthz` and `/livez` (the process is up) and `/readyz` (the datastore answers).
//! The Kubernetes REST surface (discovery, CRUD, watch, patch) is built on this router by the
//! API-server issue.

mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::store::Store;

pub use tls::{TlsError, serve, tls_config};

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(alive))
        .route("/livez", get(alive))
        .route("/readyz", get(ready))
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
