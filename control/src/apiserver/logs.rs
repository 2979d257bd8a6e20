//! `pods/{name}/log`: proxied to the log server of the pod's node, which is what answers
//! `kubectl logs` (`-c`, `-f`, `--previous`, `--tail`, `--since`, `--since-time`,
//! `--timestamps`, `--limit-bytes`).
//!
//! The API server connects to the node's `InternalIP` at `status.daemonEndpoints.kubeletEndpoint`
//! and trusts exactly the certificate the node published in its
//! `bosun.dev/serving-certificate` annotation. It proves itself with a client certificate
//! from the cluster CA, which is the only thing the node's log server accepts.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bosun_api::resources::find;
use serde_json::Value;

use super::ApiState;
use super::status::{ApiError, ApiResult};
use crate::store::Key;

/// The node annotation with the node's log-server certificate (PEM).
pub const SERVING_CERT_ANNOTATION: &str = "bosun.dev/serving-certificate";

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

/// HTTPS clients for nodes, one per node certificate, all presenting the API server's client
/// certificate.
pub struct NodeClients {
    identity: bosun_tls::Identity,
    clients: Mutex<HashMap<String, reqwest::Client>>,
}

/// Why a node cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum NodeClientError {
    #[error("the node's serving certificate: {0}")]
    Tls(#[from] bosun_tls::Error),
    #[error("cannot make an HTTPS client: {0}")]
    Client(#[from] reqwest::Error),
}

impl NodeClients {
    pub fn new(identity: bosun_tls::Identity) -> Self {
        Self {
            identity,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, node_cert_pem: &str) -> Result<reqwest::Client, NodeClientError> {
        if let Some(client) = self.clients.lock().unwrap().get(node_cert_pem) {
            return Ok(client.clone());
        }
        let tls = bosun_tls::client_config(node_cert_pem, &self.identity)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()?;
        let mut clients = self.clients.lock().unwrap();
        if clients.len() > 1000 {
            clients.clear();
        }
        clients.insert(node_cert_pem.to_string(), client.clone());
        Ok(client)
    }
}

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
    let nodes = find("", "v1", "nodes").expect("nodes are registered");
    let node = state
        .store
        .get(&Key::new(nodes.storage_name(), "", node_name))
        .await
        .map_err(|e| ApiError::from_store(e, nodes, node_name))?
        .value;
    let address = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} has no InternalIP")))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} publishes no log port")))?;
    let cert = node["metadata"]["annotations"][SERVING_CERT_ANNOTATION]
        .as_str()
        .ok_or_else(|| {
            ApiError::unavailable(format!("node {node_name} publishes no serving certificate"))
        })?;
    let client = state
        .node_clients
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this server cannot reach nodes"))?
        .client(cert)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let host = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address.to_string(),
    };
    let mut url = reqwest::Url::parse(&format!("https://{host}:{port}/"))
        .map_err(|e| ApiError::internal(format!("node address {address:?}: {e}")))?;
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
