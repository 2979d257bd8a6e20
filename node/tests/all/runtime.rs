//! The wasmtime runtime with WAT fixtures compiled from source here: output to the log, exit
//! codes, the memory limit (OOMKilled), stopping a guest that never yields, the CPU share,
//! and clear errors for bytes that are not valid Wasm.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_node::runtime::wasmtime::{WasmtimeOptions, WasmtimeRuntime};
use bosun_node::runtime::{Artifact, Container, ContainerSpec, Error, Exit, Runtime};
use bosun_testkit::wasm::{command, component, componentize};

/// Blocks until the container ends.
fn wait(container: Arc<dyn Container>) -> Exit {
    futures::executor::block_on(container.wait())
}

/// Blocks until the container ends, for at most `timeout`.
fn wait_timeout(container: &Arc<dyn Container>, timeout: Duration) -> Option<Exit> {
    let deadline = Instant::now() + timeout;
    while !container.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Some(futures::executor::block_on(container.wait()))
}

/// The log's entries as (stream, content), checked to be well-formed CRI lines.
fn log_lines(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let e = bosun_node::logs::parse(l).unwrap_or_else(|| panic!("not a CRI line: {l:?}"));
            (e.stream.to_string(), e.content.to_string())
        })
        .collect()
}

fn runtime() -> WasmtimeRuntime {
    WasmtimeRuntime::new(WasmtimeOptions {
        max_instances: 16,
        max_memory_size: 256 << 20,
        ..Default::default()
    })
    .unwrap()
}

fn spec(dir: &tempfile::TempDir, name: &str, wasm: Vec<u8>) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        artifact: Artifact::Wasm {
            bytes: Arc::from(wasm),
            digest: None,
        },
        args: vec![name.to_string()],
        env: Vec::new(),
        mounts: Vec::new(),
        log: dir.path().join(format!("{name}.log")),
        memory_limit: 64 << 20,
        cpu_limit_millis: None,
        network: None,
        serving: Default::default(),
    }
}

#[test]
fn a_command_writes_to_its_log_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let exit = wait(
        rt.start(spec(&dir, "hello", command("(call $hello)")))
            .unwrap(),
    );
    assert_eq!(exit.reason, "Completed", "{exit:?}");
    assert_eq!(exit.code, 0);
    assert_eq!(
        log_lines(&dir.path().join("hello.log")),
        [("stdout".to_string(), "hello from wasm".to_string())]
    );
}

#[test]
fn a_component_runs_as_a_command_too() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let exit = wait(
        rt.start(spec(&dir, "hello-p2", component("(call $hello)")))
            .unwrap(),
    );
    assert_eq!(exit.reason, "Completed", "{exit:?}");
    assert_eq!(
        log_lines(&dir.path().join("hello-p2.log")),
        [("stdout".to_string(), "hello from wasm".to_string())]
    );
    let exit = wait(
        rt.start(spec(
            &dir,
            "exit-p2",
            component("(call $proc_exit (i32.const 4))"),
        ))
        .unwrap(),
    );
    // wasi:cli/exit in preview 2 carries only success or failure: any failing code is 1.
    assert_eq!((exit.code, exit.reason.as_str()), (1, "Error"), "{exit:?}");
}

#[test]
fn proc_exit_gives_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let exit = wait(
        runtime()
            .start(spec(
                &dir,
                "fails",
                command("(call $proc_exit (i32.const 3))"),
            ))
            .unwrap(),
    );
    assert_eq!((exit.code, exit.reason.as_str()), (3, "Error"));
}

#[test]
fn growing_past_the_memory_limit_is_oomkilled() {
    let dir = tempfile::tempdir().unwrap();
    // Grow one 64 KiB page at a time, forever.
    let bomb = command("(loop (drop (memory.grow (i32.const 1))) (br 0))");
    let mut s = spec(&dir, "bomb", bomb);
    s.memory_limit = 2 << 20;
    let exit = wait(runtime().start(s).unwrap());
    assert_eq!(exit.reason, "OOMKilled", "{exit:?}");
    assert_eq!(exit.code, 137);
    assert!(exit.message.unwrap().contains("memory limit exceeded"));
}

#[test]
fn a_guest_that_never_calls_the_host_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let running = runtime()
        .start(spec(&dir, "spin", command("(loop (br 0))")))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!running.is_finished());
    let asked = Instant::now();
    running.kill();
    let exit = wait_timeout(&running, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("the guest did not stop"));
    assert_eq!(exit.reason, "Stopped");
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "stopping took {:?}",
        asked.elapsed()
    );
}

#[test]
fn a_guest_waiting_in_a_host_call_is_stopped_too() {
    // poll_oneoff on the monotonic clock for an hour: the guest waits in the host, where no
    // epoch tick reaches it. As a module and as a component (through the adapter).
    let sleep = r#"
        (i64.store (i32.const 256) (i64.const 0))
        (i32.store8 (i32.const 264) (i32.const 0))
        (i32.store (i32.const 272) (i32.const 1))
        (i64.store (i32.const 280) (i64.const 3600000000000))
        (i64.store (i32.const 288) (i64.const 0))
        (i32.store16 (i32.const 296) (i32.const 0))
        (drop (call $poll (i32.const 256) (i32.const 320) (i32.const 1) (i32.const 400)))"#;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    for wasm in [command(sleep), component(sleep)] {
        let running = rt.start(spec(&dir, "sleeper", wasm)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!running.is_finished());
        running.kill();
        let exit = wait_timeout(&running, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("a sleeping guest did not stop"));
        assert_eq!(exit.reason, "Stopped");
        assert_eq!(exit.code, 137);
    }
}

