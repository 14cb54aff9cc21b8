//! Issue 14, "Page keys and predicates you control": query parameters left out or sorted,
//! headers, cookies and a computed value in the key, predicates per request and per response,
//! and the key of a request for code that purges or prefills.

mod common;

use std::time::Duration;

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use common::{serve, Counter, HttpClient};
use http::{HeaderMap, StatusCode};
use tower::util::MapRequestLayer;
use webcache_core::Cache;
use webcache_http::CachePageLayer;

/// An authenticated user, as an authentication layer would leave it in the extensions.
#[derive(Clone)]
struct UserId(u32);

fn app(layer: CachePageLayer, calls: Counter) -> Router {
    let (a, b) = (calls.clone(), calls);
    Router::new()
        .route(
            "/page",
            get(move || async move { format!("page #{}", a.bump()) }),
        )
        .route(
            "/missing",
            get(move || async move {
                b.bump();
                (StatusCode::NOT_FOUND, "no such page")
            }),
        )
        .layer(layer)
        // The "authentication" in front of the cache: `x-user: 7` becomes `UserId(7)`.
        .layer(MapRequestLayer::new(|mut req: Request| {
            let user = req
                .headers()
                .get("x-user")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            if let Some(user) = user {
                req.extensions_mut().insert(UserId(user));
            }
            req
        }))
}

async fn client(layer: CachePageLayer) -> (HttpClient, Counter) {
    let calls = Counter::default();
    (
        HttpClient::new(serve(app(layer, calls.clone())).await),
        calls,
    )
}

#[tokio::test]
async fn tracking_parameters_are_left_out_and_order_can_be_ignored() {
    let (c, calls) = client(CachePageLayer::new(Cache::locmem())).await;
    assert_eq!(c.get("/page?id=1").await.x_cache(), "MISS");
    assert_eq!(
        c.get("/page?id=1&utm_source=news&fbclid=abc")
            .await
            .x_cache(),
        "HIT"
    );
    assert_eq!(c.get("/page?gclid=x&id=1").await.x_cache(), "HIT");
    assert_eq!(c.get("/page?id=2").await.x_cache(), "MISS");
    assert_eq!(c.get("/page?id=1&a=1&b=2").await.x_cache(), "MISS");
    assert_eq!(
        c.get("/page?b=2&id=1&a=1").await.x_cache(),
        "MISS",
        "order counts by default"
    );
    assert_eq!(calls.get(), 4);

    let layer = CachePageLayer::new(Cache::locmem()).sort_query_params(true);
    let (c, _) = client(layer).await;
    assert_eq!(c.get("/page?a=1&b=2").await.x_cache(), "MISS");
    assert_eq!(c.get("/page?b=2&a=1").await.x_cache(), "HIT");

    let layer = CachePageLayer::new(Cache::locmem()).key_query_params(["id"]);
    let (c, _) = client(layer).await;
    assert_eq!(c.get("/page?id=1&session=9").await.x_cache(), "MISS");
    assert_eq!(c.get("/page?x=y&id=1").await.x_cache(), "HIT");

    let layer = CachePageLayer::new(Cache::locmem()).ignore_query_params(Vec::<String>::new());
    let (c, _) = client(layer).await;
    assert_eq!(c.get("/page?utm_source=a").await.x_cache(), "MISS");
    assert_eq!(
        c.get("/page?utm_source=b").await.x_cache(),
        "MISS",
        "every parameter counts"
    );
}

#[tokio::test]
async fn cookies_headers_and_a_computed_value_key_per_user_pages() {
    let layer = CachePageLayer::new(Cache::locmem())
        .key_cookies(["lang"])
        .key_headers([http::HeaderName::from_static("x-tenant")])
        .key_with(|parts| parts.extensions.get::<UserId>().map(|u| u.0.to_string()));
    let (c, _) = client(layer).await;
    let get = |headers: &'static [(&'static str, &'static str)]| {
        let c = c.clone();
        async move { c.get_with("/page", headers).await.x_cache().to_owned() }
    };
    assert_eq!(get(&[("cookie", "lang=fr; sid=1")]).await, "MISS");
    assert_eq!(
        get(&[("cookie", "sid=2; lang=fr")]).await,
        "HIT",
        "other cookies do not count"
    );
    assert_eq!(get(&[("cookie", "lang=de")]).await, "MISS");
    assert_eq!(
        get(&[("cookie", "lang=fr"), ("x-tenant", "acme")]).await,
        "MISS"
    );
    assert_eq!(
        get(&[("cookie", "lang=fr"), ("x-user", "7")]).await,
        "MISS",
        "per user"
    );
    assert_eq!(get(&[("cookie", "lang=fr"), ("x-user", "7")]).await, "HIT");
    assert_eq!(get(&[("cookie", "lang=fr"), ("x-user", "8")]).await, "MISS");
}

#[tokio::test]
async fn predicates_decide_per_request_and_per_response() {
    let layer = CachePageLayer::new(Cache::locmem())
        .skip_if(|parts| parts.headers.contains_key("x-preview"))
        .store_if(|status, headers: &HeaderMap| {
            status != StatusCode::NOT_FOUND || !headers.contains_key("x-never")
        })
        .cache_statuses([StatusCode::NOT_FOUND]);
    let (c, calls) = client(layer).await;
    assert_eq!(c.get("/page").await.x_cache(), "MISS");
    assert_eq!(c.get("/page").await.x_cache(), "HIT");
    let preview = c.get_with("/page", &[("x-preview", "1")]).await;
    assert_eq!(
        preview.x_cache(),
        "BYPASS",
        "the request predicate skips the cache"
    );
    assert_eq!(c.get("/missing").await.x_cache(), "MISS");
    let again = c.get("/missing").await;
    assert_eq!(
        (again.x_cache(), again.status),
        ("HIT", StatusCode::NOT_FOUND),
        "404 stored"
    );
    assert_eq!(calls.get(), 3);

    // Django stores only 200 unless told; store_if can only refuse.
    let layer = CachePageLayer::new(Cache::locmem()).store_if(|_, _| false);
    let (c, _) = client(layer).await;
    c.get("/page").await;
    assert_eq!(
        c.get("/page").await.x_cache(),
        "MISS",
        "store_if refused it"
    );
    let (c, _) = client(CachePageLayer::new(Cache::locmem())).await;
    c.get("/missing").await;
    assert_eq!(
        c.get("/missing").await.x_cache(),
        "MISS",
        "404 not stored by default"
    );
}

#[tokio::test]
async fn the_key_of_a_request_is_public_to_purge_or_prefill() {
    let cache = Cache::locmem();
    let layer = CachePageLayer::new(cache.clone());
    let addr = serve(app(layer.clone(), Counter::default())).await;
    let c = HttpClient::new(addr);
    assert_eq!(c.get("/page?id=1&utm_medium=x").await.x_cache(), "MISS");
    let request = http::Request::builder()
        .uri("/page?id=1")
        .header("host", addr.to_string())
        .body(())
        .unwrap();
    let key = layer.cache_key_for(&request);
    let mut stored = false;
    for _ in 0..200 {
        if cache.has_key(&key).await.unwrap() {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(stored, "the page is not under {key}");
    cache.delete(&key).await.unwrap();
    assert_eq!(
        c.get("/page?id=1").await.x_cache(),
        "MISS",
        "deleted by its key"
    );
}
