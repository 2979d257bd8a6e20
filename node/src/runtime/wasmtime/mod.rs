//! The wasmtime runtime: one [`Engine`] per node (pooling allocator, epoch interruption,
//! component model), each container on its own thread.
//!
//! A container is a WASI preview 1 command module or a preview 2 command component
//! (`wasi:cli/command`), told apart by the binary's header. It gets exactly what its spec
//! gives: argv, environment, preopened directories, stdout and stderr to its log file (CRI
//! format, [`crate::logs`]). No
//! ambient file system and no host environment. Sockets (wasi:sockets, TCP and UDP) only when
//! the spec has a [`PodNetwork`]: the container's thread first enters the pod's network
//! namespace (`setns(2)` affects only the calling thread, and every socket the guest creates
//! is made on it), and each address the guest uses is checked against the pod's
//! [`SocketPolicy`](crate::network::SocketPolicy), made from the pod's network and the
//! cluster's blocks in [`WasmtimeOptions::sockets`]. Names resolve through
//! [`WasmtimeOptions::resolver`].
//!
//! Each container's thread runs its guest as a future on a current-thread tokio runtime of its
//! own (wasmtime's async API, on a fiber): host calls that wait (accept, read, sleep) wait on
//! that runtime, so a stop can drop the guest wherever it waits, and every socket is made on
//! the thread that entered the pod's namespace.
//!
//! Limits:
//! - memory: a [`ResourceLimiter`] refuses growth past the limit and marks the container
//!   `OOMKilled`;
//! - CPU: a ticker thread advances the engine's epoch every `epoch_tick`. At each tick the
//!   guest's epoch callback checks for a stop request and charges the thread's CPU time
//!   against its share ([`cpu::Throttle`]), sleeping off any excess.

mod cpu;
mod http;
mod lifecycle;
mod names;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bosun_api::cluster::Blocks;

use wasmtime::component::{Component, Linker as ComponentLinker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
    ResourceLimiter, Store, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{Artifact, Container, ContainerSpec, Error, Exit, PodNetwork, Result, Runtime, Usage};
use crate::logs::{LogFile, Stream};
use crate::metrics::FunctionStats;
use crate::network::SocketPolicy;
use crate::network::names::{PodNames, Resolver};
use crate::network::netpol::NetworkPolicies;

/// The wasmtime release the runtime is built on (from Cargo.lock).
pub const VERSION: &str = env!("BOSUN_WASMTIME_VERSION");

/// Sizing of the node's engine, and what guests' sockets and names see.
#[derive(Debug, Clone)]
pub struct WasmtimeOptions {
    /// Instances (and memories, tables, stacks) the pooling allocator keeps slots for.
    pub max_instances: u32,
    /// The largest linear memory any guest may have.
    pub max_memory_size: usize,
    /// How often the epoch advances: the granularity of stop and CPU throttling.
    pub epoch_tick: Duration,
    /// Where compiled code is kept, by (engine fingerprint, image digest), so that a cached
    /// module starts without compiling after a restart. `None` keeps it in memory only.
    pub cache_dir: Option<PathBuf>,
    /// The cluster's blocks: guests may always connect inside them.
    pub sockets: Blocks,
    /// How guests' names resolve (Services); `None`: only through the node's resolver.
    pub resolver: Option<Arc<Resolver>>,
    /// The certificate authorities function containers' outgoing HTTPS trusts; `None`: the
    /// system's (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    pub tls_roots: Option<Arc<rustls::RootCertStore>>,
    /// Authorities trusted beside `tls_roots` (or the system's): the cluster CA, so that a
    /// function reaches the API server at the `kubernetes` Service over verified HTTPS.
    pub extra_roots: Vec<Vec<u8>>,
    /// The NetworkPolicies guests' connections are judged by; `None`: none are enforced.
    pub policies: Option<Arc<NetworkPolicies>>,
}

impl Default for WasmtimeOptions {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_size: 4 << 30,
            epoch_tick: Duration::from_millis(5),
            cache_dir: None,
            sockets: Blocks::default(),
            resolver: None,
            tls_roots: None,
            extra_roots: Vec::new(),
            policies: None,
        }
    }
}

