//! The SQLite backend: the embedded datastore of a single-machine cluster.
//!
//! SQLite allows one writer at a time and this process is the only one using the file (an
//! exclusive lock on `<file>.lock` refuses a second server), so a write transaction that reads
//! and bumps the revision counter already commits in revision order. Watchers are woken by an
//! in-process signal after each commit. WAL mode with `synchronous = FULL`: an acknowledged
//! write is on disk.

use std::fs::File;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::watch;

use super::batch::{Change, Current, linked_runs, plan_run};
use super::bootstrap::{self, ClusterSecrets};
use super::rows;
use super::{
    Backend, ChangeSignal, Error, Key, RangeQuery, RawEvent, Result, Revisions, SqlStore, Stored,
    Write, check_revision, now_ms,
};

pub struct Sqlite {
    pool: SqlitePool,
    committed: watch::Sender<i64>,
    /// Held for the life of the store: the file is ours alone.
    _lock: File,
}

/// The store on an embedded SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and the cluster in it.
    pub async fn open(path: &Path, token: Option<&str>) -> Result<(Self, ClusterSecrets)> {
        let lock_path = path.with_extension("lock");
        let lock = File::create(&lock_path)
            .map_err(|e| Error::Bootstrap(format!("cannot create {}: {e}", lock_path.display())))?;
        // A server that is just exiting may hold the lock for a moment longer.
        let mut attempts = 0;
        while lock.try_lock().is_err() {
            attempts += 1;
            if attempts == 50 {
                return Err(Error::Bootstrap(format!(
                    "{} is in use by another bosun server (lock {} is held)",
                    path.display(),
                    lock_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        let (committed, _) = watch::channel(0);
        let backend = Sqlite {
            pool,
            committed,
            _lock: lock,
        };
        let secrets = bootstrap::join(&backend, token).await?;
        let store = SqlStore::start(backend, secrets.cipher()).await?;
        Ok((store, secrets))
    }
}

const SELECT_CURRENT: &str = "SELECT value, revision, create_revision FROM objects \
     WHERE resource = ?1 AND namespace = ?2 AND name = ?3";

const INSERT_EVENT: &str = "INSERT INTO events (revision, resource, namespace, name, kind, \
     value, prev_value, prev_revision, create_revision, created_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

const PUT: &str = "INSERT INTO objects (resource, namespace, name, value, revision, \
     create_revision) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (resource, namespace, name) DO UPDATE SET value = excluded.value, \
     revision = excluded.revision, create_revision = excluded.create_revision";

const REMOVE: &str = "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3";

/// See the Postgres backend's `RANGE`; the same query in SQLite's dialect.
const RANGE: &str = "WITH changed AS ( \
       SELECT namespace, name, kind, value, prev_value, prev_revision, create_revision, \
              ROW_NUMBER() OVER (PARTITION BY namespace, name ORDER BY revision) AS nth \
       FROM events \
       WHERE revision > ?2 AND resource = ?1 AND (?3 IS NULL OR namespace = ?3) \
         AND (namespace, name) > (?4, ?5)) \
     SELECT namespace, name, value, revision, create_revision FROM objects \
       WHERE resource = ?1 AND revision <= ?2 AND (?3 IS NULL OR namespace = ?3) \
         AND (namespace, name) > (?4, ?5) \
     UNION ALL \
     SELECT namespace, name, CASE WHEN kind = 2 THEN value ELSE prev_value END, prev_revision, \
            create_revision \
       FROM changed WHERE nth = 1 AND kind <> 0 \
     ORDER BY namespace, name LIMIT ?6";

#[async_trait]
impl Backend for Sqlite {
    async fn write_batch(&self, writes: &[Write]) -> Result<Vec<Result<Stored>>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let current: i64 = sqlx::query_scalar("SELECT revision FROM revision_counter WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let first = current + 1;
        let mut next = first;
        let created = now_ms();
        let mut results = Vec::with_capacity(writes.len());
        for run in linked_runs(writes) {
            // A run's keys are distinct, so reading every row before changing any is the same
            // as reading each just before its change.
            let mut current = Vec::with_capacity(run.len());
            for write in run {
                let k = &write.key;
                let row: Option<(Vec<u8>, i64, i64)> = sqlx::query_as(SELECT_CURRENT)
                    .bind(&k.resource)
                    .bind(&k.namespace)
                    .bind(&k.name)
                    .fetch_optional(&mut *tx)
                    .await?;
                current.push(row.map(|(value, revision, create_revision)| Current {
                    value,
                    revision,
                    create_revision,
                }));
            }
            match plan_run(run, current, next) {
                Ok(changes) => {
                    for change in changes {
                        apply(&mut tx, &change, created).await?;
                        results.push(Ok(change.stored()));
                        next += 1;
                    }
                }
                Err(failed) => results.extend(failed),
            }
        }
        if next > first {
            sqlx::query("UPDATE revision_counter SET revision = ?1 WHERE id = 1")
                .bind(next - 1)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if next > first {
            self.committed.send_replace(next - 1);
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
        // A read transaction in WAL mode is one snapshot: the counter and the rows agree.
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        let compacted: i64 =
            sqlx::query_scalar("SELECT compacted FROM revision_counter WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
        if after < compacted {
            return Err(Error::Gone {
                requested: after,
                compacted,
            });
        }
        let rows = sqlx::query(
            "SELECT revision, resource, namespace, name, kind, value, prev_value, create_revision \
             FROM events WHERE revision > ?1 ORDER BY revision LIMIT ?2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(rows::event).collect())
    }

    async fn revisions(&self) -> Result<Revisions> {
        let (current, compacted): (i64, i64) =
            sqlx::query_as("SELECT revision, compacted FROM revision_counter WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(Revisions { current, compacted })
    }

    async fn compact(&self, cutoff_ms: i64) -> Result<i64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let compacted: i64 = sqlx::query_scalar(
            "UPDATE revision_counter SET compacted = MAX(compacted, COALESCE( \
               (SELECT MAX(revision) FROM events WHERE created_at_ms < ?1), 0)) \
             WHERE id = 1 RETURNING compacted",
        )
        .bind(cutoff_ms)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM events WHERE revision <= ?1")
            .bind(compacted)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(compacted)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn changes(&self) -> Result<Box<dyn ChangeSignal>> {
        Ok(Box::new(Commits {
            committed: self.committed.subscribe(),
        }))
    }

    async fn bootstrap_data(&self) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT data FROM bootstrap WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn replace_bootstrap_data(&self, old: &[u8], data: &[u8]) -> Result<Vec<u8>> {
        sqlx::query("UPDATE bootstrap SET data = ?2 WHERE id = 1 AND data = ?1")
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
        sqlx::query("INSERT INTO bootstrap (id, data) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING")
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

async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    change: &Change<'_>,
    created_at_ms: i64,
) -> Result<()> {
    let k = change.key;
    sqlx::query(INSERT_EVENT)
        .bind(change.revision)
        .bind(&k.resource)
        .bind(&k.namespace)
        .bind(&k.name)
        .bind(change.kind.code())
        .bind(&change.value)
        .bind(&change.prev_value)
        .bind(change.prev_revision)
        .bind(change.create_revision)
        .bind(created_at_ms)
        .execute(&mut **tx)
        .await?;
    if change.removes() {
        sqlx::query(REMOVE)
            .bind(&k.resource)
            .bind(&k.namespace)
            .bind(&k.name)
            .execute(&mut **tx)
            .await?;
    } else {
        sqlx::query(PUT)
            .bind(&k.resource)
            .bind(&k.namespace)
            .bind(&k.name)
            .bind(&change.value)
            .bind(change.revision)
            .bind(change.create_revision)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

struct Commits {
    committed: watch::Receiver<i64>,
}

#[async_trait]
impl ChangeSignal for Commits {
    async fn changed(&mut self) -> Result<()> {
        self.committed
            .changed()
            .await
            .map_err(|_| Error::WriterStopped)
    }
}
