//! The function gateway: every node serves HTTP on `--function-port` (8081) and routes each
//! request by its `Host: NAME.NAMESPACE.<--function-domain>` to a ready replica of that
//! Function, so `curl -H 'Host: hello.default.fn.local' http://NODE:8081/` works without DNS.
//!
//! What a Function is, and where its replicas are, comes from the node's service watch
//! ([`Routes`], fed by `agent/services.rs`): a Function's Service carries the label
//! `serving.bosun.dev/function` and its request timeout in the annotation
//! `serving.bosun.dev/timeout` (both written by the function controller). This node's pod
//! workers add their replicas the moment they are ready ([`Routes::serve_locally`]).
//!
//! A Function with no ready replica is woken by the [`activator`]: the request is held, the
//! Function is marked for activation through the API, and the request goes on as soon as a
//! replica is ready; past the Function's timeout or the `--activator-queue` bound it gets
//! `504` or `503` with a Status body saying why. No request is dropped silently.
//!
//! The same gateway also serves the activation listener ([`Gateway::serve_activation`]):
//! the node's proxy sends it the in-cluster connections to the Service of a Function with no
//! ready replica, and each connection's original destination names the Function.
//!
//! A replica that refuses a request (it went away, and the routes have not caught up) is
//! skipped: the request goes to another ready replica, or is held again.
//!
//! The gateway does not authenticate: Functions are public endpoints, as behind Knative's
//! ingress. `--function-port 0` turns it off.

pub mod activator;

use std::collections::{BTreeMap, BTreeSet};
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
    /// Its Service's `clusterIP:port`: connections to it that the node's proxy sends to the
    /// activator (the Function has no ready replica) belong to this Function.
    pub service: Option<SocketAddrV4>,
}

/// Every Function's route, by (namespace, name), replaced whole by the service watch.
pub type RouteTable = BTreeMap<(String, String), FunctionRoute>;

