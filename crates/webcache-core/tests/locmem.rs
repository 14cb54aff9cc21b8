//! locmem beyond the conformance suite: byte and entry bounds, and named stores.

use std::sync::Arc;

use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::{Cache, CacheOptions};

async fn fill(backend: &LocMemBackend, n: usize, value_len: usize) {
    let cache = Cache::new(Arc::new(backend.clone()), CacheOptions::default());
    let value = vec![7u8; value_len];
    for i in 0..n {
        cache.set_bytes(&format!("k{i}"), &value, 60).await.unwrap();
    }
}

#[tokio::test]
async fn the_byte_bound_holds() {
    let backend = LocMemBackend::private(
        LocMemConfig::default()
            .max_entries(None)
            .max_bytes(Some(100_000)),
    );
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
    let backend = LocMemBackend::private(
        LocMemConfig::default()
            .max_entries(20)
            .max_bytes(Some(1_000_000)),
    );
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
    let a1 = Cache::with_backend(LocMemBackend::named("shared-a", LocMemConfig::default()));
    let a2 = Cache::with_backend(LocMemBackend::named("shared-a", LocMemConfig::default()));
    let b = Cache::with_backend(LocMemBackend::named("shared-b", LocMemConfig::default()));
    a1.set("k", "v", 60).await.unwrap();
    assert_eq!(a2.get::<String>("k").await.unwrap().as_deref(), Some("v"));
    assert_eq!(b.get::<String>("k").await.unwrap(), None);
    // A private store shares with nobody.
    let p = Cache::locmem();
    assert_eq!(p.get::<String>("k").await.unwrap(), None);
}

/// Issue 10 #4: the embedded default (`locmem://` with no options, and `Cache::locmem()`) has a
/// byte bound, so distinct 1 MiB pages cannot grow it without limit.
#[tokio::test]
async fn the_default_store_has_a_byte_bound() {
    use webcache_core::backends::DEFAULT_MAX_BYTES;
    use webcache_core::config::CacheConfig;

    let mut config = CacheConfig::from_url("default", "locmem://byte-bound-default").unwrap();
    let from_url = LocMemBackend::from_spec(&mut config.backend).unwrap();
    let private = LocMemBackend::private(LocMemConfig::default());
    for backend in [from_url, private] {
        // Uncompressed, so that each page weighs its full size.
        let options = CacheOptions::builder().compress_min_bytes(None).build();
        let cache = Cache::new(Arc::new(backend.clone()), options);
        let page = vec![b'x'; 1024 * 1024];
        // Three times the bound, as the proxy saw with 800 distinct query strings.
        let offered = 3 * DEFAULT_MAX_BYTES / page.len() as u64;
        for i in 0..offered {
            cache
                .set_bytes(&format!("/page?{i}"), &page, 60)
                .await
                .unwrap();
            // Checked right after each write: no maintenance pass is needed.
            let bytes = backend.stats().await.unwrap().bytes.unwrap();
            assert!(bytes <= DEFAULT_MAX_BYTES, "{bytes} bytes after {i} pages");
        }
        let last = format!("/page?{}", offered - 1);
        assert!(cache.get_bytes(&last).await.unwrap().is_some());
    }
}

