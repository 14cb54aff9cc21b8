//! Backend throughput on SQLite (file) and PostgreSQL: `get` and `set` of 5 KB values from 16
//! concurrent tasks over 1,000 hot keys, through the webcache `Backend` and, as the peer, the
//! same statements issued with plain sqlx on a pool of the same size.
//!
//! `cargo bench -p webcache-sql --bench sql [-- SECONDS]` (default 3 s per measurement). Starts
//! its own PostgreSQL cluster on a free loopback port and an SQLite file in a temporary
//! directory; prints ops/s per backend and the ratio to plain sqlx.
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use webcache_core::backend::BackendFactory as _;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use webcache_core::backend::Backend;
use webcache_core::bytes::Bytes;
use webcache_core::config::CacheConfig;
use webcache_core::Expiry;
use webcache_testkit::bench::{alternating_rounds, median, throughput};
use webcache_testkit::servers::postgres::Postgres;
use webcache_testkit::servers::temp_dir;

const TASKS: usize = 16;
const KEYS: usize = 1_000;
const VALUE_BYTES: usize = 5 * 1024;
const ROUNDS: usize = 5;

type Op = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Runs `op` from [`TASKS`] tasks for `seconds`; returns operations per second. Each task walks
/// the keys in steps of 13 from a start of its own.
async fn measure(op: Op, seconds: f64) -> f64 {
    throughput(TASKS, Duration::from_secs_f64(seconds), move |i| {
        op((i as usize).wrapping_mul(13) % KEYS)
    })
    .await
}

fn key(i: usize) -> String {
    format!("bench:1:key{i}")
}

fn value() -> Bytes {
    Bytes::from(
        (0..VALUE_BYTES)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

async fn webcache_ops(url: &str) -> (Op, Op) {
    let mut spec = CacheConfig::from_url("bench", url).unwrap().backend;
    webcache_sql::create_cache_table(&mut spec.clone())
        .await
        .unwrap();
    let backend: Arc<dyn Backend> = webcache_sql::SqlFactory.build(&mut spec).await.unwrap();
    let v = value();
    for i in 0..KEYS {
        backend
            .set(&key(i), v.clone(), Expiry::After(Duration::from_secs(3600)))
            .await
            .unwrap();
    }
    let b = backend.clone();
    let get: Op = Arc::new(move |i| {
        let b = b.clone();
        Box::pin(async move {
            assert!(b.get(&key(i)).await.unwrap().is_some());
        })
    });
    let b = backend;
    let set: Op = Arc::new(move |i| {
        let (b, v) = (b.clone(), v.clone());
        Box::pin(async move {
            b.set(&key(i), v, Expiry::After(Duration::from_secs(3600)))
                .await
                .unwrap();
        })
    });
    (get, set)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const GET: &str = "SELECT value, expires FROM webcache_cache WHERE cache_key = $1";
const SET: &str = "INSERT INTO webcache_cache (cache_key, value, expires) VALUES ($1, $2, $3) \
                   ON CONFLICT (cache_key) DO UPDATE SET value = excluded.value, expires = excluded.expires";

/// The peer: plain sqlx on a pool of its own, the same statements, no webcache in between.
macro_rules! plain_ops {
    ($pool:expr) => {{
        let pool = $pool;
        let p = pool.clone();
        let get: Op = Arc::new(move |i| {
            let p = p.clone();
            Box::pin(async move {
                let row: Option<(Vec<u8>, Option<i64>)> = sqlx::query_as(GET)
                    .bind(key(i))
                    .fetch_optional(&p)
                    .await
                    .unwrap();
                assert!(row.is_some_and(|(_, e)| e.is_none_or(|e| e > now_ms())));
            })
        });
        let v = value();
        let set: Op = Arc::new(move |i| {
            let (p, v) = (pool.clone(), v.clone());
            Box::pin(async move {
                sqlx::query(SET)
                    .bind(key(i))
                    .bind(v.as_ref())
                    .bind(now_ms() + 3_600_000)
                    .execute(&p)
                    .await
                    .unwrap();
            })
        });
        (get, set)
    }};
}

#[tokio::main]
async fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    let dir = temp_dir("sqlite-bench");
    let sqlite_path = dir.join("cache.db");
    let sqlite_url = format!("sqlite://{}", sqlite_path.display());
    let server = tokio::task::spawn_blocking(Postgres::shared).await.unwrap();
    let pg_url = server.url();

    println!(
        "{TASKS} tasks, {KEYS} keys, {VALUE_BYTES}-byte values, {seconds} s per measurement\n"
    );
    println!("| backend | pool | op | webcache ops/s | plain sqlx ops/s | webcache / plain |");
    println!("|---|---:|---|---:|---:|---:|");
    for (name, url, pools) in [
        ("sqlite (file, WAL)", sqlite_url.as_str(), [4u32, 8]),
        ("postgres", pg_url.as_str(), [10, 16]),
    ] {
        for pool in pools {
            let (wc_get, wc_set) = webcache_ops(&format!("{url}?pool_size={pool}")).await;
            let (plain_get, plain_set) = if url.starts_with("sqlite") {
                let options = SqliteConnectOptions::new()
                    .filename(&sqlite_path)
                    .synchronous(SqliteSynchronous::Normal);
                plain_ops!(SqlitePoolOptions::new()
                    .max_connections(pool)
                    .connect_with(options)
                    .await
                    .unwrap())
            } else {
                plain_ops!(PgPoolOptions::new()
                    .max_connections(pool)
                    .connect(url)
                    .await
                    .unwrap())
            };
            for (op, wc, plain) in [("get", wc_get, plain_get), ("set", wc_set, plain_set)] {
                // Alternate the two in short rounds so that drift (checkpoints, WAL growth,
                // other load on the machine) hits both alike; report the medians.
                let results = alternating_rounds(ROUNDS, 2, |c| {
                    let op = if c == 0 { wc.clone() } else { plain.clone() };
                    measure(op, seconds / ROUNDS as f64)
                })
                .await;
                let (ours, theirs) = (median(&results[0]), median(&results[1]));
                println!(
                    "| {name} | {pool} | {op} | {ours:.0} | {theirs:.0} | {:.2} |",
                    ours / theirs
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
