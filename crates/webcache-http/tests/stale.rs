//! Stale pages through the real layer (Django policy, the one `webcache serve` and site-wide
//! users have) in front of a handler the test controls: the layer's grace and the pages' own
//! RFC 5861 directives; `must-revalidate` and `proxy-revalidate` pages never served stale
//! (RFC 9111 §4.2.4). Handler calls are counted; a refresh is held at a semaphore to show that
//! stale answers do not wait for it (no timing assertions: the pages expire by waiting past
//! their one-second `max-age`).

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{serve, still_fresh, Counter, HttpClient, Reply, Store};
use tokio::sync::Semaphore;
use webcache_http::CachePageLayer;

on_every_store!(
    grace_serves_a_stale_page_at_once_while_one_refresh_runs,
    rfc5861_4_stale_if_error_of_the_page_answers_when_the_handler_fails,
    grace_answers_for_a_failing_handler_until_it_ends_then_the_error_is_passed_on,
    rfc9111_4_2_4_must_revalidate_and_proxy_revalidate_are_never_served_stale,
    a_refresh_stores_a_page_of_unknown_length,
);

/// A request that must be answered without waiting for a refresh held at the gate.
async fn at_once(request: impl Future<Output = Reply>) -> Reply {
    tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("a stale page is answered at once, without waiting for the refresh")
}

/// Waits (at most 30 s) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// Past a one-second `max-age` (freshness is kept in milliseconds).
async fn past_freshness() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

fn headers(cache_control: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("cache-control", HeaderValue::from_static(cache_control));
    h
}

