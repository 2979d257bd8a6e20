//! Function containers: a component that exports `wasi:http/incoming-handler@0.2.x` is served
//! over HTTP, a fresh instance per request, as `wasmtime serve` does.
//!
//! The container's thread (already in the pod's network namespace) listens on
//! [`Serving::port`] on every address of the namespace (the pod IP, and loopback for the pod's
//! other containers) and serves HTTP/1.1 with keep-alive through hyper. The component is
//! pre-instantiated once ([`ProxyPre`]); each request gets a new [`Store`] and instance in the
//! node's pooling allocator, and is dropped with it. Per request:
//! - concurrency: at most [`Serving::concurrency`] instances live at once; further requests wait
//!   in a queue of [`Serving::queue`] places, and past it get `503` with `Retry-After`;
//! - memory: the container's memory limit is the total over its live instances ([`Budget`]);
//!   growth past it traps that request (`500`);
//! - time: [`Serving::request_timeout`] through the epoch deadline (a guest that computes is
//!   interrupted at the next tick, with no timer thread per request) and a timer on the
//!   response (a guest that waits in a host call); the answer is `504`;
//! - body: a request whose body is larger than [`Serving::max_body`] gets `413`.
//!
//! A trap, an out-of-memory or a timeout answers that request with a 5xx and a log line; the
//! container goes on serving. Outgoing requests (`wasi:http/outgoing-handler`) go through the
//! pod's socket policy, with cluster names resolved by the node ([`Outgoing`]).
//!
//! What happens is counted in the container's [`FunctionStats`] (`/metrics/functions`).
//!
//! Stopping: a terminate stops accepting and lets requests in flight finish, then the
//! container ends; a kill drops them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::{Guard, names};
use crate::metrics::FunctionStats;
use crate::network::SocketPolicy;
use crate::network::names::{Answer, PodNames};
use crate::network::policy::Use;
use crate::runtime::{Exit, Serving};

/// The export that makes a component a function.
const HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// Whether `component` exports `wasi:http/incoming-handler` (any 0.2 version).
pub fn is_function(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with(HANDLER))
}

/// The names of what `component` exports, for a message about a component that is neither
/// a command nor a function.
pub fn exports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The memory of a function container's live instances, against its limit.
pub(super) struct Budget {
    limit: u64,
    used: AtomicU64,
    /// Told when memory is given back, for growths waiting for it.
    freed: tokio::sync::Notify,
}

impl Budget {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// Takes `bytes` more if the total stays within the limit.
    fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    /// Takes `bytes` more, waiting while other instances hold too much of the limit. The
    /// caller has checked that its instance would fit alone; a request that waits too long is
    /// ended by its deadline.
    pub(super) async fn take_when_free(&self, bytes: u64) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.take(bytes) {
                return;
            }
            freed.await;
        }
    }

    pub(super) fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        self.freed.notify_waiters();
    }
}

/// Whether a request's instance ended without its handler returning: set as the store drops
/// (a trap, a timeout, a kill) unless the handler returned first. The response's body reads
/// it at its end, to tell a body the guest finished from one cut short.
struct Ended {
    cut_short: Arc<AtomicBool>,
    returned: bool,
}

impl Drop for Ended {
    fn drop(&mut self) {
        if !self.returned {
            self.cut_short.store(true, Ordering::SeqCst);
        }
    }
}

/// A response body that ends with an error, not a clean end, when its instance died before
/// finishing it: hyper then cuts the connection, and the client does not take a truncated
/// body for a whole one (wasmtime-wasi-http ends the body cleanly when its writer goes away).
struct Guarded {
    body: HyperOutgoingBody,
    cut_short: Arc<AtomicBool>,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        match polled {
            std::task::Poll::Ready(None) if self.cut_short.load(Ordering::SeqCst) => {
                std::task::Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpProtocolError)))
            }
            other => other,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// One request's store.
struct RequestState {
    /// First, so that it is dropped before the table that holds the response's body.
    ended: Ended,
    ctx: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outgoing: Outgoing,
    names: Option<PodNames>,
    guard: Guard,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

impl names::NameLookupView for RequestState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    fn names(&self) -> Option<&PodNames> {
        self.names.as_ref()
    }
}

