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

/// Where the results of one caller's writes go, all at once.
type Reply = oneshot::Sender<Result<Vec<Stored>>>;

pub(crate) struct Writer {
    queue: mpsc::Sender<(Vec<Write>, Reply)>,
}

impl Writer {
    pub fn start<B: Backend>(backend: Arc<B>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(backend, rx));
        Self { queue }
    }

    pub async fn write(&self, write: Write) -> Result<Stored> {
        let mut stored = self.write_all(vec![write]).await?;
        Ok(stored.pop().expect("one result per write"))
    }

    /// Writes a first write and the writes linked to it (see [`Write::linked`]): all of them
    /// or none.
    pub async fn write_all(&self, writes: Vec<Write>) -> Result<Vec<Stored>> {
        let (reply, result) = oneshot::channel();
        self.queue
            .send((writes, reply))
            .await
            .map_err(|_| Error::WriterStopped)?;
        result.await.map_err(|_| Error::WriterStopped)?
    }
}

async fn run<B: Backend>(backend: Arc<B>, mut rx: mpsc::Receiver<(Vec<Write>, Reply)>) {
    let mut writes = Vec::with_capacity(MAX_BATCH);
    // Each caller's reply and how many of the batch's writes are theirs.
    let mut replies: Vec<(Reply, usize)> = Vec::with_capacity(MAX_BATCH);
    while let Some((group, reply)) = rx.recv().await {
        // Let the clients answered by the last batch queue their next writes before we gather:
        // measured, this doubles the batch size and the throughput under concurrent clients.
        tokio::task::yield_now().await;
        replies.push((reply, group.len()));
        writes.extend(group);
        while writes.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((group, reply)) => {
                    replies.push((reply, group.len()));
                    writes.extend(group);
                }
                Err(_) => break,
            }
        }
        match backend.write_batch(&writes).await {
            Ok(results) => {
                let mut results = results.into_iter();
                for (reply, count) in replies.drain(..) {
                    let _ = reply.send(answer(results.by_ref().take(count)));
                }
            }
            Err(error) => {
                tracing::warn!(%error, writes = writes.len(), "write transaction failed");
                let message = error.to_string();
                for (reply, _) in replies.drain(..) {
                    let _ = reply.send(Err(Error::Unavailable(message.clone())));
                }
            }
        }
        writes.clear();
    }
}

/// One caller's answer: every write's row, or the error of the write that failed (not the
/// [`Error::LinkedWriteFailed`] of the writes that went down with it).
fn answer(results: impl Iterator<Item = Result<Stored>>) -> Result<Vec<Stored>> {
    let mut stored = Vec::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(row) => stored.push(row),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        return Ok(stored);
    }
    let cause = errors
        .iter()
        .position(|e| !matches!(e, Error::LinkedWriteFailed { .. }))
        .unwrap_or(0);
    Err(errors.swap_remove(cause))
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

/// Splits a batch into its runs of linked writes (a lone write is a run of one).
pub(crate) fn linked_runs(writes: &[Write]) -> impl Iterator<Item = &[Write]> {
    let mut rest = writes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = 1 + rest[1..].iter().take_while(|w| w.linked).count();
        let (run, tail) = rest.split_at(len);
        rest = tail;
        Some(run)
    })
}

/// Plans a run of linked writes against the rows they find (`current`, in the same order),
/// taking revisions from `revision` on: every change, or, when one write fails, the results
/// of the whole run (that write's error, [`Error::LinkedWriteFailed`] for the others).
pub(crate) fn plan_run<'a>(
    run: &'a [Write],
    current: Vec<Option<Current>>,
    revision: i64,
) -> Result<Vec<Change<'a>>, Vec<Result<Stored>>> {
    let mut changes = Vec::with_capacity(run.len());
    for (n, (write, current)) in run.iter().zip(current).enumerate() {
        match plan(write, current, revision + n as i64) {
            Ok(change) => changes.push(change),
            Err(error) => {
                let mut failed = Some(error);
                return Err(run
                    .iter()
                    .enumerate()
                    .map(|(m, w)| match m == n {
                        true => Err(failed.take().expect("one failure")),
                        false => Err(Error::LinkedWriteFailed { key: w.key.clone() }),
                    })
                    .collect());
            }
        }
    }
    Ok(changes)
}

/// Decides what `write` does to the row it found, checking its preconditions. Backends run
/// this inside their write transaction, after taking the revision lock.
fn plan<'a>(write: &'a Write, current: Option<Current>, revision: i64) -> Result<Change<'a>> {
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
