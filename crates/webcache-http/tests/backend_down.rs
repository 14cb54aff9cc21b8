//! A cache whose backend is down never breaks the site: every lookup is a miss, the handler
//! answers, and storing fails quietly (logged). The backend is a real redis-server, killed and
//! restarted under the running site.

#![allow(clippy::unwrap_used)]

mod common;

use axum::routing::get;
use axum::Router;
use common::{serve, Counter, HttpClient};
use webcache_http::CachePageLayer;
use webcache_testkit::servers::redis::RedisServer;

#[tokio::test]
async fn the_site_keeps_answering_when_the_cache_is_down() {
    let counter = Counter::default();
    let c = counter.clone();
    let posts = Counter::default();
    let p = posts.clone();
    // A real redis-server of this test's own, stopped and started under the running site.
    let server = RedisServer::start();
    let cache = common::redis_cache_with_timeouts(&server, "0.3").await;
    let router = Router::new()
        .route(
            "/",
            get(move || {
                let n = c.bump();
                async move { format!("page {n}") }
            })
            .post(move || {
                p.bump();
                async { "posted" }
            }),
        )
        .layer(CachePageLayer::new(cache.clone()));
    let client = HttpClient::new(serve(router).await);
    let r = client.get("/").await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, "MISS"));
    // Pages are written after answering: wait until Redis has it, so that what follows is
    // about a backend that is down, not about a write still under way.
    for _ in 0..100 {
        if !common::keys(&cache, "views.cache_page.*").await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.kill();
    for i in 2..=4 {
        let r = client.get("/").await;
        assert_eq!((r.status.as_u16(), r.x_cache()), (200, "MISS"));
        assert_eq!(r.text(), format!("page {i}"));
        // The page is written after answering, and served from this process's memory until
        // the backend confirms or refuses it: wait for Redis's refusal.
        let errors = cache.metrics().errors;
        for _ in 0..250 {
            if cache.metrics().errors > errors {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The unsafe request's invalidation fails too, quietly.
        assert_eq!(client.send("POST", "/", &[], "").await.text(), "posted");
    }
    assert_eq!((counter.get(), posts.get()), (4, 3));
    assert!(
        cache.metrics().errors >= 3,
        "the failures were real backend calls"
    );
    // Redis comes back: the same site caches again without a restart.
    server.restart();
    let mut hit = false;
    for _ in 0..50 {
        if client.get("/").await.x_cache() == "HIT" {
            hit = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(hit, "the layer caches again once Redis is back");
}
