//! End-to-end tests of the `bosun` binary, one binary with a module per area (as wasmtime's
//! `tests/all`): real `bosun server`, `bosun node` and `bosun up` processes, real kubectl,
//! PostgreSQL, SQLite, a real OCI registry and real network namespaces. `support` has the
//! helpers every area shares.

mod api;
mod cli;
mod controllers;
mod examples;
mod functions;
mod kube_client;
mod metrics;
mod network;
mod node;
mod probes;
mod push;
mod quota;
mod rbac;
mod scheduler;
mod server;
mod services;
mod support;
