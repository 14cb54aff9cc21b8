//! The conformance suite against a master found through three Redis Sentinels, with reads
//! from the replica they name (`read_from_replicas=true`) and each write waiting for that
//! replica (`wait_replicas=1`: replication is otherwise asynchronous, and the suite reads
//! right after writing).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use webcache_core::backend::Backend;
use webcache_core::{Cache, CacheOptions};
use webcache_testkit::servers::sentinel::RedisSentinels;
use webcache_testkit::{conformance_suite, Harness};

struct Sentinel;

#[async_trait::async_trait]
impl Harness for Sentinel {
    async fn backend(&self) -> Arc<dyn Backend> {
        let url = RedisSentinels::shared().url(0, "?wait_replicas=1&read_from_replicas=true");
        Arc::new(common::backend(&url).await)
    }
}

conformance_suite!(Sentinel; skip: {
    eviction_keeps_the_bound: "Redis evicts by memory (maxmemory), it has no entry bound",
});

/// GET counts of a server, from `INFO commandstats`.
fn gets(server: &webcache_testkit::servers::redis::RedisServer) -> u64 {
    server
        .cli(&["info", "commandstats"])
        .lines()
        .find(|l| l.starts_with("cmdstat_get:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Writes go to the master the sentinels name, in the database of the URL; with
/// `read_from_replicas=true` reads go to the replica they name, and without it to the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_named_master_and_reads_the_replica_when_asked() {
    let group = RedisSentinels::shared();
    let prefix = format!("roles{:08x}", rand::random::<u32>());
    let options = CacheOptions::builder().key_prefix(prefix.clone()).build();
    let from_replicas = Cache::new(
        Arc::new(common::backend(&group.url(3, "?wait_replicas=1&read_from_replicas=true")).await),
        options.clone(),
    );
    from_replicas.set("k", "v", 60).await.unwrap();
    let key = from_replicas.make_key("k").unwrap();
    assert!(
        group.master().cli(&["-n", "3", "get", &key]).contains('v'),
        "the write is on the master, database 3"
    );
    let (master, replica) = (group.master(), group.replica());
    let (master_before, replica_before) = (gets(master), gets(replica));
    for _ in 0..20 {
        assert_eq!(
            from_replicas.get::<String>("k").await.unwrap().as_deref(),
            Some("v")
        );
    }
    assert!(
        gets(replica) >= replica_before + 20,
        "the replica served the reads"
    );
    assert!(gets(master) < master_before + 5, "the master served reads");

    let from_master = Cache::new(Arc::new(common::backend(&group.url(3, "")).await), options);
    let (master_before, replica_before) = (gets(master), gets(replica));
    for _ in 0..20 {
        assert_eq!(
            from_master.get::<String>("k").await.unwrap().as_deref(),
            Some("v")
        );
    }
    assert!(
        gets(master) >= master_before + 20,
        "the master served the reads"
    );
    assert!(
        gets(replica) < replica_before + 5,
        "the replica served reads"
    );
}

/// The URL's `user:pass@` is for the master and its replicas, `sentinel_password` for the
/// sentinels themselves; without either the calls fail with an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_for_the_nodes_and_for_the_sentinels() {
    // A group of its own: its servers and sentinels get passwords.
    let group = tokio::task::spawn_blocking(RedisSentinels::start)
        .await
        .unwrap();
    for node in group.nodes() {
        for (name, value) in [("masterauth", "node pw"), ("requirepass", "node pw")] {
            let answer = node.cli(&["config", "set", name, value]);
            assert_eq!(answer.trim(), "OK", "{answer}");
        }
    }
    for sentinel in group.sentinels() {
        let answer = sentinel.cli(&["sentinel", "set", "mymaster", "auth-pass", "node pw"]);
        assert_eq!(answer.trim(), "OK", "{answer}");
        let answer = sentinel.cli(&["acl", "setuser", "default", "resetpass", ">sentinel pw"]);
        assert_eq!(answer.trim(), "OK", "{answer}");
    }
    let base = group.url(0, "");
    let with = |userinfo: &str, query: &str| {
        format!(
            "{}{userinfo}{}{query}",
            &base[..base.find("//").unwrap() + 2],
            &base[base.find("//").unwrap() + 2..]
        )
    };
    let options = CacheOptions::builder()
        .key_prefix(format!("auth{:08x}", rand::random::<u32>()))
        .build();
    let good = Cache::new(
        Arc::new(common::backend(&with(":node%20pw@", "?sentinel_password=sentinel%20pw")).await),
        options.clone(),
    );
    good.set("k", "v", 60).await.unwrap();
    assert_eq!(good.get::<String>("k").await.unwrap().as_deref(), Some("v"));

    for (url, missing) in [
        (with(":node%20pw@", ""), "the sentinels' password"),
        (
            with("", "?sentinel_password=sentinel%20pw"),
            "the nodes' password",
        ),
    ] {
        let cache = Cache::new(Arc::new(common::backend(&url).await), options.clone());
        let err = cache.get::<String>("k").await.unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("auth"),
            "without {missing}: {err}"
        );
    }
}
