//! The conformance suite against a primary with one replica: writes go to the primary, reads
//! to the replica. `wait_replicas=1` makes each write wait for the replica (replication is
//! otherwise asynchronous, and the suite reads right after writing).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use webcache_core::backend::Backend;
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
        CacheOptions::builder().key_prefix("replica-reads").build(),
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
    let refused = webcache_testkit::servers::RefusedPort::new();
    let dead = refused.port();
    let url = format!(
        "{}?replicas=redis://127.0.0.1:{dead}/0",
        pair.primary.url(0)
    );
    let cache = Cache::new(
        Arc::new(common::backend(&url).await),
        CacheOptions::builder().key_prefix("fallback").build(),
    );
    cache.set("k", "v", 60).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            cache.get::<String>("k").await.unwrap().as_deref(),
            Some("v")
        );
    }
}

/// Issue 11 #12 with reads served by the replica: a list or hash under the prefix is a miss
/// with a warning there too (the replica's WRONGTYPE is an answer about the data, not a
/// failing replica to route around).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_under_the_prefix_are_misses() {
    use webcache_core::{Cache, CacheOptions};
    let pair = RedisReplicaPair::shared();
    let cache = Cache::new(
        PrimaryAndReplica.backend().await,
        CacheOptions::builder()
            .key_prefix(format!("foreign{:08x}", rand::random::<u32>()))
            .build(),
    );
    // Writes go to the primary; the reads under test go to the replica, so wait until it has
    // caught up with each write.
    let cli = |args: &[&str]| {
        let out = pair.primary.cli(args);
        let offset = |server: &webcache_testkit::servers::redis::RedisServer, field: &str| {
            server
                .cli(&["info", "replication"])
                .lines()
                .find_map(|l| l.trim().strip_prefix(field)?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let target = offset(&pair.primary, "master_repl_offset:");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while offset(&pair.replica, "master_repl_offset:") < target {
            assert!(
                std::time::Instant::now() < deadline,
                "the replica did not catch up"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        out
    };
    common::foreign_values_are_misses_and_not_integers(&cache, cli).await;
}

/// With one primary, `wait_replicas` is for reading one's writes from the replicas: a replica
/// that does not acknowledge (frozen) leaves the write stored, with a warning, and the call
/// succeeds. It used to fail with a timeout: `WAIT` waited as long as the client waited for
/// its answer (`response_timeout`), so the client gave up first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_delays_writes_but_does_not_fail_them() {
    use webcache_core::{Cache, CacheOptions};
    use webcache_testkit::servers::Frozen;
    let pair = RedisReplicaPair::start();
    let cache = Cache::new(
        Arc::new(common::backend(&pair.url(0, "&wait_replicas=1&response_timeout=1")).await),
        CacheOptions::builder().key_prefix("frozen-replica").build(),
    );
    cache.set("before", "v", 60).await.unwrap();
    let frozen = Frozen::stop(pair.replica.pid());
    let warnings = common::Warnings::capture();
    cache.set("during", "v", 60).await.unwrap();
    assert!(
        warnings.text().contains("0 of 1 replicas acknowledged"),
        "the shortfall is logged: {}",
        warnings.text()
    );
    drop(frozen);
    assert!(pair
        .primary
        .cli(&["exists", &cache.make_key("during").unwrap()])
        .contains('1'));
}
