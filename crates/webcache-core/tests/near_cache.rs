//! Process-local copies in front of a shared backend (`near_ttl`): the conformance suite
//! unchanged, and the staleness bound between two "processes".

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig, NearCache};
use webcache_core::config::CacheConfig;
use webcache_core::{Cache, CacheOptions};
use webcache_testkit::{conformance_suite, Harness};

struct NearHarness;

#[async_trait::async_trait]
impl Harness for NearHarness {
    async fn backend(&self) -> Arc<dyn Backend> {
        // One process: one near tier over one shared store.
        static BACKEND: OnceLock<Arc<dyn Backend>> = OnceLock::new();
        BACKEND
            .get_or_init(|| {
                let far: Arc<dyn Backend> =
                    Arc::new(LocMemBackend::named("near-far", LocMemConfig::default()));
                Arc::new(NearCache::new(far, Duration::from_secs(30), 1000))
            })
            .clone()
    }
}

conformance_suite!(NearHarness; skip: {
    eviction_keeps_the_bound: "the near tier sits over an unbounded store here (locmem's own suite tests eviction)",
});

fn process(far: &Arc<dyn Backend>, ttl_ms: u64) -> Cache {
    Cache::new(
        far.clone(),
        CacheOptions::builder()
            .near_ttl(Duration::from_millis(ttl_ms))
            .build(),
    )
}

#[tokio::test]
async fn another_process_sees_a_change_within_near_ttl_and_its_own_at_once() {
    let far: Arc<dyn Backend> = Arc::new(LocMemBackend::private(LocMemConfig::default()));
    let (a, b) = (process(&far, 300), process(&far, 300));
    a.set("k", &1, 60).await.unwrap();
    assert_eq!(b.get::<i32>("k").await.unwrap(), Some(1));
    a.set("k", &2, 60).await.unwrap();
    assert_eq!(
        a.get::<i32>("k").await.unwrap(),
        Some(2),
        "a process reads its own writes"
    );
    assert_eq!(
        b.get::<i32>("k").await.unwrap(),
        Some(1),
        "b keeps its copy for near_ttl"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        b.get::<i32>("k").await.unwrap(),
        Some(2),
        "then b reads the shared value"
    );
    a.delete("k").await.unwrap();
    assert_eq!(a.get::<i32>("k").await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.get::<i32>("k").await.unwrap(), None);
    // incr always goes to the shared store.
    a.set("n", &0, 60).await.unwrap();
    assert_eq!(b.get::<i64>("n").await.unwrap(), Some(0));
    assert_eq!(b.incr("n", 5).await.unwrap(), 5);
    assert_eq!(b.get::<i64>("n").await.unwrap(), Some(5));
}

#[tokio::test]
async fn a_hit_on_the_near_copy_does_not_reach_the_shared_backend() {
    let far = LocMemBackend::private(LocMemConfig::default());
    let shared: Arc<dyn Backend> = Arc::new(far.clone());
    let cache = process(&shared, 10_000);
    cache.set("k", "v", 60).await.unwrap();
    // Remove the value behind the near tier's back: the near copy still answers.
    far.delete(&cache.make_key("k").unwrap()).await.unwrap();
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
}

#[tokio::test]
async fn near_ttl_is_a_url_option() {
    let config =
        CacheConfig::from_url("default", "locmem://?near_ttl=0.5&near_max_entries=100").unwrap();
    assert_eq!(config.options.near_ttl, Some(Duration::from_millis(500)));
    assert_eq!(config.options.near_max_entries, 100);
    let cache = Cache::new(
        Arc::new(LocMemBackend::private(LocMemConfig::default())),
        config.options,
    );
    assert!(cache.backend_as::<NearCache>().is_some());
    assert!(
        cache.backend_as::<LocMemBackend>().is_some(),
        "backend_as sees through the near tier"
    );
    let err = CacheConfig::from_url("default", "locmem://?near_ttl=soon").unwrap_err();
    assert!(err.to_string().contains("`near_ttl`"), "{err}");
}