/// What a function container needs for each request.
pub(super) struct Function {
    pub engine: Engine,
    pub component: Component,
    /// A fresh WASI context for each request (argv, environment, mounts, log, sockets).
    pub wasi: Box<dyn Fn() -> crate::runtime::Result<WasiCtxBuilder> + Send + Sync>,
    /// A fresh guard for each request (limits, stop flag, deadline).
    pub guard: Box<dyn Fn(Arc<Budget>, Instant) -> Guard + Send + Sync>,
    pub names: Option<PodNames>,
    pub policy: Option<SocketPolicy>,
    pub serving: Serving,
    pub memory_limit: u64,
    pub stop: Arc<AtomicBool>,
    pub shutdown_wake: Arc<tokio::sync::Notify>,
    pub wake: Arc<tokio::sync::Notify>,
    pub container: String,
    pub stats: Arc<FunctionStats>,
    /// Outgoing HTTPS.
    pub tls: Arc<rustls::ClientConfig>,
}

/// The shared state of a serving function container.
struct Server {
    function: Function,
    pre: ProxyPre<RequestState>,
    budget: Arc<Budget>,
    slots: Semaphore,
}

/// Serves the function until it is stopped; `ready` learns whether the listener is bound and
/// the component pre-instantiated (the container is then Running).
pub(super) fn serve(
    runtime: &tokio::runtime::Runtime,
    function: Function,
    ready: std::sync::mpsc::Sender<crate::runtime::Result<()>>,
) -> Exit {
    let prepared = (|| -> wasmtime::Result<ProxyPre<RequestState>> {
        let mut linker = Linker::new(&function.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        names::add_to_linker(&mut linker)?;
        ProxyPre::new(linker.instantiate_pre(&function.component)?)
    })();
    let pre = match prepared {
        Ok(pre) => pre,
        Err(e) => {
            let message = format!("cannot prepare the function: {e:#}");
            let _ = ready.send(Err(crate::runtime::Error::Setup(message.clone())));
            return Exit::error(128, message);
        }
    };
    let port = function.serving.port;
    let listener = match runtime.block_on(TcpListener::bind((IpAddr::from([0u8; 4]), port))) {
        Ok(listener) => listener,
        Err(e) => {
            let message = format!("cannot listen on port {port}: {e}");
            let _ = ready.send(Err(crate::runtime::Error::Setup(message.clone())));
            return Exit::error(128, message);
        }
    };
    let server = Arc::new(Server {
        budget: Arc::new(Budget::new(function.memory_limit)),
        slots: Semaphore::new(function.serving.concurrency.max(1)),
        pre,
        function,
    });
    let _ = ready.send(Ok(()));
    runtime.block_on(accept(listener, server.clone()));
    if server.function.stop.load(Ordering::Relaxed) {
        Exit::stopped()
    } else {
        Exit::completed()
    }
}

/// Accepts connections until a terminate (then waits for requests in flight) or a kill.
async fn accept(listener: TcpListener, server: Arc<Server>) {
    let mut connections = tokio::task::JoinSet::new();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, most likely: let connections end before trying again.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let server = server.clone();
                let connection = http1::Builder::new().keep_alive(true).serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, std::convert::Infallible>(server.handle(request).await) }
                    }),
                );
                let connection = graceful.watch(connection);
                connections.spawn(async move {
                    let _ = connection.await;
                });
            }
            () = server.function.shutdown_wake.notified() => break,
            () = server.function.wake.notified() => {
                // Killed: requests in flight are dropped with their connections.
                connections.abort_all();
                return;
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = server.function.wake.notified() => connections.abort_all(),
    }
}

/// One more in a gauge for as long as it lives: a request whose client goes away is dropped
/// wherever it waits, and must still leave the gauge.
struct Counted<'a> {
    gauge: &'a AtomicU64,
    /// The gauge's value before this one.
    before: u64,
}

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        let before = gauge.fetch_add(1, Ordering::SeqCst);
        Self { gauge, before }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::SeqCst);
    }
}

type Reply = Response<HyperOutgoingBody>;

