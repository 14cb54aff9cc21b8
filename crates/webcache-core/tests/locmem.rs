//! locmem beyond the conformance suite: byte and entry bounds, and named stores.

use std::sync::Arc;

use webcache_core::backends::{LocMem, LocMemConfig};
use webcache_core::{Backend, Cache, CacheOptions};

async fn fill(backend: &LocMem, n: usize, value_len: usize) {
    let cache = Cache::new(Arc::new(backend.clone()), CacheOptions::default());
    let value = vec![7u8; value_len];
    for i in 0..n {
        cache.set_bytes(&format!("k{i}"), &value, 60).await.unwrap();
    }
}

#[tokio::test]
async fn the_byte_bound_holds() {
    let backend = LocMem::private(LocMemConfig {
        max_entries: None,
        max_bytes: Some(100_000),
        ..LocMemConfig::default()
    });
    fill(&backend, 200, 5_000).await; // 1 MB offered to a 100 KB cache
    let stats = backend.stats().await.unwrap();
    let bytes = stats.bytes.unwrap();
    assert!(bytes <= 100_000, "{bytes} bytes exceed the 100 KB bound");
    assert!(
        stats.entries.unwrap() >= 5,
        "the cache still holds something: {stats:?}"
    );
}

#[tokio::test]
async fn both_bounds_hold_together() {
    let backend = LocMem::private(LocMemConfig {
        max_entries: Some(20),
        max_bytes: Some(1_000_000),
        ..LocMemConfig::default()
    });
    fill(&backend, 300, 10).await; // small values: the entry bound bites first
    let stats = backend.stats().await.unwrap();
    assert!(stats.entries.unwrap() <= 20, "{stats:?}");
    fill(&backend, 300, 200_000).await; // large values: the byte bound bites first
    let stats = backend.stats().await.unwrap();
    assert!(stats.bytes.unwrap() <= 1_000_000, "{stats:?}");
    assert!(stats.entries.unwrap() <= 20, "{stats:?}");
}

#[tokio::test]
async fn same_name_shares_and_other_names_are_isolated() {
    let a1 = Cache::with_backend(LocMem::named("shared-a", LocMemConfig::default()));
    let a2 = Cache::with_backend(LocMem::named("shared-a", LocMemConfig::default()));
    let b = Cache::with_backend(LocMem::named("shared-b", LocMemConfig::default()));
    a1.set("k", "v", 60).await.unwrap();
    assert_eq!(a2.get::<String>("k").await.unwrap().as_deref(), Some("v"));
    assert_eq!(b.get::<String>("k").await.unwrap(), None);
    // A private store shares with nobody.
    let p = Cache::locmem();
    assert_eq!(p.get::<String>("k").await.unwrap(), None);
}
