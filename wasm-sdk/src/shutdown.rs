//! Bosun's stop signal. WASI has no signals: when a pod is deleted, Bosun tells its
//! containers through the `bosun:lifecycle` host interface (`node/wit/lifecycle.wit` in
//! Bosun's repository) and gives them the pod's `terminationGracePeriodSeconds` to finish.
//! A guest still running then is interrupted wherever it is.
//!
//! ```no_run
//! use bosun_sdk::shutdown;
//!
//! while !shutdown::requested() {
//!     // one unit of work
//! #   break;
//! }
//! // flush, say goodbye, return from main
//! ```
//!
//! The functions import the interface only when called, so a guest that never asks runs on
//! any WASI host; one that asks needs Bosun (or a host that provides the interface).

/// Whether Bosun has asked this container to stop.
pub fn requested() -> bool {
    imp::requested()
}

/// Blocks until Bosun asks this container to stop.
pub fn wait() {
    imp::wait()
}

#[cfg(target_env = "p2")]
mod imp {
    wit_bindgen::generate!({
        path: "../node/wit",
        world: "bosun:lifecycle/guest",
        generate_all,
    });

    use bosun::lifecycle::shutdown;

    pub use wasi::io::poll::Pollable;

    pub fn requested() -> bool {
        shutdown::requested()
    }

    pub fn wait() {
        shutdown::subscribe().block();
    }

    pub fn subscribe() -> Pollable {
        shutdown::subscribe()
    }
}

/// A pollable (wasi:io/poll) that is ready once Bosun asks this container to stop, to wait
/// for it beside other work with [`poll`].
#[cfg(target_env = "p2")]
pub fn subscribe() -> Pollable {
    imp::subscribe()
}

#[cfg(target_env = "p2")]
pub use imp::Pollable;

/// Waits until at least one of `pollables` is ready; returns the indexes of the ready ones.
#[cfg(target_env = "p2")]
pub fn poll(pollables: &[&Pollable]) -> Vec<u32> {
    imp::wasi::io::poll::poll(pollables)
}

#[cfg(not(target_env = "p2"))]
mod imp {
    #[link(wasm_import_module = "bosun_lifecycle")]
    unsafe extern "C" {
        /// 1 once the node asked the guest to stop.
        fn shutdown_requested() -> i32;
    }

    pub fn requested() -> bool {
        // Safety: a host function without arguments or memory access.
        unsafe { shutdown_requested() != 0 }
    }

    pub fn wait() {
        // Preview 1 has no way to wait for the host: look ten times a second.
        while !requested() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
