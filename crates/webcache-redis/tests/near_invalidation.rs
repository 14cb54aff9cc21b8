//! A near tier (`near_ttl`) over one real Redis node is told of every change by Redis's
//! client-side caching: another process's write, delete, clear or tag invalidation is seen long
//! before `near_ttl` (60 s here; the tests wait at most 5 s), also when the other process is a
//! real second process (this test binary run again) or `redis-cli`. While the reports are
//! down, copies are not served; when they come back, every copy is dropped.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "near_invalidation_common/mod.rs"]
mod near_common;

use std::sync::Arc;
use std::time::Duration;

use webcache_core::backend::Backend;
use webcache_core::backends::NearCache;
use webcache_testkit::servers::redis::{RedisReplicaPair, RedisServer};
use webcache_testkit::{conformance_suite, Capabilities, Harness};

use near_common::{
    eventually, process, run_child, serving, stream_down_then_back, wait_serving,
    writes_of_another_process_are_seen, CHILD_ENV,
};

/// The conformance suite through a near tier kept by tracking: the near tier changes nothing
/// a cache promises.
struct NearOverRedis;

#[async_trait::async_trait]
impl Harness for NearOverRedis {
    async fn backend(&self) -> Arc<dyn Backend> {
        let far: Arc<dyn Backend> = Arc::new(common::backend(&RedisServer::shared().url(4)).await);
        Arc::new(NearCache::new(far, Duration::from_secs(60), 1000))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // A copy taken by a read lives until Redis reports the key's expiry, which its
            // active expiry does within a fraction of a second of the deadline.
            expiry_slack: Duration::from_secs(1),
            ..Capabilities::default()
        }
    }
}

conformance_suite!(NearOverRedis; skip: {
    eviction_keeps_the_bound: "Redis evicts by memory (maxmemory), it has no entry bound",
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cache_sees_writes_deletes_clears_and_tag_invalidations() {
    let url = RedisServer::shared().url(5);
    writes_of_another_process_are_seen(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_by_other_clients_are_seen_too() {
    let server = RedisServer::shared();
    let prefix = near_common::prefix("cli");
    let a = process(&server.url(6), &prefix).await;
    wait_serving(&a).await;
    a.set("k", &1, 600).await.unwrap();
    assert_eq!(a.get::<i32>("k").await.unwrap(), Some(1));
    let key = a.make_key("k").unwrap();
    assert_eq!(server.cli(&["-n", "6", "del", &key]).trim(), "1");
    eventually("a key deleted by redis-cli is a miss", || async {
        a.get::<i32>("k").await.unwrap().is_none()
    })
    .await;
}

/// In a child process only (this test binary run again by [`a_second_process_is_seen`]):
/// does what the environment says. Run as a normal test, it has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    near_common::child_process().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_is_seen() {
    let url = RedisServer::shared().url(7);
    let prefix = near_common::prefix("proc");
    let a = process(&url, &prefix).await;
    wait_serving(&a).await;
    a.set("k", &1, 600).await.unwrap();
    a.tagged(["t"]).set("tagged", &1, 600).await.unwrap();
    assert_eq!(a.get::<i32>("k").await.unwrap(), Some(1));
    assert_eq!(a.get::<i32>("tagged").await.unwrap(), Some(1));

    run_child(&url, &prefix, "set k 2");
    eventually("the other process's write", || async {
        a.get::<i32>("k").await.unwrap() == Some(2)
    })
    .await;
    run_child(&url, &prefix, "invalidate t");
    eventually("the other process's tag invalidation", || async {
        a.get::<i32>("tagged").await.unwrap().is_none()
    })
    .await;
    run_child(&url, &prefix, "clear");
    eventually("the other process's clear", || async {
        a.get::<i32>("k").await.unwrap().is_none()
    })
    .await;
    assert!(std::env::var(CHILD_ENV).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_are_not_served_while_the_reports_are_down() {
    // A server of its own: the test locks new connections out.
    let server = RedisServer::start();
    stream_down_then_back(&server.url(0), &[&server]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_stop_when_the_near_tier_is_gone() {
    let server = RedisServer::start();
    let count = || {
        server
            .cli(&["client", "list"])
            .lines()
            .filter(|l| l.contains("name=webcache-tracking"))
            .count()
    };
    let a = process(&server.url(0), "gone").await;
    wait_serving(&a).await;
    assert!(serving(&a));
    assert_eq!(count(), 1, "one tracking connection per node");
    drop(a);
    eventually("the tracking connection closes", || async { count() == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_see_changes_too() {
    // Reads go to the replica: its own tracking reports a change once the replica has it.
    let url = RedisReplicaPair::shared().url(8, "");
    writes_of_another_process_are_seen(&url).await;
}

#[test]
fn copies_are_not_served_once_the_reports_runtime_is_gone() {
    let url = RedisServer::shared().url(9);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cache = runtime.block_on(async {
        let cache = process(&url, &near_common::prefix("runtime")).await;
        wait_serving(&cache).await;
        cache
    });
    assert!(serving(&cache));
    // The tracking task goes with its runtime: nothing reports changes any more.
    drop(runtime);
    assert!(!serving(&cache));
}
