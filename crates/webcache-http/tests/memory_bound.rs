//! Issue 10 #4: the embedded default cache is bounded in bytes, so distinct URLs of a large page
//! cannot grow the process without limit (before: 800 distinct query strings of a 1 MB page took
//! a proxy from 11 MB to 806 MB).

#![allow(clippy::unwrap_used)]

mod common;

use axum::routing::get;
use axum::Router;
use common::{serve, HttpClient};
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
