//! Pages are stored uncompressed unless the layer is told otherwise (issue 17: "a hit must not
//! copy the body"): a compressed page is decompressed into a new buffer on every hit. Checked
//! from the stored entry's size (a repetitive 100 KB page compresses to almost nothing), on
//! locmem and on a real Redis server.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

on_every_store!(
    a_large_page_is_stored_uncompressed_by_default,
    compress_pages_lets_the_codec_compress_it,
);

use axum::routing::get;
use axum::Router;
use common::{serve, HttpClient, Store};
use futures::StreamExt;
use webcache_core::Cache;
use webcache_http::CachePageLayer;

/// 100 KB of one byte: far over the cache's 32 KiB compression threshold, and LZ4 makes it
/// a few hundred bytes.
const PAGE_BYTES: usize = 100_000;

/// Serves one large page through `layer`, requests it twice (MISS, HIT: the body served from
/// the store is whole), and returns the size of the largest entry the cache holds.
async fn largest_stored_entry(cache: Cache, layer: CachePageLayer) -> usize {
    let router = Router::new()
        .route("/big", get(|| async { "x".repeat(PAGE_BYTES) }))
        .layer(layer);
    let client = HttpClient::new(serve(router).await);
    assert_eq!(client.get("/big").await.x_cache(), "MISS");
    let hit = client.get("/big").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.text().len(), PAGE_BYTES);
    let keys: Vec<String> = cache
        .keys("*")
        .map(|key| key.unwrap())
        .collect::<Vec<_>>()
        .await;
    let mut largest = 0;
    for key in keys {
        if let Some(raw) = cache.get_raw(&key).await.unwrap() {
            largest = largest.max(raw.len());
        }
    }
    largest
}

async fn a_large_page_is_stored_uncompressed_by_default(store: Store) {
    let cache = store.cache();
    let layer = CachePageLayer::new(cache.clone()).timeout(60);
    let largest = largest_stored_entry(cache, layer).await;
    assert!(
        largest >= PAGE_BYTES,
        "the page was stored compressed ({largest} bytes): every hit would copy it"
    );
}

async fn compress_pages_lets_the_codec_compress_it(store: Store) {
    let cache = store.cache();
    let layer = CachePageLayer::new(cache.clone())
        .timeout(60)
        .compress_pages(true);
    let largest = largest_stored_entry(cache, layer).await;
    assert!(
        largest < PAGE_BYTES / 10,
        "the page was not compressed ({largest} bytes)"
    );
}
