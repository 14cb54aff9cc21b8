//! Sessions with the page cache in front of the whole site, in both orders: Alice's cart is
//! never served to Bob or to a client without cookies, while a page that does not read the
//! session is still a hit for everyone. Real HTTP, real cookie jars, the real page layer over
//! locmem.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;
use common::cart;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use webcache_core::Cache;
use webcache_http::CachePageLayer;
use webcache_sessions::{CacheStore, SessionConfig};

async fn public(State(calls): State<Arc<AtomicUsize>>) -> &'static str {
    calls.fetch_add(1, Ordering::SeqCst);
    "the same for everyone"
}

#[derive(Debug, Clone, Copy)]
enum Order {
    /// `.layer(session).layer(page_cache)`: the page cache sees the session's headers.
    PageCacheOutside,
    /// `.layer(page_cache).layer(session)`: the page cache sees the request's mark.
    PageCacheInside,
}

async fn serve(order: Order) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let routes = Router::new()
        .route("/cart", get(cart))
        .route("/public", get(public))
        .with_state(calls.clone());
    let sessions = SessionConfig::default().layer(CacheStore::new(Cache::locmem()));
    let pages = CachePageLayer::new(Cache::locmem());
    let app = match order {
        Order::PageCacheOutside => routes.layer(sessions).layer(pages),
        Order::PageCacheInside => routes.layer(pages).layer(sessions),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), calls)
}

fn jar() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

struct Got {
    x_cache: String,
    cache_control: String,
    vary: String,
    body: String,
}

async fn fetch(client: &reqwest::Client, url: String) -> Got {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (x_cache, cache_control, vary) =
        (header("x-cache"), header("cache-control"), header("vary"));
    Got {
        x_cache,
        cache_control,
        vary,
        body: resp.text().await.unwrap(),
    }
}

async fn a_cart_is_never_served_to_another_client(order: Order) {
    let (base, calls) = serve(order).await;
    let cart = format!("{base}/cart");
    let (alice, bob, anonymous) = (jar(), jar(), reqwest::Client::new());
    let items = |list: &[&str]| json!({ "items": list }).to_string();

    assert_eq!(
        fetch(&alice, format!("{cart}?add=book")).await.body,
        items(&["book"])
    );
    let mine = fetch(&alice, cart.clone()).await;
    assert_eq!(mine.body, items(&["book"]), "{order:?}");
    assert_ne!(mine.x_cache, "HIT", "{order:?}");
    assert!(
        mine.cache_control.contains("private"),
        "{order:?}: {}",
        mine.cache_control
    );
    assert!(
        mine.vary.to_ascii_lowercase().contains("cookie"),
        "{order:?}"
    );

    // A client without cookies gets the empty cart (stored for cookie-less clients only).
    for _ in 0..2 {
        assert_eq!(
            fetch(&anonymous, cart.clone()).await.body,
            items(&[]),
            "{order:?}"
        );
    }
    // Neither Alice's cart nor the anonymous one reaches Bob, and Alice keeps hers.
    assert_eq!(
        fetch(&bob, format!("{cart}?add=pen")).await.body,
        items(&["pen"])
    );
    for _ in 0..2 {
        let his = fetch(&bob, cart.clone()).await;
        assert_eq!(
            (his.body.as_str(), his.x_cache.as_str()),
            (items(&["pen"]).as_str(), "MISS"),
            "{order:?}"
        );
        let hers = fetch(&alice, cart.clone()).await;
        assert_eq!(
            (hers.body.as_str(), hers.x_cache.as_str()),
            (items(&["book"]).as_str(), "MISS"),
            "{order:?}"
        );
        assert_eq!(
            fetch(&anonymous, cart.clone()).await.body,
            items(&[]),
            "{order:?}"
        );
    }

    // A page that never reads the session is shared by everyone.
    let public = format!("{base}/public");
    for client in [&anonymous, &alice, &bob, &anonymous, &alice, &bob] {
        assert_eq!(
            fetch(client, public.clone()).await.body,
            "the same for everyone"
        );
    }
    for (who, client) in [("anonymous", &anonymous), ("alice", &alice), ("bob", &bob)] {
        let got = fetch(client, public.clone()).await;
        assert_eq!(got.x_cache, "HIT", "{order:?}: /public for {who}");
    }
    assert!(
        calls.load(Ordering::SeqCst) <= 2,
        "{order:?}: /public computed {calls:?} times"
    );
}

#[tokio::test]
async fn page_cache_outside_the_session_layer() {
    a_cart_is_never_served_to_another_client(Order::PageCacheOutside).await;
}

#[tokio::test]
async fn page_cache_inside_the_session_layer() {
    a_cart_is_never_served_to_another_client(Order::PageCacheInside).await;
}
