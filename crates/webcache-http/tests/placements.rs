//! The four placements of the page cache: one route, one method of a route (Django's
//! `method_decorator(cache_page)`), a whole router (the per-site middleware), and the router
//! wrapped (the per-site middleware in front of routing).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::handler::Handler;
use axum::routing::get;
use axum::Router;
use common::{serve, Counter, HttpClient};
use webcache_core::Cache;
use webcache_http::{cache_page, CachePageLayer};

fn counting(
    counter: &Counter,
    label: &'static str,
) -> impl Fn() -> std::future::Ready<String> + Clone + Send + Sync + 'static {
    let counter = counter.clone();
    move || std::future::ready(format!("{label} {}", counter.bump()))
}

#[tokio::test]
async fn per_route_with_route_layer_caches_only_that_route() {
    let (cached, plain) = (Counter::default(), Counter::default());
    let router = Router::new()
        .route("/cached", get(counting(&cached, "cached")))
        .route_layer(cache_page(Cache::locmem(), Duration::from_secs(60)))
        .route("/plain", get(counting(&plain, "plain")));
    let client = HttpClient::new(serve(router).await);
    for _ in 0..3 {
        assert_eq!(client.get("/cached").await.text(), "cached 1");
        let p = client.get("/plain").await;
        assert!(
            p.header("x-cache").is_none(),
            "the other route does not pass the layer"
        );
    }
    assert_eq!((cached.get(), plain.get()), (1, 3));
}

#[tokio::test]
async fn per_route_with_route_layer_method() {
    let counter = Counter::default();
    let router = Router::new().route(
        "/r",
        get(counting(&counter, "r")).layer(CachePageLayer::new(Cache::locmem())),
    );
    let client = HttpClient::new(serve(router).await);
    assert_eq!(client.get("/r").await.x_cache(), "MISS");
    assert_eq!(client.get("/r").await.x_cache(), "HIT");
    assert_eq!(counter.get(), 1);
}

#[tokio::test]
async fn per_method_caches_get_but_not_post_of_the_same_route() {
    let (gets, posts) = (Counter::default(), Counter::default());
    let layer = CachePageLayer::new(Cache::locmem()).timeout(Duration::from_secs(60));
    let router = Router::new().route(
        "/item",
        get(counting(&gets, "get").layer(layer)).post(counting(&posts, "post")),
    );
    let client = HttpClient::new(serve(router).await);
    for _ in 0..3 {
        assert_eq!(client.get("/item").await.text(), "get 1");
        let p = client.send("POST", "/item", &[], "body").await;
        assert!(
            p.header("x-cache").is_none(),
            "POST goes to its own, unlayered handler"
        );
    }
    assert_eq!((gets.get(), posts.get()), (1, 3));
    assert_eq!(client.send("HEAD", "/item", &[], "").await.x_cache(), "HIT");
}

#[tokio::test]
async fn site_wide_caches_every_route_and_bypasses_other_methods() {
    let (a, b, posts) = (Counter::default(), Counter::default(), Counter::default());
    let router = Router::new()
        .route("/a", get(counting(&a, "a")).post(counting(&posts, "post")))
        .route("/b", get(counting(&b, "b")))
        .layer(CachePageLayer::new(Cache::locmem()));
    let client = HttpClient::new(serve(router).await);
    for _ in 0..2 {
        client.get("/a").await;
        client.get("/b").await;
        assert_eq!(client.send("POST", "/a", &[], "").await.x_cache(), "BYPASS");
    }
    assert_eq!(client.get("/a").await.x_cache(), "HIT");
    assert_eq!(
        client.get("/missing").await.status,
        http::StatusCode::NOT_FOUND
    );
    assert_eq!((a.get(), b.get(), posts.get()), (1, 1, 2));
}

/// The layer around the router answers a hit before routing: the route's own middleware
/// (axum runs it after matching the route) sees only the requests the cache passed on.
#[tokio::test]
async fn in_front_of_the_router_a_hit_is_answered_before_routing() {
    use axum::extract::Request;
    use axum::response::IntoResponse;
    use axum::ServiceExt;

    let (a, routed, posts) = (Counter::default(), Counter::default(), Counter::default());
    let seen = routed.clone();
    let routes = Router::new()
        .route("/a", get(counting(&a, "a")).post(counting(&posts, "post")))
        .route_layer(axum::middleware::map_request(move |req: Request| {
            seen.bump();
            std::future::ready(req)
        }));
    let in_front = tower::ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(CachePageLayer::new(Cache::locmem()))
        .service(routes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, ServiceExt::<Request>::into_make_service(in_front))
            .await
            .unwrap();
    });
    let client = HttpClient::new(addr);
    assert_eq!(client.get("/a").await.x_cache(), "MISS");
    let routed_before = routed.get();
    for _ in 0..3 {
        let hit = client.get("/a").await;
        assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", "a 1"));
    }
    assert_eq!(
        routed.get(),
        routed_before,
        "a hit never reached the router"
    );
    assert_eq!(client.send("POST", "/a", &[], "").await.x_cache(), "BYPASS");
    assert_eq!(routed.get(), routed_before + 1, "a POST is routed");
    assert_eq!(
        client.get("/missing").await.status,
        http::StatusCode::NOT_FOUND
    );
    assert_eq!((a.get(), posts.get()), (1, 1));
}

#[tokio::test]
async fn separate_key_prefixes_keep_layers_apart_in_one_cache() {
    let cache = Cache::locmem();
    let (one, two) = (Counter::default(), Counter::default());
    let router = Router::new().route(
        "/x",
        get(counting(&one, "one")).layer(CachePageLayer::new(cache.clone()).key_prefix("one")),
    );
    let router2 = Router::new().route(
        "/x",
        get(counting(&two, "two")).layer(CachePageLayer::new(cache.clone()).key_prefix("two")),
    );
    let (c1, c2) = (
        HttpClient::new(serve(router).await),
        HttpClient::new(serve(router2).await),
    );
    // Both servers see the same URL shape but different hosts anyway; the prefix is what shows
    // in the keys.
    c1.get("/x").await;
    c2.get("/x").await;
    use futures::TryStreamExt;
    let mut keys: Vec<String> = cache.keys("*").try_collect().await.unwrap();
    keys.sort();
    assert!(
        keys[0].starts_with("one.GET.") && keys[1].starts_with("two.GET."),
        "{keys:?}"
    );
}
