//! Push-based watch: one hub per store process, one task per watcher.
//!
//! The hub waits for a change signal (Postgres `NOTIFY` from any API server, or the in-process
//! signal of the SQLite writer), reads the events after the last one it saw, and hands each to
//! the watchers of its resource: one broadcast channel per watched resource, so a write wakes
//! only the watchers that might want it, and an event nobody watches is not even decoded.
//! Because revisions are gapless and assigned in commit order, "events after N" is always
//! complete. An idle hub runs no queries, and neither does a hub nobody is subscribed to.
//!
//! Pods watched by node name (`spec.nodeName=<node>`, as every node agent and the scheduler
//! watch them) have a channel per node name, as kube-apiserver's watch cache indexes them: an
//! event goes to the channels of the node names of the pod before and after it, so a node's
//! agent is woken by its own pods only.
//!
//! Each event on a resource's channel carries the revision of the one sent before it on that
//! channel, so a watcher can tell that it missed none of its resource's events: if that
//! revision is past the watcher's cursor, something in between did not reach it.
//!
//! Each watcher subscribes to its channel first, then reads its backlog from the datastore,
//! then follows the channel. It never trusts the channel blindly: a gap (it lagged, or joined
//! between a read and a send) sends it back to the datastore for the missing range, and a
//! range that was compacted meanwhile ends the watch with `Gone`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bosun_api::fields;
use futures::Stream;
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio::task::JoinHandle;

use super::codec::Codec;
use super::list::selected;
use super::{Backend, ChangeSignal, Error, Event, EventType, RawEvent, Result, WatchRequest};

/// Events buffered per resource before a slow watcher has to catch up from the datastore.
const BROADCAST_CAPACITY: usize = 4096;
/// Events read per query, by the hub and by a catching-up watcher.
const READ_PAGE: i64 = 1000;
/// Events buffered per watcher before its task waits for the consumer.
const WATCHER_BUFFER: usize = 1024;

/// An event on its resource's channel, with the revision of the channel's previous event.
#[derive(Clone)]
struct Routed {
    previous: i64,
    event: Arc<Event>,
}

/// The watchers of one resource, or of one node's pods.
struct Channel {
    sender: broadcast::Sender<Routed>,
    /// The revision of the last event sent on this channel, or the hub's cursor when the
    /// channel was opened: the resource has no event between it and the next one sent.
    last: i64,
}

impl Channel {
    fn open(last: i64) -> Self {
        Self {
            sender: broadcast::channel(BROADCAST_CAPACITY).0,
            last,
        }
    }

    fn send(&mut self, event: &Arc<Event>) {
        let routed = Routed {
            previous: self.last,
            event: event.clone(),
        };
        self.last = event.revision;
        // A send fails only when the channel's last watcher has just left: harmless.
        drop(self.sender.send(routed));
    }

    fn watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }
}

/// The field pod watches are routed by.
const NODE_NAME: &str = "spec.nodeName";

/// The channels of one resource: for every watcher of it, and (pods) per node name.
#[derive(Default)]
struct Channels {
    all: Option<Channel>,
    by_node: HashMap<String, Channel>,
}

impl Channels {
    fn forget_unwatched(&mut self) {
        self.all = self.all.take().filter(Channel::watched);
        self.by_node.retain(|_, channel| channel.watched());
    }

    fn is_empty(&self) -> bool {
        self.all.is_none() && self.by_node.is_empty()
    }

