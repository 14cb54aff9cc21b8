//! The cost of the cache API over the in-process store, and the choice of that store.
//!
//! `cargo bench -p webcache-core --bench locmem`
//!
//! Compares, on 5 KB values and 1,000 hot keys:
//! - `moka_direct` / `quick_cache_direct`: the two candidate crates used directly (with the
//!   same per-entry expiry work a cache must do: moka's `Expiry`, or a deadline check on read
//!   for quick_cache, which has no TTL of its own);
//! - `locmem_backend`: webcache's `LocMemBackend` through the `Backend` trait;
//! - `cache_api`: the full typed API (`Cache::get_bytes`/`set_bytes`: key building, entry
//!   framing, counters) over `LocMemBackend`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use divan::{black_box, Bencher};
use futures::executor::block_on;
use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::{Cache, CacheOptions, Expiry};

const KEYS: usize = 1000;

fn main() {
    divan::main();
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!(":1:page.{i}")).collect()
}

fn value() -> Bytes {
    Bytes::from(vec![b'x'; 5 * 1024])
}

#[derive(Clone)]
struct Timed {
    value: Bytes,
    expires_at: Option<Instant>,
}

struct Expire;
impl moka::Expiry<String, Timed> for Expire {
    fn expire_after_create(&self, _: &String, v: &Timed, now: Instant) -> Option<Duration> {
        v.expires_at.map(|t| t.saturating_duration_since(now))
    }
}

mod get {
    use super::*;

    #[divan::bench]
    fn moka_direct(b: Bencher<'_, '_>) {
        let cache = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .expire_after(Expire)
            .build();
        let keys = keys();
        for k in &keys {
            cache.insert(
                k.clone(),
                Timed {
                    value: value(),
                    expires_at: Some(Instant::now() + Duration::from_secs(300)),
                },
            );
        }
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            black_box(cache.get(&keys[i]).map(|t| t.value))
        });
    }

    #[divan::bench]
    fn quick_cache_direct(b: Bencher<'_, '_>) {
        let cache = quick_cache::sync::Cache::<String, Timed>::new(10_000);
        let keys = keys();
        for k in &keys {
            cache.insert(
                k.clone(),
                Timed {
                    value: value(),
                    expires_at: Some(Instant::now() + Duration::from_secs(300)),
                },
            );
        }
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            let now = Instant::now();
            black_box(
                cache
                    .get(&keys[i])
                    .filter(|t| t.expires_at.is_none_or(|e| e > now))
                    .map(|t| t.value),
            )
        });
    }

    #[divan::bench]
    fn locmem_backend(b: Bencher<'_, '_>) {
        let backend = LocMemBackend::private(LocMemConfig::default());
        let keys = keys();
        for k in &keys {
            block_on(backend.set(k, value(), Expiry::After(Duration::from_secs(300)))).unwrap();
        }
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            black_box(block_on(backend.get(&keys[i])).unwrap())
        });
    }

    #[divan::bench]
    fn cache_api(b: Bencher<'_, '_>) {
        let cache = Cache::new(
            Arc::new(LocMemBackend::private(LocMemConfig::default())),
            CacheOptions::default(),
        );
        let keys: Vec<String> = (0..KEYS).map(|i| format!("page.{i}")).collect();
        let v = value();
        for k in &keys {
            block_on(cache.set_bytes(k, &v, 300)).unwrap();
        }
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            black_box(block_on(cache.get_bytes(&keys[i])).unwrap())
        });
    }
}

mod set {
    use super::*;

    #[divan::bench]
    fn moka_direct(b: Bencher<'_, '_>) {
        let cache = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .expire_after(Expire)
            .build();
        let (keys, v) = (keys(), value());
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            cache.insert(
                keys[i].clone(),
                Timed {
                    value: v.clone(),
                    expires_at: Some(Instant::now() + Duration::from_secs(300)),
                },
            );
        });
    }

    #[divan::bench]
    fn quick_cache_direct(b: Bencher<'_, '_>) {
        let cache = quick_cache::sync::Cache::<String, Timed>::new(10_000);
        let (keys, v) = (keys(), value());
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            cache.insert(
                keys[i].clone(),
                Timed {
                    value: v.clone(),
                    expires_at: Some(Instant::now() + Duration::from_secs(300)),
                },
            );
        });
    }

    #[divan::bench]
    fn locmem_backend(b: Bencher<'_, '_>) {
        let backend = LocMemBackend::private(LocMemConfig::default());
        let (keys, v) = (keys(), value());
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            block_on(backend.set(&keys[i], v.clone(), Expiry::After(Duration::from_secs(300))))
                .unwrap();
        });
    }

    #[divan::bench]
    fn cache_api(b: Bencher<'_, '_>) {
        let cache = Cache::new(
            Arc::new(LocMemBackend::private(LocMemConfig::default())),
            CacheOptions::default(),
        );
        let keys: Vec<String> = (0..KEYS).map(|i| format!("page.{i}")).collect();
        let v = value();
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % KEYS;
            block_on(cache.set_bytes(&keys[i], &v, 300)).unwrap();
        });
    }
}
