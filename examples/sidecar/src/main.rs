//! `sidecar`: two containers of one pod talking over localhost (they share the pod's
//! network namespace).
//!
//! ```text
//! sidecar serve PORT      the app: answers `GET /` with a counter on 127.0.0.1:PORT only
//! sidecar watch PORT      the sidecar: asks localhost:PORT every second, logs each answer
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bosun_sdk::http::{Response, Server};
use bosun_sdk::log::display;
use bosun_sdk::{error, info, shutdown};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = args.get(2).and_then(|p| p.parse::<u16>().ok());
    let result = match (args.get(1).map(String::as_str), port) {
        (Some("serve"), Some(port)) => serve(port),
        (Some("watch"), Some(port)) => watch(port),
        _ => Err("usage: sidecar serve|watch PORT".into()),
    };
    if let Err(e) = result {
        error!("sidecar failed", error = display(&e));
        std::process::exit(1);
    }
}

fn serve(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    // Loopback only: nothing outside the pod can reach the app, its sidecar can.
    let server = Server::bind(("127.0.0.1", port))?;
    server.readiness().set(true);
    info!("app listening", addr = display(server.local_addr()?));
    let mut count = 0u64;
    server.serve(|_| {
        count += 1;
        Response::text(200, format!("app answer #{count}"))
    })?;
    Ok(())
}

fn watch(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    while !shutdown::requested() {
        match get(port) {
            Ok(answer) => info!("sidecar heard", answer = answer.as_str()),
            // The app may not listen yet: the containers start together.
            Err(e) => info!("app not answering yet", error = display(&e)),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    info!("sidecar stopping");
    Ok(())
}

/// The body of `GET /` on localhost:`port`.
fn get(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(body.to_string())
}
