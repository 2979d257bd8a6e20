//! Recording core/v1 Events about objects, as client-go's event recorder does: callers hand
//! an event over without waiting, a background task writes it through the API.
//!
//! Entry point: [`Recorder::start`]. Three rules keep events from crowding out real work:
//! - a repeat of the same event (same object, type, reason and message) bumps `count` and
//!   `lastTimestamp` of the Event already written instead of writing a new one;
//! - writes are rate limited by a token bucket ([`RecorderOptions`]);
//! - the hand-over queue is bounded, and when it is full new events are dropped and counted
//!   (client-go drops in the same situation), never blocking the caller.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bosun_api::ratelimit::TokenBucket;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Limits of a [`Recorder`].
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// Sustained Event writes per second.
    pub qps: f64,
    /// Writes allowed in a burst above `qps`.
    pub burst: u32,
    /// Events waiting to be written; more are dropped.
    pub queue: usize,
    /// The `reportingInstance` of the events; the host name if `None`.
    pub instance: Option<String>,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        Self {
            qps: 100.0,
            burst: 200,
            queue: 1000,
            instance: None,
        }
    }
}

/// Hands events to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
    dropped: Arc<AtomicU64>,
}

struct Record {
    object: ObjectReference,
    type_: &'static str,
    reason: String,
    message: String,
}

impl Recorder {
    /// Starts the writer task for `component` (shown as the event's source).
    pub fn start(client: kube::Client, component: &str, options: RecorderOptions) -> Self {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            client,
            component: component.to_string(),
            host: options.instance.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default()
            }),
            written: HashMap::new(),
            bucket: TokenBucket::new(options.qps, options.burst, Instant::now().into_std()),
            dropped: dropped.clone(),
        };
        tokio::spawn(writer.run(rx));
        Self { tx, dropped }
    }

    pub fn normal(&self, object: ObjectReference, reason: &str, message: String) {
        self.send(object, "Normal", reason, message);
    }

    pub fn warning(&self, object: ObjectReference, reason: &str, message: String) {
        self.send(object, "Warning", reason, message);
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, object: ObjectReference, type_: &'static str, reason: &str, message: String) {
        let record = Record {
            object,
            type_,
            reason: reason.to_string(),
            message,
        };
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Identifies "the same event" for aggregation.
type EventKey = (String, &'static str, String, String);

struct Writer {
    client: kube::Client,
    component: String,
    host: String,
    /// Events written recently: key → (namespace, name, count).
    written: HashMap<EventKey, (String, String, i32)>,
    bucket: TokenBucket,
    dropped: Arc<AtomicU64>,
}

/// How many written events are remembered for aggregation.
const REMEMBERED: usize = 4096;

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Record>) {
        let mut reported_drops = 0;
        while let Some(record) = rx.recv().await {
            let wait = self.bucket.reserve(Instant::now().into_std());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if let Err(error) = self.write(record).await {
                tracing::warn!(%error, component = %self.component, "cannot write an event");
            }
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped >= reported_drops + 100 {
                tracing::warn!(dropped, component = %self.component, "events dropped: queue full");
                reported_drops = dropped;
            }
        }
    }

    async fn write(&mut self, record: Record) -> kube::Result<()> {
        let now = Timestamp::now();
        let namespace = record
            .object
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let key = (
            record.object.uid.clone().unwrap_or_default(),
            record.type_,
            record.reason.clone(),
            record.message.clone(),
        );
        if let Some((ns, name, count)) = self.written.get(&key).cloned()
            && ns == namespace
        {
            let patch = serde_json::json!({
                "count": count + 1,
                "lastTimestamp": Time(now),
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.written.insert(key, (ns, name, count + 1));
                    return Ok(());
                }
                // Expired or deleted: write it afresh.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            record.object.name.as_deref().unwrap_or("object"),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: record.object,
            reason: Some(record.reason),
            message: Some(record.message),
            type_: Some(record.type_.to_string()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        if self.written.len() >= REMEMBERED {
            self.written.clear();
        }
        self.written.insert(key, (namespace, name, 1));
        Ok(())
    }
}

/// A reference to an object for an event's `involvedObject`.
pub fn reference<K>(object: &K) -> ObjectReference
where
    K: kube::Resource<DynamicType = ()>,
{
    let meta = object.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}
