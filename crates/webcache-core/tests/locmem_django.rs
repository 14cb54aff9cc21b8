//! Django's own locmem tests (`tests/cache/tests.py`, Django 6.1), ported: locmem is a
//! least-recently-used store whose bounds hold right after every write, and which keeps the
//! newest write when full.

use std::sync::Arc;

use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::config::CacheConfig;
use webcache_core::{Cache, CacheOptions, Timeout};

fn cache(max_entries: u64, cull_frequency: u32) -> Cache {
    Cache::new(
        Arc::new(LocMemBackend::private(
            LocMemConfig::default()
                .max_entries(max_entries)
                .max_bytes(None)
                .cull_frequency(cull_frequency),
        )),
        CacheOptions::default(),
    )
}

/// Django's `LocMemCacheTests` use `MAX_ENTRIES: 9` and the default `CULL_FREQUENCY` of 3.
fn lru_cache() -> Cache {
    cache(9, 3)
}

async fn get(c: &Cache, key: u32) -> Option<u32> {
    c.get(&key.to_string()).await.unwrap()
}

async fn set(c: &Cache, key: u32, value: u32) {
    c.set(&key.to_string(), &value, Timeout::Forever)
        .await
        .unwrap();
}

/// `test_lru_get`: get() moves cache keys.
#[tokio::test]
async fn lru_get() {
    let c = lru_cache();
    for key in 0..9 {
        set(&c, key, key).await;
    }
    for key in 0..6 {
        assert_eq!(get(&c, key).await, Some(key));
    }
    set(&c, 9, 9).await;
    for key in 0..6 {
        assert_eq!(get(&c, key).await, Some(key), "key {key} was used recently");
    }
    for key in 6..9 {
        assert_eq!(
            get(&c, key).await,
            None,
            "key {key} was the least recently used"
        );
    }
    assert_eq!(get(&c, 9).await, Some(9), "the newest write is kept");
}

/// `test_lru_set`: set() moves cache keys.
#[tokio::test]
async fn lru_set() {
    let c = lru_cache();
    for key in 0..9 {
        set(&c, key, key).await;
    }
    for key in 3..9 {
        set(&c, key, key).await;
    }
    set(&c, 9, 9).await;
    for key in 3..10 {
        assert_eq!(get(&c, key).await, Some(key), "key {key}");
    }
    for key in 0..3 {
        assert_eq!(get(&c, key).await, None, "key {key}");
    }
}

/// `test_lru_incr`: incr() moves cache keys.
#[tokio::test]
async fn lru_incr() {
    let c = lru_cache();
    for key in 0..9 {
        set(&c, key, key).await;
    }
    for key in 0..6 {
        assert_eq!(
            c.incr(&key.to_string(), 1).await.unwrap(),
            i64::from(key) + 1
        );
    }
    set(&c, 9, 9).await;
    for key in 0..6 {
        assert_eq!(get(&c, key).await, Some(key + 1), "key {key}");
    }
    for key in 6..9 {
        assert_eq!(get(&c, key).await, None, "key {key}");
    }
    assert_eq!(get(&c, 9).await, Some(9));
}

/// Django's `_perform_cull_test`: `initial_count - 1` sets, then count what is left with
/// `has_key`.
async fn perform_cull_test(c: &Cache, initial_count: u32, final_count: usize) {
    for i in 1..initial_count {
        c.set(&format!("cull{i}"), "value", 1000).await.unwrap();
    }
    let mut left = Vec::new();
    for i in 1..initial_count {
        if c.has_key(&format!("cull{i}")).await.unwrap() {
            left.push(i);
        }
    }
    assert_eq!(left.len(), final_count, "left: {left:?}");
    let newest = initial_count - 1;
    assert!(left.contains(&newest), "the last write is kept: {left:?}");
}

