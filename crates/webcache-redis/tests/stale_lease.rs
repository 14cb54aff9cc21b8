//! The cross-process lease of `get_or_set_with_stale` on one real Redis: two `Cache`s over
//! separate connections compute once between them, and a frozen holder's lease expires. The
//! cases live in `webcache-core/tests/stale_lease_cases` (run there on a shared locmem).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use webcache_core::{Cache, CacheOptions};
use webcache_redis::RedisBackend;
use webcache_testkit::servers::redis::RedisServer;

#[path = "../../webcache-core/tests/stale_lease_cases/mod.rs"]
mod cases;

/// Builds caches with one fresh key prefix, each over its own connection to the shared server.
fn clients() -> impl Fn() -> Cache + Send + Sync + 'static {
    let url = RedisServer::shared().url(0);
    let prefix = cases::prefix();
    move || {
        Cache::new(
            Arc::new(RedisBackend::from_url(&url).unwrap()),
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
