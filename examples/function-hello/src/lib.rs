//! An HTTP function: answers every request with JSON naming the pod that served it and the
//! path asked for. Bosun runs a fresh instance for each request.

use bosun_sdk::function::{Request, Response};
use bosun_sdk::pod::Pod;

fn hello(request: Request) -> Response {
    let pod = Pod::current();
    Response::json(
        200,
        format!(
            "{{\"pod\":{:?},\"path\":{:?}}}\n",
            pod.name.unwrap_or_default(),
            request.path
        ),
    )
}

bosun_sdk::function!(hello);
