//! The seam between the agent and what runs containers: [`Runtime`] starts a container from
//! a [`ContainerSpec`] and hands back a [`Running`] container to stop or wait for.
//!
//! [`wasmtime`] is the implementation for Wasm (WASI preview 1 modules and preview 2 command
//! components); runc arrives later as a second one.

pub mod wasmtime;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Everything a runtime needs to start one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The container's name (also `argv[0]` unless `args` says otherwise).
    pub name: String,
    /// The module or component, as pulled.
    pub wasm: Arc<[u8]>,
    /// The digest of `wasm`, if it has one: compiled code is cached under it.
    pub digest: Option<String>,
    /// argv, including argv[0].
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Directories the guest sees; nothing else of the host's file system is visible.
    pub mounts: Vec<Mount>,
    /// Where stdout and stderr go (appended, in the CRI log format).
    pub log: PathBuf,
    /// Cap on the guest's linear memory, in bytes.
    pub memory_limit: u64,
    /// CPU share in thousandths of a core (`250` = `250m`); `None` is unlimited.
    pub cpu_limit_millis: Option<u64>,
    /// The guest's sockets; `None` gives it none.
    pub network: Option<NetworkAccess>,
}

/// Where a guest's sockets live and what they may reach.
#[derive(Debug, Clone)]
pub struct NetworkAccess {
    /// The pod's network namespace (a file such as `/run/netns/bosun-<uid>`); `None` is the
    /// node's own.
    pub netns: Option<PathBuf>,
    pub policy: crate::network::SocketPolicy,
    /// How the pod's names resolve (`None`: only through the node's resolver).
    pub names: Option<crate::network::names::PodNames>,
}

/// A host directory preopened in the guest.
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

/// Starts containers.
pub trait Runtime: Send + Sync {
    fn start(&self, spec: ContainerSpec) -> Result<Running>;
}

/// A started container: it runs on its own thread until it exits or is stopped.
pub struct Running {
    stop: Stopper,
    thread: Option<JoinHandle<Exit>>,
    /// Closed when the thread ends (its sender is dropped with the thread's closure).
    done: tokio::sync::watch::Receiver<()>,
}

/// Stops a running container from anywhere.
#[derive(Clone, Debug)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    /// Wakes a container blocked in a host call (accept, sleep, read) so that it stops too.
    wake: Arc<tokio::sync::Notify>,
    shutdown: Arc<AtomicBool>,
}

impl Stopper {
    /// Interrupts the guest wherever it is: at its next epoch tick (a few milliseconds) in a
    /// loop that never calls the host, at once when it waits in a host call.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Tells the guest that it is being stopped, through the `bosun:lifecycle` host
    /// interface (`node/wit/lifecycle.wit`); a guest that looks can finish and exit.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }
}

impl Running {
    /// `thread` must hold `done`'s sender until it ends.
    pub(crate) fn new(
        stop: Arc<AtomicBool>,
        wake: Arc<tokio::sync::Notify>,
        shutdown: Arc<AtomicBool>,
        thread: JoinHandle<Exit>,
        done: tokio::sync::watch::Receiver<()>,
    ) -> Self {
        Self {
            stop: Stopper {
                stop,
                wake,
                shutdown,
            },
            thread: Some(thread),
            done,
        }
    }

    /// See [`Stopper::stop`].
    pub fn stop(&self) {
        self.stop.stop();
    }

    pub fn stopper(&self) -> Stopper {
        self.stop.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the container to end.
    pub fn wait(mut self) -> Exit {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(exit)) => exit,
            Some(Err(_)) => Exit::error(128, "the container's thread panicked"),
            None => Exit::error(128, "already waited for"),
        }
    }

    /// Waits for the container to end without blocking the async runtime.
    pub async fn exited(mut self) -> Exit {
        // The sender is never used, so this returns when the thread drops it.
        while self.done.changed().await.is_ok() {}
        // The thread is at its very end (dropping the sender is its last act): joining takes
        // microseconds, so it is done in place.
        self.wait()
    }

    /// Waits up to `timeout`; `None` if it is still running.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Exit, Self> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.is_finished() {
            if std::time::Instant::now() >= deadline {
                return Err(self);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(self.wait())
    }
}