/// The gateway's view of the Functions, with a signal for requests waiting for a change.
///
/// Two sources feed it: the service watch (every Function's Service and its ready endpoints,
/// replaced whole), and this node's pod workers, which add their own replica as soon as it is
/// ready ([`Routes::serve_locally`]), so that requests held here go on at once rather than
/// after the EndpointSlice's round trip through the API.
pub struct Routes {
    state: RwLock<State>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    table: Arc<RouteTable>,
    /// Replicas on this node that are ready, by Function.
    local: BTreeMap<(String, String), BTreeSet<SocketAddrV4>>,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Routes {
    pub fn update(&self, table: RouteTable) {
        let mut state = self.state.write().unwrap();
        if *state.table != table {
            state.table = Arc::new(table);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// A replica of (namespace, function) on this node at `endpoint` is ready to serve, or
    /// no longer is (`ready` false: it is stopping or failing its probe).
    pub fn serve_locally(
        &self,
        namespace: &str,
        function: &str,
        endpoint: SocketAddrV4,
        ready: bool,
    ) {
        let key = (namespace.to_string(), function.to_string());
        let mut state = self.state.write().unwrap();
        let changed = if ready {
            state.local.entry(key).or_default().insert(endpoint)
        } else {
            let removed = state
                .local
                .get_mut(&key)
                .is_some_and(|set| set.remove(&endpoint));
            if state.local.get(&key).is_some_and(BTreeSet::is_empty) {
                state.local.remove(&key);
            }
            removed
        };
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The route of (namespace, name): the watch's endpoints and this node's ready replicas.
    pub fn get(&self, namespace: &str, name: &str) -> Option<FunctionRoute> {
        let key = (namespace.to_string(), name.to_string());
        let state = self.state.read().unwrap();
        let mut route = state.table.get(&key)?.clone();
        if let Some(local) = state.local.get(&key) {
            route.endpoints.extend(local.iter().copied());
            route.endpoints.sort();
            route.endpoints.dedup();
        }
        Some(route)
    }

    /// The Function whose Service is at `address` (`clusterIP:port`).
    pub fn by_service(&self, address: SocketAddrV4) -> Option<(String, String)> {
        let table = self.state.read().unwrap().table.clone();
        table
            .iter()
            .find(|(_, route)| route.service == Some(address))
            .map(|(key, _)| key.clone())
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
    client: Client<HttpConnector, Body>,
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

    /// Serves the public gateway on `listener` until the task is dropped: each request names
    /// its Function by its Host.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        self.accept(listener, false).await
    }

    /// Serves the activation listener until the task is dropped: the node's proxy sends it
    /// the connections to the Service of a Function with no ready replica, so each request's
    /// Function is the one whose Service the connection was addressed to.
    pub async fn serve_activation(self: Arc<Self>, listener: TcpListener) {
        self.accept(listener, true).await
    }

    async fn accept(self: Arc<Self>, listener: TcpListener, by_destination: bool) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let addressed = if by_destination {
                Addressed::To(crate::network::proxy::original_destination(&stream).ok())
            } else {
                Addressed::ByHost
            };
            let gateway = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let gateway = gateway.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(gateway.handle(request, addressed).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// The Function a request is for: by its Host, or by where its connection was addressed.
    fn function_of(
        &self,
        request: &Request<Incoming>,
        addressed: Addressed,
    ) -> Result<(String, String), NotFound> {
        let not_found = NotFound;
        let Addressed::To(destination) = addressed else {
            let host = request
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
                .unwrap_or_default()
                .to_ascii_lowercase();
            let domain = &self.config.domain;
            return function_of(&host, domain)
                .map(|(name, namespace)| (namespace.to_string(), name.to_string()))
                .ok_or_else(|| {
                    not_found(format!(
                        "{host:?} is not a function's host: NAME.NAMESPACE.{domain}"
                    ))
                });
        };
        let destination = destination.ok_or_else(|| {
            not_found("the connection's original destination is unknown".to_string())
        })?;
        self.routes
            .by_service(destination)
            .ok_or_else(|| not_found(format!("no function's Service is at {destination}")))
    }

    async fn handle(&self, request: Request<Incoming>, addressed: Addressed) -> Response<Body> {
        let (namespace, name) = match self.function_of(&request, addressed) {
            Ok(function) => function,
            Err(NotFound(message)) => {
                return status(StatusCode::NOT_FOUND, "NotFound", &message);
            }
        };
        let Some(route) = self.routes.get(&namespace, &name) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no function {name}.{namespace}"),
            );
        };
        let deadline = tokio::time::Instant::now() + route.timeout;
        let (parts, body) = request.into_parts();
        let mut payload = match Payload::read(&parts, body).await {
            Ok(payload) => payload,
            Err(error) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("cannot read the request's body: {error}"),
                );
            }
        };
        // A replica that just went away (scaled down, rolled out, or not yet gone from the
        // routes) refuses the connection: the request goes to another, or is held.
        let mut failed = Vec::new();
        loop {
            let endpoints = match self
                .activator
                .hold(&self.routes, &namespace, &name, &failed, deadline)
                .await
            {
                Ok(endpoints) => endpoints,
                Err(refusal) => return refusal.response(&name, &namespace, route.timeout),
            };
            let endpoint = endpoints[self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
            let (body, replay) = payload.send();
            let request = Request::from_parts(copy_parts(&parts), body);
            let error = match tokio::time::timeout_at(deadline, self.forward(request, endpoint))
                .await
            {
                Ok(Ok(response)) => return response.map(|body| body.boxed_unsync()),
                Ok(Err(error)) => error,
                Err(_) => {
                    return status(
                        StatusCode::GATEWAY_TIMEOUT,
                        "Timeout",
                        &format!(
                            "function {name}.{namespace} at {endpoint} did not answer within {:?}",
                            route.timeout
                        ),
                    );
                }
            };
            // Retried: a refused connection (nothing was sent), or a safe method whose
            // connection ended before an answer; never twice at one replica.
            let retry = error.is_connect() || parts.method.is_safe();
            match replay {
                Some(again) if retry && failed.len() < MAX_RETRIES => {
                    failed.push(endpoint);
                    payload = again;
                }
                _ => {
                    return status(
                        StatusCode::BAD_GATEWAY,
                        "BadGateway",
                        &format!("function {name}.{namespace} at {endpoint}: {error}"),
                    );
                }
            }
        }
    }

    async fn forward(
        &self,
        mut request: Request<Body>,
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

/// Replicas a request tries before the gateway gives up with `502`.
const MAX_RETRIES: usize = 4;

/// Request bodies up to this size are kept, so that the request can go to another replica
/// if the first one refuses it; larger ones stream through, and are not retried.
const REPLAYABLE_BODY: u64 = 64 * 1024;

/// Why a request names no Function (answered with `404`).
struct NotFound(String);

/// How a connection's requests name their Function.
#[derive(Debug, Clone, Copy)]
enum Addressed {
    /// By `Host: NAME.NAMESPACE.<domain>` (the public gateway).
    ByHost,
    /// By the Service address the connection was sent to (the activation listener).
    To(Option<SocketAddrV4>),
}

/// A request's body, kept whole when it is small enough to send again.
enum Payload {
    Kept(Bytes),
    Streamed(Option<Incoming>),
}

impl Payload {
    async fn read(
        parts: &hyper::http::request::Parts,
        body: Incoming,
    ) -> Result<Self, hyper::Error> {
        use hyper::body::Body as _;
        let small = body.is_end_stream()
            || body
                .size_hint()
                .upper()
                .is_some_and(|size| size <= REPLAYABLE_BODY);
        let chunked = parts.headers.contains_key(hyper::header::TRANSFER_ENCODING);
        if small && !chunked {
            Ok(Self::Kept(body.collect().await?.to_bytes()))
        } else {
            Ok(Self::Streamed(Some(body)))
        }
    }

    /// The body to send now, and the payload to send again if that is possible.
    fn send(&mut self) -> (Body, Option<Payload>) {
        match self {
            Self::Kept(bytes) => (
                Full::new(bytes.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
                Some(Self::Kept(bytes.clone())),
            ),
            Self::Streamed(body) => {
                let body = body.take().expect("a streamed body is sent once");
                (body.boxed_unsync(), None)
            }
        }
    }
}

/// The request line and headers, to send again.
fn copy_parts(parts: &hyper::http::request::Parts) -> hyper::http::request::Parts {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
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

    /// An HTTP server on loopback that answers every request with its body, or `ok`.
    async fn echo() -> SocketAddrV4 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(address) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(|request: Request<Incoming>| async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let body = if body.is_empty() {
                            Bytes::from("ok")
                        } else {
                            body
                        };
                        Ok::<_, hyper::Error>(Response::new(Full::new(body)))
                    }),
                ));
            }
        });
        address
    }

    /// A loopback port nothing listens on: connections to it are refused.
    fn refusing() -> SocketAddrV4 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(address) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        address
    }

    /// A gateway on loopback whose only Function is hello.default with `endpoints`.
    async fn gateway(endpoints: Vec<SocketAddrV4>) -> (Arc<Routes>, SocketAddrV4) {
        let routes = Arc::new(Routes::default());
        let route = FunctionRoute {
            endpoints,
            timeout: Duration::from_secs(10),
            service: None,
        };
        routes.update(RouteTable::from([(
            ("default".into(), "hello".into()),
            route,
        )]));
        let signal: activator::Signal = Arc::new(|_, _| Box::pin(async {}));
        let config = GatewayConfig {
            domain: "fn.local".into(),
            activator_queue: 10,
        };
        let gateway = Arc::new(Gateway::new(config, routes.clone(), signal));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(address) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(gateway.serve(listener));
        (routes, address)
    }

    async fn post(gateway: SocketAddrV4, body: &'static str) -> (u16, String) {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let request = Request::post(format!("http://{gateway}/"))
            .header(hyper::header::HOST, "hello.default.fn.local")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let code = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    /// A replica that refuses connections (gone, or not yet out of the routes) costs a
    /// request nothing: it goes to another, body and all.
    #[tokio::test]
    async fn a_request_refused_by_a_replica_goes_to_another() {
        let (_routes, gateway) = gateway(vec![refusing(), echo().await, refusing()]).await;
        for i in 0..6 {
            assert_eq!(
                post(gateway, "hi").await,
                (200, "hi".to_string()),
                "request {i}"
            );
        }
    }

    /// When every replica refused, the request is held until another is ready.
    #[tokio::test]
    async fn a_request_refused_everywhere_waits_for_a_new_replica() {
        let (routes, gateway) = gateway(vec![refusing()]).await;
        let request = tokio::spawn(post(gateway, ""));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!request.is_finished(), "held");
        routes.serve_locally("default", "hello", echo().await, true);
        assert_eq!(request.await.unwrap(), (200, "ok".to_string()));
    }

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
