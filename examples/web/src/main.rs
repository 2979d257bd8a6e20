//! `web`: an HTTP service on wasi:sockets, written with wasm-sdk's server. Each replica says
//! who it is and which version it runs (`VERSION`, set in the Deployment), so a rollout can
//! be watched from outside.

use bosun_sdk::http::{Response, Server};
use bosun_sdk::log::display;
use bosun_sdk::{config, error, info, pod::Pod};

fn main() {
    if let Err(e) = run() {
        error!("web failed", error = display(&e));
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = config::env_or("PORT", 8080)?;
    let version: String = config::env_or("VERSION", "v1".to_string())?;
    let pod = Pod::current();
    let name = pod.name.clone().unwrap_or_else(|| "web".to_string());

    let server = Server::bind(("0.0.0.0", port))?;
    info!(
        "listening",
        addr = display(server.local_addr()?),
        version = version.as_str()
    );
    // Nothing to warm up: ready at once. A service that loads data would set this after.
    server.readiness().set(true);

    let mut served = 0u64;
    server.serve(|request| {
        served += 1;
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/") => Response::text(200, format!("hello from {name} ({version})\n")),
            ("GET", "/version") => Response::text(200, format!("{version}\n")),
            _ => Response::text(404, format!("no {} here\n", request.path)),
        }
    })?;
    info!("stopped", served = served);
    Ok(())
}
