//! The PostgreSQL backend: the production datastore, shared by several API servers.
//!
//! A batch of writes is one call of the `bosun_write` function (migrations/postgres/0003): it
//! locks the single `revision_counter` row (`SELECT … FOR UPDATE`), so transactions that write
//! take their revisions one after another and commit in that order: a transaction cannot get
//! revision N+1 before the one holding N has committed or rolled back. The function sends
//! `NOTIFY bosun_events`; every API server `LISTEN`s and reads the log only when told to.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Executor, Row};

use super::bootstrap::{self, ClusterSecrets};
use super::rows;
use super::{
    Backend, ChangeSignal, Error, Key, RangeQuery, RawEvent, Result, Revisions, SqlStore, Stored,
    Write, WriteKind, check_revision, now_ms,
};

const CHANNEL: &str = "bosun_events";

/// A hook run after a write transaction has its revisions and before it commits; returns how
/// long to hold the commit back. Tests use it to widen the window in which a broken revision
/// scheme would commit out of order.
pub type CommitDelay = Arc<dyn Fn() -> Duration + Send + Sync>;

#[derive(Clone)]
pub struct PostgresOptions {
    pub max_connections: u32,
    /// Test hook, see [`CommitDelay`].
    pub commit_delay: Option<CommitDelay>,
    /// Test only: take revisions from a plain sequence (like a BIGSERIAL column) instead of the
    /// locked counter. Revisions then no longer follow commit order; the ordering test uses
    /// this to prove that it detects exactly that.
    pub unordered_revisions: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            commit_delay: None,
            unordered_revisions: false,
        }
    }
}

pub struct Postgres {
    pool: PgPool,
    options: PostgresOptions,
}

/// The store on PostgreSQL.
pub type PostgresStore = SqlStore<Postgres>;

impl PostgresStore {
    /// Connects, migrates the schema, and joins (or founds) the cluster with `token`.
    pub async fn open(
        url: &str,
        token: Option<&str>,
        options: PostgresOptions,
    ) -> Result<(Self, ClusterSecrets)> {
        let connect: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        if options.unordered_revisions {
            pool.execute("CREATE SEQUENCE IF NOT EXISTS bosun_unordered_revisions")
                .await?;
        }
        let backend = Postgres { pool, options };
        let secrets = bootstrap::join(&backend, token).await?;
        let store = SqlStore::start(backend, secrets.cipher()).await?;
        Ok((store, secrets))
    }
}

const WRITE: &str = "SELECT o_idx, o_outcome, o_revision, o_create_revision, o_value, o_actual \
     FROM bosun_write($1, $2, $3, $4, $5, $6, $7, $8, $9) ORDER BY o_idx";

const SELECT_CURRENT: &str = "SELECT value, revision, create_revision FROM objects \
     WHERE resource = $1 AND namespace = $2 AND name = $3";

/// Objects as they were at revision $2: unchanged rows, plus for every key changed after $2 the
/// state its first later event records as previous.
const RANGE: &str = "WITH changed AS ( \
       SELECT namespace, name, kind, value, prev_value, prev_revision, create_revision, \
              ROW_NUMBER() OVER (PARTITION BY namespace, name ORDER BY revision) AS nth \
       FROM events \
       WHERE revision > $2 AND resource = $1 AND ($3::text IS NULL OR namespace = $3) \
         AND (namespace, name) > ($4, $5)) \
     SELECT namespace, name, value, revision, create_revision FROM objects \
       WHERE resource = $1 AND revision <= $2 AND ($3::text IS NULL OR namespace = $3) \
         AND (namespace, name) > ($4, $5) \
     UNION ALL \
     SELECT namespace, name, CASE WHEN kind = 2 THEN value ELSE prev_value END, prev_revision, \
            create_revision \
       FROM changed WHERE nth = 1 AND kind <> 0 \
     ORDER BY namespace, name LIMIT $6";

