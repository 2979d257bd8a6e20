//! The control-plane state store: Kubernetes objects in SQL with etcd-like revisions.
//!
//! Every write (create, update, delete) is one row change in `objects` plus one row in the
//! `events` log, committed together with the next cluster-wide revision. Revisions are
//! assigned in commit order and without gaps, so "everything after revision N" is a complete,
//! ordered answer at any moment. That is what [`Store::watch`] and paginated, consistent
//! [`Store::list`] stand on.
//!
//! Entry points: [`PostgresStore::open`] (several API servers on one database) and
//! [`SqliteStore::open`] (one process, a file in the data directory). Both are a [`SqlStore`]
//! over a backend: the SQL differs, the semantics live once here.
//!
//! Not here: Kubernetes semantics above storage (defaults, validation, generation, managed
//! fields). Those belong to the API server. The store knows only keys, JSON objects,
//! selectors and `metadata.resourceVersion`.

mod batch;
pub mod bootstrap;
mod codec;
pub mod follow;
mod list;
pub mod postgres;
mod rows;
pub mod sqlite;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bosun_api::{fields, labels};
use serde_json::Value;

use crate::telemetry;

pub use codec::{Cipher, SECRETS_RESOURCE};
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;
pub use watch::WatchStream;

/// Largest serialized object the store accepts (etcd's default request limit is 1.5 MiB;
/// Kubernetes lets a few kinds grow to 3 MiB).
pub const MAX_OBJECT_BYTES: usize = 3 * 1024 * 1024;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{key} not found")]
    NotFound { key: Key },
    #[error("{key} already exists")]
    AlreadyExists { key: Key },
    #[error("{key} has been modified: expected resourceVersion {expected}, found {actual}")]
    Conflict {
        key: Key,
        expected: i64,
        actual: i64,
    },
    #[error(
        "resource version {requested} is too old: revisions up to {compacted} have been compacted"
    )]
    Gone { requested: i64, compacted: i64 },
    #[error("resource version {requested} is newer than the store's current revision {current}")]
    TooNew { requested: i64, current: i64 },
    #[error("invalid key {key}: {reason}")]
    InvalidKey { key: Key, reason: String },
    #[error("invalid value for {key}: {reason}")]
    InvalidValue { key: Key, reason: String },
    #[error("object {key} is {size} bytes, more than the limit of {MAX_OBJECT_BYTES}")]
    TooLarge { key: Key, size: usize },
    #[error("invalid continue token: {0}")]
    InvalidContinue(String),
    #[error("stored value of {key} cannot be read: {reason}")]
    Corrupt { key: Key, reason: String },
    #[error("the datastore is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("failed to migrate the datastore schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the write was not committed: {0}")]
    Unavailable(String),
    #[error("the store's writer has stopped")]
    WriterStopped,
    #[error("{key} was not written: a write committed with it failed")]
    LinkedWriteFailed { key: Key },
    #[error("a transaction writes {key} twice")]
    Duplicate { key: Key },
    #[error("cluster bootstrap failed: {0}")]
    Bootstrap(String),
}

impl Error {
    /// Whether the cause is the datastore being unreachable or failing (a 5xx, worth a retry),
    /// rather than the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Database(_) | Error::Unavailable(_) | Error::WriterStopped
        )
    }
}

/// Where an object lives: the resource (`pods`, `deployments.apps`), its namespace (empty for
/// cluster-scoped kinds) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(
        resource: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Checks the parts the way the API server's object names are checked: a namespace is a
    /// DNS label; a name, at most 253 characters, is what the most lenient kind accepts (a
    /// path segment, as RBAC's `system:node`); each kind's stricter rule is the API's.
    fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Error::InvalidKey {
            key: self.clone(),
            reason,
        };
        if self.resource.is_empty()
            || !self
                .resource
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err(invalid(
                "resource must be a lower-case plural such as pods".into(),
            ));
        }
        if !self.namespace.is_empty() {
            bosun_api::names::check_dns1123_label(&self.namespace)
                .map_err(|e| invalid(format!("namespace {e}")))?;
        }
        if self.name.len() > bosun_api::names::DNS1123_SUBDOMAIN_MAX {
            return Err(invalid(format!(
                "name must be no more than {} characters",
                bosun_api::names::DNS1123_SUBDOMAIN_MAX
            )));
        }
        bosun_api::names::check_path_segment_name(&self.name)
            .map_err(|e| invalid(format!("name {e}")))?;
        Ok(())
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.resource, self.name)
        } else {
            write!(f, "{}/{}/{}", self.resource, self.namespace, self.name)
        }
    }
}

