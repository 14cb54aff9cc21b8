//! The header helpers as layers, through real HTTP, alone and under the page cache.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use common::{serve, still_fresh, Counter, HttpClient};
use webcache_core::Cache;
use webcache_http::{
    cache_control, never_cache, vary_on_cookie, CacheControlPatch, CachePageLayer,
};

fn counting(counter: &Counter) -> Router {
    let counter = counter.clone();
    Router::new().route(
        "/",
        get(move |headers: HeaderMap| {
            let n = counter.bump();
            let cookie = headers
                .get("cookie")
                .map(|c| c.to_str().unwrap().to_owned())
                .unwrap_or_default();
            async move { format!("call {n} cookie={cookie}") }
        }),
    )
}

#[tokio::test]
async fn never_cache_sets_the_headers_and_keeps_the_page_out_of_the_cache() {
    let counter = Counter::default();
    let app = counting(&counter)
        .layer(never_cache())
        .layer(CachePageLayer::new(Cache::locmem()));
    let client = HttpClient::new(serve(app).await);
    let r = client.get("/").await;
    assert_eq!(
        r.header("cache-control"),
        Some("max-age=0, no-cache, no-store, must-revalidate, private")
    );
    let expires = httpdate::parse_http_date(r.header("expires").unwrap()).unwrap();
    assert!(expires <= std::time::SystemTime::now() + Duration::from_secs(1));
    assert_eq!(client.get("/").await.x_cache(), "MISS");
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn cache_control_patches_and_its_max_age_is_honoured() {
    let counter = Counter::default();
    let app = counting(&counter)
        .layer(cache_control(
            CacheControlPatch::new()
                .public()
                .max_age(Duration::from_secs(1)),
        ))
        .layer(CachePageLayer::new(Cache::locmem()));
    let client = HttpClient::new(serve(app).await);
    let sent = std::time::Instant::now();
    let r = client.get("/").await;
    assert_eq!(r.header("cache-control"), Some("public, max-age=1"));
    let again = client.get("/").await;
    if still_fresh(sent, Duration::from_secs(1)) {
        assert_eq!(again.x_cache(), "HIT");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        client.get("/").await.x_cache(),
        "MISS",
        "max-age=1 expired it"
    );
    assert_eq!(counter.get(), 2 + usize::from(again.x_cache() != "HIT"));

    let private = Counter::default();
    let app = counting(&private)
        .layer(cache_control(CacheControlPatch::new().private()))
        .layer(CachePageLayer::new(Cache::locmem()));
    let client = HttpClient::new(serve(app).await);
    client.get("/").await;
    assert_eq!(client.get("/").await.x_cache(), "MISS");
    assert_eq!(private.get(), 2);
}

#[tokio::test]
async fn vary_on_cookie_keys_pages_by_cookie() {
    let counter = Counter::default();
    let app = counting(&counter)
        .layer(vary_on_cookie())
        .layer(CachePageLayer::new(Cache::locmem()));
    let client = HttpClient::new(serve(app).await);
    let a = client.get_with("/", &[("cookie", "user=a")]).await;
    assert_eq!(a.header("vary"), Some("cookie"));
    let b = client.get_with("/", &[("cookie", "user=b")]).await;
    assert_eq!(
        (b.x_cache(), b.text().as_str()),
        ("MISS", "call 2 cookie=user=b")
    );
    let a2 = client.get_with("/", &[("cookie", "user=a")]).await;
    assert_eq!((a2.x_cache(), &a2.body), ("HIT", &a.body));
    let none = client.get("/").await;
    assert_eq!(none.x_cache(), "MISS");
    assert_eq!(counter.get(), 3);
}
