//! The node's Events (Pulled, Created, Started, Failed, BackOff, Killing, Unhealthy…),
//! written in the background as the kubelet writes its own: callers never wait, a bounded
//! queue drops what does not fit (and counts it), and one writer paces the writes with a token
//! bucket (`--event-qps`, `--event-burst`; the kubelet's defaults are 50 and 100). A node
//! starting a few hundred pods at once thus writes their events over a few seconds instead of
//! adding three writes per pod to the API server's busiest moment.

use std::sync::atomic::{AtomicU64, Ordering};

use bosun_api::ratelimit::TokenBucket;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Events waiting to be written; more are dropped.
const QUEUE: usize = 1000;

/// Hands events to the writer task.
pub(crate) struct Events {
    tx: mpsc::Sender<(ObjectReference, Event)>,
    dropped: AtomicU64,
}

impl Events {
    /// Starts the writer: at most `qps` events a second after a burst of `burst` (a `qps` of
    /// 0 means no limit).
    pub fn start(recorder: Recorder, qps: f64, burst: u32) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let bucket = TokenBucket::new(qps, burst, Instant::now().into_std());
        tokio::spawn(write(recorder, rx, bucket));
        Self {
            tx,
            dropped: AtomicU64::new(0),
        }
    }

    pub fn record(&self, regarding: ObjectReference, event: Event) {
        if self.tx.try_send((regarding, event)).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "events dropped: the queue is full");
            }
        }
    }
}

async fn write(
    recorder: Recorder,
    mut rx: mpsc::Receiver<(ObjectReference, Event)>,
    mut bucket: TokenBucket,
) {
    while let Some((regarding, event)) = rx.recv().await {
        let wait = bucket.reserve(Instant::now().into_std());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        // Best effort, like the kubelet's: a failed write is not retried.
        if let Err(error) = recorder.publish(&event, &regarding).await {
            tracing::debug!(%error, reason = %event.reason, "cannot record an event");
        }
    }
}
