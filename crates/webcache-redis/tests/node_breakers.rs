//! A circuit breaker per node (issue 16): one dead Redis Cluster master, or one dead shard of
//! `redis://h1,h2,h3`, makes only its own keys fail, and fail fast once its breaker is open;
//! keys on the healthy nodes keep hitting (the cache's own breaker stays closed); and when the
//! node returns, its keys work again without a restart.
//!
//! Nothing here is timed against load: "fail fast" is checked by what the error says (the
//! node's breaker refused the call; it did not wait for a timeout), and every wait for a
//! recovery has a generous bound.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use webcache_core::backend::{Backend, NodeFailure};
use webcache_core::config::CacheConfig;
use webcache_core::{Cache, Error};
use webcache_redis::RedisBackend;
use webcache_testkit::servers::redis::{RedisCluster, RedisServer};

/// Far longer than a refused connection takes to fail, on a busy machine too.
const TIMEOUTS: &str = "connect_timeout=2&response_timeout=2";
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

/// A raise-mode cache over `url` (so that every failure shows), and its backend.
async fn open(url: &str, prefix: &str) -> (Cache, RedisBackend) {
    let url = format!("{url}?{TIMEOUTS}&key_prefix={prefix}");
    let config = CacheConfig::from_url("default", &url).unwrap();
    let backend = common::backend(&url).await;
    (
        Cache::new(Arc::new(backend.clone()), config.options),
        backend,
    )
}

/// The node a failure names, if the node's breaker (not the whole cache's) reported it.
fn failed_node(error: &Error) -> Option<String> {
    let mut cause = error.source();
    while let Some(e) = cause {
        if let Some(failure) = e.downcast_ref::<NodeFailure>() {
            return Some(failure.node().to_owned());
        }
        cause = e.source();
    }
    None
}

/// Reads every key of `dead` until the node's breaker refuses them all at once (its error says
/// so: the call did not reach for the server, let alone wait for a timeout), every failure
/// naming `node`; then checks that every key of `alive` still hits.
async fn only_the_dead_nodes_keys_fail(
    cache: &Cache,
    backend: &RedisBackend,
    node: &str,
    dead: &[String],
    alive: &[String],
) {
    let started = Instant::now();
    // Failures in a row on one node: on a cache with one breaker these open it for all keys.
    loop {
        let mut refused = 0;
        for key in dead {
            let err = cache.get::<i32>(key).await.unwrap_err();
            assert_eq!(
                failed_node(&err).as_deref(),
                Some(node),
                "{key} lives on the dead node: {err}"
            );
            refused += usize::from(err.to_string().contains("fail at once"));
        }
        if refused == dead.len() {
            break;
        }
        assert!(
            started.elapsed() < RECOVERY_BOUND,
            "the dead node's breaker never opened"
        );
    }
    assert_eq!(backend.down_nodes(), [node.to_owned()]);
    for key in alive {
        assert_eq!(
            cache.get::<i32>(key).await.unwrap(),
            Some(1),
            "{key} lives on a healthy node"
        );
    }
    // A call over several nodes that include the dead one fails as that node's failure, and
    // leaves the healthy nodes' keys working.
    let all: Vec<String> = dead.iter().chain(alive).cloned().collect();
    for _ in 0..3 {
        let err = cache.get_many::<i32, _>(&all).await.unwrap_err();
        assert_eq!(failed_node(&err).as_deref(), Some(node), "{err}");
    }
    let found = cache.get_many::<i32, _>(alive).await.unwrap();
    assert_eq!(found.len(), alive.len());
    // So does a deletion over several nodes: the dead node's keys fail at once, refused by its
    // breaker (not after a timeout on every call), and the healthy nodes' keys are deleted.
    let err = cache.delete_many(&all).await.unwrap_err();
    assert_eq!(failed_node(&err).as_deref(), Some(node), "{err}");
    assert!(err.to_string().contains("fail at once"), "{err}");
    for key in alive {
        assert_eq!(cache.get::<i32>(key).await.unwrap(), None, "{key} deleted");
        cache.set(key, &1, 60).await.unwrap();
    }
    // So does clearing the cache (`SCAN` on every node, then `UNLINK`): the dead node is not
    // skipped (its keys would come back with it), its failure is its own (refused by its
    // breaker, or the breaker's trial call failing), and the healthy nodes are emptied all
    // the same.
    let err = cache.clear().await.unwrap_err();
    assert_eq!(failed_node(&err).as_deref(), Some(node), "{err}");
    for key in alive {
        assert_eq!(cache.get::<i32>(key).await.unwrap(), None, "{key} cleared");
        cache.set(key, &1, 60).await.unwrap();
    }
    // And an invalidation by pattern (django-redis's `delete_pattern`: the keys listed, then
    // deleted): the dead node's failure is the answer, after the healthy nodes' keys went.
    let err = cache.delete_pattern("k*").await.unwrap_err();
    assert_eq!(failed_node(&err).as_deref(), Some(node), "{err}");
    for key in alive {
        assert_eq!(
            cache.get::<i32>(key).await.unwrap(),
            None,
            "{key} deleted by pattern"
        );
        cache.set(key, &1, 60).await.unwrap();
    }
}

