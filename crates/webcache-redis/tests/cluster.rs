//! The conformance suite against a 3-master Redis Cluster started by this test binary.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use webcache_core::{Backend, Cache, CacheConfig, CacheOptions};
use webcache_testkit::servers::redis::RedisCluster;
use webcache_testkit::{conformance_suite, Harness};

struct Cluster;

#[async_trait::async_trait]
impl Harness for Cluster {
    async fn backend(&self) -> Arc<dyn Backend> {
        let url = RedisCluster::shared().url();
        let mut spec = CacheConfig::from_url("default", &url).unwrap().backend;
        webcache_redis::from_spec(&mut spec).await.unwrap()
    }
}

conformance_suite!(Cluster);

/// Keys spread over every master, and multi-key calls (`get_many`, `set_many`,
/// `delete_many`, `clear`) work across slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_all_masters_and_multi_key_calls_cross_slots() {
    let cluster = RedisCluster::shared();
    let prefix = format!("spread{:08x}", rand::random::<u32>());
    let cache = Cache::new(
        Cluster.backend().await,
        CacheOptions {
            key_prefix: prefix.clone(),
            ..CacheOptions::default()
        },
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