fn plain(status: StatusCode, text: impl Into<String>) -> Reply {
    let body = Full::new(Bytes::from(text.into()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

impl Server {
    /// Answers a request, and counts it. A probe (the node's, `User-Agent: kube-probe/…`) is
    /// served outside the concurrency limit and not counted, so that probes neither queue
    /// behind requests nor keep an idle function from scaling to zero.
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Reply {
        let probe = request
            .headers()
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|agent| agent.starts_with("kube-probe/"));
        if probe {
            return self.run(request).await;
        }
        let arrived = Instant::now();
        let answer = self.admit(request, arrived).await;
        let stats = &self.function.stats;
        stats.answered(answer.status().as_u16());
        stats.duration.observe(arrived.elapsed());
        answer
    }

    /// Runs a request once it has a place, or answers it at once when it cannot have one.
    async fn admit(&self, request: Request<Incoming>, arrived: Instant) -> Reply {
        let serving = &self.function.serving;
        let stats = &self.function.stats;
        let too_large = request
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|length| length > serving.max_body);
        if too_large {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes\n",
                    serving.max_body
                ),
            );
        }
        // A place in the queue, then a slot.
        let permit = match self.slots.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let queued = Counted::new(&stats.queued);
                if queued.before >= serving.queue as u64 {
                    let mut busy = plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the function is at its concurrency limit and its queue is full\n",
                    );
                    busy.headers_mut()
                        .insert(hyper::header::RETRY_AFTER, "1".parse().unwrap());
                    return busy;
                }
                let permit = self.slots.acquire().await;
                drop(queued);
                match permit {
                    Ok(permit) => permit,
                    Err(_) => return plain(StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
                }
            }
        };
        stats.queue_time.observe(arrived.elapsed());
        let running = Counted::new(&stats.in_flight);
        stats.instances_created.fetch_add(1, Ordering::Relaxed);
        let answer = self.run(request).await;
        drop((running, permit));
        answer
    }

    /// Runs the request in a fresh instance.
    async fn run(&self, request: Request<Incoming>) -> Reply {
        let function = &self.function;
        let deadline = Instant::now() + function.serving.request_timeout;
        let wasi = match (function.wasi)() {
            Ok(mut wasi) => wasi.build(),
            Err(error) => {
                return self.failed(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string());
            }
        };
        let cut_short = Arc::new(AtomicBool::new(false));
        let mut store = Store::new(
            &function.engine,
            RequestState {
                ended: Ended {
                    cut_short: cut_short.clone(),
                    returned: false,
                },
                ctx: wasi,
                table: ResourceTable::new(),
                http: WasiHttpCtx::new(),
                outgoing: Outgoing {
                    policy: function.policy.clone(),
                    names: function.names.clone(),
                    tls: function.tls.clone(),
                },
                names: function.names.clone(),
                guard: (function.guard)(self.budget.clone(), deadline),
            },
        );
        store.limiter_async(|s| &mut s.guard);
        store.epoch_deadline_callback(|mut ctx| ctx.data_mut().guard.on_tick());
        store.set_epoch_deadline(1);
        let limit = function.serving.max_body as usize;
        let request = request.map(move |body| {
            Limited::new(body, limit).map_err(move |e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit as u64))
                } else {
                    match e.downcast::<hyper::Error>() {
                        Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
                        Err(_) => wasmtime_wasi_http::Error::ConnectionTerminated,
                    }
                }
            })
        });
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = (|| -> wasmtime::Result<_> {
            let data = store.data_mut();
            let request = data.http().new_incoming_request(Scheme::Http, request)?;
            let out = data.http().new_response_outparam(sender)?;
            Ok((request, out))
        })();
        let (request, out) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return self.failed(StatusCode::BAD_REQUEST, &format!("{e:#}")),
        };
        let pre = self.pre.clone();
        let container = function.container.clone();
        // The instance runs on as a task of its own: the guest may still write the body after
        // it has set the response.
        let task = tokio::spawn(async move {
            let result = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await
            }
            .await;
            store.data_mut().ended.returned = result.is_ok();
            let guard = &store.data().guard;
            (result, guard.oom, guard.timed_out())
        });
        let waited = tokio::time::timeout_at(deadline.into(), receiver).await;
        match waited {
            Ok(Ok(Ok(response))) => response.map(|body| Guarded { body, cut_short }.boxed_unsync()),
            Ok(Ok(Err(code))) => self.failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the handler answered an error: {code:?}"),
            ),
            Ok(Err(_)) => match task.await {
                Ok((Err(e), true, _)) => self.failed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("out of memory: {e:#}"),
                ),
                Ok((Err(_), _, true)) => self.timed_out(),
                Ok((Err(e), _, _)) => {
                    self.failed(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}"))
                }
                Ok((Ok(()), _, _)) => self.failed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the handler returned without setting a response",
                ),
                Err(e) => self.failed(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            Err(_) => {
                task.abort();
                tracing::debug!(%container, "a request timed out waiting for its response");
                self.timed_out()
            }
        }
    }

    fn timed_out(&self) -> Reply {
        let timeout = self.function.serving.request_timeout;
        self.failed(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("the handler did not answer within {timeout:?}"),
        )
    }

    /// A 5xx (or 4xx) for a request the guest could not answer, with a line in the node's log.
    fn failed(&self, status: StatusCode, message: &str) -> Reply {
        tracing::info!(container = %self.function.container, %status, %message, "a function request failed");
        plain(status, format!("{message}\n"))
    }
}