/// The wasmtime implementation of [`Runtime`].
pub struct WasmtimeRuntime {
    engine: Engine,
    ticker: Arc<Ticker>,
    /// Compiled programs by image digest.
    compiled: Mutex<HashMap<String, Program>>,
    /// `<cache_dir>/<engine fingerprint>`, for programs compiled by this very engine.
    disk_cache: Option<PathBuf>,
    sockets: Blocks,
    resolver: Option<Arc<Resolver>>,
    policies: Option<Arc<NetworkPolicies>>,
    /// The most instances one function container may hold at once: a quarter of the pool.
    function_share: usize,
    /// Function containers' outgoing HTTPS.
    outgoing_tls: Arc<rustls::ClientConfig>,
}

/// The thread that advances the epoch. The runtime and every running container hold it, so
/// it runs until the last of them is gone (a container outliving the runtime can still be
/// stopped).
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl WasmtimeRuntime {
    pub fn new(options: WasmtimeOptions) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(options.max_instances)
            .total_component_instances(options.max_instances)
            .total_memories(options.max_instances)
            .total_tables(options.max_instances)
            .total_stacks(options.max_instances)
            .max_memory_size(options.max_memory_size);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| Error::Setup(format!("{e:#}")))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (engine, stop, tick) = (engine.clone(), ticker_stop.clone(), options.epoch_tick);
            std::thread::Builder::new()
                .name("bosun-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::Setup(format!("cannot start the epoch ticker: {e}")))?
        };
        let disk_cache = match &options.cache_dir {
            Some(dir) => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                engine.precompile_compatibility_hash().hash(&mut hasher);
                let dir = dir.join(format!("{:016x}", hasher.finish()));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::Setup(format!("cannot create {}: {e}", dir.display())))?;
                Some(dir)
            }
            None => None,
        };
        Ok(Self {
            engine,
            ticker: Arc::new(Ticker {
                stop: ticker_stop,
                thread: Some(thread),
            }),
            compiled: Mutex::new(HashMap::new()),
            disk_cache,
            sockets: options.sockets,
            resolver: options.resolver,
            policies: options.policies,
            function_share: (options.max_instances as usize / 4).max(1),
            outgoing_tls: http::client_tls(options.tls_roots, &options.extra_roots)?,
        })
    }

    /// Compiles `wasm`, or finds it compiled: in memory, else on disk, by its digest.
    pub fn compile_cached(&self, digest: Option<&str>, wasm: &[u8]) -> Result<Program> {
        let Some(digest) = digest else {
            return self.compile(wasm);
        };
        if let Some(program) = self.compiled.lock().unwrap().get(digest) {
            return Ok(program.clone());
        }
        let file = self.disk_cache.as_ref().map(|dir| {
            let name: String = digest
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            dir.join(format!("{name}.cwasm"))
        });
        let program = match file.as_deref().and_then(|f| self.deserialize(f)) {
            Some(program) => program,
            None => {
                let program = self.compile(wasm)?;
                if let Some(file) = &file {
                    self.serialize(&program, file);
                }
                program
            }
        };
        self.compiled
            .lock()
            .unwrap()
            .insert(digest.to_string(), program.clone());
        Ok(program)
    }

    /// Forgets compiled programs (in memory) whose digest is not in `keep`; the disk cache
    /// still has them.
    pub fn retain_compiled(&self, keep: &std::collections::HashSet<String>) {
        self.compiled
            .lock()
            .unwrap()
            .retain(|digest, _| keep.contains(digest));
    }

    fn deserialize(&self, file: &Path) -> Option<Program> {
        let bytes = std::fs::read(file).ok()?;
        // SAFETY: the file was written by `serialize` below for an engine with this very
        // compatibility hash (it is part of the directory's name), under the node's private
        // data directory; wasmtime checks the header and version too.
        let program = match Engine::detect_precompiled(&bytes)? {
            wasmtime::Precompiled::Module => {
                unsafe { Module::deserialize(&self.engine, &bytes) }.map(Program::Module)
            }
            wasmtime::Precompiled::Component => {
                unsafe { Component::deserialize(&self.engine, &bytes) }.map(Program::Component)
            }
        };
        match program {
            Ok(program) => Some(program),
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "ignoring a bad compiled-code cache entry");
                let _ = std::fs::remove_file(file);
                None
            }
        }
    }

    fn serialize(&self, program: &Program, file: &Path) {
        let bytes = match program {
            Program::Module(m) => m.serialize(),
            Program::Component(c) => c.serialize(),
        };
        let temp = file.with_extension(format!("tmp{}", std::process::id()));
        let written = bytes
            .map_err(|e| format!("{e:#}"))
            .and_then(|b| std::fs::write(&temp, b).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&temp, file).map_err(|e| e.to_string()));
        if let Err(error) = written {
            tracing::warn!(file = %file.display(), %error, "cannot cache compiled code");
            let _ = std::fs::remove_file(&temp);
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a module or component, telling them apart by the header's layer field.
    pub fn compile(&self, wasm: &[u8]) -> Result<Program> {
        if wasm.len() < 8 || &wasm[0..4] != b"\0asm" {
            return Err(Error::NotWasm(
                "the file does not begin with the WebAssembly magic number \\0asm".to_string(),
            ));
        }
        let invalid = |e: wasmtime::Error| Error::Invalid(format!("{e:#}"));
        match u16::from_le_bytes([wasm[6], wasm[7]]) {
            0 => Module::new(&self.engine, wasm)
                .map(Program::Module)
                .map_err(invalid),
            1 => Component::new(&self.engine, wasm)
                .map(Program::Component)
                .map_err(invalid),
            layer => Err(Error::Invalid(format!("unknown binary layer {layer}"))),
        }
    }
}