    fn send(&mut self, event: &Arc<Event>) {
        if let Some(all) = &mut self.all {
            all.send(event);
        }
        if self.by_node.is_empty() {
            return;
        }
        let now = fields::field_value(&event.object.value, NODE_NAME);
        let before = event
            .prev
            .as_deref()
            .map(|prev| fields::field_value(prev, NODE_NAME));
        if let Some(channel) = self.by_node.get_mut(&now) {
            channel.send(event);
        }
        if let Some(before) = before.filter(|b| *b != now)
            && let Some(channel) = self.by_node.get_mut(&before)
        {
            channel.send(event);
        }
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut Channel> {
        self.all.iter_mut().chain(self.by_node.values_mut())
    }
}

/// What the pump and new watchers share, under one lock.
#[derive(Default)]
struct Dispatch {
    /// The last revision the pump has read; `None` while nobody listens (the pump then reads
    /// nothing, and the next subscriber sets the starting point).
    cursor: Option<i64>,
    /// By resource.
    channels: HashMap<String, Channels>,
}

pub(crate) struct Hub {
    backend: Arc<dyn Backend>,
    codec: Arc<Codec>,
    dispatch: Arc<Mutex<Dispatch>>,
    watchers: Arc<AtomicUsize>,
    pump: JoinHandle<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Hub {
    pub async fn start(backend: Arc<dyn Backend>, codec: Arc<Codec>) -> Result<Self> {
        // Listen before reading the starting point, so that nothing committed in between is
        // missed: the first signal makes the pump read everything after `start`.
        let signal = backend.changes().await?;
        let dispatch = Arc::new(Mutex::new(Dispatch::default()));
        let pump = tokio::spawn(pump(
            backend.clone(),
            codec.clone(),
            signal,
            dispatch.clone(),
        ));
        Ok(Self {
            backend,
            codec,
            dispatch,
            watchers: Arc::new(AtomicUsize::new(0)),
            pump,
        })
    }

    /// Watchers being served: each counts until its consumer goes away.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    pub async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        let live = {
            // Under the pump's lock: if the pump is idle, it resumes from a revision read after
            // we subscribed; everything up to it is in the log, which the watcher reads first.
            let mut dispatch = self.dispatch.lock().await;
            let cursor = match dispatch.cursor {
                Some(cursor) => cursor,
                None => {
                    let current = self.backend.revisions().await?.current;
                    dispatch.cursor = Some(current);
                    current
                }
            };
            let channels = dispatch
                .channels
                .entry(request.resource.clone())
                .or_default();
            let node = (request.resource == "pods")
                .then(|| request.fields.equality(NODE_NAME))
                .flatten();
            let channel = match node {
                Some(node) => channels
                    .by_node
                    .entry(node.to_string())
                    .or_insert_with(|| Channel::open(cursor)),
                None => channels.all.get_or_insert_with(|| Channel::open(cursor)),
            };
            channel.sender.subscribe()
        };
        let revisions = self.backend.revisions().await?;
        if request.after < revisions.compacted {
            return Err(Error::Gone {
                requested: request.after,
                compacted: revisions.compacted,
            });
        }
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let watcher = Watcher {
            backend: self.backend.clone(),
            codec: self.codec.clone(),
            cursor: request.after,
            request,
            out: tx,
            _served: Served::count(&self.watchers),
        };
        tokio::spawn(watcher.run(live));
        Ok(WatchStream { rx })
    }
}

/// Counts a watcher as served for as long as its task lives.
struct Served(Arc<AtomicUsize>);