/// Outgoing requests of a function: cluster names resolve through the node, and every address
/// is checked against the pod's socket policy before the connection is made. `https` URLs go
/// over TLS (rustls), verified against [`client_tls`]'s authorities.
struct Outgoing {
    policy: Option<SocketPolicy>,
    names: Option<PodNames>,
    tls: Arc<rustls::ClientConfig>,
}

/// What an outgoing request's connection yields: the response, and the connection's end.
type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
);

impl wasmtime_wasi_http::WasiHttpHooks for Outgoing {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, wasmtime_wasi_http::Error>> + Send> {
        let policy = self.policy.clone();
        let names = self.names.clone();
        let tls = self.tls.clone();
        Box::new(async move {
            use wasmtime_wasi_http::Error;
            let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
            let authority = request
                .uri()
                .authority()
                .ok_or(Error::HttpRequestUriInvalid)?
                .clone();
            let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let addresses = resolve(names.as_ref(), host, port).await?;
            let Some(policy) = policy else {
                return Err(Error::HttpRequestDenied);
            };
            let allowed: Vec<SocketAddr> = addresses
                .into_iter()
                .filter(|a| policy.check(*a, Use::Connect).is_ok())
                .collect();
            if allowed.is_empty() {
                return Err(Error::DestinationIpProhibited);
            }
            let timeout = options
                .and_then(|o| o.connect_timeout)
                .unwrap_or(std::time::Duration::from_secs(30));
            let stream = tokio::time::timeout(timeout, TcpStream::connect(&allowed[..]))
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(Error::Connect)?;
            // On the wire, the request names its path only; the host is in `Host`.
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .parse()
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            *request.uri_mut() = path;
            if !https {
                return exchange(stream, request).await;
            }
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let stream = tokio::time::timeout(
                timeout,
                tokio_rustls::TlsConnector::from(tls).connect(name, stream),
            )
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(|e| {
                // A certificate that does not verify is told apart from other failures.
                let rejected = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
                if rejected {
                    Error::TlsCertificateError
                } else {
                    Error::Tls(e)
                }
            })?;
            exchange(stream, request).await
        })
    }
}

/// Sends `request` over `stream` with HTTP/1.1.
async fn exchange<S>(
    stream: S,
    request: http::Request<WasiBody>,
) -> Result<Sent, wasmtime_wasi_http::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use wasmtime_wasi_http::Error;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::Hyper)?;
    // The connection must be driven while the request is sent.
    let (io_tx, io_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = io_tx.send(connection.await.map_err(Error::Hyper));
    });
    let response = sender.send_request(request).await.map_err(Error::Hyper)?;
    let done = Box::new(async move { io_rx.await.unwrap_or(Ok(())) })
        as Box<dyn Future<Output = Result<(), Error>> + Send>;
    Ok((
        response.map(|body| body.map_err(Error::Hyper).boxed_unsync()),
        done,
    ))
}

/// The TLS client of functions' outgoing HTTPS: `roots`, else the system's authorities, and
/// `extra` (DER) beside them.
pub(super) fn client_tls(
    roots: Option<Arc<rustls::RootCertStore>>,
    extra: &[Vec<u8>],
) -> crate::runtime::Result<Arc<rustls::ClientConfig>> {
    let mut roots = match roots {
        Some(roots) => roots,
        None => {
            let mut store = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "a system certificate authority could not be read");
            }
            store.add_parsable_certificates(found.certs);
            Arc::new(store)
        }
    };
    if !extra.is_empty() {
        Arc::make_mut(&mut roots).add_parsable_certificates(
            extra
                .iter()
                .map(|der| rustls::pki_types::CertificateDer::from(der.clone())),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::runtime::Error::Setup(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The addresses of `host`: a cluster name through the node's resolver, else the system's.
async fn resolve(
    names: Option<&PodNames>,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, wasmtime_wasi_http::Error> {
    use wasmtime_wasi_http::Error;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if let Some(names) = names
        && let Answer::Cluster(ips) = names.resolver.lookup(host, &names.namespace)
    {
        return Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(IpAddr::V4(ip), port))
            .collect());
    }
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| Error::DestinationNotFound)?;
    Ok(found.collect())
}