/// Compiled code, ready to instantiate.
#[derive(Clone)]
pub enum Program {
    Module(Module),
    Component(Component),
}

impl Runtime for WasmtimeRuntime {
    fn handler(&self) -> &'static str {
        "wasmtime"
    }

    fn start(&self, spec: ContainerSpec) -> Result<Arc<dyn Container>> {
        let Artifact::Wasm { bytes, digest } = &spec.artifact;
        let program = self.compile_cached(digest.as_deref(), bytes)?;
        let is_function =
            matches!(&program, Program::Component(c) if http::is_function(&self.engine, c));
        if spec.serving.required && !is_function {
            let what = match &program {
                Program::Component(c) => format!(
                    "this component exports [{}]",
                    http::exports(&self.engine, c).join(", ")
                ),
                _ => "this is a WASI preview 1 module".to_string(),
            };
            return Err(Error::Invalid(format!(
                "{}: a Function's container must export wasi:http/incoming-handler; {what}",
                bosun_api::function::NOT_A_FUNCTION
            )));
        }
        if let Program::Component(component) = &program {
            if http::is_function(&self.engine, component) {
                return self.start_function(spec, component.clone());
            }
            let is_command = component
                .component_type()
                .exports(&self.engine)
                .any(|(name, _)| name.starts_with("wasi:cli/run@0.2"));
            if !is_command {
                return Err(Error::Invalid(format!(
                    "the component exports neither wasi:cli/run (a command) nor wasi:http/incoming-handler (a function); it exports: [{}]",
                    http::exports(&self.engine, component).join(", ")
                )));
            }
        }
        let Surroundings {
            log,
            policy,
            names,
            netns,
        } = self.surroundings(&spec)?;
        let wasi = wasi_builder(&spec, policy, &log)?;
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let shutdown = Arc::new(AtomicBool::new(false));
        let meter = Arc::new(Meter::default());
        let guard = Guard {
            stop: stop.clone(),
            shutdown: shutdown.clone(),
            throttle: spec.cpu_limit_millis.map(cpu::Throttle::new),
            memory_limit: spec.memory_limit,
            oom: false,
            budget: None,
            deadline: None,
            meter: meter.clone(),
            grown: 0,
        };
        let engine = self.engine.clone();
        let ticker = self.ticker.clone();
        let name = spec.name.clone();
        let (exit_tx, exit) = tokio::sync::watch::channel(None);
        let stop_wake = wake.clone();
        let thread_meter = meter.clone();
        std::thread::Builder::new()
            .name(format!("wasm-{}", spec.name))
            .spawn(move || {
                thread_meter.enter();
                let exit = match netns.map(|ns| crate::network::enter_netns(&ns)).transpose() {
                    Ok(_) => run(&engine, program, wasi, names, guard, &stop_wake),
                    Err(e) => Exit::error(
                        128,
                        format!("cannot enter the pod's network namespace: {e}"),
                    ),
                };
                if let Err(error) = log.finish() {
                    tracing::warn!(container = %name, %error, "cannot finish the log");
                }
                drop(ticker);
                // The thread's last act: whoever waits learns how it ended.
                exit_tx.send_replace(Some(exit));
            })
            .map_err(|e| Error::Setup(format!("cannot start a thread: {e}")))?;
        Ok(Arc::new(WasmContainer {
            stop,
            wake,
            shutdown,
            shutdown_wake: Arc::new(tokio::sync::Notify::new()),
            exit,
            stats: None,
            meter,
        }))
    }

    fn retain(&self, in_use: &std::collections::HashSet<String>) {
        self.retain_compiled(in_use);
    }
}