/// A value that cannot fit under the byte bound on its own is refused, saying so, and the
/// older value under its key is gone (never a stale read).
#[tokio::test]
async fn a_value_larger_than_the_bound_is_refused() {
    let cache = Cache::new(
        Arc::new(LocMemBackend::private(
            LocMemConfig::default().max_bytes(Some(10_000)),
        )),
        CacheOptions::default(),
    );
    cache.set_bytes("k", b"old", 60).await.unwrap();
    let err = cache.set_bytes("k", &[0; 20_000], 60).await.unwrap_err();
    assert!(
        matches!(err, webcache_core::Error::ValueTooLarge { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("larger than the cache accepts"),
        "{err}"
    );
    assert_eq!(cache.get_bytes("k").await.unwrap(), None);
}

/// `max_bytes=0` and `max_entries=0` lift the bounds; other options are refused by name.
#[tokio::test]
async fn zero_lifts_a_bound() {
    use webcache_core::config::CacheConfig;

    let mut config =
        CacheConfig::from_url("default", "locmem://unbounded?max_bytes=0&max_entries=0").unwrap();
    let backend = LocMemBackend::from_spec(&mut config.backend).unwrap();
    let cache = Cache::new(Arc::new(backend.clone()), CacheOptions::default());
    for i in 0..20_000 {
        cache.set(&format!("k{i}"), &i, 60).await.unwrap();
    }
    assert_eq!(backend.stats().await.unwrap().entries, Some(20_000));

    let mut config = CacheConfig::from_url("default", "locmem://?cull_frequency=-1").unwrap();
    let err = LocMemBackend::from_spec(&mut config.backend).unwrap_err();
    assert!(err.to_string().contains("`cull_frequency`"), "{err}");
}

/// An unknown option names every accepted one, `cull_frequency` included.
#[test]
fn unknown_options_list_the_accepted_ones() {
    use webcache_core::config::CacheConfig;

    let mut config = CacheConfig::from_url("default", "locmem://?colour=blue").unwrap();
    let err = LocMemBackend::from_spec(&mut config.backend)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("accepted options: max_entries, max_bytes, cull_frequency, timeout"),
        "{err}"
    );
}

/// The byte bound counts the store's own bookkeeping (160 bytes an entry), so a flood of tiny
/// entries cannot take far more memory than `max_bytes` either.
#[tokio::test]
async fn tiny_entries_count_their_bookkeeping() {
    let backend = LocMemBackend::private(
        LocMemConfig::default()
            .max_entries(None)
            .max_bytes(Some(160_000)),
    );
    let cache = Cache::new(Arc::new(backend.clone()), CacheOptions::default());
    for i in 0..10_000 {
        cache.set(&format!("k{i}"), &1, 60).await.unwrap();
    }
    let entries = backend.stats().await.unwrap().entries.unwrap();
    assert!(entries * 160 <= 160_000, "{entries} entries under 160 KB");
    assert!(entries >= 500, "{entries}");
}

/// A store with no bound, holding keys kept in their slot and keys too long for it: every
/// operation that walks or removes keys (scan, prefix clear, delete, stats) sees both kinds.
#[tokio::test]
async fn an_unbounded_store_lists_clears_and_deletes_short_and_long_keys() {
    use futures::StreamExt;
    let backend = LocMemBackend::private(LocMemConfig::default().max_entries(None).max_bytes(None));
    let long = |p: &str, i: usize| format!("{p}:{i}:{}", "x".repeat(100));
    let short = |p: &str, i: usize| format!("{p}:{i}");
    for i in 0..50 {
        for key in [short("a", i), long("a", i), short("b", i), long("b", i)] {
            backend
                .set(
                    &key,
                    bytes::Bytes::from_static(b"v"),
                    webcache_core::Expiry::Never,
                )
                .await
                .unwrap();
        }
    }
    // Reads do not disturb anything in an unbounded store.
    for i in 0..50 {
        assert!(backend.get(&long("a", i)).await.unwrap().is_some());
        assert!(backend.get(&short("b", i)).await.unwrap().is_some());
    }
    let mut listed: Vec<String> = backend
        .scan("a:*")
        .map(|k| k.unwrap())
        .collect::<Vec<_>>()
        .await;
    listed.sort();
    let mut want: Vec<String> = (0..50)
        .flat_map(|i| [short("a", i), long("a", i)])
        .collect();
    want.sort();
    assert_eq!(listed, want);
    backend.clear(Some("a:")).await.unwrap();
    assert_eq!(backend.stats().await.unwrap().entries, Some(100));
    assert!(backend.get(&long("a", 3)).await.unwrap().is_none());
    assert!(backend.delete(&long("b", 7)).await.unwrap());
    assert!(backend.delete(&short("b", 7)).await.unwrap());
    assert!(backend.get(&long("b", 7)).await.unwrap().is_none());
    assert!(backend.get(&long("b", 8)).await.unwrap().is_some());
    assert_eq!(backend.stats().await.unwrap().entries, Some(98));
}
