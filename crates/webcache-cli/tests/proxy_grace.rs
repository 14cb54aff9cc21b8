//! `webcache proxy --grace` end to end: the built binary in front of an origin that answers
//! once and then fails. Past the page's freshness the proxy with a grace period answers the
//! stale page (`x-cache: STALE`); without one it answers the origin's failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use common::{Proxy, Running};

mod common;

/// How long the origin's page is fresh (`max-age`). Generous: the second request must come
/// within it to be a hit, and a busy machine (seen in CI at 1 s) can be slow to send it.
const MAX_AGE: Duration = Duration::from_secs(5);

/// An origin on a free port whose `/page` answers 200 (fresh for [`MAX_AGE`]) to its first
/// request and 500 to every later one; returns its base URL and how many requests it got.
async fn origin_that_answers_once() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/page",
        axum::routing::get(move || {
            let calls = counted.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    (
                        StatusCode::OK,
                        [(
                            header::CACHE_CONTROL,
                            format!("max-age={}", MAX_AGE.as_secs()),
                        )],
                        "the page",
                    )
                } else {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [(header::CACHE_CONTROL, "no-store".to_owned())],
                        "origin down",
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, calls)
}

/// Status, `x-cache` and body of `GET url`.
async fn fetch(url: &str) -> (StatusCode, String, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let x_cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, x_cache, response.text().await.unwrap())
}

/// Fills the proxy's cache from the origin's one good answer, then waits until the page is
/// stale.
async fn cache_then_expire(proxy: &Running) -> String {
    let url = format!("{}/page", proxy.base);
    let (status, x_cache, body) = fetch(&url).await;
    assert_eq!(
        (status, x_cache.as_str(), body.as_str()),
        (StatusCode::OK, "MISS", "the page")
    );
    let (status, x_cache, _) = fetch(&url).await;
    assert_eq!(
        (status, x_cache.as_str()),
        (StatusCode::OK, "HIT"),
        "the fresh page is served from the cache"
    );
    // Age counts whole seconds: wait a full second past max-age.
    tokio::time::sleep(MAX_AGE + Duration::from_millis(1100)).await;
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_grace_a_failing_origin_gets_the_stale_page() {
    let (origin, calls) = origin_that_answers_once().await;
    let proxy = Proxy::start(&origin, &["--grace", "60"]);
    let url = cache_then_expire(&proxy).await;
    // The first request past freshness is answered at once with the stale page while a
    // refresh runs (and fails); later ones get the stale page too (stale-if-error).
    for attempt in 0..3 {
        let (status, x_cache, body) = fetch(&url).await;
        assert_eq!(status, StatusCode::OK, "request {attempt} past freshness");
        assert_eq!(x_cache, "STALE", "request {attempt} past freshness");
        assert_eq!(body, "the page", "request {attempt} past freshness");
    }
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the proxy tried the origin again past freshness"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_grace_a_failing_origin_is_an_error() {
    let (origin, calls) = origin_that_answers_once().await;
    let proxy = Proxy::start(&origin, &[]);
    let url = cache_then_expire(&proxy).await;
    let (status, x_cache, body) = fetch(&url).await;
    assert!(
        status.is_server_error(),
        "past freshness without grace the origin's failure is the answer: {status} {x_cache} {body}"
    );
    assert_ne!(x_cache, "STALE");
    assert_ne!(body, "the page");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
