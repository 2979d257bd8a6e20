//! `pods/{name}/log`: proxied to the log server of the pod's node, which is what answers
//! `kubectl logs` (`-c`, `-f`, `--previous`, `--tail`, `--since`, `--since-time`,
//! `--timestamps`, `--limit-bytes`).
//!
//! How the API server reaches the node is in [`super::nodes`].

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use super::ApiState;
use super::status::{ApiError, ApiResult};

/// Query parameters passed on to the node as they are.
const FORWARDED: [&str; 7] = [
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

/// The container a log request means: the one named, else the pod's only container.
fn container_of(pod: &Value, name: &str, asked: Option<&String>) -> ApiResult<String> {
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let (apps, inits) = (names("containers"), names("initContainers"));
    match asked {
        Some(c) if apps.contains(c) || inits.contains(c) => Ok(c.clone()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if apps.len() == 1 => Ok(apps[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                apps.join(" ")
            );
            if !inits.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    inits.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// Serves `GET …/pods/{name}/log` by proxying to the pod's node.
pub async fn pod_log(
    state: &ApiState,
    namespace: &str,
    name: &str,
    pod: &Value,
    query: &HashMap<String, String>,
) -> ApiResult<Response> {
    let container = container_of(pod, name, query.get("container"))?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let (client, mut url) = super::nodes::endpoint(state, node_name).await?;
    url.path_segments_mut()
        .map_err(|()| ApiError::internal("bad node URL"))?
        .extend(["containerLogs", namespace, name, &container]);
    {
        let mut pairs = url.query_pairs_mut();
        for key in FORWARDED {
            if let Some(value) = query.get(key) {
                pairs.append_pair(key, value);
            }
        }
    }
    let response = client.get(url).send().await.map_err(|e| {
        ApiError::unavailable(format!("cannot reach node {node_name} for logs: {e}"))
    })?;
    let status = response.status();
    if !status.is_success() {
        let message = response.text().await.unwrap_or_default();
        return Err(match status.as_u16() {
            400 => ApiError::bad_request(message),
            404 => ApiError::bad_request(message),
            _ => ApiError::internal(format!("node {node_name}: {status}: {message}")),
        });
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(response.bytes_stream()))
        .expect("a valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container_of(&one, "p", None).unwrap(), "a");
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                 "initContainers": [{"name": "i"}]}});
        let err = container_of(&two, "p", None).unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(
            container_of(&two, "p", Some(&"i".to_string())).unwrap(),
            "i"
        );
        assert!(container_of(&two, "p", Some(&"z".to_string())).is_err());
    }
}