impl WasmtimeRuntime {
    /// Starts a function container: its thread listens and serves; this returns once the
    /// listener is bound and the component pre-instantiated (or why not).
    fn start_function(
        &self,
        spec: ContainerSpec,
        component: Component,
    ) -> Result<Arc<dyn Container>> {
        let Surroundings {
            log,
            policy,
            names,
            netns,
        } = self.surroundings(&spec)?;
        // The first request's context, made now so that a bad mount fails the start.
        wasi_builder(&spec, policy.clone(), &log)?;
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let shutdown = Arc::new(AtomicBool::new(false));
        let shutdown_wake = Arc::new(tokio::sync::Notify::new());
        let mut serving = spec.serving.clone();
        serving.concurrency = match serving.concurrency {
            0 => self.function_share,
            n => n.min(self.function_share),
        };
        let stats = Arc::new(FunctionStats::default());
        let meter = Arc::new(Meter::default());
        let function = http::Function {
            stats: stats.clone(),
            tls: self.outgoing_tls.clone(),
            engine: self.engine.clone(),
            component,
            wasi: {
                let (spec, policy, log) = (spec.clone(), policy.clone(), log.clone());
                Box::new(move || wasi_builder(&spec, policy.clone(), &log))
            },
            guard: {
                let (stop, shutdown, meter) = (stop.clone(), shutdown.clone(), meter.clone());
                let (cpu, memory_limit) = (spec.cpu_limit_millis, spec.memory_limit);
                Box::new(move |budget, deadline| Guard {
                    stop: stop.clone(),
                    shutdown: shutdown.clone(),
                    throttle: cpu.map(cpu::Throttle::new),
                    memory_limit,
                    oom: false,
                    budget: Some((budget, 0)),
                    deadline: Some((deadline, false)),
                    meter: meter.clone(),
                    grown: 0,
                })
            },
            names,
            policy,
            serving,
            memory_limit: spec.memory_limit,
            stop: stop.clone(),
            shutdown_wake: shutdown_wake.clone(),
            wake: wake.clone(),
            container: spec.name.clone(),
        };
        let ticker = self.ticker.clone();
        let name = spec.name.clone();
        let (exit_tx, exit) = tokio::sync::watch::channel(None);
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread_meter = meter.clone();
        std::thread::Builder::new()
            .name(format!("wasm-{}", spec.name))
            .spawn(move || {
                thread_meter.enter();
                let exit = match netns.map(|ns| crate::network::enter_netns(&ns)).transpose() {
                    Err(e) => {
                        let message = format!("cannot enter the pod's network namespace: {e}");
                        let _ = ready_tx.send(Err(Error::Setup(message.clone())));
                        Exit::error(128, message)
                    }
                    Ok(_) => match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => http::serve(&runtime, function, ready_tx),
                        Err(e) => {
                            let message = format!("cannot start the container's runtime: {e}");
                            let _ = ready_tx.send(Err(Error::Setup(message.clone())));
                            Exit::error(128, message)
                        }
                    },
                };
                if let Err(error) = log.finish() {
                    tracing::warn!(container = %name, %error, "cannot finish the log");
                }
                drop(ticker);
                exit_tx.send_replace(Some(exit));
            })
            .map_err(|e| Error::Setup(format!("cannot start a thread: {e}")))?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Arc::new(WasmContainer {
                stop,
                wake,
                shutdown,
                shutdown_wake,
                exit,
                stats: Some(stats),
                meter,
            })),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Setup(
                "the function's thread ended before it served".to_string(),
            )),
        }
    }

    /// What a container has around it, opened before its thread starts so that a missing
    /// log directory or namespace fails the start, not the guest.
    fn surroundings(&self, spec: &ContainerSpec) -> Result<Surroundings> {
        let log = LogFile::open(&spec.log).map_err(|e| {
            Error::Setup(format!("cannot open the log {}: {e}", spec.log.display()))
        })?;
        let names = spec.network.as_ref().and_then(|n| {
            Some(PodNames {
                resolver: self.resolver.clone()?,
                namespace: n.namespace.clone(),
                pod_ip: n.ip,
                policies: self.policies.clone(),
            })
        });
        let netns = spec
            .network
            .as_ref()
            .and_then(|n| n.netns.as_ref())
            .map(|path| {
                std::fs::File::open(path).map_err(|e| {
                    Error::Setup(format!(
                        "cannot open the pod's network namespace {}: {e}",
                        path.display()
                    ))
                })
            })
            .transpose()?;
        Ok(Surroundings {
            log,
            policy: spec.network.as_ref().map(|n| self.policy(n)),
            names,
            netns,
        })
    }

    /// The socket rules of a pod on this node.
    fn policy(&self, network: &PodNetwork) -> SocketPolicy {
        SocketPolicy {
            pod_ip: network.ip,
            cluster_cidr: self.sockets.cluster_cidr,
            service_cidr: self.sockets.service_cidr,
            egress: network.egress,
            policies: self.policies.clone(),
        }
    }
}

