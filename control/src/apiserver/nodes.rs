//! Reaching a node's port (10250, the kubelet's): the API server connects to the node's
//! `InternalIP` at `status.daemonEndpoints.kubeletEndpoint` and trusts exactly the certificate
//! the node published in its `bosun.dev/serving-certificate` annotation. It proves itself with
//! a client certificate from the cluster CA, which is the only thing the node port accepts.
//!
//! `pods/{name}/log` ([`super::logs`]) goes there, and so does `GET nodes/{name}/proxy/{path}`,
//! which passes the path and query on as they are: `kubectl get --raw
//! /api/v1/nodes/NODE/proxy/metrics/functions` reads the node's function metrics.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bosun_api::resources::find;

use super::ApiState;
use super::status::{ApiError, ApiResult};
use crate::store::Key;

/// The node annotation with the certificate of the node's port (PEM).
pub const SERVING_CERT_ANNOTATION: &str = "bosun.dev/serving-certificate";

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

/// An HTTPS client for the node named `node_name`, and the URL of its port's root.
pub async fn endpoint(
    state: &ApiState,
    node_name: &str,
) -> ApiResult<(reqwest::Client, reqwest::Url)> {
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
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} publishes no port")))?;
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
    let url = reqwest::Url::parse(&format!("https://{host}:{port}/"))
        .map_err(|e| ApiError::internal(format!("node address {address:?}: {e}")))?;
    Ok((client, url))
}

/// Serves `GET nodes/{name}/proxy/{path}`: the node's answer to `GET /{path}?{query}`, with
/// its status and content type.
pub async fn proxy(
    state: &ApiState,
    node_name: &str,
    path: &str,
    query: Option<&str>,
) -> ApiResult<Response> {
    let (client, mut url) = endpoint(state, node_name).await?;
    url.path_segments_mut()
        .map_err(|()| ApiError::internal("bad node URL"))?
        .pop_if_empty()
        .extend(path.split('/'));
    url.set_query(query);
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot reach node {node_name}: {e}")))?;
    let mut answer = Response::builder().status(response.status().as_u16());
    if let Some(kind) = response.headers().get(reqwest::header::CONTENT_TYPE) {
        answer = answer.header(header::CONTENT_TYPE, kind.as_bytes());
    }
    answer
        .body(Body::from_stream(response.bytes_stream()))
        .map_err(|e| ApiError::internal(e.to_string()))
}