/// An object as read from the store. `value.metadata.resourceVersion` is `revision`.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub key: Key,
    /// The revision of the last change (Kubernetes' resourceVersion).
    pub revision: i64,
    /// The revision that created this incarnation of the key.
    pub create_revision: i64,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn from_code(code: i64) -> Self {
        match code {
            0 => EventType::Added,
            1 => EventType::Modified,
            _ => EventType::Deleted,
        }
    }

    fn code(self) -> i64 {
        match self {
            EventType::Added => 0,
            EventType::Modified => 1,
            EventType::Deleted => 2,
        }
    }
}

/// One change, as a watcher receives it. For `Deleted`, `object` is the last state with
/// `resourceVersion` set to the deletion's revision (as the Kubernetes API does).
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: i64,
    pub kind: EventType,
    pub object: Arc<Object>,
    /// The object before this change; `None` for `Added`.
    pub prev: Option<Arc<Value>>,
}

/// What to list: one resource, optionally one namespace, filtered by selectors.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub resource: String,
    /// `None` lists every namespace.
    pub namespace: Option<String>,
    pub labels: labels::Selector,
    pub fields: fields::Selector,
    /// At most this many items (0: no limit).
    pub limit: usize,
    /// The `continue` token of the previous page.
    pub continue_token: Option<String>,
    /// Read at this revision instead of the current one (ignored with a continue token).
    pub revision: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ListResult {
    /// The revision the list was read at (the list's resourceVersion).
    pub revision: i64,
    pub items: Vec<Object>,
    /// Present when there may be more items.
    pub continue_token: Option<String>,
}

/// What to watch: changes after `after` to one resource, filtered like a list.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    pub resource: String,
    pub namespace: Option<String>,
    pub labels: labels::Selector,
    pub fields: fields::Selector,
    /// Deliver events with a revision strictly greater than this.
    pub after: i64,
}

/// One write of a [`Store::transact`].
#[derive(Debug, Clone)]
pub enum Op {
    Create {
        key: Key,
        value: Value,
    },
    /// A replacement, only at `expected` when given (compare-and-swap).
    Update {
        key: Key,
        value: Value,
        expected: Option<i64>,
    },
    Delete {
        key: Key,
        expected: Option<i64>,
    },
}

impl Op {
    pub fn key(&self) -> &Key {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// The store's revision bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    /// The newest committed revision.
    pub current: i64,
    /// Events up to this revision are gone; lists and watches must start at or after it.
    pub compacted: i64,
}

/// The state store every API server uses. Object-safe, so the API server holds an
/// `Arc<dyn Store>` and tests run one suite against both backends.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates `key` with `value` (a JSON object); fails if it exists.
    async fn create(&self, key: &Key, value: Value) -> Result<Object>;
    async fn get(&self, key: &Key) -> Result<Object>;
    /// Replaces `key`'s value. With `expected_revision`, only if the object is still at that
    /// revision (compare-and-swap); otherwise `Conflict`.
    async fn update(
        &self,
        key: &Key,
        value: Value,
        expected_revision: Option<i64>,
    ) -> Result<Object>;
    /// Deletes `key`, optionally only at `expected_revision`; returns the deleted object.
    async fn delete(&self, key: &Key, expected_revision: Option<i64>) -> Result<Object>;
    /// Commits every write of `ops` in one transaction, each with its own revision in the
    /// order given, or none of them: the error is that of the first write that failed its
    /// precondition. Each key appears at most once. Returns the objects as written (the last
    /// state for a delete). This is how an admission step that keeps a count (ResourceQuota)
    /// changes it together with the object it counts.
    async fn transact(&self, ops: Vec<Op>) -> Result<Vec<Object>>;
    /// A consistent list at one revision, one page at a time.
    async fn list(&self, request: &ListRequest) -> Result<ListResult>;
    /// Every matching change after `request.after`, in revision order, without gaps; a
    /// compacted starting point fails with [`Error::Gone`].
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream>;
    async fn revisions(&self) -> Result<Revisions>;
    /// Watches being served by this process: a watch counts until its stream is dropped.
    fn watches(&self) -> usize;
    /// Drops events older than `window` (keeping the newest); returns the compacted revision.
    async fn compact(&self, window: Duration) -> Result<i64>;
    /// Fails when the datastore cannot answer a query.
    async fn ready(&self) -> Result<()>;
}