/// A container's log, socket rules, names and network namespace.
struct Surroundings {
    log: LogFile,
    policy: Option<SocketPolicy>,
    names: Option<PodNames>,
    netns: Option<std::fs::File>,
}

/// A guest running on its own thread.
struct WasmContainer {
    stop: Arc<AtomicBool>,
    /// Wakes a guest blocked in a host call (accept, sleep, read) so that it stops too.
    wake: Arc<tokio::sync::Notify>,
    shutdown: Arc<AtomicBool>,
    /// Wakes a function container's listener to drain.
    shutdown_wake: Arc<tokio::sync::Notify>,
    /// Set by the thread as it ends; closed without a value if the thread panicked.
    exit: tokio::sync::watch::Receiver<Option<Exit>>,
    /// A function container's measures.
    stats: Option<Arc<FunctionStats>>,
    /// Its thread and the memory of its instances.
    meter: Arc<Meter>,
}

/// What a container's thread uses, read from outside it: the thread (for its CPU time in
/// `/proc`) and the memory its instances hold (linear memories and tables, as the limiter
/// sees them grow, a table element as a pointer; for a function container, the sum over its
/// live instances).
#[derive(Default)]
struct Meter {
    /// The thread's id, once it started.
    tid: std::sync::atomic::AtomicI32,
    memory: AtomicU64,
}

impl Meter {
    /// Called first thing on the container's thread.
    fn enter(&self) {
        // SAFETY: gettid has no preconditions.
        self.tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
    }

    fn usage(&self) -> Option<Usage> {
        let tid = self.tid.load(Ordering::Relaxed);
        if tid == 0 {
            return None;
        }
        // The first field of schedstat is the time spent on a CPU, in nanoseconds.
        let schedstat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
        let nanos: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
        Some(Usage {
            cpu: Duration::from_nanos(nanos),
            memory: self.memory.load(Ordering::Relaxed),
        })
    }
}

#[async_trait::async_trait]
impl Container for WasmContainer {
    /// Tells the guest through `bosun:lifecycle`; a guest that looks can finish and exit.
    fn terminate(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.shutdown_wake.notify_one();
    }

    /// Interrupts the guest wherever it is: at its next epoch tick (a few milliseconds) in a
    /// loop that never calls the host, at once when it waits in a host call.
    fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn is_finished(&self) -> bool {
        self.exit.borrow().is_some() || self.exit.has_changed().is_err()
    }

    async fn wait(&self) -> Exit {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.clone().expect("waited for it"),
            Err(_) => Exit::error(128, "the container's thread panicked"),
        }
    }

    fn function_stats(&self) -> Option<Arc<FunctionStats>> {
        self.stats.clone()
    }

    fn usage(&self) -> Option<Usage> {
        if self.is_finished() {
            return None;
        }
        self.meter.usage()
    }
}

fn wasi_builder(
    spec: &ContainerSpec,
    policy: Option<SocketPolicy>,
    log: &LogFile,
) -> Result<WasiCtxBuilder> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(&spec.args)
        .envs(&spec.env)
        .stdout(log.stream(Stream::Stdout))
        .stderr(log.stream(Stream::Stderr));
    if let Some(policy) = policy {
        allow_sockets(&mut builder, policy, &spec.name);
    }
    for mount in &spec.mounts {
        let perms = if mount.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&mount.host, &mount.guest, perms)
            .map_err(|e| {
                Error::Setup(format!(
                    "cannot open {} for {}: {e:#}",
                    mount.host.display(),
                    mount.guest
                ))
            })?;
    }
    Ok(builder)
}

