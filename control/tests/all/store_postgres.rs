//! PostgreSQL-only properties: revisions in commit order across several stores (as several API
//! servers would have), push-based watch that costs nothing while idle, durability across a
//! database crash.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bosun_control::store::{Key, ListRequest, PostgresOptions, PostgresStore, Store, WatchRequest};
use futures::StreamExt;
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::support::{TOKEN, fresh_postgres_db, rand_u64};

/// What the watchers of one ordering run saw that they should not have.
#[derive(Debug, Default)]
struct Violations {
    /// A watcher received a revision not greater than the one before it.
    out_of_order: usize,
    /// Acknowledged revisions a watcher never received.
    missing: usize,
    /// Revisions a watcher received twice.
    duplicated: usize,
}

/// Many writers on `stores` stores (each its own connection pool, as separate API servers)
/// with commit delays injected after revision assignment; watchers on every store.
async fn ordering_run(unordered: bool) -> Violations {
    let url = fresh_postgres_db().await;
    let delay: Arc<dyn Fn() -> Duration + Send + Sync> =
        Arc::new(|| Duration::from_micros(rand_u64() % 3000));
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..4 {
        let options = PostgresOptions {
            max_connections: 8,
            commit_delay: Some(delay.clone()),
            unordered_revisions: unordered,
        };
        stores.push(Arc::new(
            PostgresStore::open(&url, Some(TOKEN), options)
                .await
                .unwrap()
                .0,
        ));
    }
    let start = stores[0].revisions().await.unwrap().current;

    let mut watchers = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        for _ in 0..2 {
            let mut stream = store
                .watch(WatchRequest {
                    resource: "configmaps".into(),
                    after: start,
                    ..Default::default()
                })
                .await
                .unwrap();
            watchers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                // Idle for a second after the last event: the run is over.
                while let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_secs(3), stream.next()).await
                {
                    seen.push(event.expect("watch error").revision);
                }
                (i, seen)
            }));
        }
    }

    // 4 stores × 6 writers × 40 writes, each writer on its own keys, each write acknowledged.
    let mut writers = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for w in 0..6 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..40 {
                    let key = Key::new("configmaps", "default", format!("s{s}-w{w}-{}", n % 5));
                    let value =
                        json!({"metadata": {"name": key.name}, "data": {"n": n.to_string()}});
                    let object = if n < 5 {
                        store.create(&key, value).await
                    } else {
                        store.update(&key, value, None).await
                    };
                    acked.push(object.expect("write").revision);
                }
                acked
            }));
        }
    }
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert_eq!(
        acked.len(),
        4 * 6 * 40,
        "every acknowledged write has its own revision"
    );

    let mut violations = Violations::default();
    for w in watchers {
        let (_, seen) = w.await.unwrap();
        violations.out_of_order += seen.windows(2).filter(|p| p[1] <= p[0]).count();
        let unique: BTreeSet<i64> = seen.iter().copied().collect();
        violations.duplicated += seen.len() - unique.len();
        violations.missing += acked.difference(&unique).count();
    }

    if !unordered {
        // The final state equals a fresh list: every key holds its last acknowledged write.
        let list = stores[1]
            .list(&ListRequest {
                resource: "configmaps".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(list.items.len(), 4 * 6 * 5);
        for item in list.items {
            let n: i64 = item.value["data"]["n"].as_str().unwrap().parse().unwrap();
            assert!(n >= 35, "{} holds write {n}, not its last", item.key);
        }
    }
    violations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_revision_once_in_commit_order_across_servers() {
    let v = ordering_run(false).await;
    assert_eq!(
        (v.out_of_order, v.missing, v.duplicated),
        (0, 0, 0),
        "violations: {v:?}"
    );
}

/// The same run with revisions from a plain sequence (BIGSERIAL-like): transactions then commit
/// out of revision order, and the run above must catch it. This keeps the ordering test honest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ordering_test_catches_a_plain_sequence() {
    let v = ordering_run(true).await;
    assert!(
        v.out_of_order + v.missing + v.duplicated > 0,
        "a sequence-allocated revision went undetected: {v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_server_reaches_watchers_on_another() {
    let url = fresh_postgres_db().await;
    let a = PostgresStore::open(&url, Some(TOKEN), PostgresOptions::default())
        .await
        .unwrap()
        .0;
    let b = PostgresStore::open(&url, Some(TOKEN), PostgresOptions::default())
        .await
        .unwrap()
        .0;
    let start = b.revisions().await.unwrap().current;
    let mut stream = b
        .watch(WatchRequest {
            resource: "pods".into(),
            after: start,
            ..Default::default()
        })
        .await
        .unwrap();
    let written = a
        .create(
            &Key::new("pods", "default", "x"),
            json!({"metadata": {"name": "x"}}),
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("pushed within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(event.revision, written.revision);
}

async fn statements_run(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(calls), 0)::bigint FROM pg_stat_statements s \
         JOIN pg_database d ON d.oid = s.dbid \
         WHERE d.datname = current_database() AND s.query NOT ILIKE '%pg_stat_statements%'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_runs_no_queries() {
    let url = fresh_postgres_db().await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut conn)
        .await
        .unwrap();
    let store = PostgresStore::open(&url, Some(TOKEN), PostgresOptions::default())
        .await
        .unwrap()
        .0;
    let start = store.revisions().await.unwrap().current;
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(
            store
                .watch(WatchRequest {
                    resource: "pods".into(),
                    after: start,
                    ..Default::default()
                })
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = statements_run(&mut conn).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = statements_run(&mut conn).await;
    assert_eq!(after, before, "statements ran while every watch was idle");

    // The counter does count the store's statements: one write wakes the watchers.
    store
        .create(
            &Key::new("pods", "default", "p"),
            json!({"metadata": {"name": "p"}}),
        )
        .await
        .unwrap();
    for stream in &mut streams {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    assert!(statements_run(&mut conn).await > after);
}

/// Stops a private PostgreSQL with `pg_ctl stop -m immediate` in the middle of a stream of
/// writes; after it restarts, every write that was acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_database_crash() {
    let pg = bosun_testkit::postgres::Private::start();
    let url = pg.url.clone();
    let store = Arc::new(
        PostgresStore::open(&url, Some(TOKEN), PostgresOptions::default())
            .await
            .unwrap()
            .0,
    );

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..100_000 {
                let key = Key::new("configmaps", "default", format!("c{n}"));
                match store
                    .create(&key, json!({"data": {"n": n.to_string()}}))
                    .await
                {
                    Ok(_) => acked.push(key),
                    Err(error) => {
                        assert!(error.is_unavailable(), "unexpected error {error}");
                        break;
                    }
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.crash();
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 10,
        "the stream was running when the database died"
    );
    drop(store);

    pg.restart();
    let store = PostgresStore::open(&url, Some(TOKEN), PostgresOptions::default())
        .await
        .unwrap()
        .0;
    for key in &acked {
        store
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("acknowledged {key} lost: {e}"));
    }
}