/// A stored row, value still encoded (JSON, or encrypted for secrets).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub key: Key,
    pub value: Vec<u8>,
    pub revision: i64,
    pub create_revision: i64,
}

/// An `events` row.
#[derive(Debug, Clone)]
pub(crate) struct RawEvent {
    pub revision: i64,
    pub kind: EventType,
    pub key: Key,
    pub value: Vec<u8>,
    pub prev_value: Option<Vec<u8>>,
    pub create_revision: i64,
}

#[derive(Debug, Clone)]
pub(crate) enum WriteKind {
    Create,
    Update { expected: Option<i64> },
    Delete { expected: Option<i64> },
}

/// One requested write; the writer batches these into one transaction.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub key: Key,
    pub kind: WriteKind,
    /// The encoded new value (empty for deletes).
    pub value: Vec<u8>,
    /// Commits only together with the write before it in the batch (and that one's linked
    /// predecessors): a [`Store::transact`] is a first write followed by linked ones.
    pub linked: bool,
}

/// A page of objects as they were at one revision.
pub(crate) struct RangeQuery<'a> {
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    /// Only keys after this (namespace, name).
    pub after: Option<(&'a str, &'a str)>,
    /// `None`: the current revision.
    pub revision: Option<i64>,
    pub limit: i64,
}

/// What a backend must do; everything else ([`SqlStore`]) is shared.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// Applies the writes in one transaction, each with the next revision. The outer error
    /// means nothing was written; inner errors are per write (precondition failures), and such
    /// a write takes no revision. A run of linked writes (see [`Write::linked`]) is applied
    /// whole or not at all: the one that failed gets its error, the others
    /// [`Error::LinkedWriteFailed`].
    async fn write_batch(&self, writes: &[Write]) -> Result<Vec<Result<Stored>>>;
    async fn get(&self, key: &Key) -> Result<Option<Stored>>;
    /// Objects as of a revision, ordered by (namespace, name). Returns the revision read at.
    async fn range(&self, query: &RangeQuery<'_>) -> Result<(i64, Vec<Stored>)>;
    /// Events after `after`, ascending, at most `limit`; `Gone` if `after` was compacted.
    async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<RawEvent>>;
    async fn revisions(&self) -> Result<Revisions>;
    /// Compacts events older than `cutoff_ms` (unix milliseconds).
    async fn compact(&self, cutoff_ms: i64) -> Result<i64>;
    async fn ping(&self) -> Result<()>;
    /// Subscribes to "new events may have been committed" (by this or another process).
    async fn changes(&self) -> Result<Box<dyn ChangeSignal>>;
    /// The sealed cluster secrets, if a server has stored them yet.
    async fn bootstrap_data(&self) -> Result<Option<Vec<u8>>>;
    /// Stores `data` unless secrets are already there; returns whatever is stored now (so of
    /// two servers starting at once, both end up with the first one's secrets).
    async fn init_bootstrap_data(&self, data: &[u8]) -> Result<Vec<u8>>;
    /// Replaces the stored secrets with `data` if they are still `old` (a server adding a
    /// secret an older cluster lacks); returns whatever is stored now.
    async fn replace_bootstrap_data(&self, old: &[u8], data: &[u8]) -> Result<Vec<u8>>;
}

/// Wakes the watch hub when new events may exist.
#[async_trait]
pub(crate) trait ChangeSignal: Send {
    async fn changed(&mut self) -> Result<()>;
}

/// The store over one backend: batching writer, codec (JSON + secret encryption), lists,
/// and the watch hub.
pub struct SqlStore<B> {
    backend: Arc<B>,
    codec: Arc<codec::Codec>,
    writer: batch::Writer,
    hub: watch::Hub,
}