#[async_trait]
impl Backend for Postgres {
    async fn write_batch(&self, writes: &[Write]) -> Result<Vec<Result<Stored>>> {
        let mut kinds = Vec::with_capacity(writes.len());
        let mut expected = Vec::with_capacity(writes.len());
        for write in writes {
            let (kind, precondition) = match write.kind {
                WriteKind::Create => (0i16, None),
                WriteKind::Update { expected } => (1, expected),
                WriteKind::Delete { expected } => (2, expected),
            };
            kinds.push(kind);
            expected.push(precondition);
        }
        let query = sqlx::query(WRITE)
            .bind(kinds)
            .bind(
                writes
                    .iter()
                    .map(|w| w.key.resource.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                writes
                    .iter()
                    .map(|w| w.key.namespace.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                writes
                    .iter()
                    .map(|w| w.key.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                writes
                    .iter()
                    .map(|w| w.value.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(expected)
            .bind(now_ms())
            .bind(self.options.unordered_revisions)
            .bind(writes.iter().map(|w| w.linked).collect::<Vec<_>>());
        let rows = match &self.options.commit_delay {
            // One statement in autocommit: one round trip per batch.
            None => query.fetch_all(&self.pool).await?,
            Some(delay) => {
                let mut tx = self.pool.begin().await?;
                let rows = query.fetch_all(&mut *tx).await?;
                tokio::time::sleep(delay()).await;
                tx.commit().await?;
                rows
            }
        };
        let mut results: Vec<Result<Stored>> = Vec::with_capacity(writes.len());
        for (write, row) in writes.iter().zip(rows) {
            let key = write.key.clone();
            let outcome: i16 = row.get(1);
            results.push(match outcome {
                0 => {
                    let deleted: Option<Vec<u8>> = row.get(4);
                    Ok(Stored {
                        key,
                        value: deleted.unwrap_or_else(|| write.value.clone()),
                        revision: row.get(2),
                        create_revision: row.get(3),
                    })
                }
                1 => Err(Error::AlreadyExists { key }),
                2 => Err(Error::NotFound { key }),
                4 => Err(Error::LinkedWriteFailed { key }),
                _ => Err(Error::Conflict {
                    key,
                    expected: match write.kind {
                        WriteKind::Update { expected } | WriteKind::Delete { expected } => {
                            expected.unwrap_or_default()
                        }
                        WriteKind::Create => 0,
                    },
                    actual: row.get(5),
                }),
            });
        }
        Ok(results)
    }

    async fn get(&self, key: &Key) -> Result<Option<Stored>> {
        let row: Option<(Vec<u8>, i64, i64)> = sqlx::query_as(SELECT_CURRENT)
            .bind(&key.resource)
            .bind(&key.namespace)
            .bind(&key.name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(value, revision, create_revision)| Stored {
            key: key.clone(),
            value,
            revision,
            create_revision,
        }))
    }

    async fn range(&self, query: &RangeQuery<'_>) -> Result<(i64, Vec<Stored>)> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let (current, compacted): (i64, i64) =
            sqlx::query_as("SELECT revision, compacted FROM revision_counter WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
        let revision = check_revision(query.revision, current, compacted)?;
        let (after_ns, after_name) = query.after.unwrap_or(("", ""));
        let rows = sqlx::query(RANGE)
            .bind(query.resource)
            .bind(revision)
            .bind(query.namespace)
            .bind(after_ns)
            .bind(after_name)
            .bind(query.limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let objects = rows
            .iter()
            .map(|row| rows::stored(query.resource, row))
            .collect();
        Ok((revision, objects))
    }

    async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<RawEvent>> {
        // One statement, one snapshot: if the compaction point it reads is at or below `after`,
        // no event after `after` had been compacted away when the events were read.
        let rows = sqlx::query(
            "SELECT e.revision, e.resource, e.namespace, e.name, e.kind::bigint, e.value, \
                    e.prev_value, e.create_revision, c.compacted \
             FROM revision_counter c LEFT JOIN LATERAL ( \
               SELECT * FROM events WHERE revision > $1 ORDER BY revision LIMIT $2) e ON true \
             WHERE c.id = 1",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let compacted: i64 = rows.first().map_or(0, |row| row.get(8));
        if after < compacted {
            return Err(Error::Gone {
                requested: after,
                compacted,
            });
        }
        Ok(rows
            .iter()
            .filter(|row| row.get::<Option<i64>, _>(0).is_some())
            .map(rows::event)
            .collect())
    }

    async fn revisions(&self) -> Result<Revisions> {
        let (current, compacted): (i64, i64) =
            sqlx::query_as("SELECT revision, compacted FROM revision_counter WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(Revisions { current, compacted })
    }

    async fn compact(&self, cutoff_ms: i64) -> Result<i64> {
        let compacted: i64 = sqlx::query_scalar(
            "UPDATE revision_counter SET compacted = GREATEST(compacted, COALESCE( \
               (SELECT MAX(revision) FROM events WHERE created_at_ms < $1), 0)) \
             WHERE id = 1 RETURNING compacted",
        )
        .bind(cutoff_ms)
        .fetch_one(&self.pool)
        .await?;
        sqlx::query("DELETE FROM events WHERE revision <= $1")
            .bind(compacted)
            .execute(&self.pool)
            .await?;
        Ok(compacted)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn changes(&self) -> Result<Box<dyn ChangeSignal>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Box::new(Notifications { listener }))
    }

    async fn bootstrap_data(&self) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT data FROM bootstrap WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn replace_bootstrap_data(&self, old: &[u8], data: &[u8]) -> Result<Vec<u8>> {
        sqlx::query("UPDATE bootstrap SET data = $2 WHERE id = 1 AND data = $1")
            .bind(old)
            .bind(data)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT data FROM bootstrap WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn init_bootstrap_data(&self, data: &[u8]) -> Result<Vec<u8>> {
        sqlx::query("INSERT INTO bootstrap (id, data) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(data)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT data FROM bootstrap WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

struct Notifications {
    listener: PgListener,
}

#[async_trait]
impl ChangeSignal for Notifications {
    async fn changed(&mut self) -> Result<()> {
        // `None` means the connection dropped (and will be re-established): notifications may
        // have been lost, so report a change and let the hub read the log.
        self.listener.try_recv().await?;
        while self.listener.next_buffered().is_some() {}
        Ok(())
    }
}
