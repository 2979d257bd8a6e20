//! Shared helpers: fresh databases, stores on either backend.

use std::path::PathBuf;
use std::sync::Arc;

use bosun_control::store::{PostgresOptions, PostgresStore, SqliteStore, Store};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub use bosun_testkit::postgres::fresh_database as fresh_postgres_db;

/// A random number (jitter for injected delays).
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(bosun_testkit::unique());
    h.finish()
}

pub const TOKEN: &str = "test-cluster-token";

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A datastore location that can be opened, closed and opened again (for restart tests).
pub struct Place {
    pub kind: Kind,
    pub sqlite_path: PathBuf,
    pub postgres_url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Place {
    pub async fn new(kind: Kind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sqlite_path = dir.path().join("state.db");
        let postgres_url = match kind {
            Kind::Postgres => fresh_postgres_db().await,
            Kind::Sqlite => String::new(),
        };
        Self {
            kind,
            sqlite_path,
            postgres_url,
            _dir: Some(dir),
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        self.open_with_token(Some(TOKEN)).await.expect("open store")
    }

    pub async fn open_with_token(
        &self,
        token: Option<&str>,
    ) -> bosun_control::store::Result<Arc<dyn Store>> {
        Ok(match self.kind {
            Kind::Sqlite => Arc::new(SqliteStore::open(&self.sqlite_path, token).await?.0),
            Kind::Postgres => Arc::new(
                PostgresStore::open(&self.postgres_url, token, PostgresOptions::default())
                    .await?
                    .0,
            ),
        })
    }

    /// The raw bytes of every stored value, straight from the database.
    pub async fn raw_values(&self) -> Vec<Vec<u8>> {
        match self.kind {
            Kind::Sqlite => {
                let mut conn = sqlx::sqlite::SqliteConnection::connect(&format!(
                    "sqlite://{}",
                    self.sqlite_path.display()
                ))
                .await
                .unwrap();
                let mut v: Vec<Vec<u8>> = sqlx::query_scalar("SELECT value FROM objects")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                let e: Vec<Vec<u8>> = sqlx::query_scalar("SELECT value FROM events")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                v.extend(e);
                v
            }
            Kind::Postgres => {
                let mut conn = PgConnection::connect(&self.postgres_url).await.unwrap();
                let mut v: Vec<Vec<u8>> = sqlx::query_scalar("SELECT value FROM objects")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                let e: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT value FROM events UNION ALL \
                     SELECT prev_value FROM events WHERE prev_value IS NOT NULL",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                v.extend(e);
                v
            }
        }
    }
}
