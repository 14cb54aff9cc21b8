//! Database-specific behaviour, each test run against an SQLite file and a real PostgreSQL
//! cluster: createcachetable, table names, culling, expiry, two processes racing, the integer
//! form `incr` reads, key ranges, and failures.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use webcache_core::backend::BackendFactory as _;

use futures::StreamExt;
use webcache_core::backend::entry::parse_integer;
use webcache_core::backend::{Backend, BackendStats};
use webcache_core::bytes::Bytes;
use webcache_core::config::ConfigError;
use webcache_core::{Error, Expiry, Ttl};
use webcache_sql::{SqlBackend, SqlConfig};

use common::{backend, spec, unique_table, with_query};

const MINUTE: Expiry = Expiry::After(Duration::from_secs(60));

fn after_ms(ms: u64) -> Expiry {
    Expiry::After(Duration::from_millis(ms))
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// A cache on a fresh table of its own (created), with extra URL options.
async fn own_table(base: &str, options: &str) -> (SqlBackend, String) {
    let table = unique_table("t");
    let url = with_query(base, &format!("table={table}&create_table=true&{options}"));
    let config = SqlConfig::from_spec(&mut spec(url.trim_end_matches('&'))).unwrap();
    (SqlBackend::connect(config).await.unwrap(), url)
}

/// An error with its causes, as an error reporter prints it.
fn report(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

fn extra(stats: &BackendStats, name: &str) -> u64 {
    stats
        .extra
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no `{name}` in {stats:?}"))
        .1
        .parse()
        .unwrap()
}

async fn rows(cache: &dyn Backend) -> u64 {
    extra(&cache.stats().await.unwrap(), "rows")
}

async fn create_cache_table_is_idempotent_with_a_matching_dry_run(base: &str) {
    let table = unique_table("created");
    let url = with_query(base, &format!("table={table}"));

    let missing = webcache_sql::SqlFactory
        .build(&mut spec(&url))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ConfigError::Connect { .. }),
        "{missing:?}"
    );
    let text = report(&missing);
    assert!(
        text.contains(&format!("`{table}` does not exist")) && text.contains("createcachetable"),
        "a missing table names the command that creates it: {text}"
    );

    let dry_run = webcache_sql::create_cache_table_sql(&mut spec(&url)).unwrap();
    assert_eq!(dry_run.len(), 2, "{dry_run:?}");
    assert!(dry_run[0].starts_with(&format!("CREATE TABLE IF NOT EXISTS \"{table}\"")));
    assert!(dry_run[1].starts_with(&format!(
        "CREATE INDEX IF NOT EXISTS \"{table}_expires_idx\""
    )));
    assert!(dry_run[1].ends_with("(expires)"));

    assert_eq!(
        webcache_sql::create_cache_table(&mut spec(&url))
            .await
            .unwrap(),
        dry_run
    );
    let cache = backend(&url).await;
    cache.set("kept", bytes("v"), MINUTE).await.unwrap();
    // Again, and from several processes at once: no error, and the data stays.
    let again: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { webcache_sql::create_cache_table(&mut spec(&url)).await })
        })
        .collect();
    for task in again {
        assert_eq!(task.await.unwrap().unwrap(), dry_run);
    }
    assert_eq!(cache.get("kept").await.unwrap(), Some(bytes("v")));
}

async fn bad_table_names_are_refused(base: &str) {
    for bad in [
        "cache-table",
        "x;DROP TABLE webcache_cache",
        "9lives",
        "caché",
        "",
    ] {
        let url = with_query(base, &format!("table={bad}"));
        for err in [
            webcache_sql::SqlFactory
                .build(&mut spec(&url))
                .await
                .unwrap_err(),
            webcache_sql::create_cache_table_sql(&mut spec(&url)).unwrap_err(),
        ] {
            let ConfigError::Invalid {
                ref field,
                ref message,
                ..
            } = err
            else {
                panic!("{bad:?}: {err:?}");
            };
            assert_eq!(field, "table");
            assert!(
                message.contains("letters, digits and underscores"),
                "{message}"
            );
        }
    }
}

