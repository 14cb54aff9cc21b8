//! The conformance suite against a 3-master Redis Cluster started by this test binary.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use webcache_core::backend::Backend;
use webcache_core::{Cache, CacheOptions};
use webcache_testkit::servers::redis::RedisCluster;
use webcache_testkit::{conformance_suite, Harness};

struct Cluster;

#[async_trait::async_trait]
impl Harness for Cluster {
    async fn backend(&self) -> Arc<dyn Backend> {
        let url = RedisCluster::shared().url();
        Arc::new(common::backend(&url).await)
    }
}

conformance_suite!(Cluster; skip: {
    eviction_keeps_the_bound: "Redis evicts by memory (maxmemory), it has no entry bound",
});

/// Keys spread over every master, and multi-key calls (`get_many`, `set_many`,
/// `delete_many`, `clear`) work across slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_all_masters_and_multi_key_calls_cross_slots() {
    let cluster = RedisCluster::shared();
    let prefix = format!("spread{:08x}", rand::random::<u32>());
    let cache = Cache::new(
        Cluster.backend().await,
        CacheOptions::builder().key_prefix(prefix.clone()).build(),
    );
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    cache
        .set_many(keys.iter().map(|k| (k.as_str(), k.len())), 60)
        .await
        .unwrap();
    let got: std::collections::HashMap<String, usize> = cache.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), 300);
    for node in cluster.nodes() {
        let here: usize = node
            .cli(&["--scan", "--pattern", &format!("{prefix}:*")])
            .lines()
            .count();
        assert!(
            here > 50,
            "node {} holds only {here} of 300 keys",
            node.port()
        );
    }
    // DBSIZE is summed over the masters, not read from one of them.
    let entries = cache.stats().await.unwrap().backend_stats.entries.unwrap();
    assert!(entries >= 300, "stats counted {entries} keys");
    assert_eq!(cache.delete_many(&keys[..100]).await.unwrap(), 100);
    cache.clear().await.unwrap();
    for node in cluster.nodes() {
        assert_eq!(
            node.cli(&["--scan", "--pattern", &format!("{prefix}:*")])
                .trim(),
            "",
            "clear missed keys"
        );
    }
}

/// Slots moving between masters under a running cache (`redis-cli --cluster reshard`): the
/// client follows `MOVED`/`ASK`, so every key stays readable and writable through the same
/// cache. A cluster of its own, so that the other tests do not see the migration. The
/// timeouts are generous: the subject is redirection, and a reshard on a busy machine can
/// stall a node for longer than the default second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_and_ask_are_followed_while_slots_migrate() {
    let cluster = RedisCluster::start(3);
    let url = format!("{}?connect_timeout=10&response_timeout=10", cluster.url());
    let cache = Cache::new(
        Arc::new(common::backend(&url).await),
        CacheOptions::builder().key_prefix("moving").build(),
    );
    let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    cache
        .set_many(keys.iter().map(|k| (k.as_str(), k.clone())), 300)
        .await
        .unwrap();
    let mut reshard = reshard(&cluster, 0, 1);
    let reshard = std::thread::spawn(move || reshard.status().unwrap());
    // Read and write while the slots move, and after.
    let mut rounds = 0;
    while !reshard.is_finished() || rounds < 2 {
        for key in &keys {
            assert_eq!(
                cache.get::<String>(key).await.unwrap().as_deref(),
                Some(key.as_str()),
                "round {rounds}"
            );
        }
        cache
            .set(&format!("during{rounds}"), &rounds, 300)
            .await
            .unwrap();
        rounds += 1;
    }
    assert!(
        reshard.join().unwrap().success(),
        "redis-cli --cluster reshard failed"
    );
    let got: std::collections::HashMap<String, String> = cache.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), keys.len());
    for r in 0..rounds {
        assert_eq!(
            cache.get::<i32>(&format!("during{r}")).await.unwrap(),
            Some(r)
        );
    }
}

/// Issue 11 #12 on a cluster: a list or hash under the prefix is a miss with a warning;
/// `incr` on it is a "not an integer" usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_under_the_prefix_are_misses() {
    let cache = Cache::new(
        Cluster.backend().await,
        CacheOptions::builder()
            .key_prefix(format!("foreign{:08x}", rand::random::<u32>()))
            .build(),
    );
    let node = &RedisCluster::shared().nodes()[0];
    let cli = |args: &[&str]| {
        // `-c`: follow MOVED to the node that holds the key.
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        node.cli(&all)
    };
    common::foreign_values_are_misses_and_not_integers(&cache, cli).await;
    common::incr_refusals_are_usage_errors(&cache, cli).await;
}

/// `redis-cli --cluster reshard` moving 2000 slots from node `from` to node `to`.
fn reshard(cluster: &RedisCluster, from: usize, to: usize) -> std::process::Command {
    let id = |i: usize| {
        cluster.nodes()[i]
            .cli(&["cluster", "myid"])
            .trim()
            .to_owned()
    };
    let mut command = std::process::Command::new("redis-cli");
    command
        .args(["--cluster", "reshard"])
        .arg(format!("127.0.0.1:{}", cluster.nodes()[from].port()))
        .args(["--cluster-from", &id(from), "--cluster-to", &id(to)])
        .args(["--cluster-slots", "2000", "--cluster-yes"])
        .stdout(std::process::Stdio::null());
    command
}

/// Many concurrent calls meeting `MOVED` at once, right after a reshard (the cache's slot map
/// is stale): they all follow it and later calls work. Without a bound on requests in flight
/// per node, 50 or so such calls wedged the cluster client for good (every later call timed
/// out). A cluster of its own, as the reshard would disturb the other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_after_a_reshard_under_concurrency() {
    let cluster = RedisCluster::start(3);
    // Generous: 500 calls queue for the client's 32 slots while the slot map is refreshed, and
    // the subject is that they all complete (a wedged client never does), not how fast.
    let url = format!("{}?connect_timeout=10&response_timeout=60", cluster.url());
    let cache = Cache::new(
        Arc::new(common::backend(&url).await),
        CacheOptions::builder()
            .key_prefix("burst")
            .operation_timeout(std::time::Duration::from_secs(120))
            .build(),
    );
    let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    cache
        .set_many(keys.iter().map(|k| (k.as_str(), k.clone())), 300)
        .await
        .unwrap();
    for (round, (from, to)) in [(0, 1), (1, 2)].into_iter().enumerate() {
        assert!(
            reshard(&cluster, from, to).status().unwrap().success(),
            "redis-cli --cluster reshard failed"
        );
        let tasks: Vec<_> = keys
            .iter()
            .map(|key| {
                let (cache, key) = (cache.clone(), key.clone());
                tokio::spawn(async move { cache.get::<String>(&key).await.map(|v| (key, v)) })
            })
            .collect();
        for task in tasks {
            let (key, value) = task.await.unwrap().unwrap();
            assert_eq!(value.as_deref(), Some(key.as_str()), "round {round}");
        }
        let got: std::collections::HashMap<String, String> = cache.get_many(&keys).await.unwrap();
        assert_eq!(got.len(), keys.len(), "round {round}");
    }
}