/// CPU time of the thread named `name`, from /proc (clock ticks of 10 ms).
fn thread_cpu(name: &str) -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
            return Some(Duration::from_millis(ticks * 10));
        }
    }
    None
}

/// The CPU share holds, and the container's usage (what the node's metrics serve) tells the
/// same CPU time as the kernel's accounting of its thread, and the memory the guest grew to.
#[test]
fn a_busy_loop_with_cpu_250m_uses_a_quarter_of_a_core() {
    let dir = tempfile::tempdir().unwrap();
    // Two pages, grown by fourteen: 1 MiB of linear memory.
    let body = "(drop (memory.grow (i32.const 14))) (loop (br 0))";
    let mut s = spec(&dir, "busy", command(body));
    s.cpu_limit_millis = Some(250);
    let rt = runtime();
    let running = rt.start(s).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = thread_cpu("wasm-busy").expect("the guest's thread");
    let reported_before = running.usage().expect("a running container's usage");
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let used = thread_cpu("wasm-busy").unwrap() - before;
    let reported = running.usage().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let share = used.as_secs_f64() / elapsed;
    let reported_share = (reported.cpu - reported_before.cpu).as_secs_f64() / elapsed;
    running.kill();
    wait(running.clone());
    eprintln!(
        "cpu: 250m guest used {share:.3} CPU-seconds per second ({reported_share:.3} reported)"
    );
    assert!(
        (0.20..=0.30).contains(&share),
        "a 250m guest used {share:.3} CPU-seconds per second"
    );
    assert!(
        (share - reported_share).abs() < 0.03,
        "reported {reported_share:.3}, the kernel says {share:.3}"
    );
    assert_eq!(reported.memory, 16 * 65536);
    assert_eq!(running.usage(), None, "an ended container uses nothing");
}

/// A guest's tables count in its memory, a pointer per element, beside its linear memory.
#[test]
fn tables_count_in_a_guests_memory() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (table 10 funcref)
            (func (export "_start")
                (drop (table.grow (ref.null func) (i32.const 90)))
                (loop (br 0))))"#,
    )
    .unwrap();
    let mut s = spec(&dir, "tables", wasm);
    s.cpu_limit_millis = Some(100);
    let running = runtime().start(s).unwrap();
    let expected = 65536 + 100 * std::mem::size_of::<usize>() as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let memory = loop {
        let memory = running.usage().map(|u| u.memory).unwrap_or(0);
        if memory == expected || Instant::now() > deadline {
            break memory;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    running.kill();
    wait(running.clone());
    assert_eq!(memory, expected);
}

#[test]
fn bytes_that_are_not_wasm_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let err = rt
        .start(spec(&dir, "text", b"#!/bin/sh\necho hi\n".to_vec()))
        .err()
        .unwrap();
    assert!(matches!(err, Error::NotWasm(_)), "{err}");
    let mut broken = command("(call $hello)");
    broken.truncate(broken.len() - 5);
    let err = rt.start(spec(&dir, "broken", broken)).err().unwrap();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    let no_start = wat::parse_str("(module (memory 1))").unwrap();
    let exit = wait(rt.start(spec(&dir, "nostart", no_start)).unwrap());
    assert_eq!(exit.reason, "Error");
    assert!(
        exit.message.unwrap().contains("no _start"),
        "a module that is not a command says so"
    );
}

#[test]
fn a_guest_that_watches_for_shutdown_exits_cleanly_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let polite = wat::parse_str(
        r#"(module
            (import "bosun_lifecycle" "shutdown_requested" (func $requested (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (loop (br_if 0 (i32.eqz (call $requested))))
                (call $proc_exit (i32.const 0))))"#,
    )
    .unwrap();
    let running = runtime().start(spec(&dir, "polite", polite)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!running.is_finished(), "it waits for the request");
    running.terminate();
    let exit = wait_timeout(&running, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("the guest ignored the request"));
    assert_eq!(exit, bosun_node::runtime::Exit::completed());
}

/// A preview 2 component that imports bosun:lifecycle/shutdown (node/wit) and runs `body`;
/// `$requested`, `$subscribe` and `$block` are the interface's functions as core imports.
fn lifecycle_component(body: &str) -> Vec<u8> {
    let mut module = wat::parse_str(format!(
        r#"(module
            (import "bosun:lifecycle/shutdown@0.1.0" "requested" (func $requested (result i32)))
            (import "bosun:lifecycle/shutdown@0.1.0" "subscribe" (func $subscribe (result i32)))
            (import "wasi:io/poll@0.2.0" "[method]pollable.block" (func $block (param i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start") {body}))"#
    ))
    .unwrap();
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/wit"))
        .unwrap();
    let world = resolve.select_world(&[package], Some("guest")).unwrap();
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    componentize(&module)
}

#[test]
fn a_component_learns_of_shutdown_by_asking_or_by_waiting_on_a_pollable() {
    for (how, body) in [
        (
            "requested",
            "(loop (br_if 0 (i32.eqz (call $requested)))) (call $proc_exit (i32.const 0))",
        ),
        (
            "pollable",
            "(call $block (call $subscribe)) (call $proc_exit (i32.const 0))",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let running = runtime()
            .start(spec(&dir, how, lifecycle_component(body)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!running.is_finished(), "{how}: it waits for the request");
        running.terminate();
        let exit = wait_timeout(&running, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("{how}: the guest was not told"));
        assert_eq!(exit, bosun_node::runtime::Exit::completed(), "{how}");
    }
}
