//! Client-side sharding over three independent `redis-server`s (`redis://h1,h2,h3/db`): the
//! conformance suite, and what must work across shards (multi-key calls grouped per shard,
//! `keys`, `clear`, `incr`, locks).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use webcache_core::backend::Backend;
use webcache_core::{Cache, CacheOptions, Error, OnError};
use webcache_redis::{get_or_set_locked, LockOptions};
use webcache_testkit::servers::redis::RedisServer;
use webcache_testkit::{conformance_suite, Harness};

/// The three shards of this test binary.
fn shards() -> &'static [RedisServer] {
    static SHARDS: OnceLock<Vec<RedisServer>> = OnceLock::new();
    SHARDS.get_or_init(|| (0..3).map(|_| RedisServer::start()).collect())
}

/// `redis://127.0.0.1:P1,127.0.0.1:P2,.../db` over `servers`.
fn url(servers: &[RedisServer], db: u32) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    format!("redis://{}/{db}", list.join(","))
}

struct Shards;

#[async_trait::async_trait]
impl Harness for Shards {
    async fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(common::backend(&url(shards(), 0)).await)
    }
}

conformance_suite!(Shards; skip: {
    eviction_keeps_the_bound: "Redis evicts by memory (maxmemory), it has no entry bound",
});

fn unique(name: &str) -> String {
    format!("{name}{:08x}", rand::random::<u32>())
}

async fn cache(url: &str, prefix: &str) -> Cache {
    Cache::new(
        Arc::new(common::backend(url).await),
        CacheOptions::builder().key_prefix(prefix).build(),
    )
}

/// How many keys under `prefix` each server holds.
fn counts(servers: &[RedisServer], prefix: &str) -> Vec<usize> {
    servers
        .iter()
        .map(|s| {
            s.cli(&["--scan", "--pattern", &format!("{prefix}:*")])
                .lines()
                .count()
        })
        .collect()
}

/// Keys spread over every shard, each on exactly one, and the multi-key calls, `keys`,
/// `incr` and `clear` work across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_the_shards_and_multi_key_calls_cross_them() {
    let prefix = unique("spread");
    let cache = cache(&url(shards(), 0), &prefix).await;
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    cache
        .set_many(keys.iter().map(|k| (k.as_str(), k.len())), 60)
        .await
        .unwrap();
    let here = counts(shards(), &prefix);
    assert_eq!(
        here.iter().sum::<usize>(),
        300,
        "each key on one shard: {here:?}"
    );
    assert!(here.iter().all(|n| *n > 50), "uneven spread: {here:?}");

    let got: HashMap<String, usize> = cache.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), 300);
    assert!(got.iter().all(|(k, v)| k.len() == *v));
    let mut listed: Vec<String> = cache.keys("k*").map(|k| k.unwrap()).collect().await;
    listed.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(listed, expected, "keys() lists every shard");

    for k in &keys[..30] {
        assert_eq!(cache.incr(k, 10).await.unwrap(), k.len() as i64 + 10);
    }
    let entries = cache.stats().await.unwrap().backend_stats.entries.unwrap();
    assert!(
        entries >= 300,
        "DBSIZE is summed over the shards: {entries}"
    );

    assert_eq!(cache.delete_many(&keys[..100]).await.unwrap(), 100);
    assert_eq!(counts(shards(), &prefix).iter().sum::<usize>(), 200);
    cache.clear().await.unwrap();
    assert_eq!(
        counts(shards(), &prefix),
        vec![0, 0, 0],
        "clear missed keys"
    );
}

/// Locks on keys of different shards are each taken on the key's shard, exclusive and
/// released by their token; `get_or_set_locked` computes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_work_on_every_shard() {
    let a = common::backend(&url(shards(), 0)).await;
    let b = common::backend(&url(shards(), 0)).await;
    let base = unique("lock");
    let ttl = Duration::from_secs(10);
    let mut held = Vec::new();
    for i in 0..20 {
        let key = format!("{base}-{i}");
        let lock = a.try_lock(&key, ttl).await.unwrap().expect("free");
        assert!(
            b.try_lock(&key, ttl).await.unwrap().is_none(),
            "{key} taken twice"
        );
        held.push(lock);
    }
    let holders: Vec<usize> = shards()
        .iter()
        .map(|s| {
            s.cli(&["--scan", "--pattern", &format!("{base}-*")])
                .lines()
                .count()
        })
        .collect();
    assert_eq!(holders.iter().sum::<usize>(), 20, "{holders:?}");
    assert!(
        holders.iter().all(|n| *n > 0),
        "locks on every shard: {holders:?}"
    );
    for lock in held {
        assert!(lock.release().await.unwrap());
    }

    let prefix = unique("flight");
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let redis = common::backend(&url(shards(), 0)).await;
        let cache = Cache::new(
            Arc::new(redis.clone()),
            CacheOptions::builder().key_prefix(prefix.clone()).build(),
        );
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
                    Ok::<_, Error>(unique("computed"))
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
    assert_eq!(calls.load(Ordering::SeqCst), 1, "computed more than once");
    assert!(values.windows(2).all(|w| w[0] == w[1]), "{values:?}");
}

/// `clear` removes a key from the shard it is found on, not from the one the ring names now:
/// keys written while the list had two servers are gone after a `clear` with three (where
/// the ring sends about a third of them elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_removes_keys_placed_by_another_shard_list() {
    let prefix = unique("moved");
    let two = cache(&url(&shards()[..2], 0), &prefix).await;
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    two.set_many(keys.iter().map(|k| (k.as_str(), 1)), 60)
        .await
        .unwrap();
    let three = cache(&url(shards(), 0), &prefix).await;
    let found: HashMap<String, i32> = three.get_many(&keys).await.unwrap();
    assert!(
        found.len() < keys.len(),
        "some keys are routed to the new shard (misses there)"
    );
    three.clear().await.unwrap();
    assert_eq!(
        counts(shards(), &prefix),
        vec![0, 0, 0],
        "clear left keys behind"
    );
}

/// A shard that is down fails the calls for its keys (or misses them, in degrade mode): there
/// is no failover between shards, the other shards' keys keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_costs_only_its_keys() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let prefix = unique("down");
    let address = url(&servers, 0);
    let cache = cache(
        &format!("{address}?connect_timeout=2&response_timeout=2"),
        &prefix,
    )
    .await;
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    cache
        .set_many(keys.iter().map(|k| (k.as_str(), 1)), 60)
        .await
        .unwrap();
    let on_first: Vec<String> = servers[0]
        .cli(&["--scan", "--pattern", &format!("{prefix}:*")])
        .lines()
        .map(|k| k.trim().rsplit(':').next().unwrap().to_owned())
        .collect();
    assert!(!on_first.is_empty());
    servers[0].kill();
    for key in &keys {
        let read = cache.get::<i32>(key).await;
        if on_first.contains(key) {
            assert!(
                matches!(read, Err(Error::Backend { .. })),
                "{key}: {read:?}"
            );
        } else {
            assert_eq!(read.unwrap(), Some(1), "{key} lives on a running shard");
        }
    }
    let degraded = Cache::new(
        Arc::new(common::backend(&format!("{address}?connect_timeout=2&response_timeout=2")).await),
        CacheOptions::builder()
            .key_prefix(prefix.clone())
            .on_error(OnError::Degrade)
            .build(),
    );
    let found: HashMap<String, i32> = degraded.get_many(&keys).await.unwrap();
    assert!(
        found.is_empty() || found.len() == keys.len() - on_first.len(),
        "{}",
        found.len()
    );
}
