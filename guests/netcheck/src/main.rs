//! A test guest for the pod-network tests: TCP over wasi:sockets through std.
//!
//! ```text
//! netcheck listen ADDR            accept connections (printing `from PEER`); answer each line
//!                                 L with "pong L"
//! netcheck connect ADDR MESSAGE   send MESSAGE, print the answer; retries while refused
//! netcheck bind ADDR              bind and report, then exit
//! netcheck http ADDR HEALTHY      serve HTTP: `/ready` answers 200; `/live` answers 200 the
//!                                 first HEALTHY times, then 500 (for the probe tests)
//! netcheck ping ADDR COUNT        COUNT round trips of one line to a listener; prints
//!                                 `rtt_ns p50=… p99=…` (the network benchmark)
//! ```
//! Every outcome is one line on stdout (`listening on …`, `answer: …`, `bound …`), and every
//! failure one line on stderr with exit code 1, so the tests read the container log.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("listen") if args.len() == 3 => listen(&args[2]),
        Some("connect") if args.len() == 4 => connect(&args[2], &args[3]),
        Some("ping") if args.len() == 4 => match args[3].parse() {
            Ok(count) => ping(&args[2], count),
            Err(_) => Err(std::io::Error::other(format!(
                "{:?} is not a count",
                args[3]
            ))),
        },
        Some("http") if args.len() == 4 => match args[3].parse() {
            Ok(healthy) => http(&args[2], healthy),
            Err(_) => Err(std::io::Error::other(format!(
                "{:?} is not a count",
                args[3]
            ))),
        },
        Some("bind") if args.len() == 3 => {
            TcpListener::bind(&args[2]).map(|l| println!("bound {}", l.local_addr().unwrap()))
        }
        _ => {
            eprintln!(
                "usage: netcheck listen ADDR | connect ADDR MESSAGE | bind ADDR | ping ADDR COUNT | http ADDR HEALTHY"
            );
            std::process::exit(2);
        }
    };
    if let Err(error) = result {
        eprintln!("netcheck {}: {error} ({:?})", args[1], error.kind());
        std::process::exit(1);
    }
}

fn listen(addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        let peer = stream.peer_addr()?;
        println!("from {peer}");
        // `&TcpStream` reads and writes, so no `try_clone` (which needs `dup`) is needed.
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            (&stream).write_all(format!("pong {line}").as_bytes())?;
            line.clear();
        }
    }
    Ok(())
}

fn http(addr: &str, healthy: u64) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("serving http on {}", listener.local_addr()?);
    let mut live_checks = 0u64;
    for stream in listener.incoming() {
        let stream = stream?;
        let mut reader = BufReader::new(&stream);
        let mut request = String::new();
        reader.read_line(&mut request)?;
        // The headers, up to the empty line.
        let mut line = String::new();
        while reader.read_line(&mut line)? > 2 {
            line.clear();
        }
        let path = request.split_whitespace().nth(1).unwrap_or("");
        let status = match path {
            "/ready" => "200 OK",
            "/live" => {
                live_checks += 1;
                if live_checks <= healthy {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                }
            }
            _ => "404 Not Found",
        };
        println!(
            "{} {path} -> {status}",
            request.split_whitespace().next().unwrap_or("")
        );
        let body = format!("{status}\n");
        (&stream).write_all(
            format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )?;
    }
    Ok(())
}

fn connect(addr: &str, message: &str) -> std::io::Result<()> {
    let stream = connect_retrying(addr)?;
    (&stream).write_all(format!("{message}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    println!("answer: {}", answer.trim_end());
    Ok(())
}

fn ping(addr: &str, count: usize) -> std::io::Result<()> {
    let stream = connect_retrying(addr)?;
    let mut reader = BufReader::new(&stream);
    let mut answer = String::new();
    let mut times = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let start = Instant::now();
        (&stream).write_all(b"p\n")?;
        answer.clear();
        if reader.read_line(&mut answer)? == 0 {
            return Err(std::io::Error::other("the listener closed the connection"));
        }
        times.push(start.elapsed());
    }
    times.sort();
    let at = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "rtt_ns p50={} p99={} count={}",
        at(0.5).as_nanos(),
        at(0.99).as_nanos(),
        times.len()
    );
    Ok(())
}

/// Connects, retrying refusals for a while: the listener may be a sibling container that has
/// not bound yet. Anything else fails at once.
fn connect_retrying(addr: &str) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}
