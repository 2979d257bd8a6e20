//! A test guest for the pod-network tests: TCP over wasi:sockets through std.
//!
//! ```text
//! netcheck listen ADDR            accept connections; answer each line L with "pong L"
//! netcheck connect ADDR MESSAGE   send MESSAGE, print the answer; retries while refused
//! netcheck bind ADDR              bind and report, then exit
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
        Some("bind") if args.len() == 3 => {
            TcpListener::bind(&args[2]).map(|l| println!("bound {}", l.local_addr().unwrap()))
        }
        _ => {
            eprintln!("usage: netcheck listen ADDR | connect ADDR MESSAGE | bind ADDR");
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
        // `&TcpStream` reads and writes, so no `try_clone` (which needs `dup`) is needed.
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            println!("from {peer}: {}", line.trim_end());
            (&stream).write_all(format!("pong {line}").as_bytes())?;
            line.clear();
        }
    }
    Ok(())
}

fn connect(addr: &str, message: &str) -> std::io::Result<()> {
    // The listener may be a sibling container that has not bound yet: retry refusals for a
    // while, and fail on anything else at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    };
    (&stream).write_all(format!("{message}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    println!("answer: {}", answer.trim_end());
    Ok(())
}
