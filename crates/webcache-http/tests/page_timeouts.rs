//! The page layer takes its timeouts the way the cache API does (issue 14): seconds, a
//! `Duration`, `Timeout::Forever` (bounded by HTTP's 2^31 s, since `max-age` needs a number)
//! and `Timeout::Default` (the cache's default timeout), for `cache_page`, `timeout`,
//! `default_ttl` and `grace`, on locmem and on a real Redis server.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

on_every_store!(
    the_layer_timeout_takes_every_form_of_the_cache_api,
    default_ttl_takes_every_form_of_the_cache_api,
    grace_takes_every_form_of_the_cache_api,
);

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{serve, Counter, HttpClient, Store};
use webcache_core::{Cache, Timeout};
use webcache_http::{cache_page, CachePageLayer};

/// 2^31 seconds: the longest `max-age` HTTP knows, where "forever" ends.
const FOREVER_SECONDS: u64 = 1 << 31;

async fn app(layer: CachePageLayer) -> (HttpClient, Counter) {
    let counter = Counter::default();
    let c = counter.clone();
    let router = Router::new()
        .route(
            "/page",
            get(move || {
                let n = c.bump();
                async move { format!("call {n}") }
            }),
        )
        .layer(layer);
    (HttpClient::new(serve(router).await), counter)
}

/// Requests the page twice: the second answer must be the stored one, whose `max-age` is
/// returned.
async fn stored_max_age(layer: CachePageLayer) -> String {
    let (client, counter) = app(layer).await;
    assert_eq!(client.get("/page").await.x_cache(), "MISS");
    let hit = client.get("/page").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(counter.get(), 1);
    hit.header("cache-control").unwrap().to_owned()
}

/// A cache on `store` whose default timeout is 120 s.
fn with_default_of_120(store: Store) -> Cache {
    let cache = store.cache();
    Cache::new(
        cache.backend().clone(),
        cache.options().to_builder().default_timeout(120).build(),
    )
}

async fn the_layer_timeout_takes_every_form_of_the_cache_api(store: Store) {
    assert_eq!(
        stored_max_age(cache_page(store.cache(), 60)).await,
        "max-age=60"
    );
    assert_eq!(
        stored_max_age(cache_page(store.cache(), Duration::from_secs(90))).await,
        "max-age=90"
    );
    assert_eq!(
        stored_max_age(CachePageLayer::new(store.cache()).timeout(Timeout::Forever)).await,
        format!("max-age={FOREVER_SECONDS}")
    );
    assert_eq!(
        stored_max_age(CachePageLayer::new(store.cache()).timeout(Duration::MAX)).await,
        format!("max-age={FOREVER_SECONDS}")
    );
    assert_eq!(
        stored_max_age(CachePageLayer::new(with_default_of_120(store)).timeout(Timeout::Default))
            .await,
        "max-age=120"
    );
    // Zero (and negative seconds, Django's "already expired") stores nothing.
    for zero in [Timeout::from(0), Timeout::from(-5)] {
        let (client, counter) = app(cache_page(store.cache(), zero)).await;
        client.get("/page").await;
        assert_eq!(client.get("/page").await.x_cache(), "MISS");
        assert_eq!(counter.get(), 2);
    }
}

async fn default_ttl_takes_every_form_of_the_cache_api(store: Store) {
    assert_eq!(
        stored_max_age(CachePageLayer::new(store.cache()).default_ttl(30)).await,
        "max-age=30"
    );
    assert_eq!(
        stored_max_age(CachePageLayer::new(store.cache()).default_ttl(Duration::from_secs(45)))
            .await,
        "max-age=45"
    );
    assert_eq!(
        stored_max_age(CachePageLayer::new(store.cache()).default_ttl(Timeout::Forever)).await,
        format!("max-age={FOREVER_SECONDS}")
    );
    assert_eq!(
        stored_max_age(
            CachePageLayer::new(with_default_of_120(store)).default_ttl(Timeout::Default)
        )
        .await,
        "max-age=120"
    );
}

async fn grace_takes_every_form_of_the_cache_api(store: Store) {
    // Fresh for one second; served stale afterwards only when the grace allows it.
    for (grace, served_stale) in [
        (Timeout::Forever, true),
        (Timeout::from(3600), true),
        (Timeout::from(Duration::from_secs(3600)), true),
        (Timeout::from(0), false),
    ] {
        let (client, _) = app(cache_page(store.cache(), 1).grace(grace)).await;
        assert_eq!(client.get("/page").await.x_cache(), "MISS");
        // Past its freshness whatever the load: the clock only moves forward.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let expected = if served_stale { "STALE" } else { "MISS" };
        assert_eq!(client.get("/page").await.x_cache(), expected, "{grace:?}");
    }
}
