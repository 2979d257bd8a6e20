//! Reads of the store as the API presents them: one object ([`get`]) or a list ([`list`]), in
//! the endpoint's API version. The REST verbs, watches and subresources all read through here.

use serde_json::{Value, json};

use super::ApiState;
use super::kinds;
use super::request::{ListOptions, Target};
use super::status::{ApiError, ApiResult};
use crate::store::{ListRequest, Object};

pub async fn get(state: &ApiState, target: &Target) -> ApiResult<Object> {
    let name = target.name();
    let mut object = state
        .store
        .get(&target.key(name))
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, name))?;
    object.value = kinds::presented(target.resource, object.value);
    Ok(object)
}

pub async fn list(state: &ApiState, target: &Target, options: &ListOptions) -> ApiResult<Value> {
    let result = state
        .store
        .list(&ListRequest {
            resource: target.resource.storage_name(),
            namespace: target.namespace.clone(),
            labels: options.labels.clone(),
            fields: options.fields.clone(),
            limit: options.limit,
            continue_token: options.continue_token.clone(),
            revision: options.revision,
        })
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, ""))?;
    let items: Vec<Value> = result
        .items
        .into_iter()
        .map(|o| kinds::presented(target.resource, o.value))
        .collect();
    let mut metadata = json!({"resourceVersion": result.revision.to_string()});
    if let Some(token) = result.continue_token {
        metadata["continue"] = json!(token);
    }
    Ok(json!({
        "kind": format!("{}List", target.resource.kind),
        "apiVersion": target.resource.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}