/// A handler whose first answer is `first` (fresh for one second) and whose later answers wait
/// at `gate` (if given) and then are `later`; every call counted.
fn app(
    cache: webcache_core::Cache,
    grace: Duration,
    calls: &Counter,
    gate: Option<Arc<Semaphore>>,
    first: &'static str,
    later: (StatusCode, &'static str),
) -> Router {
    let calls = calls.clone();
    Router::new()
        .route(
            "/page",
            get(move || {
                let (calls, gate) = (calls.clone(), gate.clone());
                async move {
                    let n = calls.bump();
                    if n == 1 {
                        return (StatusCode::OK, headers(first), format!("version {n}"))
                            .into_response();
                    }
                    if let Some(gate) = gate {
                        gate.acquire().await.unwrap().forget();
                    }
                    (later.0, headers(later.1), format!("version {n}")).into_response()
                }
            }),
        )
        .layer(CachePageLayer::new(cache).grace(grace))
}

async fn grace_serves_a_stale_page_at_once_while_one_refresh_runs(store: Store) {
    let calls = Counter::default();
    let gate = Arc::new(Semaphore::new(0));
    let app = app(
        store.cache(),
        Duration::from_secs(3600),
        &calls,
        Some(gate.clone()),
        "max-age=1",
        (StatusCode::OK, "max-age=3600"),
    );
    let client = HttpClient::new(serve(app).await);
    let first = client.get("/page").await;
    assert_eq!(
        (first.x_cache(), first.text().as_str()),
        ("MISS", "version 1")
    );
    past_freshness().await;

    // While the refresh is held at the gate, every request is answered from the stale page.
    for _ in 0..5 {
        let stale = at_once(client.get("/page")).await;
        assert_eq!(stale.status, StatusCode::OK);
        assert_eq!(
            (stale.x_cache(), stale.text().as_str()),
            ("STALE", "version 1")
        );
        let age: u64 = stale.header("age").unwrap().parse().unwrap();
        assert!(
            age >= 1,
            "the age says the page is past its max-age of 1: {age}"
        );
    }
    until("the refresh reaches the handler", || calls.get() == 2).await;
    // Concurrent stale answers too, and still one refresh.
    let answers = futures::future::join_all((0..8).map(|_| at_once(client.get("/page")))).await;
    assert!(answers.iter().all(|r| r.x_cache() == "STALE"));
    assert_eq!(calls.get(), 2, "one refresh per page and process");

    // The refresh ends: its page replaces the stale one.
    gate.add_permits(1);
    for _ in 0..3000 {
        let r = client.get("/page").await;
        if r.x_cache() == "HIT" {
            assert_eq!(r.text(), "version 2");
            assert_eq!(calls.get(), 2);
            return;
        }
        assert_eq!((r.x_cache(), r.text().as_str()), ("STALE", "version 1"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the refreshed page was never served");
}

async fn rfc5861_4_stale_if_error_of_the_page_answers_when_the_handler_fails(store: Store) {
    let calls = Counter::default();
    let app = app(
        store.cache(),
        Duration::ZERO,
        &calls,
        None,
        "max-age=1, stale-if-error=3600",
        (StatusCode::SERVICE_UNAVAILABLE, "no-store"),
    );
    let client = HttpClient::new(serve(app).await);
    client.get("/page").await;
    past_freshness().await;
    // No stale-while-revalidate: the request asks the handler, which fails; the stale page
    // answers instead.
    let r = client.get("/page").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!((r.x_cache(), r.text().as_str()), ("STALE", "version 1"));
    assert!(r.header("age").is_some());
    assert_eq!(calls.get(), 2);
    let r = client.get("/page").await;
    assert_eq!((r.x_cache(), r.text().as_str()), ("STALE", "version 1"));
    assert_eq!(
        calls.get(),
        3,
        "each request asks again: the handler may be back"
    );
}

async fn grace_answers_for_a_failing_handler_until_it_ends_then_the_error_is_passed_on(
    store: Store,
) {
    let calls = Counter::default();
    let app = app(
        store.cache(),
        Duration::from_secs(2),
        &calls,
        None,
        "max-age=1",
        (StatusCode::BAD_GATEWAY, "no-store"),
    );
    let client = HttpClient::new(serve(app).await);
    client.get("/page").await;
    past_freshness().await;
    let r = at_once(client.get("/page")).await;
    assert_eq!((r.x_cache(), r.text().as_str()), ("STALE", "version 1"));
    // The background refresh failed: the stale page stays.
    until("the refresh reaches the handler", || calls.get() == 2).await;
    let r = at_once(client.get("/page")).await;
    assert_eq!((r.x_cache(), r.text().as_str()), ("STALE", "version 1"));
    // Past freshness + grace (1 + 2 s) the error is passed on.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = client.get("/page").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.x_cache(), "MISS");
    assert!(r.text().starts_with("version "));
}

async fn rfc9111_4_2_4_must_revalidate_and_proxy_revalidate_are_never_served_stale(store: Store) {
    for directive in [
        "max-age=1, must-revalidate, stale-while-revalidate=3600, stale-if-error=3600",
        "max-age=1, proxy-revalidate, stale-while-revalidate=3600, stale-if-error=3600",
    ] {
        let calls = Counter::default();
        let app = app(
            store.cache(),
            Duration::from_secs(3600),
            &calls,
            None,
            directive,
            (StatusCode::SERVICE_UNAVAILABLE, "no-store"),
        );
        let client = HttpClient::new(serve(app).await);
        let sent = std::time::Instant::now();
        let first = client.get("/page").await;
        assert_eq!(first.x_cache(), "MISS", "{directive}");
        let again = client.get("/page").await;
        if still_fresh(sent, Duration::from_secs(1)) {
            assert_eq!(again.x_cache(), "HIT", "{directive}");
            assert_eq!(calls.get(), 1, "{directive}");
        }
        past_freshness().await;
        // Neither the grace nor the page's own windows: the handler's error is passed on.
        let before = calls.get();
        let r = client.get("/page").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{directive}");
        assert_eq!(r.x_cache(), "MISS", "{directive}");
        assert_eq!(calls.get(), before + 1, "{directive}");
    }
}

/// The refresh's answer reaches no client: its body is still read to the end, so a page of
/// unknown length (streamed, stored when it ends) is stored.
async fn a_refresh_stores_a_page_of_unknown_length(store: Store) {
    let calls = Counter::default();
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/page",
            get(move || {
                let n = counted.bump();
                async move {
                    let max_age = if n == 1 { "max-age=1" } else { "max-age=3600" };
                    let chunks = vec![
                        Ok::<_, std::io::Error>(bytes::Bytes::from("version ")),
                        Ok(bytes::Bytes::from(n.to_string())),
                    ];
                    let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
                    (headers(max_age), body).into_response()
                }
            }),
        )
        .layer(CachePageLayer::new(store.cache()).grace(Duration::from_secs(3600)));
    let client = HttpClient::new(serve(app).await);
    assert_eq!(client.get("/page").await.text(), "version 1");
    past_freshness().await;
    let r = at_once(client.get("/page")).await;
    assert_eq!((r.x_cache(), r.text().as_str()), ("STALE", "version 1"));
    for _ in 0..3000 {
        let r = client.get("/page").await;
        if r.x_cache() == "HIT" {
            assert_eq!(r.text(), "version 2");
            assert_eq!(calls.get(), 2);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the refreshed page was never stored");
}
