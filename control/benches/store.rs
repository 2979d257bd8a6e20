//! Store benchmark: create throughput and write→watch latency on SQLite and PostgreSQL, beside
//! pgbench's single-row insert rate measured on the same PostgreSQL in the same run.
//!
//! Run: `cargo bench -p bosun-control --bench store` (starts its own PostgreSQL through
//! scripts/postgres.sh; set BOSUN_BENCH_SECONDS to change the length of each phase).
//! Prints a Markdown table for docs/benchmarks.md.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_control::store::{Key, PostgresOptions, PostgresStore, SqliteStore, Store, WatchRequest};
use futures::StreamExt;
use serde_json::json;

const CLIENTS: usize = 8;
/// pgbench/store rounds for the throughput ratio.
const ROUNDS: usize = 3;
/// Roughly the size of a small ConfigMap.
const PAYLOAD: usize = 200;

fn seconds() -> u64 {
    std::env::var("BOSUN_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

fn pg_bin(name: &str) -> String {
    let dir = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed")
        .next()
        .unwrap()
        .unwrap()
        .path();
    dir.join("bin").join(name).to_string_lossy().into_owned()
}

/// pgbench -c 8 -j 2 running a single-row insert, transactions per second.
fn pgbench(url: &str, dir: &std::path::Path) -> f64 {
    let psql = Command::new(pg_bin("psql"))
        .args([url, "-q", "-c"])
        .arg("CREATE TABLE IF NOT EXISTS bench_rows (id BIGSERIAL PRIMARY KEY, payload TEXT)")
        .status()
        .unwrap();
    assert!(psql.success());
    let script = dir.join("insert.sql");
    std::fs::write(
        &script,
        format!("INSERT INTO bench_rows (payload) VALUES (repeat('x', {PAYLOAD}));\n"),
    )
    .unwrap();
    let out = Command::new(pg_bin("pgbench"))
        .args([
            "-n",
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            &seconds().to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("tps in pgbench output")
}

/// Objects created per second by CLIENTS concurrent clients.
async fn create_throughput(store: Arc<dyn Store>, prefix: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let store = store.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = Key::new("configmaps", "bench", format!("{prefix}-{c}-{n}"));
                let value =
                    json!({"metadata": {"name": key.name}, "data": {"v": "x".repeat(PAYLOAD)}});
                store.create(&key, value).await.expect("create");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// p50 and p99 (ms) from a write being issued to each of `watchers` watchers receiving it,
/// with a writer at `rate` writes/s.
async fn watch_latency(store: Arc<dyn Store>, watchers: usize, rate: u64) -> (f64, f64) {
    let base = Instant::now();
    let start = store.revisions().await.unwrap().current;
    let writes = rate * seconds().min(5);
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut stream = store
            .watch(WatchRequest {
                resource: "pods".into(),
                after: start,
                ..Default::default()
            })
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(writes as usize);
            while latencies.len() < writes as usize {
                let event = stream.next().await.unwrap().unwrap();
                let sent: u64 = event.object.value["data"]["sent"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                latencies.push(base.elapsed().as_nanos() as u64 - sent);
            }
            latencies
        }));
    }
    // Let every watcher finish its start-up read of the log before the writes begin: this
    // measures steady-state delivery, not a thundering herd of new watchers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    for n in 0..writes {
        ticker.tick().await;
        let key = Key::new("pods", "bench", format!("w{watchers}-{n}"));
        let sent = base.elapsed().as_nanos() as u64;
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create(
                    &key,
                    json!({"metadata": {"name": key.name}, "data": {"sent": sent.to_string()}}),
                )
                .await
                .expect("create");
        });
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1e6;
    (pct(0.50), pct(0.99))
}

