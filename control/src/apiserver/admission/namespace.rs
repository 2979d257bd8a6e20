//! NamespaceLifecycle, as in Kubernetes: nothing is created in a namespace that does not exist
//! or is being terminated, and the namespaces the system needs are never deleted.

use bosun_api::resources;
use serde_json::Value;

use super::{Operation, Plugin, Request};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::store::{self, Key, Store};

/// Namespaces that may not be deleted.
const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

pub struct NamespaceLifecycle;

#[async_trait::async_trait]
impl Plugin for NamespaceLifecycle {
    fn name(&self) -> &'static str {
        "NamespaceLifecycle"
    }

    async fn validate(&self, store: &dyn Store, request: &Request<'_>) -> ApiResult<()> {
        match request.operation {
            Operation::Delete
                if request.is("", "Namespace") && IMMORTAL.contains(&request.name) =>
            {
                Err(ApiError::forbidden(format!(
                    "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                    request.name
                )))
            }
            Operation::Create if request.resource.namespaced => {
                let ns = request.namespace.unwrap_or_default();
                let namespaces = resources::find("", "v1", "namespaces").expect("registered");
                match store.get(&Key::new("namespaces", "", ns)).await {
                    Ok(namespace)
                        if namespace
                            .value
                            .pointer("/status/phase")
                            .and_then(Value::as_str)
                            == Some("Terminating") =>
                    {
                        Err(ApiError::forbidden(format!(
                            "unable to create new content in namespace {ns} because it is being terminated"
                        )))
                    }
                    Ok(_) => Ok(()),
                    Err(store::Error::NotFound { .. }) => Err(ApiError::not_found(namespaces, ns)),
                    Err(e) => Err(ApiError::from_store(e, request.resource, ns)),
                }
            }
            _ => Ok(()),
        }
    }
}