/// Lets the guest use TCP and UDP sockets for the addresses its pod's policy allows; a denied
/// address gets `access-denied` in the guest and a line in the node's log.
fn allow_sockets(builder: &mut WasiCtxBuilder, policy: SocketPolicy, container: &str) {
    use crate::network::policy::Use;
    use wasmtime_wasi::sockets::SocketAddrUse;
    let container = container.to_string();
    builder
        .allow_tcp(true)
        .allow_udp(true)
        .socket_addr_check(move |addr, use_| {
            let use_ = match use_ {
                SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => Use::Bind,
                SocketAddrUse::TcpListen => Use::Listen,
                SocketAddrUse::TcpAccept | SocketAddrUse::UdpReceive => Use::Accept,
                SocketAddrUse::TcpConnect => Use::Connect,
                SocketAddrUse::UdpSend => Use::Send,
            };
            let verdict = policy.check(addr, use_);
            if let Err(reason) = &verdict {
                tracing::info!(%container, %addr, ?use_, %reason, "socket denied by the pod's network policy");
            }
            Box::pin(std::future::ready(verdict.is_ok()))
        });
}

/// The most elements a guest's table may grow to.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Per-container (for a function, per-request) limits and the stop flag, consulted by
/// wasmtime.
struct Guard {
    stop: Arc<AtomicBool>,
    /// Set when the node asks the guest to shut down (`bosun:lifecycle`).
    shutdown: Arc<AtomicBool>,
    throttle: Option<cpu::Throttle>,
    memory_limit: u64,
    oom: bool,
    /// A function request's: the container's memory over all its live instances, and what
    /// this instance holds of it.
    budget: Option<(Arc<http::Budget>, u64)>,
    /// A function request's deadline; `timed_out` once the epoch callback passed it.
    deadline: Option<(std::time::Instant, bool)>,
    /// The container's meter, and the memory this store added to it.
    meter: Arc<Meter>,
    grown: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some((budget, held)) = &self.budget {
            budget.give_back(*held);
        }
        self.meter.memory.fetch_sub(self.grown, Ordering::Relaxed);
    }
}

impl ResourceLimiter for Guard {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_limit {
            self.oom = true;
            return Err(wasmtime::format_err!(
                "memory limit exceeded: {desired} bytes asked for, the limit is {}",
                self.memory_limit
            ));
        }
        let more = desired.saturating_sub(current) as u64;
        self.meter.memory.fetch_add(more, Ordering::Relaxed);
        self.grown += more;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        // Each element is a pointer in wasmtime's tables.
        let more = (desired.saturating_sub(current) * std::mem::size_of::<usize>()) as u64;
        self.meter.memory.fetch_add(more, Ordering::Relaxed);
        self.grown += more;
        Ok(true)
    }
}

/// A function request's limiter: its growth draws on the container's [`http::Budget`], and
/// waits while the container's other requests hold too much of it.
#[async_trait::async_trait]
impl wasmtime::ResourceLimiterAsync for Guard {
    async fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the container's limit on its own: that can never fit.
        ResourceLimiter::memory_growing(self, current, desired, maximum)?;
        if let Some((budget, held)) = &mut self.budget {
            let more = (desired as u64).saturating_sub(*held);
            budget.take_when_free(more).await;
            *held += more;
        }
        Ok(true)
    }

    async fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        ResourceLimiter::table_growing(self, current, desired, maximum)
    }
}

impl Guard {
    /// Called at each epoch tick: stop if asked, else charge CPU time and go on.
    fn on_tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(UpdateDeadline::Interrupt);
        }
        if let Some((deadline, timed_out)) = &mut self.deadline
            && std::time::Instant::now() >= *deadline
        {
            *timed_out = true;
            return Ok(UpdateDeadline::Interrupt);
        }
        if let Some(throttle) = self.throttle.as_mut() {
            throttle.charge(&self.stop);
            if self.stop.load(Ordering::Relaxed) {
                return Ok(UpdateDeadline::Interrupt);
            }
        }
        Ok(UpdateDeadline::Continue(1))
    }
}