async fn full_tables_cull_the_soonest_expiring_rows(base: &str) {
    let (cache, _) = own_table(base, "max_entries=10&cull_frequency=2&cull_interval=0").await;
    cache
        .set("k0", bytes("forever"), Expiry::Never)
        .await
        .unwrap();
    for i in 1..10u64 {
        cache
            .set(
                &format!("k{i}"),
                bytes("v"),
                Expiry::After(Duration::from_secs(100 + i)),
            )
            .await
            .unwrap();
    }
    // As Django: a write into a table of `max_entries` rows does not cull, so it holds 11.
    cache
        .set("soon", bytes("v"), Expiry::After(Duration::from_secs(50)))
        .await
        .unwrap();
    assert_eq!(rows(&cache).await, 11);
    // The next write culls 11 / 2 = 5 rows, soonest expiry first, never-expiring rows last,
    // and never the row being written even though it expires soonest.
    cache
        .set("soon", bytes("w"), Expiry::After(Duration::from_secs(50)))
        .await
        .unwrap();
    assert_eq!(rows(&cache).await, 6);
    for i in 1..=5 {
        assert_eq!(
            cache.get(&format!("k{i}")).await.unwrap(),
            None,
            "k{i} was culled"
        );
    }
    for key in ["k0", "k6", "k7", "k8", "k9", "soon"] {
        assert!(cache.has_key(key).await.unwrap(), "{key} survives the cull");
    }

    // cull_frequency = 0 empties the table (all but the row being written) when it is over.
    let (cache, _) = own_table(base, "max_entries=5&cull_frequency=0&cull_interval=0").await;
    for i in 0..7 {
        cache
            .set(&format!("k{i}"), bytes("v"), MINUTE)
            .await
            .unwrap();
    }
    assert_eq!(rows(&cache).await, 1);
    assert!(cache.has_key("k6").await.unwrap());

    // Expired rows go first; when that is enough, nothing live is culled.
    let (cache, _) = own_table(base, "max_entries=10&cull_interval=0").await;
    for i in 0..5 {
        cache
            .set(&format!("short{i}"), bytes("v"), after_ms(100))
            .await
            .unwrap();
    }
    for i in 0..6 {
        cache
            .set(&format!("long{i}"), bytes("v"), MINUTE)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    cache.add("new", bytes("v"), MINUTE).await.unwrap();
    assert_eq!(rows(&cache).await, 7);
    for i in 0..6 {
        assert!(cache.has_key(&format!("long{i}")).await.unwrap());
    }

    // A bulk write is bounded too, as by one `set` per key.
    let (cache, _) = own_table(base, "max_entries=20&cull_interval=0").await;
    let entries = (0..50).map(|i| (format!("m{i}"), bytes("v"))).collect();
    cache.set_many(entries, MINUTE).await.unwrap();
    let after = rows(&cache).await;
    assert!(after <= 21 && after > 0, "{after} rows");
}

/// Django's own `test_cull` and the database backend's `test_zero_cull`: 49 sets into
/// `MAX_ENTRIES = 30` leave 29 keys with the default `CULL_FREQUENCY` and 18 with 0.
async fn culling_leaves_what_django_leaves(base: &str) {
    for (options, left) in [
        ("max_entries=30&cull_interval=0", 29),
        ("max_entries=30&cull_frequency=0&cull_interval=0", 18),
    ] {
        let (cache, _) = own_table(base, options).await;
        for i in 1..50 {
            cache
                .set(
                    &format!("cull{i}"),
                    bytes("value"),
                    Expiry::After(Duration::from_secs(1000)),
                )
                .await
                .unwrap();
        }
        let mut count = 0;
        for i in 1..50 {
            count += u32::from(cache.has_key(&format!("cull{i}")).await.unwrap());
        }
        assert_eq!(count, left, "{options}");
    }
}

/// Runs SQL that webcache would never run (foreign tables and rows) on the database of `base`.
async fn execute(base: &str, statements: &[String]) {
    let url = base.split('?').next().unwrap();
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        for statement in statements {
            sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        for statement in statements {
            sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
}

fn is_postgres(base: &str) -> bool {
    base.starts_with("postgres")
}

async fn keys_postgres_cannot_store_are_usage_errors(base: &str) {
    use webcache_core::{Cache, CacheOptions, InvalidKeyPolicy};
    let long = "k".repeat(3000);
    let nul = "a\0b";
    let cache = Cache::new(backend(base).await, CacheOptions::default());
    if !is_postgres(base) {
        // SQLite stores both.
        cache.set(&long, &1, 60).await.unwrap();
        cache.set(nul, &2, 60).await.unwrap();
        assert_eq!(cache.get::<i64>(&long).await.unwrap(), Some(1));
        assert_eq!(cache.get::<i64>(nul).await.unwrap(), Some(2));
        return;
    }
    // PostgreSQL's btree would refuse the row ("index row size ... exceeds btree maximum"):
    // a usage error that says what to change, before the database is asked.
    let err = cache.set(&long, &1, 60).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidKey { .. }) && err.to_string().contains("at most 2000"),
        "{err:?}"
    );
    for err in [
        cache.set(nul, &1, 60).await.unwrap_err(),
        cache.get::<i64>(nul).await.unwrap_err(),
        cache.get_many::<i64, _>(&["ok", nul]).await.unwrap_err(),
        cache.delete(nul).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::InvalidKey { .. }) && err.to_string().contains("NUL"),
            "{err:?}"
        );
    }
    // No stored key has a NUL: a prefix or pattern with one matches nothing, without an error.
    let raw = backend(base).await;
    raw.clear(Some("a\0")).await.unwrap();
    let keys: Vec<_> = raw.scan("a\0*").collect().await;
    assert!(keys.is_empty(), "{keys:?}");
    // Hashing makes a long key storable.
    let hashing = Cache::new(
        backend(base).await,
        CacheOptions::builder()
            .invalid_keys(InvalidKeyPolicy::Hash)
            .build(),
    );
    hashing.set(&long, &7, 60).await.unwrap();
    assert_eq!(hashing.get::<i64>(&long).await.unwrap(), Some(7));
}

