//! An HTTP function that calls another Service: `GET /<path>` fetches
//! `$UPSTREAM/<path>` (outgoing HTTP, `UPSTREAM` such as `http://function-hello`) and answers
//! with what it got, wrapped in a line that names this pod. Outside the cluster it may only
//! call with the pod annotation `bosun.dev/egress: allow`.

use bosun_sdk::function::{self, Request, Response};
use bosun_sdk::{config, pod::Pod};

fn proxy(request: Request) -> Response {
    let upstream: String = match config::require("UPSTREAM") {
        Ok(upstream) => upstream,
        Err(error) => return Response::text(500, format!("{error}\n")),
    };
    let url = format!("{}{}", upstream.trim_end_matches('/'), request.path);
    let me = Pod::current().name.unwrap_or_default();
    match function::get(&url) {
        Ok(answer) => Response::text(
            200,
            format!(
                "{me} got {} from {url}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ),
        ),
        Err(error) => Response::text(502, format!("{me} could not reach {url}: {error}\n")),
    }
}

bosun_sdk::function!(proxy);
