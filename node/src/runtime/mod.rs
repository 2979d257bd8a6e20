//! The seam between the agent and what runs containers. A [`Runtime`] serves one RuntimeClass
//! handler (`wasmtime`; `runc` arrives later) and starts a container from a [`ContainerSpec`];
//! what it hands back is a [`Container`] handle to stop or wait for, whatever runs behind it
//! (a thread with a Wasm guest, a process).
//!
//! The spec is the same for every runtime: the artifact ([`Artifact`]), argv, environment,
//! mounts, log file, limits, and the facts of the pod's network ([`PodNetwork`]). How a
//! runtime enforces them is its own business: the wasmtime runtime turns the pod's network
//! into a socket policy and a name resolver from its own configuration
//! ([`wasmtime::WasmtimeOptions`]).
//!
//! [`wasmtime`] is the implementation for Wasm (WASI preview 1 modules and preview 2 command
//! components). [`fake`] (tests only) stands in for it in the unit tests of the pod worker.

#[cfg(test)]
pub(crate) mod fake;
pub mod wasmtime;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The handler of the RuntimeClass pods get when they name none.
pub const DEFAULT_HANDLER: &str = "wasmtime";

/// Everything a runtime needs to start one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The container's name (also `argv[0]` unless `args` says otherwise).
    pub name: String,
    /// What to run, as pulled.
    pub artifact: Artifact,
    /// argv, including argv[0].
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Directories the container sees; nothing else of the host's file system is visible.
    pub mounts: Vec<Mount>,
    /// Where stdout and stderr go (appended, in the CRI log format).
    pub log: PathBuf,
    /// Cap on the container's memory, in bytes.
    pub memory_limit: u64,
    /// CPU share in thousandths of a core (`250` = `250m`); `None` is unlimited.
    pub cpu_limit_millis: Option<u64>,
    /// The pod's network; `None` gives the container no sockets.
    pub network: Option<PodNetwork>,
    /// How to serve HTTP if the artifact turns out to be a function (a component exporting
    /// `wasi:http/incoming-handler`); other containers ignore it.
    pub serving: Serving,
}

/// How a function container serves requests (from its ports and the pod's annotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// The container's first TCP `containerPort`, else 8080.
    pub port: u16,
    /// `bosun.dev/request-timeout`.
    pub request_timeout: Duration,
    /// `bosun.dev/container-concurrency`: requests served at once; 0 is the runtime's share.
    pub concurrency: usize,
    /// `bosun.dev/container-queue`: requests that may wait for a place.
    pub queue: usize,
    /// `bosun.dev/max-request-body`, in bytes.
    pub max_body: u64,
    /// The container must be a function: it is the first container of a Function's pod.
    pub required: bool,
}

impl Default for Serving {
    fn default() -> Self {
        Self {
            port: 8080,
            request_timeout: Duration::from_secs(60),
            concurrency: 0,
            queue: 100,
            max_body: 10 << 20,
            required: false,
        }
    }
}

/// What a container runs.
#[derive(Debug, Clone)]
pub enum Artifact {
    /// A Wasm module or component. Compiled code is cached under `digest`, if it has one.
    Wasm {
        bytes: Arc<[u8]>,
        digest: Option<String>,
    },
}

/// The pod's network, as a runtime needs to know it.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    /// The pod's network namespace (a file such as `/run/netns/bosun-<uid>`); `None` is the
    /// node's own.
    pub netns: Option<PathBuf>,
    /// The pod's address (the node's for pods on the host network).
    pub ip: Ipv4Addr,
    /// Whether the pod may connect outside the cluster (`bosun.dev/egress: allow`).
    pub egress: bool,
    /// The pod's namespace, where short Service names resolve.
    pub namespace: String,
}

/// A host directory the container sees.
#[derive(Debug, Clone)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// How a container ended, in the terms of a Kubernetes `ContainerStateTerminated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    /// `Completed`, `Error`, `OOMKilled`, or `Stopped` (the agent stopped it).
    pub reason: String,
    /// What went wrong, for a trap or a failure to start.
    pub message: Option<String>,
}

impl Exit {
    pub fn completed() -> Self {
        Self {
            code: 0,
            reason: "Completed".to_string(),
            message: None,
        }
    }

    pub fn error(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: "Error".to_string(),
            message: Some(message.into()),
        }
    }

    /// Stopped by the agent, like a container killed by its runtime (128 + SIGKILL).
    pub fn stopped() -> Self {
        Self {
            code: 137,
            reason: "Stopped".to_string(),
            message: None,
        }
    }
}

/// Why a container could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a WebAssembly module or component: {0}")]
    NotWasm(String),
    #[error("invalid WebAssembly: {0}")]
    Invalid(String),
    #[error("cannot set up the container: {0}")]
    Setup(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Starts containers for one RuntimeClass handler. `start` may block (compiling, forking):
/// the agent calls it off the async threads.
pub trait Runtime: Send + Sync {
    /// The RuntimeClass handler this runtime serves (`wasmtime`).
    fn handler(&self) -> &'static str;

    fn start(&self, spec: ContainerSpec) -> Result<Arc<dyn Container>>;

    /// The artifacts of the node's pods, by digest: a runtime may forget cached work for
    /// others.
    fn retain(&self, _in_use: &std::collections::HashSet<String>) {}
}

/// A started container.
#[async_trait::async_trait]
pub trait Container: Send + Sync {
    /// Asks the container to finish on its own: Bosun's SIGTERM (for Wasm guests, the
    /// `bosun:lifecycle` interface, `node/wit/lifecycle.wit`).
    fn terminate(&self);

    /// Ends the container now, wherever it is (SIGKILL).
    fn kill(&self);

    /// Whether it has ended.
    fn is_finished(&self) -> bool;

    /// Waits for its end; every caller gets the same exit.
    async fn wait(&self) -> Exit;

    /// What it measures of its requests, if it is a function container.
    fn function_stats(&self) -> Option<Arc<crate::metrics::FunctionStats>> {
        None
    }

    /// What it uses now; `None` when the runtime cannot tell.
    fn usage(&self) -> Option<Usage> {
        None
    }
}

/// What a running container uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used since it started.
    pub cpu: Duration,
    /// Memory it holds now, in bytes (its working set).
    pub memory: u64,
}

impl dyn Container {
    /// Stops the container within `grace`: asks it to finish, and ends it when `grace` is over.
    pub async fn stop(&self, grace: Duration) -> Exit {
        self.terminate();
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                self.kill();
                self.wait().await
            }
        }
    }
}