impl Guard {
    /// Whether a function request ran past its deadline.
    fn timed_out(&self) -> bool {
        self.deadline.is_some_and(|(_, timed_out)| timed_out)
    }
}

struct ModuleState {
    wasi: WasiP1Ctx,
    guard: Guard,
}

struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    names: Option<PodNames>,
    guard: Guard,
}

impl names::NameLookupView for ComponentState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    fn names(&self) -> Option<&PodNames> {
        self.names.as_ref()
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Runs a container to its end on the current thread.
fn run(
    engine: &Engine,
    program: Program,
    mut wasi: WasiCtxBuilder,
    names: Option<PodNames>,
    guard: Guard,
    wake: &tokio::sync::Notify,
) -> Exit {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return Exit::error(128, format!("cannot start the container's runtime: {e}")),
    };
    // A stop drops the guest's future wherever it waits; one that computes is interrupted by
    // its epoch callback.
    let stopped = || async {
        wake.notified().await;
        Err(wasmtime::format_err!("stopped"))
    };
    let (result, guard) = match program {
        Program::Module(module) => {
            let mut store = Store::new(
                engine,
                ModuleState {
                    wasi: wasi.build_p1(),
                    guard,
                },
            );
            store.limiter(|s| &mut s.guard);
            store.epoch_deadline_callback(|mut ctx| ctx.data_mut().guard.on_tick());
            store.set_epoch_deadline(1);
            let result = runtime.block_on(async {
                tokio::select! {
                    result = run_module(&mut store, &module) => result,
                    result = stopped() => result,
                }
            });
            (result, store.into_data().guard)
        }
        Program::Component(component) => {
            let mut store = Store::new(
                engine,
                ComponentState {
                    ctx: wasi.build(),
                    table: ResourceTable::new(),
                    names,
                    guard,
                },
            );
            store.limiter(|s| &mut s.guard);
            store.epoch_deadline_callback(|mut ctx| ctx.data_mut().guard.on_tick());
            store.set_epoch_deadline(1);
            let result = runtime.block_on(async {
                tokio::select! {
                    result = run_component(&mut store, &component) => result,
                    result = stopped() => result,
                }
            });
            (result, store.into_data().guard)
        }
    };
    exit_of(result, &guard)
}

async fn run_module(store: &mut Store<ModuleState>, module: &Module) -> wasmtime::Result<()> {
    let mut linker = Linker::new(store.engine());
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut ModuleState| &mut s.wasi)?;
    // node/wit/lifecycle.wit, as a core function: 1 once the node asked the guest to stop.
    linker.func_wrap(
        "bosun_lifecycle",
        "shutdown_requested",
        |caller: wasmtime::Caller<'_, ModuleState>| -> i32 {
            i32::from(caller.data().guard.shutdown.load(Ordering::Relaxed))
        },
    )?;
    let instance = linker.instantiate_async(&mut *store, module).await?;
    let start = instance
        .get_typed_func::<(), ()>(&mut *store, "_start")
        .map_err(|_| {
            wasmtime::format_err!("the module exports no _start function (not a WASI command)")
        })?;
    start.call_async(&mut *store, ()).await
}

async fn run_component(
    store: &mut Store<ComponentState>,
    component: &Component,
) -> wasmtime::Result<()> {
    let mut linker = ComponentLinker::new(store.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    names::add_to_linker(&mut linker)?;
    lifecycle::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
    let command =
        wasmtime_wasi::p2::bindings::Command::instantiate_async(&mut *store, component, &linker)
            .await?;
    command
        .wasi_cli_run()
        .call_run(&mut *store)
        .await?
        .map_err(|()| wasmtime::format_err!("the component's run returned an error"))
}

/// Maps the end of a run to an exit code and a Kubernetes reason.
fn exit_of(result: wasmtime::Result<()>, guard: &Guard) -> Exit {
    let error = match result {
        Ok(()) => return Exit::completed(),
        Err(e) => e,
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return if exit.0 == 0 {
            Exit::completed()
        } else {
            Exit {
                code: exit.0,
                reason: "Error".to_string(),
                message: None,
            }
        };
    }
    if guard.oom {
        return Exit {
            code: 137,
            reason: "OOMKilled".to_string(),
            message: Some(format!("{error:#}")),
        };
    }
    if guard.stop.load(Ordering::Relaxed) {
        return Exit::stopped();
    }
    Exit::error(1, format!("{error:#}"))
}
