//! What a hit costs besides the answer (issue 17): the page cache's future is allocated and
//! moved on every request, so its size is part of every hit's price. An async wrapper around
//! a large future keeps it again in each await point's state (the service's future was once
//! 21,824 bytes, four times the 5 KB page it answered, and copying it cost more than the
//! page did).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use http::Request;
use tower::{Layer, Service};
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::{Cache, CacheOptions};
use webcache_http::CachePageLayer;

/// The most the future of one request through the layer, around an axum route, may take.
const MAX_FUTURE_BYTES: usize = 4096;

#[tokio::test]
async fn the_page_cache_future_stays_small() {
    let backend = Arc::new(LocMemBackend::private(LocMemConfig::default()));
    let cache = Cache::new(backend, CacheOptions::default());
    let route = Router::new().route("/", get(|| async { "page" }));
    let mut service = CachePageLayer::new(cache).layer(route);
    let future = service.call(
        Request::get("/")
            .header("host", "example.com")
            .body(axum::body::Body::empty())
            .unwrap(),
    );
    let bytes = std::mem::size_of_val(&*future);
    eprintln!("future: {bytes} bytes");
    assert!(
        bytes <= MAX_FUTURE_BYTES,
        "the page cache's future takes {bytes} bytes (at most {MAX_FUTURE_BYTES}): a wrapper \
         around the engine's future holds it twice, or a rare path is not boxed"
    );
    let response = future.await.unwrap();
    assert_eq!(response.status(), 200);
}
