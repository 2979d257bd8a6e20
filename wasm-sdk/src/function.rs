//! HTTP functions (wasm32-wasip2 only): a handler written as a plain Rust function over
//! [`Request`] and [`Response`] (the same types as [`crate::http`]), exported as
//! `wasi:http/incoming-handler` with [`function!`](crate::function!). Bosun serves it on the
//! container's port with a fresh instance per request, so a handler keeps nothing between
//! requests; [`get`] calls other Services (outgoing HTTP, inside the cluster, or outside with
//! the pod annotation `bosun.dev/egress: allow`).
//!
//! ```no_run
//! use bosun_sdk::function::{Request, Response};
//!
//! fn hello(request: Request) -> Response {
//!     Response::text(200, format!("hello from {}\n", request.path))
//! }
//!
//! bosun_sdk::function!(hello);
//! ```

pub use crate::http::{Request, Response};

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasip2::io::streams::StreamError;

#[doc(hidden)]
pub use wasip2 as __wasip2;

/// Exports `handler` (a `fn(Request) -> Response`) as the component's
/// `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! function {
    ($handler:path) => {
        struct __BosunFunction;

        impl $crate::function::__wasip2::exports::http::incoming_handler::Guest
            for __BosunFunction
        {
            fn handle(
                request: $crate::function::__wasip2::http::types::IncomingRequest,
                out: $crate::function::__wasip2::http::types::ResponseOutparam,
            ) {
                $crate::function::serve(request, out, $handler)
            }
        }

        $crate::function::__wasip2::http::proxy::export!(__BosunFunction);
    };
}

/// Reads the request, runs `handler` and writes its response (what [`function!`] expands to).
#[doc(hidden)]
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> Response,
) {
    let target = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (target, None),
    };
    let headers = request
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| {
            (
                name.to_ascii_lowercase(),
                String::from_utf8_lossy(&value).into_owned(),
            )
        })
        .collect();
    let method = method_name(&request.method());
    let body = match request.consume() {
        Ok(body) => read_all(body).unwrap_or_default(),
        Err(()) => Vec::new(),
    };
    let response = handler(Request {
        method,
        path,
        query,
        headers,
        body,
        peer: None,
    });
    write(out, &response);
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
    .to_string()
}

fn write(out: ResponseOutparam, response: &Response) {
    let headers = Fields::new();
    for (name, value) in &response.headers {
        let _ = headers.append(name, value.as_bytes());
    }
    let outgoing = OutgoingResponse::new(headers);
    let _ = outgoing.set_status_code(response.status);
    let Ok(body) = outgoing.body() else { return };
    ResponseOutparam::set(out, Ok(outgoing));
    if let Ok(stream) = body.write() {
        for chunk in response.body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Why an outgoing request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL is not `http[s]://host[:port]/path`.
    Url(String),
    /// The host or the path cannot be put in a request.
    Invalid { what: &'static str, value: String },
    /// The host refused, or the network failed (wasi:http's error code, as Rust prints it).
    Http(String),
    /// A body could not be read, or was already taken.
    Body(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Url(url) => write!(f, "only http:// and https:// URLs are supported: {url:?}"),
            Error::Invalid { what, value } => write!(f, "bad {what} {value:?}"),
            Error::Http(code) => write!(f, "the request failed: {code}"),
            Error::Body(reason) => write!(f, "cannot read the body: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

fn read_all(body: IncomingBody) -> Result<Vec<u8>, Error> {
    let mut all = Vec::new();
    let stream = body
        .stream()
        .map_err(|()| Error::Body("its stream was taken".to_string()))?;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => all.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Error::Body(e.to_debug_string()));
            }
        }
    }
    Ok(all)
}

/// GETs `url` (`http://host[:port]/path` or `https://…`; a Service's name works as the host)
/// and returns its response, or why there is none.
pub fn get(url: &str) -> Result<Response, Error> {
    get_with(url, &[])
}

/// Where a pod's ServiceAccount token is mounted (unless the pod opted out).
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// GETs `path` (`/api/v1/namespaces/NS/configmaps`) from the Kubernetes API as the pod's
/// ServiceAccount: at the `kubernetes` Service (`KUBERNETES_SERVICE_HOST` and
/// `KUBERNETES_SERVICE_PORT`, which every container has) with the token of the projected
/// volume. The node trusts the cluster CA for a function's HTTPS, so the server is verified.
pub fn kubernetes_get(path: &str) -> Result<Response, Error> {
    let variable = |name: &str| {
        std::env::var(name).map_err(|_| Error::Invalid {
            what: "environment variable",
            value: name.to_string(),
        })
    };
    let host = variable("KUBERNETES_SERVICE_HOST")?;
    let port = variable("KUBERNETES_SERVICE_PORT")?;
    let token = std::fs::read_to_string(SERVICE_ACCOUNT_TOKEN).map_err(|e| Error::Invalid {
        what: "ServiceAccount token",
        value: format!("{SERVICE_ACCOUNT_TOKEN}: {e}"),
    })?;
    let authorization = format!("Bearer {}", token.trim());
    get_with(
        &format!("https://{host}:{port}{path}"),
        &[
            ("authorization", authorization.as_str()),
            ("accept", "application/json"),
        ],
    )
}

/// [`get`] with request headers.
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Result<Response, Error> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(Error::Url(url.to_string()));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let invalid = |what, value: &str| Error::Invalid {
        what,
        value: value.to_string(),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(&name.to_string(), &value.as_bytes().to_vec())
            .map_err(|_| invalid("header", name))?;
    }
    let request = OutgoingRequest::new(fields);
    // GET, http and https are always accepted.
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&scheme));
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("host", authority))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path", path))?;
    let pending = wasip2::http::outgoing_handler::handle(request, None)
        .map_err(|e| Error::Http(format!("{e:?}")))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(Error::Http(format!("{code:?}"))),
        // Ready after `block`, and taken only here.
        None | Some(Err(())) => return Err(Error::Http("no response".to_string())),
    };
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let status = response.status();
    let body = response
        .consume()
        .map_err(|()| Error::Body("it was taken".to_string()))?;
    Ok(Response {
        status,
        headers,
        body: read_all(body)?,
    })
}
