//! Issue 10 #4: the embedded default cache is bounded in bytes, so distinct URLs of a large page
//! cannot grow the process without limit (before: 800 distinct query strings of a 1 MB page took
//! a proxy from 11 MB to 806 MB).

#![allow(clippy::unwrap_used)]

mod common;

use axum::routing::get;
use axum::Router;
use common::{serve, HttpClient};
use webcache_core::backend::BackendFactory as _;
use webcache_core::Cache;
use webcache_http::CachePageLayer;

#[tokio::test]
async fn distinct_urls_of_a_large_page_stay_within_the_default_byte_bound() {
    // Incompressible, so that compression cannot be what keeps the store small.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let page: Vec<u8> = (0..1_000_000)
        .map(|_| {
            // xorshift64: noise LZ4 cannot shrink.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    let cache = Cache::locmem();
    let app = Router::new()
        .route("/big", get(move || std::future::ready(page.clone())))
        .layer(CachePageLayer::new(cache.clone()));
    let client = HttpClient::new(serve(app).await);
    let bound = 64 * 1024 * 1024;
    for i in 0..150 {
        let r = client.get(&format!("/big?n={i}")).await;
        assert_eq!((r.status.as_u16(), r.x_cache()), (200, "MISS"));
    }
    // The pages were stored (the latest one is served from the cache)...
    let mut hit = false;
    for _ in 0..100 {
        if client.get("/big?n=149").await.x_cache() == "HIT" {
            hit = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(hit, "large pages are stored");
    // ...but 150 MB of them do not fit under the default bound: the oldest went.
    let stats = cache.stats().await.unwrap().backend_stats;
    let bytes = stats.bytes.unwrap();
    assert!(bytes <= bound, "{bytes} bytes stored, bound {bound}");
    assert!(stats.entries.unwrap() < 100, "{stats:?}");
}

/// Pages are written after answering; a backend that is slow but does not fail (so the
/// circuit breaker stays closed) must not let them pile up in memory for the whole store
/// timeout. This process serves a page it is still writing (a hit), so the hits after a burst
/// of distinct 1 MB pages to a frozen Redis count the pages held: at most the write budget
/// (64 MiB), not the 150 MB sent. Redis's timeouts are long (8 s, no breaker) so the writes are
/// still waiting when the second burst reads; the test takes about two of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_waiting_for_a_slow_backend_stay_within_a_budget() {
    use webcache_testkit::servers::{redis::RedisServer, Frozen};
    let server = RedisServer::start();
    let url = format!(
        "{}?connect_timeout=8&response_timeout=8&breaker_failures=0",
        server.url(0)
    );
    let mut config = webcache_core::config::CacheConfig::from_url("default", &url).unwrap();
    let backend = webcache_redis::RedisFactory
        .build(&mut config.backend)
        .await
        .unwrap();
    let cache = Cache::new(backend, config.options);
    cache.set("warm", "up", 60).await.unwrap();
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let page: Vec<u8> = (0..1_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    let app = Router::new()
        .route("/big", get(move || std::future::ready(page.clone())))
        .layer(
            CachePageLayer::new(cache.clone()).store_timeout(std::time::Duration::from_secs(120)),
        );
    let client = HttpClient::new(serve(app).await);
    let frozen = Frozen::stop(server.pid());
    let burst = |n: usize| {
        let client = client.clone();
        async move {
            let replies = futures::future::join_all((0..n).map(|i| {
                let client = client.clone();
                async move { client.get(&format!("/big?n={i}")).await }
            }))
            .await;
            replies
                .iter()
                .filter(|r| r.status.as_u16() == 200 && r.x_cache() == "HIT")
                .count()
        }
    };
    assert_eq!(burst(150).await, 0, "the first requests are misses");
    let hits = burst(150).await;
    drop(frozen);
    assert!(hits > 0, "pages being written are served from memory");
    assert!(
        hits <= 64,
        "{hits} pages of 1 MB held in memory while the backend was frozen"
    );
}
