//! A wasi:http function for the node's tests, written with `bosun_sdk::function`: each path
//! does one thing a function container must survive or show.
//!
//! - `/` answers JSON with the path and the pod's name (`POD_NAME`);
//! - `/counter` counts requests in a global: a fresh instance per request always says 1;
//! - `/trap` traps, `/oom` allocates until it cannot, `/loop` never ends;
//! - `/sleep?ms=N` answers after N milliseconds (for concurrency and timeouts);
//! - `/hold?mb=N&ms=M` holds N MiB of memory for M milliseconds (for the shared budget);
//! - `/echo` answers with the request's body;
//! - `/print` writes a line to stdout and stderr;
//! - `/fetch?url=http://host:port/path` calls that URL (wasi:http/outgoing-handler) and answers
//!   with its status and body, or 502 and the error;
//! - `/kubernetes?path=/api/v1/…` GETs that path from the Kubernetes API as the pod's
//!   ServiceAccount (`bosun_sdk::function::kubernetes_get`) and answers with its status and
//!   body;
//! - `/stream-trap` sends its response's head and part of its body, then traps (below the
//!   SDK, which writes whole bodies: the export is this guest's own, and every other path goes
//!   through `bosun_sdk::function::serve`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bosun_sdk::function::{self, Request, Response};

static REQUESTS: AtomicU32 = AtomicU32::new(0);

fn handle(request: Request) -> Response {
    let count = REQUESTS.fetch_add(1, Ordering::SeqCst) + 1;
    match request.path.as_str() {
        "/counter" => Response::text(200, count.to_string()),
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
            let ms = request
                .query_param("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            std::thread::sleep(Duration::from_millis(ms));
            Response::text(200, "slept")
        }
        "/hold" => {
            let param = |name| request.query_param(name).and_then(|v| v.parse().ok());
            let hoard = vec![1u8; param("mb").unwrap_or(1) << 20];
            std::thread::sleep(Duration::from_millis(param("ms").unwrap_or(100) as u64));
            Response::text(200, format!("held {}", std::hint::black_box(hoard).len()))
        }
        "/echo" => Response::new(200).body(request.body),
        "/print" => {
            println!("hello from a request");
            eprintln!("and from its stderr");
            Response::text(200, "printed")
        }
        "/kubernetes" => match function::kubernetes_get(request.query_param("path").unwrap_or("/"))
        {
            Ok(answer) => {
                let mut text = format!("{} ", answer.status).into_bytes();
                text.extend(answer.body);
                Response::new(200).body(text)
            }
            Err(error) => Response::text(502, error.to_string()),
        },
        "/fetch" => match function::get(request.query_param("url").unwrap_or_default()) {
            Ok(answer) => {
                let mut text = format!("{} ", answer.status).into_bytes();
                text.extend(answer.body);
                Response::new(200).body(text)
            }
            Err(error) => Response::text(502, error.to_string()),
        },
        path => {
            let pod = std::env::var("POD_NAME").unwrap_or_default();
            Response::json(200, format!("{{\"path\":{path:?},\"pod\":{pod:?}}}"))
        }
    }
}

use bosun_sdk::function::__wasip2 as wasip2;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};

struct Function;

impl wasip2::exports::http::incoming_handler::Guest for Function {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if request.path_with_query().as_deref() != Some("/stream-trap") {
            return function::serve(request, out, handle);
        }
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("a body");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("a stream");
        stream
            .blocking_write_and_flush(b"the first part, ")
            .expect("written");
        // The response has started; the guest dies before finishing it.
        std::process::abort();
    }
}

wasip2::http::proxy::export!(Function);
