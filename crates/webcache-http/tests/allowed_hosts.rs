//! Issue 10 item 1: `CachePageLayer::allowed_hosts` (Django's `ALLOWED_HOSTS`). A request for
//! another host gets 400 and is neither passed to the handler nor stored, whichever way it
//! names the host (the `Host` field or an absolute-form target).

#![allow(clippy::unwrap_used)]

mod common;

use axum::extract::Request;
use axum::Router;
use common::{raw_http, serve, Counter, HttpClient};
use http::StatusCode;
use webcache_core::Cache;
use webcache_http::CachePageLayer;

#[tokio::test]
async fn hosts_outside_the_allow_list_get_400_and_are_never_forwarded_nor_stored() {
    let calls = Counter::default();
    let c = calls.clone();
    let cache = Cache::locmem();
    let app = Router::new()
        .fallback(move |req: Request| {
            let n = c.bump();
            let host = req.headers()["host"].to_str().unwrap().to_owned();
            async move { format!("page of {host} #{n}") }
        })
        .layer(CachePageLayer::new(cache.clone()).allowed_hosts([".example.com"]));
    let addr = serve(app).await;
    let client = HttpClient::new(addr);
    // The domain and its subdomains are answered and cached.
    for host in ["example.com", "www.example.com", "WWW.Example.COM:8080"] {
        let r = client.get_with("/p", &[("host", host)]).await;
        assert_eq!(r.status, StatusCode::OK, "{host}");
    }
    let before = calls.get();
    assert_eq!(before, 3);
    let stored = common::keys(&cache, "*").await.len();
    // Others are refused, however the host is named.
    for host in ["evil.com", "example.com.evil.com", "badexample.com"] {
        let r = client.get_with("/p", &[("host", host)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{host}: {r:?}");
        let again = client.get_with("/p", &[("host", host)]).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "{host}");
    }
    let r = raw_http(
        addr,
        "GET http://evil.com/p HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "the absolute-form target names the host: {r:?}"
    );
    assert_eq!(
        calls.get(),
        before,
        "a refused host never reaches the handler"
    );
    assert_eq!(
        common::keys(&cache, "*").await.len(),
        stored,
        "a refused host stores nothing"
    );
}
