//! The writer: one task per store that turns concurrent writes into group commits.
//!
//! All writers of a cluster serialize on the revision counter (that is what keeps revision
//! order equal to commit order), so one transaction per write would cap throughput at one
//! commit (one WAL flush) at a time. Instead, whatever writes queue up while a transaction is
//! in flight go together into the next one: each still gets its own revision and its own
//! result, and they share the flush. One batch is in flight at a time: a second one
//! would only wait on the revision lock, and measured, it makes batches smaller and throughput
//! lower.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Backend, Error, EventType, Key, Result, Stored, Write, WriteKind};

/// Most writes in one transaction.
const MAX_BATCH: usize = 256;
/// Writes that may wait for the writer before callers are slowed down.
const QUEUE: usize = 8192;

type Reply = oneshot::Sender<Result<Stored>>;

pub(crate) struct Writer {
    queue: mpsc::Sender<(Write, Reply)>,
}

impl Writer {
    pub fn start<B: Backend>(backend: Arc<B>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(backend, rx));
        Self { queue }
    }

    pub async fn write(&self, write: Write) -> Result<Stored> {
        let (reply, result) = oneshot::channel();
        self.queue
            .send((write, reply))
            .await
            .map_err(|_| Error::WriterStopped)?;
        result.await.map_err(|_| Error::WriterStopped)?
    }
}

async fn run<B: Backend>(backend: Arc<B>, mut rx: mpsc::Receiver<(Write, Reply)>) {
    let mut writes = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    while let Some((write, reply)) = rx.recv().await {
        // Let the clients answered by the last batch queue their next writes before we gather:
        // measured, this doubles the batch size and the throughput under concurrent clients.
        tokio::task::yield_now().await;
        writes.push(write);
        replies.push(reply);
        while writes.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((write, reply)) => {
                    writes.push(write);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        match backend.write_batch(&writes).await {
            Ok(results) => {
                for (reply, result) in replies.drain(..).zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::warn!(%error, writes = writes.len(), "write transaction failed");
                let message = error.to_string();
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(Error::Unavailable(message.clone())));
                }
            }
        }
        writes.clear();
    }
}

/// The row a write finds.
pub(crate) struct Current {
    pub value: Vec<u8>,
    pub revision: i64,
    pub create_revision: i64,
}

/// One committed change: the `events` row to append and the object row to put or remove.
pub(crate) struct Change<'a> {
    pub revision: i64,
    pub key: &'a Key,
    pub kind: EventType,
    /// New value, or the last value for a deletion.
    pub value: Vec<u8>,
    pub prev_value: Option<Vec<u8>>,
    pub prev_revision: Option<i64>,
    pub create_revision: i64,
}

impl Change<'_> {
    /// Whether the object row goes away.
    pub fn removes(&self) -> bool {
        self.kind == EventType::Deleted
    }

    pub fn stored(&self) -> Stored {
        Stored {
            key: self.key.clone(),
            value: self.value.clone(),
            revision: self.revision,
            create_revision: self.create_revision,
        }
    }
}

/// Decides what `write` does to the row it found, checking its preconditions. Backends run
/// this inside their write transaction, after taking the revision lock.
pub(crate) fn plan<'a>(
    write: &'a Write,
    current: Option<Current>,
    revision: i64,
) -> Result<Change<'a>> {
    let key = &write.key;
    let check = |expected: &Option<i64>, actual: i64| match expected {
        Some(expected) if *expected != actual => Err(Error::Conflict {
            key: key.clone(),
            expected: *expected,
            actual,
        }),
        _ => Ok(()),
    };
    match (&write.kind, current) {
        (WriteKind::Create, Some(_)) => Err(Error::AlreadyExists { key: key.clone() }),
        (WriteKind::Create, None) => Ok(Change {
            revision,
            key,
            kind: EventType::Added,
            value: write.value.clone(),
            prev_value: None,
            prev_revision: None,
            create_revision: revision,
        }),
        (WriteKind::Update { .. } | WriteKind::Delete { .. }, None) => {
            Err(Error::NotFound { key: key.clone() })
        }
        (WriteKind::Update { expected }, Some(cur)) => {
            check(expected, cur.revision)?;
            Ok(Change {
                revision,
                key,
                kind: EventType::Modified,
                value: write.value.clone(),
                prev_value: Some(cur.value),
                prev_revision: Some(cur.revision),
                create_revision: cur.create_revision,
            })
        }
        (WriteKind::Delete { expected }, Some(cur)) => {
            check(expected, cur.revision)?;
            Ok(Change {
                revision,
                key,
                kind: EventType::Deleted,
                value: cur.value,
                prev_value: None,
                prev_revision: Some(cur.revision),
                create_revision: cur.create_revision,
            })
        }
    }
}
