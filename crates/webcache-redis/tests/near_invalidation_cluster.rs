//! A near tier over a real 3-master Redis Cluster is told of every change on every master:
//! another process's writes, deletes, clears and tag invalidations (keys on every master) are
//! seen long before `near_ttl`, also from a real second process. While the reports of any
//! master are down, copies are not served; when they come back, every copy is dropped.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "near_invalidation_common/mod.rs"]
mod near_common;

use webcache_testkit::servers::redis::RedisCluster;

use near_common::{
    eventually, process, run_child, stream_down_then_back, wait_serving,
    writes_of_another_process_are_seen,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cache_sees_changes_on_every_master() {
    writes_of_another_process_are_seen(&RedisCluster::shared().url()).await;
}

/// In a child process only (this test binary run again by [`a_second_process_is_seen`]):
/// does what the environment says. Run as a normal test, it has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    near_common::child_process().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_is_seen() {
    let url = RedisCluster::shared().url();
    let prefix = near_common::prefix("proc");
    let a = process(&url, &prefix).await;
    wait_serving(&a).await;
    let keys: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
    for key in &keys {
        a.set(key, &1, 600).await.unwrap();
        assert_eq!(a.get::<i32>(key).await.unwrap(), Some(1));
    }
    for key in &keys {
        run_child(&url, &prefix, &format!("set {key} 2"));
    }
    for key in &keys {
        eventually(&format!("the other process's write of {key}"), || async {
            a.get::<i32>(key).await.unwrap() == Some(2)
        })
        .await;
    }
    run_child(&url, &prefix, "clear");
    for key in &keys {
        eventually(&format!("the other process's clear, for {key}"), || async {
            a.get::<i32>(key).await.unwrap().is_none()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_are_not_served_while_the_reports_are_down() {
    // A cluster of its own: the test locks new connections out of one master, whose reports
    // alone going down must stop copies of keys on every master being served.
    let cluster = RedisCluster::start(3);
    stream_down_then_back(&cluster.url(), &[&cluster.nodes()[0]]).await;
}
