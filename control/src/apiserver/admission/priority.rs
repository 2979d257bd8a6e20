//! Priority, as in Kubernetes: a new pod's `priorityClassName` (or, without one, the class
//! marked `globalDefault`) becomes its `spec.priority` and `spec.preemptionPolicy`, which the
//! scheduler's queue orders by. Only one class may be the global default.

use bosun_api::resources::{self, Resource};
use serde_json::{Value, json};

use super::{Operation, Plugin, Request};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::store::{self, Key, ListRequest, Store};

pub struct Priority;

fn classes() -> &'static Resource {
    resources::find("scheduling.k8s.io", "v1", "priorityclasses").expect("registered")
}

#[async_trait::async_trait]
impl Plugin for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }

    async fn admit(&self, store: &dyn Store, request: &mut Request<'_>) -> ApiResult<()> {
        if request.operation == Operation::Create
            && request.subresource.is_none()
            && request.is("", "Pod")
        {
            return admit_pod(store, request).await;
        }
        Ok(())
    }

    async fn validate(&self, store: &dyn Store, request: &Request<'_>) -> ApiResult<()> {
        let is_default = request.object.get("globalDefault") == Some(&json!(true));
        if request.operation == Operation::Delete
            || !request.is("scheduling.k8s.io", "PriorityClass")
            || !is_default
        {
            return Ok(());
        }
        match global_default(store).await? {
            Some(other) if other["metadata"]["name"] != request.name => {
                Err(ApiError::forbidden(format!(
                    "PriorityClass {} is already marked as default. Only one default can exist",
                    other["metadata"]["name"].as_str().unwrap_or_default()
                )))
            }
            _ => Ok(()),
        }
    }
}

async fn admit_pod(store: &dyn Store, request: &mut Request<'_>) -> ApiResult<()> {
    let pod = &mut *request.object;
    let name = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from);
    let class = match &name {
        Some(name) => match store
            .get(&Key::new(classes().storage_name(), "", name))
            .await
        {
            Ok(class) => Some(class.value),
            Err(store::Error::NotFound { .. }) => {
                return Err(ApiError::forbidden(format!(
                    "pods \"{}\" is forbidden: no PriorityClass with name {name} was found",
                    request.name
                )));
            }
            Err(e) => return Err(ApiError::from_store(e, classes(), name)),
        },
        None => global_default(store).await?,
    };
    let (class_name, value, policy) = match &class {
        Some(class) => (
            class["metadata"]["name"].clone(),
            class.get("value").and_then(Value::as_i64).unwrap_or(0),
            class.get("preemptionPolicy").cloned(),
        ),
        None => (Value::Null, 0, None),
    };
    let given = pod.pointer("/spec/priority").and_then(Value::as_i64);
    if let Some(given) = given
        && given != value
    {
        return Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name",
            request.name
        )));
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    spec.insert("priority".into(), json!(value));
    if !class_name.is_null() {
        spec.insert("priorityClassName".into(), class_name);
    }
    if let Some(policy) = policy
        && spec.get("preemptionPolicy").is_none_or(Value::is_null)
    {
        spec.insert("preemptionPolicy".into(), policy);
    }
    Ok(())
}

/// The class marked `globalDefault`, if any (the one with the lowest value if a race made two).
async fn global_default(store: &dyn Store) -> ApiResult<Option<Value>> {
    let list = store
        .list(&ListRequest {
            resource: classes().storage_name(),
            namespace: None,
            labels: Default::default(),
            fields: Default::default(),
            limit: 0,
            continue_token: None,
            revision: None,
        })
        .await
        .map_err(|e| ApiError::from_store(e, classes(), ""))?;
    Ok(list
        .items
        .into_iter()
        .filter(|c| c.value.get("globalDefault") == Some(&json!(true)))
        .min_by_key(|c| c.value.get("value").and_then(Value::as_i64).unwrap_or(0))
        .map(|c| c.value))
}
