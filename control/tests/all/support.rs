//! Shared helpers: fresh databases, stores on either backend.

use std::path::PathBuf;
use std::sync::Arc;

use bosun_control::store::{PostgresOptions, PostgresStore, SqliteStore, Store};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The admin URL of the test PostgreSQL. Tests that need it fail (they do not skip) without it.
pub fn postgres_admin_url() -> String {
    std::env::var("BOSUN_TEST_POSTGRES_URL").expect(
        "BOSUN_TEST_POSTGRES_URL is not set: run the suite through scripts/test.sh, which starts \
         a throwaway PostgreSQL",
    )
}

/// A new, empty database on the test PostgreSQL; returns its URL.
pub async fn fresh_postgres_db() -> String {
    let admin = postgres_admin_url();
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("connect to test PostgreSQL");
    let name = format!("bosun_t_{:016x}", rand_u64());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin.rsplit_once('/').expect("URL with a database").0;
    format!("{base}/{name}")
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
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