/// Latency first, on a quiet store: after a throughput phase, SQLite's WAL checkpoint (and
/// Postgres's) would land inside the latency phase and measure the previous phase.
async fn bench_latency(name: &str, store: Arc<dyn Store>, rows: &mut Vec<String>) {
    for watchers in [100, 1000] {
        let (p50, p99) = watch_latency(store.clone(), watchers, 100).await;
        rows.push(format!(
            "| {name} | write→watch latency, {watchers} watchers, 100 writes/s | p50 {p50:.2} ms, p99 {p99:.2} ms | |"
        ));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The statements that cost the server most during the run (BOSUN_BENCH_STATS=1).
fn print_statement_stats(url: &str) {
    let out = Command::new(pg_bin("psql"))
        .args([url, "-c"])
        .arg(
            "SELECT calls, round(total_exec_time::numeric, 1) AS ms, rows, left(query, 70) AS query \
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10",
        )
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = bosun_testkit::postgres::Private::start();
    let url = pg.url.clone();
    let _ = Command::new(pg_bin("psql"))
        .args([
            url.as_str(),
            "-q",
            "-c",
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        ])
        .output();

    let mut rows = vec![
        "| backend | measure | result | beside baseline |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    runtime.block_on(async {
        let pg: Arc<dyn Store> = Arc::new(
            PostgresStore::open(&url, Some("bench"), PostgresOptions::default()).await.unwrap().0,
        );
        let sqlite: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("state.db"), Some("bench"))
                .await
                .unwrap()
                .0,
        );
        // Both latency phases before any throughput phase: the flushing that follows a
        // throughput phase (checkpoints) shares the disk and would land in the next phase.
        bench_latency("PostgreSQL", pg.clone(), &mut rows).await;
        bench_latency("SQLite", sqlite.clone(), &mut rows).await;
        // pgbench and the store take turns, so that both see the same machine (it is shared
        // and noisy); the ratio reported is the median of the rounds' ratios.
        let (mut tps, mut creates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let t = pgbench(&url, dir.path());
            let c = create_throughput(pg.clone(), &format!("r{round}")).await;
            eprintln!("round {round}: pgbench {t:.0} tps, store {c:.0} objects/s");
            tps.push(t);
            creates.push(c);
            ratios.push(c / t);
        }
        rows.push(format!(
            "| PostgreSQL | pgbench -c 8 -j 2, single-row insert ({PAYLOAD} B), median of {ROUNDS} | {:.0} tps | baseline |",
            median(tps)
        ));
        rows.push(format!(
            "| PostgreSQL | store create, {CLIENTS} clients, median of {ROUNDS} | {:.0} objects/s | {:.0}% of pgbench (median ratio) |",
            median(creates),
            100.0 * median(ratios)
        ));
        // The same creates while 1000 watches on another resource stay open (as the node
        // agents' pod watches do while controllers write other kinds): routing by resource
        // means the creates wake none of them.
        let mut idle = Vec::new();
        for _ in 0..1000 {
            idle.push(
                pg.watch(WatchRequest {
                    resource: "pods".into(),
                    after: pg.revisions().await.unwrap().current,
                    ..Default::default()
                })
                .await
                .unwrap(),
            );
        }
        let with_watches = create_throughput(pg.clone(), "idle").await;
        drop(idle);
        let without = create_throughput(pg.clone(), "alone").await;
        eprintln!("with 1000 idle watches {with_watches:.0} objects/s, without {without:.0}");
        rows.push(format!(
            "| PostgreSQL | store create, {CLIENTS} clients, 1000 watches open on pods | {with_watches:.0} objects/s | {:.0}% of the same without them ({without:.0}/s) |",
            100.0 * with_watches / without
        ));
        if std::env::var_os("BOSUN_BENCH_STATS").is_some() {
            print_statement_stats(&url);
        }
        let c = create_throughput(sqlite, "sqlite").await;
        rows.push(format!("| SQLite | store create, {CLIENTS} clients | {c:.0} objects/s | |"));
    });
    drop(pg);
    println!("\n{}", rows.join("\n"));
}
