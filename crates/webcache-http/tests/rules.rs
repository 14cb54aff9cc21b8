//! The storage rules of the Django policy through real HTTP, each with a case that must be
//! stored and one that must not, against locmem and against a real Redis server (started by
//! the test process on a free port, each test under its own key prefix).

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

on_every_store!(
    only_200_is_stored,
    cache_control_private_no_cache_no_store_in_any_form,
    vary_star_and_set_cookie_are_not_stored,
    timeout_order_layer_then_max_age_then_default,
    hits_carry_age_expires_and_max_age_consistent_with_the_remaining_lifetime,
    other_methods_pass_through_and_are_never_stored,
    head_is_answered_from_the_get_entry_and_fills_it,
    query_string_is_part_of_the_key,
    host_is_part_of_the_key,
    vary_on_two_headers_keys_on_both_values_and_absent_differs_from_empty,
    authorization_adds_vary_so_one_users_page_never_reaches_another,
    conditional_requests_get_304_and_412_from_the_cache,
    large_bodies_stream_through_unstored,
    keys_are_readable_and_a_corrupt_entry_is_a_miss,
    diagnostic_header_can_be_renamed_or_removed,
);

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{serve, still_fresh, Counter, HttpClient, Reply, Store};
use futures::TryStreamExt;
use webcache_http::{vary_on_headers, CachePageLayer, ConditionalGetLayer};

