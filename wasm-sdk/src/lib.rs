//! Write Bosun workloads in Rust.
//!
//! Bosun runs every container of a pod as WebAssembly in a wasmtime sandbox. This crate is
//! what a workload uses to fit in:
//!
//! - [`pod`]: who am I (the pod's name, namespace, IP, node, from the downward API);
//! - [`config`]: typed settings from the environment and from mounted ConfigMap and Secret
//!   files, with change detection for live updates;
//! - [`log`]: structured log lines on stdout (JSON, one object per line) that `kubectl logs`
//!   shows as they are and log tools can parse;
//! - [`shutdown`]: Bosun's stop signal (WASI has no signals): the guest learns that its pod is
//!   being deleted and has the pod's grace period to finish;
//! - [`http`] (wasm32-wasip2 only): a small HTTP/1.1 server on wasi:sockets with liveness and
//!   readiness endpoints for the pod's probes, and graceful shutdown built in;
//! - [`function`] (wasm32-wasip2 only): serverless HTTP functions, a plain `fn(Request) ->
//!   Response` exported as `wasi:http/incoming-handler`, and outgoing calls.
//!
//! Build for `wasm32-wasip2` (a component; everything is available) or `wasm32-wasip1` (a
//! core module; no sockets, so no [`http`]). The crate has no dependencies besides
//! `wit-bindgen` for the component's host interface and `wasip2` for wasi:http.
//!
//! ```no_run
//! use bosun_sdk::{config, info, pod::Pod};
//!
//! let pod = Pod::current();
//! let greeting: String = config::env_or("GREETING", "hello".to_string()).unwrap();
//! info!("starting", pod = pod.name.as_deref().unwrap_or("?"), greeting = greeting.as_str());
//! ```
//!
//! The same pod, config and log helpers serve both kinds of workload: a server ([`http`]) and
//! a function ([`function`]).

pub mod config;
#[cfg(target_env = "p2")]
pub mod function;
#[cfg(target_env = "p2")]
pub mod http;
pub mod log;
pub mod pod;
pub mod shutdown;
