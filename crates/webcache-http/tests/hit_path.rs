//! What a hit costs besides the answer (issue 17). A hit the store has at hand (locmem, the
//! near tier's trusted copies) is answered inside `Service::call`: no future, no box, no clone
//! of the inner service. A request that waits (a miss, a networked backend) gets a boxed
//! future, allocated and moved once per request, so its size is part of the price: an async
//! wrapper around a large future keeps it again in each await point's state (the service's
//! future was once 21,824 bytes, four times the 5 KB page it answered).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http::Request;
use tower::{Layer, Service};
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::{Cache, CacheOptions};
use webcache_http::CachePageLayer;

/// The most the future of one request that waits, around an axum route, may take.
const MAX_FUTURE_BYTES: usize = 4096;

fn request(path: &str) -> Request<axum::body::Body> {
    Request::get(path)
        .header("host", "example.com")
        .body(axum::body::Body::empty())
        .unwrap()
}

fn locmem() -> Cache {
    let backend = Arc::new(LocMemBackend::private(LocMemConfig::default()));
    Cache::new(backend, CacheOptions::default())
}

/// `bytes: N` of a waiting future's debug form.
fn boxed_bytes(debug: &str) -> usize {
    let (_, rest) = debug.split_once("bytes: ").unwrap();
    rest.trim_end_matches([' ', '}']).parse().unwrap()
}

#[tokio::test]
async fn a_hit_at_hand_is_answered_in_call_and_a_miss_future_stays_small() {
    let route = Router::new().route(
        "/",
        get(|| async { ([("cache-control", "max-age=60")], "page") }),
    );
    let mut service = CachePageLayer::new(locmem()).layer(route);

    let miss = service.call(request("/"));
    let debug = format!("{miss:?}");
    assert!(debug.contains("later"), "a miss waits: {debug}");
    let bytes = boxed_bytes(&debug);
    eprintln!("future of a miss: {bytes} bytes");
    assert!(
        bytes <= MAX_FUTURE_BYTES,
        "the page cache's future takes {bytes} bytes (at most {MAX_FUTURE_BYTES}): a wrapper \
         around the engine's future holds it twice, or a rare path is not boxed"
    );
    let response = miss.await.unwrap();
    assert_eq!(response.headers()["x-cache"], "MISS");

    let hit = service.call(request("/"));
    assert!(format!("{hit:?}").contains("ready"), "{hit:?}");
    let response = hit.await.unwrap();
    assert_eq!(response.headers()["x-cache"], "HIT");
    let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"page");
}

/// A stale page within its `stale-while-revalidate` window is answered in `call` too, and its
/// refresh is spawned there. A caller may make the call outside the runtime (and poll the
/// answer inside it): the page is still answered, and the refresh is left to a later request
/// rather than panicking for want of a runtime.
#[test]
fn a_stale_answer_made_outside_the_runtime_does_not_panic() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let route = Router::new().route(
        "/",
        get(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                (
                    [("cache-control", "max-age=1, stale-while-revalidate=600")],
                    "page",
                )
            }
        }),
    );
    let mut service = runtime.block_on(async {
        let mut service = CachePageLayer::new(locmem()).layer(route);
        let response = service.call(request("/")).await.unwrap();
        assert_eq!(response.headers()["x-cache"], "MISS");
        service
    });
    // Stale after its second of freshness (the age is counted in whole seconds).
    std::thread::sleep(Duration::from_millis(2100));

    // Here, no runtime: the answer is made in `call`.
    let stale = service.call(request("/"));
    let response = runtime.block_on(stale).unwrap();
    assert_eq!(response.headers()["x-cache"], "STALE");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Inside the runtime, the next stale answer starts the refresh.
    runtime.block_on(async {
        let response = service.call(request("/")).await.unwrap();
        assert_eq!(response.headers()["x-cache"], "STALE");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while calls.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no refresh");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}