/// `test_cull`: `MAX_ENTRIES: 30`, 49 sets, 29 left (two culls of 10).
#[tokio::test]
async fn cull() {
    perform_cull_test(&cache(30, 3), 50, 29).await;
}

/// `test_zero_cull`: `CULL_FREQUENCY: 0` empties the store when full: 19 left.
#[tokio::test]
async fn zero_cull() {
    perform_cull_test(&cache(30, 0), 50, 19).await;
}

/// The same, configured the way users do: by URL.
#[tokio::test]
async fn cull_by_url() {
    for (url, left) in [
        ("locmem://django-cull?max_entries=30", 29),
        (
            "locmem://django-zero-cull?max_entries=30&cull_frequency=0",
            19,
        ),
    ] {
        let mut config = CacheConfig::from_url("default", url).unwrap();
        let backend = LocMemBackend::from_spec(&mut config.backend).unwrap();
        perform_cull_test(&Cache::new(Arc::new(backend), config.options), 50, left).await;
    }
}

/// `test_cull_delete_when_store_empty`: a cull that finds fewer entries than the frequency
/// removes nothing by the `1/N` rule; the write is still stored and the bound still holds.
#[tokio::test]
async fn cull_delete_when_store_empty() {
    let c = cache(1, 3);
    c.set("force_cull_delete", "value", 1000).await.unwrap();
    assert!(c.has_key("force_cull_delete").await.unwrap());
    // The store is full now: the next new key culls (1 / 3 = 0 entries, so at least one).
    c.set("after", "value", 1000).await.unwrap();
    assert!(c.has_key("after").await.unwrap());
    assert!(!c.has_key("force_cull_delete").await.unwrap());
    let stats = c.stats().await.unwrap();
    assert_eq!(stats.backend_stats.entries, Some(1));
}

/// The bound is observable right after the writes, with no maintenance in between.
#[tokio::test]
async fn max_entries_is_a_hard_bound() {
    let c = cache(30, 3);
    for i in 0..49 {
        c.set(&format!("k{i}"), &i, 60).await.unwrap();
    }
    let mut readable = 0;
    for i in 0..49 {
        readable += usize::from(c.get::<i32>(&format!("k{i}")).await.unwrap().is_some());
    }
    assert!(
        readable <= 30,
        "{readable} of 49 keys readable with max_entries=30"
    );
    assert_eq!(c.get::<i32>("k48").await.unwrap(), Some(48));
}

/// A full session store keeps new sessions (the README's `max_entries=5000` example, small).
#[tokio::test]
async fn a_full_store_keeps_new_writes() {
    let backend = LocMemBackend::private(LocMemConfig::default().max_entries(50));
    let c = Cache::new(Arc::new(backend.clone()), CacheOptions::default());
    for i in 0..500 {
        c.set(&format!("session{i}"), &i, 60).await.unwrap();
        assert!(backend.stats().await.unwrap().entries.unwrap() <= 50);
    }
    // A cull leaves two thirds of the 50 (34) plus the new write: the last 30 are all there.
    for i in 470..500 {
        let key = format!("session{i}");
        assert_eq!(c.get::<i32>(&key).await.unwrap(), Some(i), "{key}");
    }
}

/// `has_key`, `ttl` and `touch` are not uses (as in Django), and `add` that stores is one.
#[tokio::test]
async fn only_reads_and_writes_count_as_uses() {
    let c = cache(3, 3);
    for key in 0..3 {
        set(&c, key, key).await;
    }
    // 0 is the least recently used; looking at it must not save it.
    assert!(c.has_key("0").await.unwrap());
    assert_eq!(c.ttl("0").await.unwrap(), webcache_core::Ttl::Forever);
    assert!(c.touch("0", Timeout::Forever).await.unwrap());
    assert!(c.add("3", &3, Timeout::Forever).await.unwrap());
    assert_eq!(get(&c, 0).await, None);
    for key in 1..4 {
        assert_eq!(get(&c, key).await, Some(key));
    }
}
