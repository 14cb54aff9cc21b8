//! The caching reverse proxy against a real origin (an axum app on another port), with both
//! policies, caching in locmem and in Redis.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::{serve, HttpClient, Store};
use webcache_core::Cache;
use webcache_http::{proxy_router, ProxyError};

#[derive(Clone, Default)]
struct Hits(Arc<Mutex<HashMap<String, usize>>>);

impl Hits {
    fn bump(&self, key: &str) -> usize {
        let mut map = self.0.lock().unwrap();
        let n = map.entry(key.to_owned()).or_default();
        *n += 1;
        *n
    }
    fn get(&self, key: &str) -> usize {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

/// The origin: what each path answers is in the match below; every call is counted under
/// "METHOD /path".
async fn origin(State(hits): State<Hits>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_headers = req.headers().clone();
    let body = to_bytes(req.into_body(), 1 << 20).await.unwrap();
    let n = hits.bump(&format!("{method} {path}"));
    let mut headers = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        headers.insert(k, HeaderValue::from_str(&v).unwrap());
    };
    let now = SystemTime::now();
    set("date", httpdate::fmt_http_date(now));
    let mut status = StatusCode::OK;
    match path.as_str() {
        "/max-age" => set("cache-control", "max-age=60".into()),
        "/s-maxage" => set("cache-control", "s-maxage=60, max-age=0".into()),
        "/expires" => set(
            "expires",
            httpdate::fmt_http_date(now + Duration::from_secs(60)),
        ),
        "/expired" => set(
            "expires",
            httpdate::fmt_http_date(now - Duration::from_secs(60)),
        ),
        "/no-store" => set("cache-control", "no-store, max-age=60".into()),
        "/private" => set("cache-control", "private, max-age=60".into()),
        "/no-cache" => set("cache-control", "no-cache, max-age=60".into()),
        "/heuristic" => set(
            "last-modified",
            httpdate::fmt_http_date(now - Duration::from_secs(86_400)),
        ),
        "/none" | "/echo" => {}
        "/host" => {
            let host = request_headers
                .get("host")
                .map(|h| h.to_str().unwrap().to_owned());
            return format!("host={host:?}").into_response();
        }
        "/teapot" => {
            set("cache-control", "max-age=60".into());
            status = StatusCode::IM_A_TEAPOT;
        }
        "/revalidate" => {
            let matches = request_headers
                .get("if-none-match")
                .is_some_and(|v| v == "\"v1\"");
            set("etag", "\"v1\"".into());
            if matches {
                hits.bump("304 /revalidate");
                set("cache-control", "max-age=60".into());
                set("x-refreshed", "yes".into());
                return (StatusCode::NOT_MODIFIED, headers).into_response();
            }
            set("cache-control", "max-age=1".into());
        }
        _ => status = StatusCode::NOT_FOUND,
    }
    let auth = request_headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = format!(
        "{method} {path} #{n} auth={auth} body={}",
        String::from_utf8_lossy(&body)
    );
    (status, headers, text).into_response()
}

on_every_store!(
    rfc_stores_what_the_origin_marks_fresh,
    rfc_does_not_store_what_the_origin_forbids_or_leaves_without_freshness,
    rfc_authorization_rules,
    rfc_revalidates_a_stale_page_and_a_304_refreshes_its_headers,
    rfc_invalidates_after_a_successful_unsafe_request,
    forwards_any_method_body_headers_and_status,
    with_default_ttl_the_proxy_follows_django,
);

async fn setup(store: Store, default_ttl: Option<Duration>) -> (HttpClient, Hits) {
    let hits = Hits::default();
    let origin_app = Router::new().fallback(origin).with_state(hits.clone());
    let origin_addr = serve(origin_app).await;
    let proxy = proxy_router(&format!("http://{origin_addr}"), store.cache(), default_ttl).unwrap();
    (HttpClient::new(serve(proxy).await), hits)
}

async fn twice(
    client: &HttpClient,
    path: &str,
    headers: &[(&str, &str)],
) -> (common::Reply, common::Reply) {
    (
        client.get_with(path, headers).await,
        client.get_with(path, headers).await,
    )
}

async fn rfc_stores_what_the_origin_marks_fresh(store: Store) {
    let (client, hits) = setup(store, None).await;
    for path in ["/max-age", "/s-maxage", "/expires", "/heuristic"] {
        let (first, second) = twice(&client, path, &[]).await;
        assert_eq!(
            (first.x_cache(), second.x_cache()),
            ("MISS", "HIT"),
            "{path}"
        );
        assert_eq!(first.body, second.body, "{path}");
        assert_eq!(hits.get(&format!("GET {path}")), 1, "{path}");
        // The origin's headers are served as they were, with the age.
        assert_eq!(second.header("date"), first.header("date"), "{path}");
        assert!(second.header("age").is_some(), "{path}");
    }
}

async fn rfc_does_not_store_what_the_origin_forbids_or_leaves_without_freshness(store: Store) {
    let (client, hits) = setup(store, None).await;
    for path in ["/no-store", "/private", "/no-cache", "/none", "/expired"] {
        let (_, second) = twice(&client, path, &[]).await;
        assert_eq!(second.x_cache(), "MISS", "{path}");
        assert_eq!(hits.get(&format!("GET {path}")), 2, "{path}");
    }
    // Any final status with explicit freshness is stored (RFC 9111 §3), a 418 included.
    let (_, second) = twice(&client, "/teapot", &[]).await;
    assert_eq!(second.x_cache(), "HIT", "/teapot");
    // The request's no-store bypasses the cache; its no-cache forces a trip to the origin.
    client.get("/max-age").await;
    let r = client
        .get_with("/max-age", &[("cache-control", "no-store")])
        .await;
    assert_eq!(r.x_cache(), "BYPASS");
    let r = client
        .get_with("/max-age", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(r.x_cache(), "MISS");
    assert_eq!(hits.get("GET /max-age"), 3);
    assert_eq!(client.get("/max-age").await.x_cache(), "HIT");
}

async fn rfc_authorization_rules(store: Store) {
    let (client, hits) = setup(store, None).await;
    let alice = [("authorization", "Bearer alice")];
    // max-age alone does not allow sharing an authorised answer.
    let (_, second) = twice(&client, "/max-age", &alice).await;
    assert_eq!(second.x_cache(), "MISS");
    // s-maxage does; it is still kept per credentials (Vary: Authorization).
    let (first, second) = twice(&client, "/s-maxage", &alice).await;
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert_eq!(second.header("vary"), Some("authorization"));
    let bob = client
        .get_with("/s-maxage", &[("authorization", "Bearer bob")])
        .await;
    assert_eq!(bob.x_cache(), "MISS");
    assert!(bob.text().contains("auth=Bearer bob"));
    assert_eq!(hits.get("GET /s-maxage"), 2);
}

async fn rfc_revalidates_a_stale_page_and_a_304_refreshes_its_headers(store: Store) {
    let (client, hits) = setup(store, None).await;
    let first = client.get("/revalidate").await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(client.get("/revalidate").await.x_cache(), "HIT");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale: the proxy asks the origin with If-None-Match, gets 304, serves the stored body.
    let refreshed = client.get("/revalidate").await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_eq!(refreshed.body, first.body);
    assert_eq!(refreshed.header("x-refreshed"), Some("yes"));
    assert_eq!(refreshed.header("cache-control"), Some("max-age=60"));
    assert_eq!(
        (hits.get("GET /revalidate"), hits.get("304 /revalidate")),
        (2, 1)
    );
    // The refreshed headers made it fresh for 60 s: no more origin trips.
    let again = client.get("/revalidate").await;
    assert_eq!(
        (again.x_cache(), again.header("x-refreshed")),
        ("HIT", Some("yes"))
    );
    assert_eq!(hits.get("GET /revalidate"), 2);
    // A conditional request is answered from the fresh page.
    let conditional = client
        .get_with("/revalidate", &[("if-none-match", "\"v1\"")])
        .await;
    assert_eq!(
        (conditional.status, conditional.x_cache()),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    assert_eq!(hits.get("GET /revalidate"), 2);
}

async fn rfc_invalidates_after_a_successful_unsafe_request(store: Store) {
    let (client, hits) = setup(store, None).await;
    client.get("/max-age").await;
    assert_eq!(client.get("/max-age").await.x_cache(), "HIT");
    // An unsafe request that fails (404 here) invalidates nothing.
    let missing = client.send("DELETE", "/unknown", &[], "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let post = client.send("POST", "/max-age", &[], "form=1").await;
    assert_eq!(
        (post.x_cache(), post.text().as_str()),
        ("BYPASS", "POST /max-age #1 auth= body=form=1")
    );
    assert_eq!(client.get("/max-age").await.x_cache(), "MISS");
    assert_eq!(hits.get("GET /max-age"), 2);
    // Every variant of the URL goes too.
    let alice = [("authorization", "Bearer alice")];
    client.get_with("/s-maxage", &alice).await;
    assert_eq!(client.get_with("/s-maxage", &alice).await.x_cache(), "HIT");
    client.send("PUT", "/s-maxage", &[], "").await;
    assert_eq!(client.get_with("/s-maxage", &alice).await.x_cache(), "MISS");
}

async fn forwards_any_method_body_headers_and_status(store: Store) {
    let (client, hits) = setup(store, None).await;
    let purge = client
        .send("PURGE", "/echo?x=1", &[("x-custom", "yes")], "payload")
        .await;
    assert_eq!(purge.text(), "PURGE /echo #1 auth= body=payload");
    assert_eq!(purge.x_cache(), "BYPASS");
    let teapot = client.get("/teapot").await;
    assert_eq!(teapot.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(hits.get("PURGE /echo"), 1);
    let host = client.get_with("/host", &[("host", "site.example")]).await;
    assert_eq!(
        host.text(),
        "host=Some(\"site.example\")",
        "the client's Host reaches the origin"
    );
    let head = client.send("HEAD", "/max-age", &[], "").await;
    assert!(head.body.is_empty());
    assert_eq!(
        client.get("/max-age").await.x_cache(),
        "HIT",
        "HEAD filled the GET entry"
    );
}

async fn with_default_ttl_the_proxy_follows_django(store: Store) {
    let (client, hits) = setup(store, Some(Duration::from_secs(60))).await;
    let (first, second) = twice(&client, "/none", &[]).await;
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert!(second
        .header("cache-control")
        .unwrap()
        .contains("max-age=60"));
    for path in ["/no-store", "/private"] {
        let (_, second) = twice(&client, path, &[]).await;
        assert_eq!(second.x_cache(), "MISS", "{path}");
    }
    assert_eq!(hits.get("GET /none"), 1);
    // No invalidation under the Django rules (as Django's middleware).
    client.send("POST", "/none", &[], "").await;
    assert_eq!(client.get("/none").await.x_cache(), "HIT");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_and_a_bad_one_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = proxy_router(&format!("http://127.0.0.1:{port}"), Cache::locmem(), None).unwrap();
    let client = HttpClient::new(serve(proxy).await);
    let r = client.get("/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    for bad in [
        "not a url",
        "https://example.com",
        "127.0.0.1:8000",
        "http://h/?q=1",
    ] {
        let err: ProxyError = proxy_router(bad, Cache::locmem(), None).unwrap_err();
        assert!(err.to_string().contains("http://HOST[:PORT]"), "{err}");
    }
}
