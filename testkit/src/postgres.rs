//! PostgreSQL for tests and benchmarks: a fresh database on the suite's server
//! (`BOSUN_TEST_POSTGRES_URL`, started by scripts/test.sh), or a server of one's own
//! ([`Private`]) that a test can crash.

use std::process::Command;

use sqlx::Connection;

/// scripts/postgres.sh: start, stop and crash a throwaway cluster.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres.sh");

/// The admin URL of the suite's PostgreSQL. Tests that need it fail (they do not skip)
/// without it.
pub fn admin_url() -> String {
    std::env::var("BOSUN_TEST_POSTGRES_URL").expect(
        "BOSUN_TEST_POSTGRES_URL is not set: run the suite through scripts/test.sh, which starts \
         a throwaway PostgreSQL",
    )
}

/// A new, empty database on the suite's PostgreSQL; returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_url();
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    let name = format!("bosun_t_{}_{}", std::process::id(), crate::unique());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a database");
    let base = admin.rsplit_once('/').expect("a URL with a database").0;
    format!("{base}/{name}")
}

/// A PostgreSQL server of one's own on a free loopback port (so that a test can crash it, or
/// a benchmark have it alone), stopped when dropped.
pub struct Private {
    pub url: String,
    dir: tempfile::TempDir,
    port: u16,
}

impl Private {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The postgres user must reach its data directory inside.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut pg = Self {
            url: String::new(),
            dir,
            port: crate::free_port(),
        };
        pg.url = pg.restart();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("pg").to_str().unwrap().to_string()
    }

    /// Starts it (again, after a crash); returns its URL.
    pub fn restart(&self) -> String {
        let out = Command::new(SCRIPT)
            .args(["start", &self.data(), &self.port.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `pg_ctl stop -m immediate`: a crash, as far as durability is concerned.
    pub fn crash(&self) {
        let status = Command::new(SCRIPT)
            .args(["crash", &self.data()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).args(["stop", &self.data()]).status();
    }
}
