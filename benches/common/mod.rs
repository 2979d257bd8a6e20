//! What the end-to-end benchmarks share beyond `bosun-testkit`: child processes, an API client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;

/// A preview 1 command that sleeps for an hour (poll_oneoff on the monotonic clock).
pub const SLEEPER: &str = r#"(module
    (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")
        (i32.store8 (i32.const 8) (i32.const 0))
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 3600000000000))
        (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

/// Waits until the child prints a line starting with `prefix`, then drains its output.
pub fn spawn_lines(mut child: Child, prefix: &str) -> Child {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .find(|l| l.as_ref().is_ok_and(|l| l.starts_with(prefix)));
    assert!(started.is_some(), "the process did not start");
    std::thread::spawn(move || for _ in lines {});
    child
}

/// A client of the server whose admin kubeconfig is `kubeconfig`.
pub async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}
