//! What Bosun's tests and benchmarks share, in one place: a throwaway or fresh PostgreSQL
//! ([`postgres`]), a real OCI registry ([`registry`]), Wasm fixtures built from WAT here
//! ([`wasm`]), and small helpers (free ports, percentiles, polling with a deadline).
//!
//! Only a dev-dependency: nothing here runs in Bosun itself. Every part is real (a real
//! PostgreSQL, Debian's `docker-registry`); nothing here is a mock.

pub mod postgres;
pub mod registry;
pub mod wasm;

use std::time::{Duration, Instant};

/// A TCP port free on the loopback interface right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

/// The `p`-th percentile (0.0–1.0) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Asks `check` every `every` until it gives a value, for at most `limit`; panics naming
/// `what` when the time is up.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(every).await;
    }
}

/// A number unique within this process (names of databases, bridges, namespaces).
pub fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
