//! The cross-process lease of `get_or_set_with_stale` on one real memcached: two `Cache`s over
//! separate connections compute once between them, and a frozen holder's lease expires. The
//! cases live in `webcache-core/tests/stale_lease_cases` (run there on a shared locmem).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use std::time::Duration;

use webcache_core::{Cache, CacheOptions, OnError};
use webcache_memcached::{MemcachedBackend, MemcachedConfig};
use webcache_testkit::servers::memcached::MemcachedServer;

#[path = "../../webcache-core/tests/stale_lease_cases/mod.rs"]
mod cases;

/// Builds caches with one fresh key prefix, each over its own connection to one server that
/// lives as long as the test process.
fn clients() -> impl Fn() -> Cache + Send + Sync + 'static {
    static SERVER: OnceLock<MemcachedServer> = OnceLock::new();
    let address = SERVER.get_or_init(MemcachedServer::start).address();
    let prefix = cases::prefix();
    move || {
        Cache::new(
            Arc::new(MemcachedBackend::new(&MemcachedConfig::new([
                address.clone()
            ]))),
            CacheOptions::builder().key_prefix(prefix.clone()).build(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_runs_once_across_processes() {
    cases::refresh_runs_once_across_processes(clients()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_computes_once_across_processes() {
    cases::miss_computes_once_across_processes(clients()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_lease_expires() {
    cases::a_crashed_holders_lease_expires(clients()).await;
}

/// A backend that cannot take the lease (here: the server is gone) leaves the caller as it was
/// without one: a degraded cache computes a miss at once, it does not poll for a lease nobody
/// can take (the wait for another process's lease is 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lease_from_a_dead_server_computes_as_before() {
    let mut server = MemcachedServer::start();
    let address = server.address();
    server.stop();
    let cache = Cache::new(
        Arc::new(MemcachedBackend::new(&MemcachedConfig::new([address]))),
        CacheOptions::builder().on_error(OnError::Degrade).build(),
    );
    let computed = tokio::time::timeout(
        Duration::from_secs(20),
        cache.get_or_set_with_stale("k", cases::FRESH, cases::WINDOW, || async {
            "computed".to_owned()
        }),
    )
    .await
    .expect("a miss on a dead server waited for a lease");
    assert_eq!(computed.unwrap(), "computed");
}
