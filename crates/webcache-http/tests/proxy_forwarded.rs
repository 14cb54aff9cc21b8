//! What the origin learns about who asked: the proxy appends the real peer to
//! `X-Forwarded-For` and `Forwarded`, sets `X-Real-IP`, `X-Forwarded-Proto` and
//! `X-Forwarded-Host`, and drops what the client wrote in them unless told to trust it. The
//! origin is a real axum app that echoes the fields it received.

#![allow(clippy::unwrap_used, missing_docs)]

#[macro_use]
mod common;

use axum::http::HeaderMap;
use axum::Router;
use common::HttpClient;
use webcache_core::Cache;
use webcache_http::{proxy_router, proxy_router_with_origin, CachePageLayer, Origin, Policy};

/// The forwarding fields the origin received, one `name: value` line each, in a fixed order.
async fn echo(headers: HeaderMap) -> String {
    let mut lines = Vec::new();
    for name in [
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
    ] {
        for value in headers.get_all(name) {
            lines.push(format!("{name}: {}", value.to_str().unwrap()));
        }
    }
    lines.join("\n")
}

async fn origin() -> String {
    format!(
        "http://{}",
        common::serve(Router::new().fallback(echo)).await
    )
}

const FORGED: &[(&str, &str)] = &[
    ("host", "shop.example:8080"),
    ("x-forwarded-for", "203.0.113.7"),
    ("x-real-ip", "203.0.113.7"),
    ("forwarded", "for=203.0.113.7;proto=https"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "admin.example"),
    ("x-forwarded-port", "443"),
];

#[tokio::test]
async fn the_clients_own_fields_are_dropped_and_the_peer_is_forwarded() {
    let proxy = proxy_router(&origin().await, Cache::locmem(), None).unwrap();
    let client = HttpClient::new(common::serve_with_peer(proxy).await);
    let expected = "x-forwarded-for: 127.0.0.1\n\
                    x-real-ip: 127.0.0.1\n\
                    forwarded: for=127.0.0.1;proto=http;host=\"shop.example:8080\"\n\
                    x-forwarded-proto: http\n\
                    x-forwarded-host: shop.example:8080";
    let forged = client.get_with("/", FORGED).await;
    assert_eq!(forged.text(), expected);
    let honest = client.get_with("/", &[("host", "shop.example:8080")]).await;
    assert_eq!(honest.text(), expected);
    // A host that is a token is written bare.
    let bare = client.get_with("/", &[("host", "shop.example")]).await;
    assert!(
        bare.text()
            .contains("forwarded: for=127.0.0.1;proto=http;host=shop.example\n"),
        "{}",
        bare.text()
    );
}

#[tokio::test]
async fn trusted_fields_are_kept_and_the_peer_appended() {
    let configured = Origin::new(&origin().await).unwrap().trust_forwarded(true);
    let layer = CachePageLayer::new(Cache::locmem()).policy(Policy::shared_cache());
    let client = HttpClient::new(
        common::serve_with_peer(proxy_router_with_origin(configured, &layer)).await,
    );
    let got = client.get_with("/", FORGED).await;
    assert_eq!(
        got.text(),
        "x-forwarded-for: 203.0.113.7, 127.0.0.1\n\
         x-real-ip: 203.0.113.7\n\
         forwarded: for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=\"shop.example:8080\"\n\
         x-forwarded-proto: https\n\
         x-forwarded-host: admin.example\n\
         x-forwarded-port: 443"
    );
    // Two fields of one list are one list.
    let two = client
        .get_with(
            "/",
            &[
                ("host", "a.example"),
                ("x-forwarded-for", "198.51.100.1"),
                ("x-forwarded-for", "198.51.100.2"),
            ],
        )
        .await;
    assert!(
        two.text()
            .starts_with("x-forwarded-for: 198.51.100.1, 198.51.100.2, 127.0.0.1\n"),
        "{}",
        two.text()
    );
}

#[tokio::test]
async fn without_the_peer_address_the_origin_learns_it_is_unknown() {
    // Served without connect info: nothing is invented, and the client's fields still go.
    let proxy = proxy_router(&origin().await, Cache::locmem(), None).unwrap();
    let client = HttpClient::new(common::serve(proxy).await);
    let got = client.get_with("/", FORGED).await;
    assert_eq!(
        got.text(),
        "forwarded: for=unknown;proto=http;host=\"shop.example:8080\"\n\
         x-forwarded-proto: http\n\
         x-forwarded-host: shop.example:8080"
    );
}
