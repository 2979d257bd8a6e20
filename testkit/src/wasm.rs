//! Wasm fixtures built from WAT here (no opaque binaries): a preview 1 command with a few
//! useful functions, and the same as a preview 2 component.

/// A WASI preview 1 command whose `_start` runs `body` (WAT instructions). It has
/// "hello from wasm\n" at offset 16 and these functions to call: `$hello` prints it, `$env`
/// prints the environment (a `VAR=value` line each), `$sleep` sleeps 300 ms, `$oops` writes
/// "oops\n" to stderr; and the imports `$fd_write`, `$proc_exit`, `$poll` (poll_oneoff),
/// `$env_sizes` and `$env_get`.
pub fn command(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
            (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 2)
            (data (i32.const 16) "hello from wasm\n")
            (func $hello
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const 16))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
            ;; Prints the environment, one VAR=value per line.
            (func $env (local $i i32) (local $end i32)
                (drop (call $env_sizes (i32.const 0) (i32.const 4)))
                (drop (call $env_get (i32.const 1024) (i32.const 8192)))
                (local.set $i (i32.const 8192))
                (local.set $end (i32.add (i32.const 8192) (i32.load (i32.const 4))))
                (block $done (loop $next
                    (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
                    (if (i32.eqz (i32.load8_u (local.get $i)))
                        (then (i32.store8 (local.get $i) (i32.const 10))))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br $next)))
                (i32.store (i32.const 32) (i32.const 8192))
                (i32.store (i32.const 36) (i32.load (i32.const 4)))
                (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40))))
            ;; Sleeps 300 ms (poll_oneoff on the monotonic clock).
            (func $sleep
                (i64.store (i32.const 256) (i64.const 0))
                (i32.store8 (i32.const 264) (i32.const 0))
                (i32.store (i32.const 272) (i32.const 1))
                (i64.store (i32.const 280) (i64.const 300000000))
                (i64.store (i32.const 288) (i64.const 0))
                (i32.store16 (i32.const 296) (i32.const 0))
                (drop (call $poll (i32.const 256) (i32.const 320) (i32.const 1) (i32.const 400))))
            ;; Writes "oops\n" to stderr.
            (func $oops
                (i32.store (i32.const 48) (i32.const 64))
                (i32.store (i32.const 52) (i32.const 5))
                (drop (call $fd_write (i32.const 2) (i32.const 48) (i32.const 1) (i32.const 56))))
            (data (i32.const 64) "oops\n")
            (func (export "_start") {body}))"#
    ))
    .expect("valid WAT")
}

/// [`command`] as a preview 2 command component, through the preview 1 adapter that matches
/// this wasmtime.
pub fn component(body: &str) -> Vec<u8> {
    componentize(&command(body))
}

/// A preview 1 command module (with any component metadata embedded) as a preview 2 command
/// component, through the preview 1 adapter that matches this wasmtime.
pub fn componentize(module: &[u8]) -> Vec<u8> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .unwrap()
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}
