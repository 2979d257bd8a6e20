//! A test guest for the pod-network tests: TCP over wasi:sockets through std.
//!
//! ```text
//! netcheck listen ADDR            accept connections (printing `from PEER`); answer each line
//!                                 L with "pong L", or "pong L from NAME" when the variable
//!                                 POD_NAME is NAME
//! netcheck calls ADDR COUNT       COUNT connections, one line each; prints
//!                                 `call_ns p50=… p99=… elapsed=…` and
//!                                 `calls ok=… failed=… by: NAME=N …` (who answered)
//! netcheck resolve NAME           prints `addresses: IP …` (sorted) for NAME
//! netcheck udp-echo ADDR          answer each datagram D with "pong D[ from NAME]"
//! netcheck udp-call ADDR MESSAGE  send MESSAGE in a datagram, print the answer (retrying)
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
        Some("calls") if args.len() == 4 => match args[3].parse() {
            Ok(count) => calls(&args[2], count),
            Err(_) => Err(std::io::Error::other(format!(
                "{:?} is not a count",
                args[3]
            ))),
        },
        Some("resolve") if args.len() == 3 => resolve(&args[2]),
        Some("udp-echo") if args.len() == 3 => udp_echo(&args[2]),
        Some("udp-call") if args.len() == 4 => udp_call(&args[2], &args[3]),
        Some("bind") if args.len() == 3 => {
            TcpListener::bind(&args[2]).map(|l| println!("bound {}", l.local_addr().unwrap()))
        }
        _ => {
            eprintln!(
                "usage: netcheck listen ADDR | connect ADDR MESSAGE | bind ADDR | ping ADDR COUNT | http ADDR HEALTHY | calls ADDR COUNT | resolve NAME | udp-echo ADDR | udp-call ADDR MESSAGE"
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
            (&stream).write_all(format!("pong {}{}\n", line.trim_end(), signature()).as_bytes())?;
            line.clear();
        }
    }
    Ok(())
}

/// " from NAME" when the variable POD_NAME is set (pods set it through the downward API).
fn signature() -> String {
    std::env::var("POD_NAME")
        .map(|name| format!(" from {name}"))
        .unwrap_or_default()
}

fn calls(addr: &str, count: usize) -> std::io::Result<()> {
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    let (mut ok, mut failed) = (0, 0);
    let mut times = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let call = Instant::now();
        let answer = TcpStream::connect(addr).and_then(|stream| {
            (&stream).write_all(format!("call {i}\n").as_bytes())?;
            let mut answer = String::new();
            BufReader::new(&stream).read_line(&mut answer)?;
            Ok(answer)
        });
        times.push(call.elapsed());
        match answer {
            Ok(answer) if answer.starts_with("pong") => {
                ok += 1;
                let from = answer
                    .trim_end()
                    .rsplit_once(" from ")
                    .map_or("?", |(_, n)| n);
                *by.entry(from.to_string()).or_default() += 1;
            }
            Ok(_) => failed += 1,
            Err(e) => {
                failed += 1;
                eprintln!("call {i}: {e}");
            }
        }
    }
    let elapsed = started.elapsed();
    times.sort();
    let at = |p: f64| {
        times
            .get(((times.len() as f64 * p).ceil() as usize).clamp(1, times.len().max(1)) - 1)
            .map_or(0, |d| d.as_nanos())
    };
    println!(
        "call_ns p50={} p99={} elapsed={}",
        at(0.5),
        at(0.99),
        elapsed.as_nanos()
    );
    let by: Vec<String> = by.iter().map(|(n, c)| format!("{n}={c}")).collect();
    println!("calls ok={ok} failed={failed} by: {}", by.join(" "));
    Ok(())
}

fn resolve(name: &str) -> std::io::Result<()> {
    use std::net::ToSocketAddrs;
    let mut ips: Vec<String> = (name, 0)
        .to_socket_addrs()?
        .map(|a| a.ip().to_string())
        .collect();
    ips.sort();
    println!("addresses: {}", ips.join(" "));
    Ok(())
}

fn udp_echo(addr: &str) -> std::io::Result<()> {
    let socket = std::net::UdpSocket::bind(addr)?;
    println!("echoing udp on {}", socket.local_addr()?);
    let mut buf = [0u8; 1500];
    loop {
        let (n, peer) = socket.recv_from(&mut buf)?;
        let text = String::from_utf8_lossy(&buf[..n]);
        socket.send_to(
            format!("pong {}{}", text.trim_end(), signature()).as_bytes(),
            peer,
        )?;
    }
}

fn udp_call(addr: &str, message: &str) -> std::io::Result<()> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(addr)?;
    // A datagram to a listener that is not there yet is lost: send again every half second
    // (wasi-libc has no receive timeout for UDP, so the socket does not block).
    socket.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 1500];
    loop {
        socket.send(message.as_bytes())?;
        let resend = Instant::now() + Duration::from_millis(500);
        while Instant::now() < resend {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    println!("answer: {}", String::from_utf8_lossy(&buf[..n]));
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer",
            ));
        }
    }
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