/// A handler whose response is driven by the query: `cc`, `vary`, `cookie`, `status`, `size`,
/// `etag`, `lm` (Last-Modified). The body says how many times it was called.
async fn configurable(
    counter: Counter,
    Query(q): Query<HashMap<String, String>>,
    req_headers: HeaderMap,
) -> impl IntoResponse {
    let n = counter.bump();
    let mut headers = HeaderMap::new();
    if let Some(cc) = q.get("cc") {
        headers.insert("cache-control", HeaderValue::from_str(cc).unwrap());
    }
    if let Some(v) = q.get("vary") {
        headers.insert("vary", HeaderValue::from_str(v).unwrap());
    }
    if q.contains_key("cookie") {
        headers.insert("set-cookie", HeaderValue::from_static("session=abc"));
    }
    if let Some(e) = q.get("etag") {
        headers.insert("etag", HeaderValue::from_str(&format!("\"{e}\"")).unwrap());
    }
    if q.contains_key("lm") {
        headers.insert(
            "last-modified",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
    }
    let status = q.get("status").map_or(StatusCode::OK, |s| {
        StatusCode::from_u16(s.parse().unwrap()).unwrap()
    });
    let mut body = format!("call {n};");
    for name in ["accept-language", "x-theme", "authorization"] {
        if let Some(v) = req_headers.get(name) {
            body.push_str(&format!(" {name}={};", v.to_str().unwrap()));
        }
    }
    if let Some(size) = q.get("size") {
        body.push_str(&"x".repeat(size.parse().unwrap()));
    }
    (status, headers, body)
}

async fn app(layer: CachePageLayer) -> (HttpClient, Counter) {
    let counter = Counter::default();
    let c = counter.clone();
    let router = Router::new()
        .route("/page", get(move |q, h| configurable(c.clone(), q, h)))
        .layer(layer);
    let addr = serve(router).await;
    (HttpClient::new(addr), counter)
}

/// Requests `path` twice and checks that the second answer came from the cache (`stored`) or
/// from the handler again.
async fn check(
    client: &HttpClient,
    counter: &Counter,
    path: &str,
    headers: &[(&str, &str)],
    stored: bool,
) {
    let before = counter.get();
    let first = client.get_with(path, headers).await;
    let second = client.get_with(path, headers).await;
    assert_eq!(first.x_cache(), "MISS", "{path}: first answer");
    let (expected, calls) = if stored { ("HIT", 1) } else { ("MISS", 2) };
    assert_eq!(
        second.x_cache(),
        expected,
        "{path}: second answer (stored: {stored})"
    );
    assert_eq!(
        first.body == second.body,
        stored,
        "{path}: same body iff stored"
    );
    assert_eq!(counter.get(), before + calls, "{path}: handler calls");
}

async fn assert_stored(
    client: &HttpClient,
    counter: &Counter,
    path: &str,
    headers: &[(&str, &str)],
) {
    check(client, counter, path, headers, true).await;
}

/// [`assert_stored`] for a page fresh for one second: its second answer is checked only while
/// the page is certainly fresh (see [`still_fresh`]). Returns that answer.
async fn assert_stored_for_a_second(client: &HttpClient, counter: &Counter, path: &str) -> Reply {
    let before = counter.get();
    let sent = std::time::Instant::now();
    let first = client.get(path).await;
    let second = client.get(path).await;
    assert_eq!(first.x_cache(), "MISS", "{path}: first answer");
    if still_fresh(sent, Duration::from_secs(1)) {
        assert_eq!(second.x_cache(), "HIT", "{path}: second answer");
        assert_eq!(first.body, second.body, "{path}: the stored body");
        assert_eq!(counter.get(), before + 1, "{path}: handler calls");
    }
    second
}

async fn assert_not_stored(
    client: &HttpClient,
    counter: &Counter,
    path: &str,
    headers: &[(&str, &str)],
) {
    check(client, counter, path, headers, false).await;
}

async fn only_200_is_stored(store: Store) {
    let (client, counter) = app(CachePageLayer::new(store.cache())).await;
    assert_stored(&client, &counter, "/page?status=200", &[]).await;
    assert_not_stored(&client, &counter, "/page?status=404", &[]).await;
    assert_not_stored(&client, &counter, "/page?status=500", &[]).await;
    assert_not_stored(&client, &counter, "/page?status=203", &[]).await;
    // A 304 from the handler gets the caching headers but is not stored.
    let before = counter.get();
    for _ in 0..2 {
        let r = client.get("/page?status=304").await;
        assert_eq!((r.status, r.x_cache()), (StatusCode::NOT_MODIFIED, "MISS"));
        assert!(r.header("expires").is_some());
        assert_eq!(r.header("cache-control"), Some("max-age=600"));
    }
    assert_eq!(counter.get(), before + 2);
}

async fn cache_control_private_no_cache_no_store_in_any_form(store: Store) {
    let (client, counter) = app(CachePageLayer::new(store.cache())).await;
    assert_stored(&client, &counter, "/page?cc=public,%20max-age%3D60", &[]).await;
    for cc in [
        "private",
        "PRIVATE",
        "no-cache",
        "No-Cache%3D%22Set-Cookie%22",
        "no-store",
        "max-age%3D60,%20private%3D%22x%22",
    ] {
        assert_not_stored(&client, &counter, &format!("/page?cc={cc}"), &[]).await;
    }
}

async fn vary_star_and_set_cookie_are_not_stored(store: Store) {
    let (client, counter) = app(CachePageLayer::new(store.cache())).await;
    assert_stored(&client, &counter, "/page?vary=accept-language", &[]).await;
    assert_not_stored(&client, &counter, "/page?vary=*", &[]).await;
    assert_not_stored(&client, &counter, "/page?vary=accept,%20*", &[]).await;
    assert_not_stored(&client, &counter, "/page?cookie=1", &[]).await;
    assert_not_stored(&client, &counter, "/page?cookie=1&vary=cookie", &[]).await;
}

async fn timeout_order_layer_then_max_age_then_default(store: Store) {
    // No layer timeout: max-age=0 means "do not store", max-age=1 expires.
    let (client, counter) = app(CachePageLayer::new(store.cache())).await;
    assert_not_stored(&client, &counter, "/page?cc=max-age%3D0", &[]).await;
    assert_stored_for_a_second(&client, &counter, "/page?cc=max-age%3D1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(client.get("/page?cc=max-age%3D1").await.x_cache(), "MISS");
    // Default TTL applies when nothing else says.
    let (client, counter) =
        app(CachePageLayer::new(store.cache()).default_ttl(Duration::from_secs(1))).await;
    let hit = assert_stored_for_a_second(&client, &counter, "/page").await;
    assert!(hit.header("cache-control").unwrap().contains("max-age=1"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(client.get("/page").await.x_cache(), "MISS");
    // The layer's timeout wins over max-age, also over max-age=0 (as cache_page does).
    let (client, counter) =
        app(CachePageLayer::new(store.cache()).timeout(Duration::from_secs(60))).await;
    assert_stored(&client, &counter, "/page?cc=max-age%3D0", &[]).await;
    assert_stored(&client, &counter, "/page?cc=max-age%3D3600", &[]).await;
    let hit = client.get("/page?cc=max-age%3D3600").await;
    assert_eq!(
        hit.header("cache-control"),
        Some("max-age=60"),
        "the smaller max-age wins"
    );
    // A zero layer timeout stores nothing.
    let (client, counter) = app(CachePageLayer::new(store.cache()).timeout(Duration::ZERO)).await;
    assert_not_stored(&client, &counter, "/page", &[]).await;
}

async fn hits_carry_age_expires_and_max_age_consistent_with_the_remaining_lifetime(store: Store) {
    let (client, _) =
        app(CachePageLayer::new(store.cache()).timeout(Duration::from_secs(60))).await;
    let miss = client.get("/page").await;
    assert!(miss.header("age").is_none());
    let expires_at_store = httpdate::parse_http_date(miss.header("expires").unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let hit = client.get("/page").await;
    assert_eq!(hit.x_cache(), "HIT");
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((2..=3).contains(&age), "age {age}");
    assert_eq!(hit.header("cache-control"), Some("max-age=60"));
    let expires = httpdate::parse_http_date(hit.header("expires").unwrap()).unwrap();
    assert_eq!(
        expires, expires_at_store,
        "Expires stays the moment the page expires"
    );
    let date = httpdate::parse_http_date(hit.header("date").unwrap()).unwrap();
    let remaining = expires.duration_since(date).unwrap().as_secs();
    // max-age − Age and Expires − Date both give the remaining lifetime.
    assert!(
        (60 - age).abs_diff(remaining) <= 1,
        "remaining {remaining}, age {age}"
    );
}

async fn other_methods_pass_through_and_are_never_stored(store: Store) {
    let (client, counter) = app(CachePageLayer::new(store.cache())).await;
    let counter_before = counter.get();
    // The route only has GET: axum answers 405 for PUT, and the layer marks it BYPASS.
    let put = client.send("PUT", "/page", &[], "x").await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put.x_cache(), "BYPASS");
    assert_eq!(counter.get(), counter_before);
    assert_stored(&client, &counter, "/page", &[]).await;
}

async fn head_is_answered_from_the_get_entry_and_fills_it(store: Store) {
    let (client, counter) = app(CachePageLayer::new(store.cache())).await;
    let get = client.get("/page?a").await;
    let head = client.send("HEAD", "/page?a", &[], "").await;
    assert_eq!(head.x_cache(), "HIT");
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length").unwrap(),
        get.body.len().to_string()
    );
    assert_eq!(counter.get(), 1);
    // A HEAD miss asks the handler for the full GET answer and stores it for GET.
    let head = client.send("HEAD", "/page?b", &[], "").await;
    assert_eq!(head.x_cache(), "MISS");
    assert!(head.body.is_empty());
    let get = client.get("/page?b").await;
    assert_eq!(get.x_cache(), "HIT");
    assert_eq!(
        head.header("content-length").unwrap(),
        get.body.len().to_string()
    );
    assert_eq!(counter.get(), 2);
}

async fn query_string_is_part_of_the_key(store: Store) {
    let (client, counter) = app(CachePageLayer::new(store.cache())).await;
    assert_stored(&client, &counter, "/page?q=1", &[]).await;
    let other = client.get("/page?q=2").await;
    assert_eq!(other.x_cache(), "MISS");
    assert_eq!(counter.get(), 2);
}

async fn host_is_part_of_the_key(store: Store) {
    let (client, counter) = app(CachePageLayer::new(store.cache())).await;
    assert_stored(&client, &counter, "/page", &[("host", "a.example")]).await;
    assert_eq!(
        client
            .get_with("/page", &[("host", "b.example")])
            .await
            .x_cache(),
        "MISS"
    );
    assert_eq!(
        client
            .get_with("/page", &[("host", "a.example")])
            .await
            .x_cache(),
        "HIT"
    );
}

async fn vary_on_two_headers_keys_on_both_values_and_absent_differs_from_empty(store: Store) {
    let counter = Counter::default();
    let c = counter.clone();
    let router = Router::new()
        .route(
            "/page",
            get(move |q, h| configurable(c.clone(), q, h))
                .layer(vary_on_headers(&["Accept-Language", "X-Theme"])),
        )
        .layer(CachePageLayer::new(store.cache()));
    let client = HttpClient::new(serve(router).await);
    let en_dark = [("accept-language", "en"), ("x-theme", "dark")];
    let en_light = [("accept-language", "en"), ("x-theme", "light")];
    let fr_dark = [("accept-language", "fr"), ("x-theme", "dark")];
    let en_empty = [("accept-language", "en"), ("x-theme", "")];
    let en_absent = [("accept-language", "en")];
    for headers in [&en_dark[..], &en_light, &fr_dark, &en_empty, &en_absent] {
        assert_stored(&client, &counter, "/page", headers).await;
    }
    // Every combination is still its own entry, with its own body.
    for headers in [&en_dark[..], &en_light, &fr_dark, &en_empty, &en_absent] {
        let r = client.get_with("/page", headers).await;
        assert_eq!(r.x_cache(), "HIT");
        for (name, value) in headers {
            assert!(
                r.text().contains(&format!("{name}={value};")),
                "{} for {headers:?}",
                r.text()
            );
        }
        if headers.len() == 1 {
            assert!(
                !r.text().contains("x-theme"),
                "the absent-header page is not the empty-header page"
            );
        }
    }
    assert_eq!(counter.get(), 5);
}

async fn authorization_adds_vary_so_one_users_page_never_reaches_another(store: Store) {
    let (client, counter) = app(CachePageLayer::new(store.cache())).await;
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    assert_stored(&client, &counter, "/page?private-ish", &alice).await;
    let r = client.get_with("/page?private-ish", &alice).await;
    assert_eq!(r.header("vary"), Some("authorization"));
    let b = client.get_with("/page?private-ish", &bob).await;
    assert_eq!(b.x_cache(), "MISS");
    assert!(b.text().contains("authorization=Bearer bob;"));
    let anonymous = client.get("/page?private-ish").await;
    assert_eq!(anonymous.x_cache(), "MISS");
    assert!(!anonymous.text().contains("authorization"));
    // A public response is shared: no Vary: Authorization added.
    assert_stored(&client, &counter, "/page?cc=public", &alice).await;
    let b = client.get_with("/page?cc=public", &bob).await;
    assert_eq!(b.x_cache(), "HIT");
    assert!(b.header("vary").is_none());
    // An empty Authorization header is no credential.
    let r = client
        .get_with("/page?empty-auth", &[("authorization", "")])
        .await;
    assert!(r.header("vary").is_none());
}

async fn conditional_requests_get_304_and_412_from_the_cache(store: Store) {
    let counter = Counter::default();
    let c = counter.clone();
    let router = Router::new()
        .route("/page", get(move |q, h| configurable(c.clone(), q, h)))
        .layer(ConditionalGetLayer::new())
        .layer(CachePageLayer::new(store.cache()));
    let client = HttpClient::new(serve(router).await);
    let first = client.get("/page?lm").await;
    let etag = first.header("etag").unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.len() == 34,
        "body-hash ETag {etag}"
    );
    let not_modified = client
        .get_with("/page?lm", &[("if-none-match", &etag)])
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.x_cache(), "HIT");
    assert!(not_modified.body.is_empty());
    let changed = client
        .get_with("/page?lm", &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.body, first.body);
    let since = client
        .get_with(
            "/page?lm",
            &[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")],
        )
        .await;
    assert_eq!(since.status, StatusCode::NOT_MODIFIED);
    let older = client
        .get_with(
            "/page?lm",
            &[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")],
        )
        .await;
    assert_eq!(older.status, StatusCode::OK);
    let failed = client
        .get_with("/page?lm", &[("if-match", "\"other\"")])
        .await;
    assert_eq!(failed.status, StatusCode::PRECONDITION_FAILED);
    let ok = client.get_with("/page?lm", &[("if-match", &etag)]).await;
    assert_eq!(ok.status, StatusCode::OK);
    let unmodified = client
        .get_with(
            "/page?lm",
            &[("if-unmodified-since", "Sat, 05 Nov 1994 08:49:37 GMT")],
        )
        .await;
    assert_eq!(unmodified.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(counter.get(), 1, "all answered from the one stored page");
    // On a miss the precondition is evaluated against the fresh page, which is still stored.
    let miss = client
        .get_with("/page?etag=v1", &[("if-none-match", "\"v1\"")])
        .await;
    assert_eq!(
        (miss.status, miss.x_cache()),
        (StatusCode::NOT_MODIFIED, "MISS")
    );
    let full = client.get("/page?etag=v1").await;
    assert_eq!((full.status, full.x_cache()), (StatusCode::OK, "HIT"));
}

async fn large_bodies_stream_through_unstored(store: Store) {
    let (client, counter) = app(CachePageLayer::new(store.cache()).max_body(1000)).await;
    assert_stored(&client, &counter, "/page?size=900", &[]).await;
    let big = client.get("/page?size=5000").await;
    assert_eq!(big.body.len(), "call 2;".len() + 5000);
    assert_not_stored(&client, &counter, "/page?size=5000", &[]).await;
}

async fn keys_are_readable_and_a_corrupt_entry_is_a_miss(store: Store) {
    let cache = store.cache();
    let (client, counter) = app(CachePageLayer::new(cache.clone())).await;
    assert_stored(&client, &counter, "/page", &[]).await;
    let keys: Vec<String> = cache.keys("*").try_collect().await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("views.cache_page.GET."), "{keys:?}");
    cache.set_bytes(&keys[0], b"garbage", 60).await.unwrap();
    let r = client.get("/page").await;
    assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "MISS"));
    assert_eq!(
        client.get("/page").await.x_cache(),
        "HIT",
        "the page was stored again"
    );
}

async fn diagnostic_header_can_be_renamed_or_removed(store: Store) {
    let (client, _) = app(CachePageLayer::new(store.cache())
        .diagnostic_header(http::HeaderName::from_static("x-page-cache")))
    .await;
    client.get("/page").await;
    let r = client.get("/page").await;
    assert_eq!(r.header("x-page-cache"), Some("HIT"));
    assert!(r.header("x-cache").is_none());
    let (client, counter) =
        app(CachePageLayer::new(store.cache()).without_diagnostic_header()).await;
    client.get("/page").await;
    let r = client.get("/page").await;
    assert!(r.header("x-cache").is_none());
    assert_eq!(counter.get(), 1);
}

/// A response that never ends must stream through: the layer stops buffering at `max_body`.
#[tokio::test]
async fn an_endless_body_streams_through_without_being_buffered_whole() {
    use http_body_util::BodyExt;

    let app = Router::new()
        .route(
            "/endless",
            get(|| async {
                let chunks = futures::stream::unfold(0u64, |n| async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1024])),
                        n + 1,
                    ))
                });
                axum::body::Body::from_stream(chunks)
            }),
        )
        .layer(CachePageLayer::new(webcache_core::Cache::locmem()).max_body(4096));
    let addr = serve(app).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client
        .get(format!("http://{addr}/endless").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cache"], "MISS");
    let mut body = response.into_body();
    let mut received = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while received < 64 * 1024 {
            let frame = body.frame().await.unwrap().unwrap();
            received += frame.data_ref().map_or(0, |d| d.len());
        }
    })
    .await
    .expect("the body should stream, not wait to be buffered whole");
}