async fn tables_that_are_not_ours_are_refused(base: &str) {
    let django = unique_table("django");
    let app = unique_table("app");
    let expires = if is_postgres(base) {
        "timestamp with time zone"
    } else {
        "datetime"
    };
    execute(
        base,
        &[
            // What Django's `createcachetable` makes.
            format!(
                "CREATE TABLE \"{django}\" (\"cache_key\" varchar(255) NOT NULL PRIMARY KEY, \
                 \"value\" text NOT NULL, \"expires\" {expires} NOT NULL)"
            ),
            format!("CREATE INDEX \"{django}_expires\" ON \"{django}\" (\"expires\")"),
            format!("CREATE TABLE \"{app}\" (id integer PRIMARY KEY, name text)"),
        ],
    )
    .await;
    for (table, needle) in [(&django, "Django's `createcachetable`"), (&app, "are (id ")] {
        let url = with_query(base, &format!("table={table}"));
        let at_start = webcache_sql::SqlFactory
            .build(&mut spec(&url))
            .await
            .unwrap_err();
        let created = webcache_sql::create_cache_table(&mut spec(&url))
            .await
            .unwrap_err();
        for err in [at_start, created] {
            let text = report(&err);
            assert!(
                text.contains(&format!("the table `{table}`"))
                    && text.contains(needle)
                    && text.contains("?table="),
                "{text}"
            );
        }
    }
}

async fn a_damaged_sqlite_file_says_what_to_do() {
    let dir = webcache_testkit::servers::temp_dir("sqlite-damaged");
    let path = dir.join("cache.db");
    let url = format!(
        "sqlite://{}?create_table=true&cull_interval=0",
        path.display()
    );
    let cache = backend(&url).await;
    for i in 0..200 {
        cache
            .set(&format!("k{i}"), Bytes::from(vec![b'x'; 500]), MINUTE)
            .await
            .unwrap();
    }
    cache.close().await.unwrap();
    drop(cache);
    // Every page after the first (the schema) overwritten with garbage.
    let mut raw = std::fs::read(&path).unwrap();
    assert!(raw.len() > 8192, "{} bytes", raw.len());
    for (i, byte) in raw.iter_mut().enumerate().skip(4096) {
        *byte = (i * 37 % 251) as u8;
    }
    std::fs::write(&path, raw).unwrap();
    let text = match webcache_sql::SqlFactory.build(&mut spec(&url)).await {
        Err(err) => report(&err),
        Ok(cache) => report(&cache.get("k1").await.unwrap_err()),
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        text.contains("is damaged") && text.contains("delete the file"),
        "{text}"
    );
}

