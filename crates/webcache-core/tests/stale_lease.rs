//! The cross-process lease of `get_or_set_with_stale` on one locmem store shared by two
//! `Cache`s (two processes' worth of single-flight state); the Redis and memcached crates run
//! the same cases on real servers.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::{Cache, CacheOptions};

mod stale_lease_cases;
use stale_lease_cases as cases;

/// Builds caches over one shared store with one fresh key prefix.
fn shared_store() -> impl Fn() -> Cache + Send + Sync + 'static {
    let store: Arc<dyn Backend> = Arc::new(LocMemBackend::private(LocMemConfig::default()));
    let prefix = cases::prefix();
    move || {
        Cache::new(
            store.clone(),
            CacheOptions::builder().key_prefix(prefix.clone()).build(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_runs_once_across_processes() {
    cases::refresh_runs_once_across_processes(shared_store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_computes_once_across_processes() {
    cases::miss_computes_once_across_processes(shared_store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_lease_expires() {
    cases::a_crashed_holders_lease_expires(shared_store()).await;
}
