//! `bosun:lifecycle` (node/wit/lifecycle.wit): how a guest learns that it is being stopped.
//! Preview 1 modules get `bosun_lifecycle.shutdown_requested` (see `run_module`); preview 2
//! components get the `shutdown` interface bound here, whose `subscribe` pollable works with
//! `wasi:io/poll` like any other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynPollable, Pollable};

use super::ComponentState;

wasmtime::component::bindgen!({
    path: "wit",
    world: "bosun:lifecycle/guest",
    with: {
        "wasi:io/poll": wasmtime_wasi::p2::bindings::io::poll,
    },
    imports: { default: trappable },
    require_store_data_send: true,
});

pub use bosun::lifecycle::shutdown::add_to_linker;

/// Ready once the node asks the container to stop.
struct ShutdownSignal(Arc<AtomicBool>);

#[async_trait::async_trait]
impl Pollable for ShutdownSignal {
    async fn ready(&mut self) {
        // The request is a flag the agent sets from another thread; a guest blocked in
        // `poll` sees it within this interval.
        while !self.0.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl bosun::lifecycle::shutdown::Host for ComponentState {
    fn requested(&mut self) -> wasmtime::Result<bool> {
        Ok(self.guard.shutdown.load(Ordering::Relaxed))
    }

    fn subscribe(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let signal = self
            .table
            .push(ShutdownSignal(self.guard.shutdown.clone()))?;
        wasmtime_wasi::p2::subscribe(&mut self.table, signal)
    }
}
