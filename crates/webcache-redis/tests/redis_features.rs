//! Redis-specific behaviour against a real `redis-server`: database numbers, TTLs visible to
//! `redis-cli`, prefix-scoped `clear` (and the explicit FLUSHDB opt-in), `delete_pattern`,
//! `expire`/`persist`, the distributed lock and `get_or_set_locked`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::backend;
use webcache_core::backend::Backend;
use webcache_core::{glob_escape, Cache, CacheOptions, Ttl};
use webcache_redis::{get_or_set_locked, LockOptions, RedisBackend};
use webcache_testkit::servers::redis::RedisServer;

fn server() -> &'static RedisServer {
    RedisServer::shared()
}

fn cache_over(backend: &RedisBackend, prefix: &str) -> Cache {
    Cache::new(
        Arc::new(backend.clone()),
        CacheOptions::builder().key_prefix(prefix).build(),
    )
}

fn unique(name: &str) -> String {
    format!("{name}{:08x}", rand::random::<u32>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_number_is_honoured_and_ttls_are_real_redis_ttls() {
    let redis = backend(&server().url(2)).await;
    // The tutorial's layout: no prefix, version 1, so the key reads `:1:NAME` in redis-cli.
    let cache = cache_over(&redis, "");
    let name = unique("httpbin");
    cache.set(&name, &42, 60).await.unwrap();
    let stored = format!(":1:{name}");
    assert_eq!(server().cli(&["-n", "2", "get", &stored]).trim(), "42");
    assert_eq!(
        server().cli(&["-n", "0", "exists", &stored]).trim(),
        "0",
        "db 0 must not hold it"
    );
    let ttl: u64 = server()
        .cli(&["-n", "2", "ttl", &stored])
        .trim()
        .parse()
        .unwrap();
    assert!((58..=60).contains(&ttl), "redis-cli ttl says {ttl}");
    cache.touch(&name, 600).await.unwrap();
    let ttl: u64 = server()
        .cli(&["-n", "2", "ttl", &stored])
        .trim()
        .parse()
        .unwrap();
    assert!(
        (598..=600).contains(&ttl),
        "redis-cli ttl after touch says {ttl}"
    );
    cache
        .set(&name, &1, webcache_core::Timeout::Forever)
        .await
        .unwrap();
    assert_eq!(server().cli(&["-n", "2", "ttl", &stored]).trim(), "-1");
    assert!(cache.delete(&name).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_removes_only_the_prefix_across_many_scan_steps() {
    let redis = backend(&server().url(4)).await;
    let mine = cache_over(&redis, &unique("mine"));
    let other = cache_over(&redis, &unique("other"));
    let foreign = unique("foreign");
    server().cli(&["-n", "4", "set", &foreign, "not webcache's"]);
    // More keys than one SCAN step returns.
    let keys: Vec<String> = (0..2500).map(|i| format!("k{i}")).collect();
    mine.set_many(keys.iter().map(|k| (k.as_str(), 1)), 60)
        .await
        .unwrap();
    other.set("k1", &2, 60).await.unwrap();
    mine.clear().await.unwrap();
    let left: Vec<_> = redis
        .scan(&format!("{}:*", glob_escape(&mine.options().key_prefix)))
        .collect::<Vec<_>>()
        .await;
    assert!(
        left.is_empty(),
        "{} keys of the cleared prefix remain",
        left.len()
    );
    assert_eq!(other.get::<i32>("k1").await.unwrap(), Some(2));
    assert_eq!(
        server().cli(&["-n", "4", "get", &foreign]).trim(),
        "not webcache's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_flushdb_only_when_asked_and_only_that_database() {
    let flushing = backend(&format!("{}?clear=flushdb", server().url(5))).await;
    let cache = cache_over(&flushing, "p");
    let foreign = unique("foreign");
    server().cli(&["-n", "5", "set", &foreign, "x"]);
    server().cli(&["-n", "6", "set", &foreign, "y"]);
    cache.set("k", &1, 60).await.unwrap();
    cache.clear().await.unwrap();
    assert!(!cache.has_key("k").await.unwrap());
    assert_eq!(
        server().cli(&["-n", "5", "exists", &foreign]).trim(),
        "0",
        "FLUSHDB empties the database"
    );
    assert_eq!(
        server().cli(&["-n", "6", "get", &foreign]).trim(),
        "y",
        "other databases are untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_pattern_expire_and_persist() {
    let redis = backend(&server().url(0)).await;
    let cache = cache_over(&redis, &unique("pat"));
    cache
        .set_many([("user.1", 1), ("user.2", 2), ("page.1", 3)], 60)
        .await
        .unwrap();
    let head = glob_escape(&cache.make_key("").unwrap());
    assert_eq!(
        redis
            .delete_pattern(&format!("{head}user.*"))
            .await
            .unwrap(),
        2
    );
    assert!(!cache.has_key("user.1").await.unwrap());
    assert!(cache.has_key("page.1").await.unwrap());
    assert_eq!(
        redis
            .delete_pattern(&format!("{head}nothing*"))
            .await
            .unwrap(),
        0
    );

    let key = cache.make_key("page.1").unwrap();
    assert!(redis.persist(&key).await.unwrap());
    assert_eq!(redis.ttl(&key).await.unwrap(), Ttl::Forever);
    assert!(redis.expire(&key, Duration::from_secs(100)).await.unwrap());
    assert!(
        matches!(redis.ttl(&key).await.unwrap(), Ttl::Remaining(d) if d > Duration::from_secs(95))
    );
    assert!(!redis
        .expire("missing-key-for-expire", Duration::from_secs(1))
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_has_one_winner_and_is_released_by_token_only() {
    let a = backend(&server().url(0)).await;
    let b = backend(&server().url(0)).await;
    let key = unique("lock");
    let ttl = Duration::from_secs(10);
    let (first, second) = tokio::join!(a.try_lock(&key, ttl), b.try_lock(&key, ttl));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(
        first.is_some() != second.is_some(),
        "exactly one contender wins"
    );
    let held = first.or(second).unwrap();
    assert!(b.try_lock(&key, ttl).await.unwrap().is_none());
    assert!(
        !b.unlock(&key, "not-the-token").await.unwrap(),
        "a wrong token must not release"
    );
    assert_eq!(server().cli(&["exists", &key]).trim(), "1");
    assert!(held.extend(Duration::from_secs(20)).await.unwrap());
    assert!(held.release().await.unwrap());
    assert_eq!(server().cli(&["exists", &key]).trim(), "0");

    // An expired lock taken by someone else is not released by its former holder.
    let short = a
        .try_lock(&key, Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let next = b
        .lock(&key, ttl, Duration::from_secs(1))
        .await
        .unwrap()
        .expect("the expired lock is free");
    assert!(!short.release().await.unwrap());
    assert_eq!(server().cli(&["get", &key]).trim(), next.token());
    assert!(
        a.lock(&key, ttl, Duration::from_millis(150))
            .await
            .unwrap()
            .is_none(),
        "lock() gives up after `wait`"
    );
    assert!(next.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_set_locked_computes_once_across_processes() {
    let prefix = unique("flight");
    let calls = Arc::new(AtomicUsize::new(0));
    // Each "process" has its own connections and its own in-process single flight.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let redis = backend(&server().url(0)).await;
        let cache = cache_over(&redis, &prefix);
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            get_or_set_locked(
                &cache,
                &redis,
                "report",
                60,
                LockOptions::default(),
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, webcache_core::Error>(format!(
                        "computed by {:08x}",
                        rand::random::<u32>()
                    ))
                },
            )
            .await
            .unwrap()
        }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap());
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the computation ran more than once"
    );
    assert!(values.windows(2).all(|w| w[0] == w[1]), "{values:?}");
    let lock_key = format!("{prefix}:1:report:lock");
    assert_eq!(
        server().cli(&["exists", &lock_key]).trim(),
        "0",
        "the lock is released"
    );
}

use futures::StreamExt;

/// `rediss://` against a TLS-only server whose certificate is trusted through `tls_ca_file`;
/// without it the system's roots refuse the self-signed certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_certificate_authority() {
    let tls = RedisServer::start_tls();
    let url = format!("{}?tls_ca_file={}", tls.url(3), tls.ca_file().display());
    let redis = backend(&url).await;
    let cache = cache_over(&redis, "tls");
    cache.set("k", &7, 60).await.unwrap();
    assert_eq!(cache.get::<i64>("k").await.unwrap(), Some(7));
    assert_eq!(tls.cli(&["-n", "3", "get", "tls:1:k"]).trim(), "7");

    // Generous timeouts: the refused certificate must fail the call at once, not time out.
    let untrusted = backend(&format!(
        "{}?connect_timeout=10&response_timeout=10",
        tls.url(3)
    ))
    .await;
    let err = untrusted.get("tls:1:k").await.unwrap_err();
    assert!(
        matches!(err, webcache_core::Error::Backend { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_the_database_size_and_memory() {
    let redis = backend(&server().url(7)).await;
    let cache = cache_over(&redis, &unique("stats"));
    cache.set_many([("a", 1), ("b", 2)], 60).await.unwrap();
    let stats = cache.stats().await.unwrap();
    assert_eq!(stats.backend, "redis");
    let expected: u64 = server().cli(&["-n", "7", "dbsize"]).trim().parse().unwrap();
    assert_eq!(stats.backend_stats.entries, Some(expected));
    assert!(expected >= 2);
    let names: Vec<&str> = stats
        .backend_stats
        .extra
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(
        names.contains(&"used_memory") && names.contains(&"url"),
        "{names:?}"
    );
}

/// Issue 11 #12: a list or hash under the prefix is a miss with a warning, not a WRONGTYPE
/// error; `incr` on it is a "not an integer" usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_under_the_prefix_are_misses() {
    let cache = cache_over(&backend(&server().url(0)).await, &unique("foreign"));
    common::foreign_values_are_misses_and_not_integers(&cache, |args| server().cli(args)).await;
}

/// Issue 11 #14: what Redis's `INCRBY` refuses is a clear usage error (not an integer, or
/// overflow), never a vague backend failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_refusals_are_usage_errors() {
    let cache = cache_over(&backend(&server().url(0)).await, &unique("integers"));
    common::incr_refusals_are_usage_errors(&cache, |args| server().cli(args)).await;
}

/// Issue 19 #6: "one multiplexed connection per node" (README, BENCHMARKS). 200 concurrent
/// operations through one cache over a primary and a replica open one connection to each:
/// the servers' own client counts (read over redis-cli's separate connection) say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_multiplexed_connection_per_node_under_concurrency() {
    use webcache_testkit::servers::redis::RedisReplicaPair;
    let pair = RedisReplicaPair::start();
    // Normal clients (not the replication link), other than redis-cli's own connection.
    let clients = |server: &RedisServer| -> usize {
        server
            .cli(&["client", "list", "type", "normal"])
            .lines()
            .filter(|l| !l.contains("cmd=client|list"))
            .count()
    };
    assert_eq!(
        (clients(&pair.primary), clients(&pair.replica)),
        (0, 0),
        "nobody else is connected"
    );
    let cache = cache_over(&backend(&pair.url(0, "")).await, "mux");
    let tasks: Vec<_> = (0..200)
        .map(|i: i32| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let key = format!("k{}", i / 2);
                if i % 2 == 0 {
                    cache.set(&key, &i, 60).await.unwrap();
                } else {
                    cache.get::<i32>(&key).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        (clients(&pair.primary), clients(&pair.replica)),
        (1, 1),
        "one connection to the primary and one to the replica, whatever the concurrency:\n{}",
        pair.primary.cli(&["client", "list"])
    );
}

/// What redis-server counts as reads processed (`INFO stats`): one per time it read from a
/// client's socket, however many commands that read carried.
fn reads_processed(server: &RedisServer) -> u64 {
    let info = server.cli(&["info", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_reads_processed in INFO stats:\n{info}"))
}

/// A runtime with one worker thread: a task woken by the running one runs right after it
/// (tokio's LIFO slot), so a connection that sends as soon as its task runs writes each
/// call's command alone.
fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Gets of `k0` .. `k{n-1}`, each on a task of its own, all queued before the first runs
/// (spawned from one task on a worker, as a server's are when a burst of requests arrives);
/// their answers in order.
async fn burst(cache: &Cache, n: i32) -> Vec<webcache_core::Result<Option<i32>>> {
    let cache = cache.clone();
    tokio::spawn(async move {
        let calls: Vec<_> = (0..n)
            .map(|i| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get::<i32>(&format!("k{i}")).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        answers
    })
    .await
    .unwrap()
}

/// Issue 17: the `GET`s of simultaneous calls (a page hit each, on tasks of their own) reach
/// Redis together, as one pipeline, not one write per call: redis-server's own count of
/// the reads it made grows by a few for 64 concurrent gets, not by 64. Each call still gets
/// its own answer, and a foreign value among them (a list, which `GET` refuses) only its own
/// miss.
///
/// On one worker thread (see [`one_worker_runtime`]).
#[test]
fn simultaneous_gets_reach_redis_as_one_pipeline() {
    let server = RedisServer::start();
    let runtime = one_worker_runtime();
    runtime.block_on(async {
        let cache = cache_over(&backend(&server.url(0)).await, "burst");
        for i in 0..64 {
            cache.set(&format!("k{i}"), &i, 60).await.unwrap();
        }
        let foreign = cache.make_key("k7").unwrap();
        server.cli(&["del", &foreign]);
        assert_eq!(server.cli(&["rpush", &foreign, "a"]).trim(), "1");

        let before = reads_processed(&server);
        let answers: Vec<Option<i32>> = burst(&cache, 64)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let reads = reads_processed(&server) - before;

        let expected: Vec<Option<i32>> = (0..64).map(|i| (i != 7).then_some(i)).collect();
        assert_eq!(answers, expected, "each call gets its own answer");
        // The burst's reads and the second `INFO`'s own; 64 calls sent one by one are 64
        // or more.
        assert!(
            reads <= 8,
            "64 simultaneous gets took {reads} reads in redis-server: they were not sent together"
        );
    });
}

/// A node's batching task runs on the runtime of the call that started it. When that
/// runtime stops (a test's, or an application's first one) while the backend lives on, the
/// next burst of calls on another runtime starts a new task: every call of the burst is
/// answered, none fails for want of the old task.
#[test]
fn batching_resumes_on_the_next_runtime() {
    let expected: Vec<Option<i32>> = (0..16).map(Some).collect();

    let first = one_worker_runtime();
    let cache = first.block_on(async {
        let cache = cache_over(&backend(&server().url(0)).await, &unique("runtimes"));
        for i in 0..16 {
            cache.set(&format!("k{i}"), &i, 60).await.unwrap();
        }
        cache
    });
    let answers = first.block_on(burst(&cache, 16));
    assert_eq!(
        answers.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        expected
    );
    drop(first);

    let second = one_worker_runtime();
    second.block_on(async {
        // The connection itself died with the first runtime: the client reconnects after
        // the first call that finds it broken.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while cache.get::<i32>("k0").await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let answers = burst(&cache, 16).await;
        assert_eq!(
            answers.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            expected,
            "every call of the burst on the new runtime is answered"
        );
    });
}
