//! A recorder installed after the first requests still hears the later ones: the handles a
//! thread kept for "no recorder" are dropped when the recorder changes. (Its own test binary:
//! the recorder is the process's, and here it must be installed mid-test.)

#![allow(clippy::unwrap_used)]

mod common;

use axum::routing::get;
use axum::Router;
use common::{serve, HttpClient};
use webcache_core::Cache;
use webcache_http::metrics::PrometheusMetrics;
use webcache_http::CachePageLayer;

#[tokio::test(flavor = "current_thread")]
async fn a_recorder_installed_late_hears_later_requests() {
    let cache = Cache::locmem();
    let app = Router::new()
        .route(
            "/late",
            get(|| async { ([("cache-control", "max-age=60")], "late") }),
        )
        .layer(CachePageLayer::new(cache.clone()));
    // One thread: the server's tasks run where the test does, so its handles are this thread's.
    let client = HttpClient::new(serve(app).await);
    assert_eq!(client.get("/late").await.x_cache(), "MISS");
    assert_eq!(client.get("/late").await.x_cache(), "HIT");
    let metrics = PrometheusMetrics::install().unwrap();
    assert_eq!(client.get("/late").await.x_cache(), "HIT");
    let text = metrics.render().await;
    assert!(
        text.contains("webcache_page_responses_total{route=\"/late\",outcome=\"HIT\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("webcache_cache_hits_total{alias=\"default\",operation=\"get_bytes\"} 1"),
        "{text}"
    );
}
