//! Stampede protection: concurrent misses of one page call the inner service once.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{serve, Counter, HttpClient};
use webcache_core::Cache;
use webcache_http::{CacheLock, CachePageLayer};

fn slow(counter: &Counter, delay: Duration, cache_control: &'static str) -> Router {
    let counter = counter.clone();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    Router::new().route(
        "/slow",
        get(move || {
            let counter = counter.clone();
            let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
            async move {
                let n = counter.bump();
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                (
                    [("cache-control", cache_control)],
                    format!(
                        "computed {n}; peak {}",
                        max_in_flight.load(Ordering::SeqCst)
                    ),
                )
            }
        }),
    )
}

async fn burst(client: &HttpClient, n: usize) -> Vec<common::Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get("/slow").await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_misses_call_the_handler_once() {
    let counter = Counter::default();
    let app = slow(&counter, Duration::from_millis(300), "max-age=60")
        .layer(CachePageLayer::new(Cache::locmem()));
    let client = HttpClient::new(serve(app).await);
    let replies = burst(&client, 20).await;
    assert_eq!(counter.get(), 1);
    assert!(replies
        .iter()
        .all(|r| r.status == 200 && r.text().starts_with("computed 1;")));
    assert_eq!(replies.iter().filter(|r| r.x_cache() == "MISS").count(), 1);
    assert_eq!(client.get("/slow").await.x_cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_pages_are_not_serialised_by_the_flight() {
    let counter = Counter::default();
    let app = slow(&counter, Duration::from_millis(300), "private")
        .layer(CachePageLayer::new(Cache::locmem()));
    let client = HttpClient::new(serve(app).await);
    let replies = burst(&client, 8).await;
    // The first computes alone (nobody knew it was private); the 7 waiters then run together.
    assert_eq!(counter.get(), 8);
    let peak = replies
        .iter()
        .map(|r| {
            r.text()
                .rsplit(' ')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .max()
        .unwrap();
    assert!(peak >= 2, "waiters ran one at a time (peak {peak})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_give_up_after_the_bound_and_serve_themselves() {
    let counter = Counter::default();
    let layer = CachePageLayer::new(Cache::locmem()).stampede_wait(Duration::from_millis(50));
    let app = slow(&counter, Duration::from_millis(700), "max-age=60").layer(layer);
    let client = HttpClient::new(serve(app).await);
    let replies = burst(&client, 5).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(counter.get(), 5);
}

/// Two layers with separate in-process state stand for two processes sharing one cache.
async fn two_servers_compute_once(cache: Cache) {
    let counter = Counter::default();
    let layer =
        || CachePageLayer::new(cache.clone()).cross_process_lock(CacheLock::new(cache.clone()));
    let one = HttpClient::new(
        serve(slow(&counter, Duration::from_millis(300), "max-age=60").layer(layer())).await,
    );
    let two = HttpClient::new(
        serve(slow(&counter, Duration::from_millis(300), "max-age=60").layer(layer())).await,
    );
    // The two servers listen on different ports, so give both the same Host: one site.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let client = if i % 2 == 0 { one.clone() } else { two.clone() };
            tokio::spawn(async move { client.get_with("/slow", &[("host", "site.example")]).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with("computed 1;"), "{}", r.text());
    }
    assert_eq!(counter.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_process_lock_computes_once_for_two_servers() {
    two_servers_compute_once(Cache::locmem()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_process_lock_in_redis_computes_once_for_two_servers() {
    two_servers_compute_once(common::Store::Redis.cache()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_different_variants_each_get_their_own_page() {
    let counter = Counter::default();
    let c = counter.clone();
    let app = Router::new()
        .route(
            "/slow",
            get(move |headers: axum::http::HeaderMap| {
                let c = c.clone();
                async move {
                    c.bump();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let lang = headers
                        .get("accept-language")
                        .map(|v| v.to_str().unwrap().to_owned());
                    format!("lang={lang:?}")
                }
            }),
        )
        .layer(webcache_http::vary_on_headers(&["accept-language"]))
        .layer(CachePageLayer::new(Cache::locmem()));
    let client = HttpClient::new(serve(app).await);
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let client = client.clone();
            let lang = ["en", "fr", "de"][i % 3];
            tokio::spawn(async move {
                (
                    lang,
                    client.get_with("/slow", &[("accept-language", lang)]).await,
                )
            })
        })
        .collect();
    for t in tasks {
        let (lang, r) = t.await.unwrap();
        assert_eq!(r.text(), format!("lang=Some({lang:?})"));
    }
    // The first request could not know the page varies, so the waiters of other languages
    // computed their own pages; from now on every language is stored.
    for lang in ["en", "fr", "de"] {
        assert_eq!(
            client
                .get_with("/slow", &[("accept-language", lang)])
                .await
                .x_cache(),
            "HIT"
        );
    }
}