/// Writes the keys again until every one of them is stored (the node is back), then reads them.
async fn comes_back(cache: &Cache, backend: &RedisBackend, keys: &[String]) {
    let started = Instant::now();
    for key in keys {
        while cache.set(key, &2, 60).await.is_err() {
            assert!(
                started.elapsed() < RECOVERY_BOUND,
                "{key}: the node's keys did not work again within {RECOVERY_BOUND:?} of its return"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(cache.get::<i32>(key).await.unwrap(), Some(2));
    }
    assert!(
        backend.down_nodes().is_empty(),
        "{:?}",
        backend.down_nodes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_master_fails_only_its_keys() {
    let cluster = RedisCluster::start(3);
    // Without this, a cluster that lost the only copy of some slots refuses every key.
    for node in cluster.nodes() {
        node.cli(&["config", "set", "cluster-require-full-coverage", "no"]);
    }
    let (cache, backend) = open(&cluster.url(), "nodes").await;
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    for key in &keys {
        cache.set(key, &1, 60).await.unwrap();
    }
    let victim = &cluster.nodes()[0];
    let (dead, alive): (Vec<String>, Vec<String>) = keys.iter().cloned().partition(|key| {
        let full = cache.make_key(key).unwrap();
        victim.cli(&["exists", &full]).trim() == "1"
    });
    assert!(!dead.is_empty() && !alive.is_empty(), "{dead:?} {alive:?}");
    let node = format!("127.0.0.1:{}", victim.port());
    victim.kill();

    only_the_dead_nodes_keys_fail(&cache, &backend, &node, &dead, &alive).await;

    victim.restart();
    comes_back(&cache, &backend, &dead).await;
    for key in &alive {
        assert_eq!(cache.get::<i32>(key).await.unwrap(), Some(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shard_fails_only_its_keys() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    let (cache, backend) = open(&format!("redis://{}/0", list.join(",")), "shards").await;
    assert!(backend.node_breakers().is_some());
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    for key in &keys {
        cache.set(key, &1, 60).await.unwrap();
    }
    let victim = &servers[0];
    let (dead, alive): (Vec<String>, Vec<String>) = keys.iter().cloned().partition(|key| {
        let full = cache.make_key(key).unwrap();
        victim.cli(&["exists", &full]).trim() == "1"
    });
    assert!(!dead.is_empty() && !alive.is_empty(), "{dead:?} {alive:?}");
    victim.kill();

    only_the_dead_nodes_keys_fail(&cache, &backend, &list[0], &dead, &alive).await;

    // `clear = "flushdb"` goes on past the dead shard (walked first) and empties the others;
    // its failure is the answer, and names it.
    let flushing_url = format!(
        "redis://{}/0?{TIMEOUTS}&key_prefix=shards&clear=flushdb",
        list.join(",")
    );
    let flushing = Cache::new(
        Arc::new(common::backend(&flushing_url).await),
        CacheConfig::from_url("default", &flushing_url)
            .unwrap()
            .options,
    );
    let err = flushing.clear().await.unwrap_err();
    assert_eq!(
        failed_node(&err).as_deref(),
        Some(list[0].as_str()),
        "{err}"
    );
    for key in &alive {
        assert_eq!(cache.get::<i32>(key).await.unwrap(), None, "{key} flushed");
        cache.set(key, &1, 60).await.unwrap();
    }

    victim.restart();
    comes_back(&cache, &backend, &dead).await;
    for key in &alive {
        assert_eq!(cache.get::<i32>(key).await.unwrap(), Some(1));
    }
}
