//! A wasi:http function for the node's tests: each path does one thing a function container must
//! survive or show.
//!
//! - `/` answers JSON with the path and the pod's name (`POD_NAME`);
//! - `/counter` counts requests in a global: a fresh instance per request always says 1;
//! - `/trap` traps, `/oom` allocates until it cannot, `/loop` never ends;
//! - `/sleep?ms=N` answers after N milliseconds (for concurrency and timeouts);
//! - `/echo` answers with the request's body;
//! - `/print` writes a line to stdout and stderr;
//! - `/fetch?url=http://host:port/path` calls that URL (wasi:http/outgoing-handler) and answers
//!   with its status and body, or 502 and the error.

use std::sync::atomic::{AtomicU32, Ordering};

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasip2::io::streams::StreamError;

wasip2::http::proxy::export!(Function);

static REQUESTS: AtomicU32 = AtomicU32::new(0);

struct Function;

impl wasip2::exports::http::incoming_handler::Guest for Function {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let count = REQUESTS.fetch_add(1, Ordering::SeqCst) + 1;
        let target = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match path {
            "/counter" => respond(out, 200, count.to_string().as_bytes()),
            "/trap" => std::process::abort(),
            "/oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "/loop" => loop {
                std::hint::black_box(count);
            },
            "/sleep" => {
                let ms: u64 = param(query, "ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100);
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, b"slept");
            }
            "/echo" => {
                let body = read_all(request.consume().expect("the body, once"));
                respond(out, 200, &body);
            }
            "/print" => {
                println!("hello from a request");
                eprintln!("and from its stderr");
                respond(out, 200, b"printed");
            }
            "/fetch" => match fetch(param(query, "url").unwrap_or_default()) {
                Ok((status, body)) => {
                    let mut text = format!("{status} ").into_bytes();
                    text.extend(body);
                    respond(out, 200, &text);
                }
                Err(error) => respond(out, 502, error.as_bytes()),
            },
            _ => {
                let pod = std::env::var("POD_NAME").unwrap_or_default();
                let body = format!("{{\"path\":{path:?},\"pod\":{pod:?}}}");
                respond(out, 200, body.as_bytes());
            }
        }
    }
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let response = OutgoingResponse::new(Fields::new());
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body, once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the stream, once");
    for chunk in body.chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .expect("the client reads");
    }
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("the body ends");
}

fn read_all(body: wasip2::http::types::IncomingBody) -> Vec<u8> {
    let mut all = Vec::new();
    {
        let stream = body.stream().expect("the stream, once");
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => all.extend(chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    panic!("reading the body: {}", e.to_debug_string())
                }
            }
        }
    }
    all
}

/// GETs `url` (`http://authority/path`).
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|()| "method")?;
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| format!("bad authority {authority:?}"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| format!("bad path {path:?}"))?;
    let pending =
        wasip2::http::outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "the response was taken")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = read_all(response.consume().map_err(|()| "no body")?);
    Ok((status, body))
}
