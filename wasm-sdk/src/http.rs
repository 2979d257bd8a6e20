//! A small HTTP/1.1 server on wasi:sockets for long-running services, with the endpoints a
//! pod's probes want and graceful shutdown built in.
//!
//! - `GET /healthz` answers 200 while the server loop runs (a liveness probe);
//! - `GET /readyz` answers 200 once the service said it is ready ([`Readiness::set`]) and
//!   until Bosun asks it to stop, 503 otherwise (a readiness probe: Services stop sending
//!   traffic to a replica that is not ready);
//! - everything else goes to the handler.
//!
//! When Bosun asks the container to stop ([`crate::shutdown`]), the server stops accepting,
//! finishes the request in hand, and [`Server::serve`] returns, so `main` can clean up within
//! the pod's grace period.
//!
//! One request is served at a time (wasm has no threads), and every answer closes its
//! connection, so one slow client cannot hold the others back beyond one request.
//!
//! ```no_run
//! use bosun_sdk::http::{Response, Server};
//!
//! let server = Server::bind("0.0.0.0:8080")?;
//! server.readiness().set(true);
//! server.serve(|request| match request.path.as_str() {
//!     "/" => Response::text(200, "hello\n"),
//!     _ => Response::text(404, "not found\n"),
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;
/// How often an idle server looks whether Bosun asked it to stop.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(200);

/// Whether the service wants traffic: what `/readyz` answers. Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A request: its head parsed, its body read (`Content-Length` bodies up to 1 MiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// What follows `?`, if anything.
    pub query: Option<String>,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's address.
    pub peer: Option<SocketAddr>,
}

impl Request {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` in the query string (not percent-decoded).
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// An empty answer with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `body` as `text/plain; charset=utf-8`.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.into().into_bytes())
    }

    /// `body` (JSON the caller wrote) as `application/json`.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self::new(status)
            .header("content-type", "application/json")
            .body(body.into().into_bytes())
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// The bytes on the wire (`Connection: close`, `Content-Length`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A listening server.
pub struct Server {
    listener: TcpListener,
    readiness: Readiness,
}

impl Server {
    /// Listens on `addr` (`0.0.0.0:PORT` to answer on the pod's IP).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr)?,
            readiness: Readiness::default(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The flag `/readyz` answers from (not ready until set).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves requests with `handler` until Bosun asks the container to stop.
    pub fn serve(&self, mut handler: impl FnMut(&Request) -> Response) -> io::Result<()> {
        loop {
            if crate::shutdown::requested() {
                self.readiness.set(false);
                return Ok(());
            }
            if !wait_readable(&self.listener, SHUTDOWN_CHECK)? {
                continue;
            }
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            // A client that goes away mid-request is its own problem, not the server's.
            let _ = self.answer(stream, peer, &mut handler);
        }
    }

    fn answer(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        handler: &mut impl FnMut(&Request) -> Response,
    ) -> io::Result<()> {
        let response = match read_request(&mut stream, Some(peer)) {
            Ok(request) => match (request.method.as_str(), request.path.as_str()) {
                ("GET", "/healthz") => Response::text(200, "ok\n"),
                ("GET", "/readyz") if self.readiness.get() => Response::text(200, "ready\n"),
                ("GET", "/readyz") => Response::text(503, "not ready\n"),
                _ => handler(&request),
            },
            Err(RequestError::Io(e)) => return Err(e),
            Err(RequestError::Bad(status, why)) => Response::text(status, format!("{why}\n")),
        };
        stream.write_all(&response.to_bytes())?;
        stream.flush()
    }
}

/// Whether `listener` has a connection to accept within `timeout`.
fn wait_readable(listener: &TcpListener, timeout: Duration) -> io::Result<bool> {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLRDNORM,
        revents: 0,
    };
    // Safety: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
    match n {
        n if n < 0 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

enum RequestError {
    Io(io::Error),
    /// Answer with this status and reason.
    Bad(u16, String),
}

impl From<io::Error> for RequestError {
    fn from(e: io::Error) -> Self {
        RequestError::Io(e)
    }
}

fn bad(status: u16, why: impl Into<String>) -> RequestError {
    RequestError::Bad(status, why.into())
}

/// Reads one request from `stream`.
fn read_request(stream: &mut impl Read, peer: Option<SocketAddr>) -> Result<Request, RequestError> {
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    // The head ends at the first empty line.
    loop {
        let before = head.len();
        let n = (&mut reader)
            .take((MAX_HEAD + 1 - head.len()) as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(bad(400, "the request ended before its headers did"));
        }
        if head.len() > MAX_HEAD {
            return Err(bad(431, "the request's headers are too large"));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let head = std::str::from_utf8(&head).map_err(|_| bad(400, "the headers are not UTF-8"))?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(400, format!("bad request line {request_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(505, format!("{version} is not supported")));
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(400, format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    if header("transfer-encoding").is_some() {
        return Err(bad(
            411,
            "chunked bodies are not supported: send Content-Length",
        ));
    }
    let length = match header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| bad(400, format!("bad Content-Length {v:?}")))?,
    };
    if length > MAX_BODY {
        return Err(bad(413, "the body is larger than 1 MiB"));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    Ok(Request {
        method: method.to_string(),
        path,
        query,
        headers,
        body,
        peer,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Request, (u16, String)> {
        read_request(&mut raw.as_bytes(), None).map_err(|e| match e {
            RequestError::Bad(status, why) => (status, why),
            RequestError::Io(e) => (0, e.to_string()),
        })
    }

    #[test]
    fn requests_parse_with_query_headers_and_body() {
        let r = parse(
            "POST /orders?id=7&x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/orders");
        assert_eq!(r.query_param("id"), Some("7"));
        assert_eq!(r.query_param("x"), Some(""));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(r.header("x-y"), Some("z"));
        assert_eq!(r.header("HOST"), Some("a"));
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn bad_requests_get_a_status_and_a_reason() {
        assert_eq!(parse("GET /\r\n\r\n").unwrap_err().0, 400);
        assert_eq!(parse("GET / HTTP/2\r\n\r\n").unwrap_err().0, 505);
        assert_eq!(
            parse("GET / HTTP/1.1\r\nnocolon\r\n\r\n").unwrap_err().0,
            400
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err()
                .0,
            411
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
                .unwrap_err()
                .0,
            413
        );
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: a").unwrap_err().0, 400);
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(&huge).unwrap_err().0, 431);
    }

    #[test]
    fn responses_close_and_count_their_body() {
        let bytes = Response::text(404, "gone\n").to_bytes();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 5\r\nconnection: close\r\n\r\ngone\n"
        );
    }

    #[test]
    fn the_server_answers_probes_and_hands_the_rest_to_the_handler() {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let call = |server: &Server, path: &str| {
            let mut client = TcpStream::connect(addr).unwrap();
            client
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
            // One request at a time: answer it here, in this thread.
            let (stream, peer) = server.listener.accept().unwrap();
            server
                .answer(stream, peer, &mut |r: &Request| {
                    Response::text(200, format!("you asked {}", r.path))
                })
                .unwrap();
            let mut answer = String::new();
            client.read_to_string(&mut answer).unwrap();
            answer
        };
        assert!(call(&server, "/healthz").starts_with("HTTP/1.1 200 OK"));
        assert!(call(&server, "/readyz").starts_with("HTTP/1.1 503"));
        server.readiness().set(true);
        assert!(call(&server, "/readyz").starts_with("HTTP/1.1 200"));
        assert!(call(&server, "/x").ends_with("you asked /x"));
        assert!(wait_readable(&server.listener, Duration::from_millis(10)).is_ok_and(|r| !r));
    }
}
