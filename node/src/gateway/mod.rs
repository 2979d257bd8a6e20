//! The function gateway: every node serves HTTP on `--function-port` (8081) and routes each
//! request by its `Host: NAME.NAMESPACE.<--function-domain>` to a ready replica of that
//! Function, so `curl -H 'Host: hello.default.fn.local' http://NODE:8081/` works without DNS.
//!
//! What a Function is, and where its replicas are, comes from the node's service watch
//! ([`Routes`], fed by `agent/services.rs`): a Function's Service carries the label
//! `serving.bosun.dev/function` and its request timeout in the annotation
//! `serving.bosun.dev/timeout` (both written by the function controller).
//!
//! A Function with no ready replica is woken by the [`activator`]: the request is held, the
//! Function is marked for activation through the API, and the request goes on as soon as the
//! watch shows a ready replica; past the Function's timeout or the `--activator-queue` bound
//! it gets `504` or `503` with a Status body saying why. No request is dropped silently.
//!
//! The gateway does not authenticate: Functions are public endpoints, as behind Knative's
//! ingress. `--function-port 0` turns it off.

pub mod activator;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Where one Function's requests can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRoute {
    /// Its ready replicas (the Service's endpoints).
    pub endpoints: Vec<SocketAddrV4>,
    /// How long a request may take, held time included.
    pub timeout: Duration,
}

/// Every Function's route, by (namespace, name), replaced whole by the service watch.
pub type RouteTable = BTreeMap<(String, String), FunctionRoute>;

/// The gateway's view of the Functions, with a signal for requests waiting for a change.
pub struct Routes {
    table: RwLock<Arc<RouteTable>>,
    changed: watch::Sender<u64>,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            table: RwLock::new(Arc::new(RouteTable::new())),
            changed: watch::channel(0).0,
        }
    }
}

impl Routes {
    pub fn update(&self, table: RouteTable) {
        let mut current = self.table.write().unwrap();
        if **current != table {
            *current = Arc::new(table);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<FunctionRoute> {
        let table = self.table.read().unwrap().clone();
        table
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// A receiver that is told of every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// How the gateway serves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Hosts are `NAME.NAMESPACE.<domain>`.
    pub domain: String,
    /// Requests one Function may have held at once on this node.
    pub activator_queue: usize,
}

/// The gateway's shared state.
pub struct Gateway {
    config: GatewayConfig,
    routes: Arc<Routes>,
    activator: activator::Activator,
    client: Client<HttpConnector, Incoming>,
    next: AtomicUsize,
}

impl Gateway {
    pub fn new(config: GatewayConfig, routes: Arc<Routes>, signal: activator::Signal) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            activator: activator::Activator::new(config.activator_queue, signal),
            config,
            routes,
            client: Client::builder(TokioExecutor::new()).build(connector),
            next: AtomicUsize::new(0),
        }
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let gateway = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, std::convert::Infallible>(gateway.handle(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let host = request
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let Some((name, namespace)) = function_of(&host, &self.config.domain) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!(
                    "{host:?} is not a function's host: NAME.NAMESPACE.{}",
                    self.config.domain
                ),
            );
        };
        let Some(route) = self.routes.get(namespace, name) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no function {name}.{namespace}"),
            );
        };
        let deadline = tokio::time::Instant::now() + route.timeout;
        let endpoints = if route.endpoints.is_empty() {
            match self
                .activator
                .hold(&self.routes, namespace, name, deadline)
                .await
            {
                Ok(endpoints) => endpoints,
                Err(refusal) => return refusal.response(name, namespace, route.timeout),
            }
        } else {
            route.endpoints
        };
        let endpoint = endpoints[self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
        match tokio::time::timeout_at(deadline, self.forward(request, endpoint)).await {
            Ok(Ok(response)) => response.map(|body| body.boxed_unsync()),
            Ok(Err(error)) => status(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                &format!("function {name}.{namespace} at {endpoint}: {error}"),
            ),
            Err(_) => status(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                &format!(
                    "function {name}.{namespace} did not answer within {:?}",
                    route.timeout
                ),
            ),
        }
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        endpoint: SocketAddrV4,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *request.uri_mut() = format!("http://{endpoint}{path}")
            .parse()
            .expect("an address and a path make a URI");
        self.client.request(request).await
    }
}

/// A response body: the replica's, or the gateway's own.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// `NAME.NAMESPACE.<domain>` → (name, namespace).
fn function_of<'a>(host: &'a str, domain: &str) -> Option<(&'a str, &'a str)> {
    let rest = host.strip_suffix(domain)?.strip_suffix('.')?;
    let (name, namespace) = rest.split_once('.')?;
    (!name.is_empty() && !namespace.is_empty() && !namespace.contains('.'))
        .then_some((name, namespace))
}

/// A Status-like JSON answer of the gateway's own.
pub(crate) fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_a_function_and_its_namespace() {
        assert_eq!(
            function_of("hello.default.fn.local", "fn.local"),
            Some(("hello", "default"))
        );
        assert_eq!(function_of("fn.local", "fn.local"), None);
        assert_eq!(function_of("hello.fn.local", "fn.local"), None);
        assert_eq!(function_of("a.b.c.fn.local", "fn.local"), None);
        assert_eq!(function_of("hello.default.example.com", "fn.local"), None);
        assert_eq!(function_of("hello.defaultfn.local", "fn.local"), None);
    }
}
