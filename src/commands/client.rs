//! What the kubectl-like commands (`bosun apply|get|describe|delete|logs`) share: finding
//! the kubeconfig, naming resources, building API paths, and sending requests through
//! kube-rs's client (its TLS, auth and error decoding).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use bosun_api::resources::{self, Resource};
use http::{Method, Request};
use serde_json::Value;

use super::node::kube_config;
use super::server::default_data_dir;

/// The flags every client command takes.
#[derive(clap::Args)]
#[group(skip)]
pub struct ClientArgs {
    /// The kubeconfig to use. Default: $KUBECONFIG (its first file), else the admin
    /// kubeconfig `bosun up` writes in the default data directory.
    #[arg(long, env = "BOSUN_KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace. Default: the kubeconfig context's, else `default`.
    #[arg(short, long, env = "BOSUN_NAMESPACE", global = true)]
    pub namespace: Option<String>,
}

/// A connection to the API server and the namespace to work in.
pub struct Cluster {
    client: kube::Client,
    pub namespace: String,
}

impl Cluster {
    pub async fn connect(args: &ClientArgs) -> anyhow::Result<Self> {
        let path = match &args.kubeconfig {
            Some(path) => path.clone(),
            None => default_kubeconfig()?,
        };
        let config = kube_config(&path, "bosun").await?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)
            .with_context(|| format!("cannot make a client from {}", path.display()))?;
        Ok(Self { client, namespace })
    }

    /// Sends a request and returns the body of a 2xx answer; other answers become errors
    /// carrying the server's Status message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: Vec<u8>,
    ) -> Result<String, kube::Error> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        if let Some(accept) = accept {
            request = request.header(http::header::ACCEPT, accept);
        }
        let request = request
            .body(body)
            .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
        self.client.request_text(request).await
    }

    /// GET `path` as JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let text = self
            .send(
                Method::GET,
                path,
                None,
                Some("application/json"),
                Vec::new(),
            )
            .await
            .map_err(api_error)?;
        serde_json::from_str(&text).context("the server sent JSON that does not parse")
    }

    /// GET `path` streaming, for logs that follow.
    pub async fn stream(&self, path: &str) -> anyhow::Result<impl futures::AsyncBufRead + use<>> {
        let request = Request::builder()
            .uri(path)
            .body(Vec::new())
            .context("bad request")?;
        self.client.request_stream(request).await.map_err(api_error)
    }
}

/// `$KUBECONFIG`'s first file, or DATA_DIR/admin.kubeconfig.
pub fn default_kubeconfig() -> anyhow::Result<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    let admin = default_data_dir().join("admin.kubeconfig");
    if admin.exists() {
        return Ok(admin);
    }
    bail!(
        "no kubeconfig: pass --kubeconfig, set KUBECONFIG, or run `bosun up` (which writes {})",
        admin.display()
    )
}

/// The resource `name` means (`pods`, `po`, `deploy`, `deployments.apps`).
pub fn resource(name: &str) -> anyhow::Result<&'static Resource> {
    resources::lookup(name).with_context(|| {
        format!("the server doesn't have a resource type {name:?} (see `kubectl api-resources`)")
    })
}

/// The API path of `resource` in `namespace` (ignored for cluster-scoped ones), and of the
/// object `name` when given.
pub fn path(resource: &Resource, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut path = if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    if let (true, Some(namespace)) = (resource.namespaced, namespace) {
        path.push_str(&format!("/namespaces/{namespace}"));
    }
    path.push('/');
    path.push_str(resource.plural);
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
    }
    path
}

/// `deployment.apps` or `pod`: how kubectl names a kind in its messages.
pub fn kind_name(resource: &Resource) -> String {
    if resource.group.is_empty() {
        resource.singular.to_string()
    } else {
        format!("{}.{}", resource.singular, resource.group)
    }
}

/// An API error with the server's words and reason: `pods "x" not found (NotFound)`.
pub fn api_error(error: kube::Error) -> anyhow::Error {
    match error {
        kube::Error::Api(status) => anyhow::anyhow!("{} ({})", status.message, status.reason),
        other => anyhow::Error::new(other).context("cannot reach the API server"),
    }
}

/// Whether `error` is the server saying 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_group_and_scope() {
        let pods = resource("po").unwrap();
        assert_eq!(
            path(pods, Some("shop"), Some("web")),
            "/api/v1/namespaces/shop/pods/web"
        );
        assert_eq!(path(pods, None, None), "/api/v1/pods");
        let deploy = resource("deploy").unwrap();
        assert_eq!(
            path(deploy, Some("default"), None),
            "/apis/apps/v1/namespaces/default/deployments"
        );
        let nodes = resource("nodes").unwrap();
        assert_eq!(path(nodes, Some("default"), Some("n1")), "/api/v1/nodes/n1");
        assert_eq!(kind_name(deploy), "deployment.apps");
        assert!(
            resource("gizmos")
                .unwrap_err()
                .to_string()
                .contains("gizmos")
        );
        assert_eq!(encode("app in (a,b)"), "app%20in%20%28a%2Cb%29");
    }
}
