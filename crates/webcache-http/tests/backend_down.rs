//! A cache whose backend is down never breaks the site: every lookup is a miss, the handler
//! answers, and storing fails quietly (logged).

#![allow(clippy::unwrap_used)]

mod common;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{serve, Counter, HttpClient};
use webcache_core::{
    async_trait, Backend, BackendStats, Cache, Error, Expiry, KeyStream, Result, Ttl,
};
use webcache_http::CachePageLayer;

/// A backend whose server is unreachable: every call fails as a real client's would.
#[derive(Debug)]
struct Unreachable;

fn down<T>() -> Result<T> {
    Err(Error::backend_msg(
        "unreachable",
        "connection refused (127.0.0.1:1)",
    ))
}

#[async_trait]
impl Backend for Unreachable {
    fn name(&self) -> &'static str {
        "unreachable"
    }
    async fn get(&self, _: &str) -> Result<Option<Bytes>> {
        down()
    }
    async fn set(&self, _: &str, _: Bytes, _: Expiry) -> Result<()> {
        down()
    }
    async fn add(&self, _: &str, _: Bytes, _: Expiry) -> Result<bool> {
        down()
    }
    async fn delete(&self, _: &str) -> Result<bool> {
        down()
    }
    async fn touch(&self, _: &str, _: Expiry) -> Result<bool> {
        down()
    }
    async fn incr(&self, _: &str, _: i64) -> Result<i64> {
        down()
    }
    async fn ttl(&self, _: &str) -> Result<Ttl> {
        down()
    }
    async fn clear(&self, _: Option<&str>) -> Result<()> {
        down()
    }
    fn scan(&self, _: &str) -> KeyStream {
        Box::pin(futures::stream::once(async { down() }))
    }
    async fn stats(&self) -> Result<BackendStats> {
        down()
    }
}

#[tokio::test]
async fn the_site_keeps_answering_when_the_cache_is_down() {
    let counter = Counter::default();
    let c = counter.clone();
    let posts = Counter::default();
    let p = posts.clone();
    let cache = Cache::with_backend(Unreachable);
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
        .layer(CachePageLayer::new(cache.clone()).policy(webcache_http::Policy::shared_cache()));
    let client = HttpClient::new(serve(router).await);
    for i in 1..=3 {
        let r = client.get("/").await;
        assert_eq!((r.status.as_u16(), r.x_cache()), (200, "MISS"));
        assert_eq!(r.text(), format!("page {i}"));
        // The unsafe request's invalidation fails too, quietly.
        assert_eq!(client.send("POST", "/", &[], "").await.text(), "posted");
    }
    assert_eq!((counter.get(), posts.get()), (3, 3));
    assert!(
        cache.metrics().errors >= 3,
        "the failures were real backend calls"
    );
}