impl Served {
    fn count(watchers: &Arc<AtomicUsize>) -> Self {
        watchers.fetch_add(1, Ordering::Relaxed);
        Self(watchers.clone())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn pump(
    backend: Arc<dyn Backend>,
    codec: Arc<Codec>,
    mut signal: Box<dyn ChangeSignal>,
    dispatch: Arc<Mutex<Dispatch>>,
) {
    loop {
        if let Err(error) = signal.changed().await {
            tracing::warn!(%error, "watch change signal failed; reading the log anyway");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let mut guard = dispatch.lock().await;
        let dispatch = &mut *guard;
        dispatch.channels.retain(|_, channels| {
            channels.forget_unwatched();
            !channels.is_empty()
        });
        if dispatch.channels.is_empty() {
            dispatch.cursor = None;
            continue;
        }
        let Some(mut cursor) = dispatch.cursor else {
            continue;
        };
        loop {
            match backend.events_after(cursor, READ_PAGE).await {
                Ok(batch) => {
                    let full = batch.len() as i64 == READ_PAGE;
                    for raw in batch {
                        cursor = raw.revision;
                        let Some(channels) = dispatch.channels.get_mut(&raw.key.resource) else {
                            continue;
                        };
                        match decode_event(&codec, raw) {
                            Ok(event) => channels.send(&Arc::new(event)),
                            Err(error) => {
                                tracing::error!(%error, revision = cursor, "undecodable event")
                            }
                        }
                    }
                    if !full {
                        break;
                    }
                }
                Err(Error::Gone { compacted, .. }) => {
                    // The hub itself fell behind compaction: what it skips was sent to nobody,
                    // so the next event on every channel shows a gap from `compacted`, and
                    // watchers behind it resolve that on their own (ending with Gone).
                    cursor = compacted;
                    for channel in dispatch.channels.values_mut().flat_map(Channels::all_mut) {
                        channel.last = channel.last.max(compacted);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "reading the event log failed");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    break;
                }
            }
        }
        dispatch.cursor = Some(cursor);
    }
}

pub(crate) fn decode_event(codec: &Codec, raw: RawEvent) -> Result<Event> {
    let object = codec.decode(&raw.key, &raw.value, raw.revision, raw.create_revision)?;
    let prev = match &raw.prev_value {
        Some(prev) => Some(Arc::new(codec.parse(&raw.key, prev)?)),
        None => None,
    };
    Ok(Event {
        revision: raw.revision,
        kind: raw.kind,
        object: Arc::new(object),
        prev,
    })
}

struct Watcher {
    backend: Arc<dyn Backend>,
    codec: Arc<Codec>,
    request: WatchRequest,
    /// The last revision this watcher has accounted for (delivered or filtered out).
    cursor: i64,
    out: mpsc::Sender<Result<Event>>,
    /// Held for the count of watchers served.
    _served: Served,
}

/// Why a watcher stops.
enum Stop {
    ConsumerGone,
    Failed(Error),
}

impl Watcher {
    async fn run(mut self, mut live: broadcast::Receiver<Routed>) {
        let outcome = self.follow(&mut live).await;
        if let Err(Stop::Failed(error)) = outcome {
            let _ = self.out.send(Err(error)).await;
        }
    }

    async fn follow(&mut self, live: &mut broadcast::Receiver<Routed>) -> Result<(), Stop> {
        self.catch_up().await?;
        loop {
            // A consumer that goes away is noticed at once, not at the next event it would
            // have been sent: a watch on a quiet resource would otherwise live on, woken by
            // every other resource's events, until one of its own came.
            let received = tokio::select! {
                received = live.recv() => received,
                () = self.out.closed() => return Err(Stop::ConsumerGone),
            };
            match received {
                Ok(routed) if routed.event.revision <= self.cursor => {}
                // Nothing of this resource between the cursor and this event.
                Ok(routed) if routed.previous <= self.cursor => self.offer(&routed.event).await?,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await?,
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Stop::Failed(Error::WriterStopped));
                }
            }
        }
    }

    /// Reads from the datastore everything after the cursor.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let batch = self
                .backend
                .events_after(self.cursor, READ_PAGE)
                .await
                .map_err(Stop::Failed)?;
            let full = batch.len() as i64 == READ_PAGE;
            for raw in batch {
                if !self.relevant(&raw.key.resource, &raw.key.namespace) {
                    self.cursor = raw.revision;
                    continue;
                }
                let event = decode_event(&self.codec, raw).map_err(Stop::Failed)?;
                self.offer(&event).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn relevant(&self, resource: &str, namespace: &str) -> bool {
        resource == self.request.resource
            && self
                .request
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == namespace)
    }

    async fn offer(&mut self, event: &Event) -> Result<(), Stop> {
        self.cursor = event.revision;
        let key = &event.object.key;
        if !self.relevant(&key.resource, &key.namespace) {
            return Ok(());
        }
        if let Some(event) = self.filter(event) {
            self.out
                .send(Ok(event))
                .await
                .map_err(|_| Stop::ConsumerGone)?;
        }
        Ok(())
    }

    /// Applies the selectors the way the Kubernetes API does: an object that starts matching
    /// is `Added`, one that stops matching is `Deleted`.
    fn filter(&self, event: &Event) -> Option<Event> {
        let (labels, fields) = (&self.request.labels, &self.request.fields);
        if labels.is_empty() && fields.is_empty() {
            return Some(event.clone());
        }
        let now = selected(labels, fields, &event.object.value);
        let before = event
            .prev
            .as_deref()
            .is_some_and(|prev| selected(labels, fields, prev));
        let kind = match (event.kind, before, now) {
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            (EventType::Deleted, _, true) => EventType::Deleted,
            _ => return None,
        };
        Some(Event {
            kind,
            ..event.clone()
        })
    }
}

/// The events of one watch, in revision order. Ends with an `Err` item if the watch fails
/// (for example `Gone` after compaction overtook a lagging watcher).
pub struct WatchStream {
    rx: mpsc::Receiver<Result<Event>>,
}

impl Stream for WatchStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