/// Resolves the revision a read is at, refusing compacted and future ones.
pub(crate) fn check_revision(requested: Option<i64>, current: i64, compacted: i64) -> Result<i64> {
    match requested {
        None => Ok(current),
        Some(r) if r < compacted => Err(Error::Gone {
            requested: r,
            compacted,
        }),
        Some(r) if r > current => Err(Error::TooNew {
            requested: r,
            current,
        }),
        Some(r) => Ok(r),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// The backends are crate-private on purpose: users pick `PostgresStore` or `SqliteStore`.
#[allow(private_bounds)]
impl<B: Backend> SqlStore<B> {
    pub(crate) async fn start(backend: B, cipher: Cipher) -> Result<Self> {
        let backend = Arc::new(backend);
        let codec = Arc::new(codec::Codec::new(cipher));
        let hub = watch::Hub::start(backend.clone() as Arc<dyn Backend>, codec.clone()).await?;
        let writer = batch::Writer::start(backend.clone());
        Ok(Self {
            backend,
            codec,
            writer,
            hub,
        })
    }

    fn decode(&self, stored: &Stored) -> Result<Object> {
        self.codec.decode(
            &stored.key,
            &stored.value,
            stored.revision,
            stored.create_revision,
        )
    }
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    async fn create(&self, key: &Key, value: Value) -> Result<Object> {
        let _timer = telemetry::global().store_call("create", &key.resource);
        key.validate()?;
        let value = self.codec.encode(key, value)?;
        let stored = self
            .writer
            .write(Write {
                key: key.clone(),
                kind: WriteKind::Create,
                value,
                linked: false,
            })
            .await?;
        self.decode(&stored)
    }

    async fn get(&self, key: &Key) -> Result<Object> {
        let _timer = telemetry::global().store_call("get", &key.resource);
        key.validate()?;
        match self.backend.get(key).await? {
            Some(stored) => self.decode(&stored),
            None => Err(Error::NotFound { key: key.clone() }),
        }
    }

    async fn update(
        &self,
        key: &Key,
        value: Value,
        expected_revision: Option<i64>,
    ) -> Result<Object> {
        let _timer = telemetry::global().store_call("update", &key.resource);
        key.validate()?;
        let value = self.codec.encode(key, value)?;
        let stored = self
            .writer
            .write(Write {
                key: key.clone(),
                kind: WriteKind::Update {
                    expected: expected_revision,
                },
                value,
                linked: false,
            })
            .await?;
        self.decode(&stored)
    }

    async fn delete(&self, key: &Key, expected_revision: Option<i64>) -> Result<Object> {
        let _timer = telemetry::global().store_call("delete", &key.resource);
        key.validate()?;
        let stored = self
            .writer
            .write(Write {
                key: key.clone(),
                kind: WriteKind::Delete {
                    expected: expected_revision,
                },
                value: Vec::new(),
                linked: false,
            })
            .await?;
        self.decode(&stored)
    }

    async fn transact(&self, ops: Vec<Op>) -> Result<Vec<Object>> {
        let mut writes = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            let key = op.key().clone();
            key.validate()?;
            if writes.iter().any(|w: &Write| w.key == key) {
                return Err(Error::Duplicate { key });
            }
            let (kind, value) = match op {
                Op::Create { key, value } => (WriteKind::Create, self.codec.encode(&key, value)?),
                Op::Update {
                    key,
                    value,
                    expected,
                } => (
                    WriteKind::Update { expected },
                    self.codec.encode(&key, value)?,
                ),
                Op::Delete { expected, .. } => (WriteKind::Delete { expected }, Vec::new()),
            };
            writes.push(Write {
                key,
                kind,
                value,
                linked: i > 0,
            });
        }
        let _timer = match writes.first() {
            Some(first) => telemetry::global().store_call("transact", &first.key.resource),
            None => return Ok(Vec::new()),
        };
        let stored = self.writer.write_all(writes).await?;
        stored.iter().map(|s| self.decode(s)).collect()
    }

    async fn list(&self, request: &ListRequest) -> Result<ListResult> {
        let _timer = telemetry::global().store_call("list", &request.resource);
        list::list(&*self.backend, &self.codec, request).await
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        self.hub.watch(request).await
    }

    async fn revisions(&self) -> Result<Revisions> {
        self.backend.revisions().await
    }

    fn watches(&self) -> usize {
        self.hub.watchers()
    }

    async fn compact(&self, window: Duration) -> Result<i64> {
        let cutoff = now_ms() - window.as_millis() as i64;
        self.backend.compact(cutoff).await
    }

    async fn ready(&self) -> Result<()> {
        self.backend.ping().await
    }
}

/// Runs [`Store::compact`] every `interval` with `window` until the task is dropped.
pub async fn compact_periodically(store: Arc<dyn Store>, window: Duration, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match store.compact(window).await {
            Ok(revision) => tracing::debug!(revision, "compacted the event log"),
            Err(error) => tracing::warn!(%error, "compaction failed"),
        }
    }
}
