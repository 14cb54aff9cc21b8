//! Issue 10 as an attacker sends it: requests whose key and whose forwarded request could name
//! different sites (absolute-form, h2c `:authority`, `Connection: close, Host`), malformed
//! `Host` fields, a header a client declares hop-by-hop, and a handler that panics. Each
//! through the real proxy or layer on a real listener; raw TCP where a well-behaved client
//! cannot send the request.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{raw_http, serve, Counter, HttpClient};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use webcache_core::Cache;
use webcache_http::{proxy_router, CachePageLayer};

/// Calls of the origin, per "host path" it saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, usize>>>);

impl Seen {
    fn get(&self, key: &str) -> usize {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }
    fn total(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }
}

/// An origin that answers with the site it was asked for (its `Host`), storable for a minute,
/// and on `/lang` in the language it was asked for (`Vary: Accept-Language`).
async fn origin_app(seen: Seen) -> std::net::SocketAddr {
    let app = Router::new().fallback(move |req: Request| {
        let seen = seen.clone();
        async move {
            let headers: &HeaderMap = req.headers();
            let host = headers
                .get("host")
                .map_or("-".to_owned(), |h| h.to_str().unwrap().to_owned());
            let path = req.uri().path().to_owned();
            *seen
                .0
                .lock()
                .unwrap()
                .entry(format!("{host} {path}"))
                .or_default() += 1;
            if path == "/lang" {
                let german = headers
                    .get("accept-language")
                    .is_some_and(|v| v.to_str().unwrap().starts_with("de"));
                let text = if german { "Guten Tag" } else { "Good day" };
                return (
                    [("cache-control", "max-age=60"), ("vary", "Accept-Language")],
                    text,
                )
                    .into_response();
            }
            ([("cache-control", "max-age=60")], format!("page of {host}")).into_response()
        }
    });
    serve(app).await
}

/// The caching proxy (shared-cache policy, locmem) in front of the host-echoing origin.
async fn proxy() -> (std::net::SocketAddr, Seen) {
    let seen = Seen::default();
    let origin = origin_app(seen.clone()).await;
    let proxy = proxy_router(&format!("http://{origin}"), Cache::locmem(), None).unwrap();
    (serve(proxy).await, seen)
}

/// A later, ordinary request for `victim.example/p` gets victim's page, from the cache.
async fn victim_gets_its_own_page(addr: std::net::SocketAddr, seen: &Seen) {
    let client = HttpClient::new(addr);
    let r = client.get_with("/p", &[("host", "victim.example")]).await;
    assert_eq!(r.text(), "page of victim.example", "{r:?}");
    assert_eq!(r.x_cache(), "HIT", "the first request stored victim's page");
    assert_eq!(seen.get("victim.example /p"), 1);
    assert_eq!(
        seen.get("attacker.example /p"),
        0,
        "the origin was never asked for the attacker's page"
    );
}

#[tokio::test]
async fn absolute_form_target_wins_over_host_for_the_key_and_the_origin() {
    let (addr, seen) = proxy().await;
    let r = raw_http(
        addr,
        "GET http://victim.example/p HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.text(),
        "page of victim.example",
        "the origin must be asked for the site the key names"
    );
    victim_gets_its_own_page(addr, &seen).await;
}

#[tokio::test]
async fn h2c_authority_wins_over_a_different_host_header() {
    let (addr, seen) = proxy().await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let req = http::Request::builder()
        .version(http::Version::HTTP_2)
        .uri("http://victim.example/p")
        .header("host", "attacker.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        "page of victim.example",
        "the origin must be asked for the :authority the key names"
    );
    victim_gets_its_own_page(addr, &seen).await;
}

#[tokio::test]
async fn connection_naming_host_does_not_strip_it_from_the_forwarded_request() {
    let (addr, seen) = proxy().await;
    let r = raw_http(
        addr,
        "GET /p HTTP/1.1\r\nHost: victim.example\r\nConnection: close, Host\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.text(),
        "page of victim.example",
        "the origin must receive the Host the key was made from"
    );
    assert_eq!(seen.total(), 1, "the origin answered for no other site");
    victim_gets_its_own_page(addr, &seen).await;
}

#[tokio::test]
async fn two_host_fields_or_none_are_refused_never_forwarded_nor_stored() {
    let (addr, seen) = proxy().await;
    for request in [
        "GET /p HTTP/1.1\r\nHost: victim.example\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
        "GET /p HTTP/1.1\r\nHost: attacker.example\r\nHost: victim.example\r\nConnection: close\r\n\r\n",
        "GET /p HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_http(addr, request).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{request:?}: {r:?}");
        assert_eq!(seen.total(), 0, "{request:?} reached the origin");
    }
    // Nothing was stored for either name: the first ordinary requests are misses.
    let client = HttpClient::new(addr);
    for host in ["victim.example", "attacker.example"] {
        let r = client.get_with("/p", &[("host", host)]).await;
        assert_eq!(
            (r.x_cache(), r.text()),
            ("MISS", format!("page of {host}")),
            "{host}"
        );
    }
    assert_eq!(seen.total(), 2);
}

/// Issue 10 item 5: a field the client names in `Connection` is removed before the key is
/// made, so the origin's answer without it is never stored as the variant with it.
#[tokio::test]
async fn a_header_named_in_connection_does_not_choose_the_variant() {
    let (addr, seen) = proxy().await;
    let r = raw_http(
        addr,
        "GET /lang HTTP/1.1\r\nHost: site.example\r\nAccept-Language: de-DE\r\nConnection: close, Accept-Language\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // The client declared Accept-Language hop-by-hop: the origin never saw it.
    assert_eq!(r.text(), "Good day");
    let client = HttpClient::new(addr);
    let german = client
        .get_with(
            "/lang",
            &[("host", "site.example"), ("accept-language", "de-DE")],
        )
        .await;
    assert_eq!(
        german.text(),
        "Guten Tag",
        "the English page was stored as the German variant: {german:?}"
    );
    assert_eq!(german.x_cache(), "MISS");
    // The English answer was stored for what the origin really saw: no Accept-Language.
    let plain = client.get_with("/lang", &[("host", "site.example")]).await;
    assert_eq!(
        (plain.x_cache(), plain.text()),
        ("HIT", "Good day".to_owned())
    );
    assert_eq!(seen.get("site.example /lang"), 2);
}

/// Issue 10 item 9, last line: a panic below the layer is a 500 in words, never an empty
/// reply, and the site keeps answering.
#[tokio::test]
async fn a_panicking_handler_is_a_500_and_the_next_request_works() {
    let calls = Counter::default();
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/panic",
            get(move || {
                let n = c.bump();
                async move {
                    if n > 0 {
                        panic!("handler bug {n}");
                    }
                    "unreachable"
                }
            }),
        )
        .route("/ok", get(|| async { "fine" }))
        .layer(CachePageLayer::new(Cache::locmem()));
    let client = HttpClient::new(serve(app).await);
    for round in 1..=2 {
        match client.try_get("/panic").await {
            Ok(r) => {
                assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{r:?}");
                assert!(!r.body.is_empty(), "the 500 says what happened");
            }
            Err(e) => panic!("round {round}: a panic gave the client no answer: {e}"),
        }
        assert_eq!(calls.get(), round, "a 500 is never stored");
        let ok = client.get("/ok").await;
        assert_eq!((ok.status, ok.text()), (StatusCode::OK, "fine".to_owned()));
    }
}