async fn foreign_rows_read_as_misses_and_incr_says_why(base: &str) {
    let (cache, url) = own_table(base, "cull_interval=0").await;
    let table = url
        .split("table=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    cache.set("ours", bytes("v"), MINUTE).await.unwrap();
    if is_postgres(base) {
        // The column types (checked at start) leave no room for foreign types.
        return;
    }
    execute(
        base,
        &[
            format!("INSERT INTO \"{table}\" VALUES ('real-value', 2.5, 'next week')"),
            format!("INSERT INTO \"{table}\" VALUES ('text-expiry', x'31', 'next week')"),
            format!("INSERT INTO \"{table}\" VALUES ('real-expiry', x'31', 1.5)"),
        ],
    )
    .await;
    for key in ["real-value", "text-expiry", "real-expiry"] {
        assert_eq!(cache.get(key).await.unwrap(), None, "{key}");
        assert!(!cache.has_key(key).await.unwrap(), "{key}");
        assert_eq!(cache.ttl(key).await.unwrap(), Ttl::Missing, "{key}");
    }
    let many = cache
        .get_many(&["real-value".into(), "ours".into(), "text-expiry".into()])
        .await
        .unwrap();
    assert_eq!(many, vec![None, Some(bytes("v")), None]);
    let err = cache.incr("real-value", 1).await.unwrap_err();
    assert!(
        err.to_string().contains("not written by webcache")
            && err.to_string().contains("delete the key"),
        "{err}"
    );
    assert!(!cache.delete("text-expiry").await.unwrap());
    assert_eq!(
        cache
            .delete_many(&["real-expiry".into(), "ours".into()])
            .await
            .unwrap(),
        1
    );
}

async fn expired_rows_are_never_returned_and_are_deleted(base: &str) {
    let (cache, _) = own_table(base, "cull_interval=0").await;
    for key in ["a", "b", "c", "d"] {
        cache.set(key, bytes("1"), after_ms(100)).await.unwrap();
    }
    cache.set("live", bytes("v"), MINUTE).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = cache.stats().await.unwrap();
    assert_eq!((stats.entries, extra(&stats, "rows")), (Some(1), 5));

    assert_eq!(cache.get("a").await.unwrap(), None);
    assert_eq!(
        rows(&cache).await,
        4,
        "get deletes the expired row it finds"
    );
    assert_eq!(
        cache.get_many(&["b".into(), "live".into()]).await.unwrap(),
        [None, Some(bytes("v"))]
    );
    assert_eq!(
        rows(&cache).await,
        3,
        "get_many deletes the expired rows it finds"
    );
    assert!(!cache.has_key("c").await.unwrap());
    assert_eq!(cache.ttl("c").await.unwrap(), Ttl::Missing);
    assert!(!cache.touch("c", MINUTE).await.unwrap());
    assert!(matches!(
        cache.incr("c", 1).await,
        Err(Error::KeyNotFound { .. })
    ));
    let listed: Vec<String> = cache.scan("*").map(|k| k.unwrap()).collect().await;
    assert_eq!(listed, ["live"]);
    assert!(
        !cache.delete("c").await.unwrap(),
        "an expired row was not there to delete"
    );
    assert_eq!(cache.delete_many(&["d".into()]).await.unwrap(), 0);
    assert_eq!(rows(&cache).await, 1);

    cache.set("e", bytes("1"), after_ms(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        cache.add("e", bytes("2"), MINUTE).await.unwrap(),
        "add replaces an expired row"
    );
    assert_eq!(cache.get("e").await.unwrap(), Some(bytes("2")));
    cache.set("f", bytes("1"), after_ms(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cache.delete_expired().await.unwrap(), 1);
}

async fn the_background_cull_deletes_expired_rows(base: &str) {
    let (cache, _) = own_table(base, "cull_interval=0.1").await;
    for key in ["a", "b", "c"] {
        cache.set(key, bytes("v"), after_ms(50)).await.unwrap();
    }
    cache.set("live", bytes("v"), MINUTE).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rows(&cache).await > 1 {
        assert!(
            Instant::now() < deadline,
            "expired rows were not culled within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cache.has_key("live").await.unwrap());
}

/// Two caches on one table with pools of their own: two processes, as far as the database can
/// tell.
async fn two_processes(base: &str) -> [Arc<dyn Backend>; 2] {
    let (_, url) = own_table(base, "").await;
    [backend(&url).await, backend(&url).await]
}

async fn two_processes_racing_on_add_have_one_winner(base: &str) {
    let [a, b] = two_processes(base).await;
    webcache_testkit::races::add_race(a, b, "race", 10).await;
}

async fn two_processes_racing_on_incr_lose_no_update(base: &str) {
    let [a, b] = two_processes(base).await;
    webcache_testkit::races::incr_race(a, b, "n", 40).await;
}

async fn incr_reads_integers_exactly_as_the_entry_format(base: &str) {
    let (cache, _) = own_table(base, "").await;
    let cases: &[(&[u8], i64)] = &[
        (b"007", 1),
        (b"-0", 5),
        (b"0000000000000000001", 1),
        (b"9223372036854775806", 1),
        (b"-9223372036854775808", 1),
        (b"9223372036854775807", 1),
        (b"-9223372036854775808", -1),
        (b"9223372036854775807", i64::MIN),
        (b"9999999999999999999", 1),
        (b"00000000000000000001", 1),
        (b"1\0", 1),
        (b"12a", 1),
        (b"+5", 1),
        (b"-", 1),
        (b"", 1),
        (b" 5", 1),
        (&[0xF5, b'1'], 1),
        (&[b'1', 0xC3, 0xA9], 1),
    ];
    for (i, &(raw, delta)) in cases.iter().enumerate() {
        let key = format!("n{i}");
        cache
            .set(&key, Bytes::copy_from_slice(raw), MINUTE)
            .await
            .unwrap();
        let got = cache.incr(&key, delta).await;
        let stored = cache.get(&key).await.unwrap().unwrap();
        match parse_integer(raw).map(|n| n.checked_add(delta)) {
            Some(Some(sum)) => {
                assert_eq!(got.unwrap(), sum, "{raw:?} + {delta}");
                assert_eq!(
                    stored,
                    Bytes::from(sum.to_string()),
                    "{raw:?} is rewritten canonically"
                );
            }
            Some(None) => {
                assert!(
                    matches!(got, Err(Error::Overflow { .. })),
                    "{raw:?} + {delta}: {got:?}"
                );
                assert_eq!(stored, raw, "an overflowing incr leaves the value alone");
            }
            None => {
                assert!(
                    matches!(got, Err(Error::NotAnInteger { .. })),
                    "{raw:?}: {got:?}"
                );
                assert_eq!(stored, raw);
            }
        }
    }
    // Spot checks that do not lean on parse_integer.
    // Redis's rule on every backend: `007` and `-0` are not integers (only `0` and digits
    // without a leading zero are).
    for raw in ["007", "-0", "-01"] {
        cache.set("x", bytes(raw), MINUTE).await.unwrap();
        assert!(
            matches!(cache.incr("x", 1).await, Err(Error::NotAnInteger { .. })),
            "{raw}"
        );
    }
    cache.set("x", bytes("0"), MINUTE).await.unwrap();
    assert_eq!(cache.incr("x", 1).await.unwrap(), 1);
    cache.set("x", bytes("-10"), MINUTE).await.unwrap();
    assert_eq!(cache.incr("x", 1).await.unwrap(), -9);
    cache.set("y", bytes("12a"), MINUTE).await.unwrap();
    assert!(matches!(
        cache.incr("y", 1).await,
        Err(Error::NotAnInteger { .. })
    ));
}

async fn prefixes_and_patterns_use_byte_order(base: &str) {
    let (cache, _) = own_table(base, "").await;
    let keys = [
        "p:a",
        "p:b",
        "p:\u{10FFFF}x",
        "p;",
        "p",
        "P:a",
        "q",
        "x*y1",
        "xzy1",
        "p_:",
        "p%:",
    ];
    for key in keys {
        cache.set(key, bytes("v"), MINUTE).await.unwrap();
    }
    let mut listed: Vec<String> = cache.scan("p:*").map(|k| k.unwrap()).collect().await;
    listed.sort();
    assert_eq!(listed, ["p:a", "p:b", "p:\u{10FFFF}x"]);
    let star: Vec<String> = cache.scan("x\\*y*").map(|k| k.unwrap()).collect().await;
    assert_eq!(star, ["x*y1"], "an escaped wildcard is a literal character");
    cache.clear(Some("p:")).await.unwrap();
    let mut left: Vec<String> = cache.scan("*").map(|k| k.unwrap()).collect().await;
    left.sort();
    assert_eq!(left, ["P:a", "p", "p%:", "p;", "p_:", "q", "x*y1", "xzy1"]);
    cache.clear(None).await.unwrap();
    assert_eq!(rows(&cache).await, 0);
}

async fn scan_pages_through_large_tables(base: &str) {
    let (cache, _) = own_table(base, "").await;
    let entries: Vec<(String, Bytes)> = (0..1234)
        .map(|i| (format!("k{i:05}"), bytes("v")))
        .collect();
    cache.set_many(entries, MINUTE).await.unwrap();
    cache.set("other", bytes("v"), MINUTE).await.unwrap();
    let listed: HashSet<String> = cache.scan("k*").map(|k| k.unwrap()).collect().await;
    assert_eq!(listed.len(), 1234);
    let tens: Vec<String> = cache.scan("k0001?").map(|k| k.unwrap()).collect().await;
    assert_eq!(tens.len(), 10);
}

async fn batches_handle_duplicates_and_many_keys(base: &str) {
    let (cache, _) = own_table(base, "").await;
    cache
        .set_many(
            vec![
                ("a".into(), bytes("1")),
                ("b".into(), bytes("2")),
                ("a".into(), bytes("3")),
            ],
            MINUTE,
        )
        .await
        .unwrap();
    assert_eq!(
        cache
            .get_many(&["a".into(), "a".into(), "zz".into(), "b".into()])
            .await
            .unwrap(),
        [Some(bytes("3")), Some(bytes("3")), None, Some(bytes("2"))],
        "the last value of a repeated key wins; every slot is answered"
    );
    // More keys than one statement takes.
    let keys: Vec<String> = (0..9000).map(|i| format!("bulk{i}")).collect();
    let entries = keys.iter().map(|k| (k.clone(), bytes(k))).collect();
    cache.set_many(entries, MINUTE).await.unwrap();
    let values = cache.get_many(&keys).await.unwrap();
    assert!(values
        .iter()
        .zip(&keys)
        .all(|(v, k)| v.as_deref() == Some(k.as_bytes())));
    let mut with_missing = keys.clone();
    with_missing.push("missing".into());
    assert_eq!(cache.delete_many(&with_missing).await.unwrap(), 9000);
    assert_eq!(rows(&cache).await, 2);
}

async fn stats_count_live_rows_and_bytes(base: &str) {
    let (cache, _) = own_table(base, "cull_interval=0").await;
    cache.set("ab", bytes("xyz"), MINUTE).await.unwrap();
    cache.set("c", bytes(""), Expiry::Never).await.unwrap();
    cache
        .set("gone", bytes("12345"), after_ms(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = cache.stats().await.unwrap();
    assert_eq!(stats.entries, Some(2));
    assert_eq!(stats.bytes, Some(2 + 3 + 1));
    assert_eq!(extra(&stats, "expired_rows"), 1);
}

macro_rules! against_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::common::sqlite_url().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::common::postgres_url().await).await;
                }
            )*
        }
    };
}

against_both!(
    create_cache_table_is_idempotent_with_a_matching_dry_run,
    bad_table_names_are_refused,
    full_tables_cull_the_soonest_expiring_rows,
    expired_rows_are_never_returned_and_are_deleted,
    the_background_cull_deletes_expired_rows,
    two_processes_racing_on_add_have_one_winner,
    two_processes_racing_on_incr_lose_no_update,
    incr_reads_integers_exactly_as_the_entry_format,
    prefixes_and_patterns_use_byte_order,
    scan_pages_through_large_tables,
    batches_handle_duplicates_and_many_keys,
    stats_count_live_rows_and_bytes,
    culling_leaves_what_django_leaves,
    keys_postgres_cannot_store_are_usage_errors,
    tables_that_are_not_ours_are_refused,
    foreign_rows_read_as_misses_and_incr_says_why,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_column_in_a_language_collation_is_refused() {
    let base = common::postgres_url().await;
    let pool = sqlx::PgPool::connect(base.split('?').next().unwrap())
        .await
        .unwrap();
    // Any collation that does not compare bytes (ICU's or the system's locales).
    let collation: Option<String> = sqlx::query_scalar(
        "SELECT collname::text FROM pg_collation \
         WHERE collname NOT IN ('C', 'POSIX', 'ucs_basic', 'pg_c_utf8', 'default') \
         AND collencoding IN (-1, pg_char_to_encoding('UTF8')) \
         ORDER BY collname = 'und-x-icu' DESC, collname LIMIT 1",
    )
    .fetch_optional(&pool)
    .await
    .unwrap();
    let collation = collation.expect("the test cluster has no collation other than C");
    let table = unique_table("localized");
    execute(
        &base,
        &[format!(
            "CREATE TABLE \"{table}\" (cache_key text COLLATE \"{collation}\" NOT NULL PRIMARY KEY, \
             value bytea NOT NULL, expires bigint)"
        )],
    )
    .await;
    pool.close().await;
    let url = with_query(&base, &format!("table={table}"));
    let text = report(
        &webcache_sql::SqlFactory
            .build(&mut spec(&url))
            .await
            .unwrap_err(),
    );
    assert!(
        text.contains(&format!("uses the collation `{collation}`"))
            && text.contains(&format!(
                "ALTER TABLE \"{table}\" ALTER COLUMN cache_key TYPE text COLLATE \"C\""
            )),
        "{text}"
    );
    // The fix the message gives works.
    execute(
        &base,
        &[format!(
            "ALTER TABLE \"{table}\" ALTER COLUMN cache_key TYPE text COLLATE \"C\""
        )],
    )
    .await;
    let cache = backend(&url).await;
    cache.set("app:1:a", bytes("v"), MINUTE).await.unwrap();
    let keys: Vec<_> = cache.scan("app:1:*").collect().await;
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn a_damaged_sqlite_database_says_what_to_do() {
    a_damaged_sqlite_file_says_what_to_do().await;
}

#[tokio::test]
async fn in_memory_databases_are_private_and_keep_their_data() {
    let a = backend("sqlite::memory:").await;
    let b = backend("sqlite::memory:").await;
    a.set("k", bytes("a"), MINUTE).await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), None);
    // The one connection stays open, so the database outlives idle periods.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.get("k").await.unwrap(), Some(bytes("a")));
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let refused = webcache_testkit::servers::RefusedPort::new();
    let port = refused.port();
    let url = format!("postgres://postgres:secret@127.0.0.1:{port}/postgres?connect_timeout=1");
    let started = Instant::now();
    let err = webcache_sql::SqlFactory
        .build(&mut spec(&url))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let ConfigError::Connect {
        ref source,
        ref url,
        ..
    } = err
    else {
        panic!("{err:?}");
    };
    assert!(source.is_backend_failure(), "{source:?}");
    assert!(
        !url.contains("secret") && !report(&err).contains("secret"),
        "{err}"
    );

    let err = webcache_sql::SqlFactory
        .build(&mut spec("sqlite:///nonexistent-dir/for/sure/cache.db"))
        .await
        .unwrap_err();
    assert!(report(&err).contains("cannot open the database"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_down_gives_typed_errors() {
    let mut server =
        tokio::task::spawn_blocking(webcache_testkit::servers::postgres::Postgres::start)
            .await
            .unwrap();
    let url = with_query(&server.url(), "create_table=true&connect_timeout=1");
    let cache = backend(&url).await;
    cache.set("k", bytes("v"), MINUTE).await.unwrap();
    tokio::task::block_in_place(|| server.stop());
    let err = cache.get("k").await.unwrap_err();
    assert!(err.is_backend_failure(), "{err:?}");
    // On top of it, a degrading Cache turns that into a miss.
    let degrading = webcache_core::Cache::new(
        cache,
        webcache_core::CacheOptions::builder()
            .on_error(webcache_core::OnError::Degrade)
            .build(),
    );
    assert_eq!(degrading.get::<String>("k").await.unwrap(), None);
}

#[tokio::test]
async fn the_backend_extras_are_reachable_through_a_cache() {
    let cache = webcache_core::Cache::new(
        backend("sqlite::memory:?cull_interval=0").await,
        webcache_core::CacheOptions::default(),
    );
    cache.set("short", "v", 0.05).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sql = cache.backend_as::<SqlBackend>().expect("a database cache");
    assert_eq!(sql.table(), "webcache_cache");
    assert_eq!(sql.delete_expired().await.unwrap(), 1);
}
