//! Ranges through the real caching proxy in RFC 9111 mode (§3.3, §3.4; RFC 9110 §14): a
//! `Range` request on a stored complete page is answered from the cache (one range, open-ended
//! and suffix ranges, `If-Range`, 416 past the end), and a 206 from the origin is stored and
//! reused for the same range, and invalidated with its URL.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::{serve, serve_with_peer, HttpClient, Store};
use webcache_http::proxy_router;

const BODY: &str = "0123456789";

/// One request the origin saw: method, path and its `Range`.
type Request3 = (String, String, Option<String>);

/// Every request the origin saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request3>>>);

impl Seen {
    fn count(&self, method: &str, path: &str) -> usize {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(m, p, _)| m == method && p == path)
            .count()
    }
    fn last_range(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .last()
            .and_then(|(_, _, r)| r.clone())
    }
}

/// `/complete` ignores `Range`; `/ranged` answers a single `bytes=a-b` with a 206 itself.
async fn origin(State(seen): State<Seen>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let range = req
        .headers()
        .get("range")
        .map(|v| v.to_str().unwrap().to_owned());
    seen.0
        .lock()
        .unwrap()
        .push((req.method().to_string(), path.clone(), range.clone()));
    let mut headers = HeaderMap::new();
    headers.insert(
        "date",
        HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())).unwrap(),
    );
    headers.insert("cache-control", HeaderValue::from_static("max-age=600"));
    headers.insert("etag", HeaderValue::from_static("\"v1\""));
    if req.method() != http::Method::GET {
        return (StatusCode::NO_CONTENT, headers).into_response();
    }
    if path == "/ranged" {
        if let Some(range) = range {
            let (a, b) = range
                .strip_prefix("bytes=")
                .unwrap()
                .split_once('-')
                .unwrap();
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            headers.insert(
                "content-range",
                HeaderValue::from_str(&format!("bytes {a}-{b}/{}", BODY.len())).unwrap(),
            );
            return (StatusCode::PARTIAL_CONTENT, headers, BODY[a..=b].to_owned()).into_response();
        }
    }
    (StatusCode::OK, headers, BODY).into_response()
}

async fn setup(store: Store) -> (Seen, HttpClient) {
    let seen = Seen::default();
    let origin_addr = serve(Router::new().fallback(origin).with_state(seen.clone())).await;
    let proxy = proxy_router(&format!("http://{origin_addr}"), store.cache(), None).unwrap();
    (seen, HttpClient::new(serve_with_peer(proxy).await))
}

on_every_store!(
    rfc9111_3_4_range_requests_are_answered_from_a_stored_complete_page,
    rfc9111_3_4_if_range_decides_between_the_range_and_the_whole_page,
    rfc9111_3_3_a_206_from_the_origin_is_stored_for_the_same_range,
);

async fn rfc9111_3_4_range_requests_are_answered_from_a_stored_complete_page(store: Store) {
    let (seen, client) = setup(store).await;
    assert_eq!(client.get("/complete").await.x_cache(), "MISS");
    let cases = [
        ("bytes=2-5", "2345", "bytes 2-5/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("Bytes= 8-99 ", "89", "bytes 8-9/10"),
        ("bytes=0-0", "0", "bytes 0-0/10"),
    ];
    for (range, body, content_range) in cases {
        let r = client.get_with("/complete", &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(r.text(), body, "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
        assert_eq!(r.header("content-length").unwrap(), body.len().to_string());
        assert_eq!(r.x_cache(), "HIT", "{range}");
    }
    // Nothing of the page is in the range: 416, with the length.
    let r = client
        .get_with("/complete", &[("range", "bytes=10-")])
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    assert!(r.body.is_empty());
    // Several ranges, another unit, or junk: the whole page.
    for range in ["bytes=0-1,4-5", "items=0-1", "bytes=5-2"] {
        let r = client.get_with("/complete", &[("range", range)]).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::OK, BODY),
            "{range}"
        );
    }
    // A precondition that says 304 wins over the range.
    let r = client
        .get_with(
            "/complete",
            &[("range", "bytes=0-1"), ("if-none-match", "\"v1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(seen.count("GET", "/complete"), 1);
}

async fn rfc9111_3_4_if_range_decides_between_the_range_and_the_whole_page(store: Store) {
    let (seen, client) = setup(store).await;
    client.get("/complete").await;
    let same = client
        .get_with(
            "/complete",
            &[("range", "bytes=0-1"), ("if-range", "\"v1\"")],
        )
        .await;
    assert_eq!(
        (same.status, same.text().as_str()),
        (StatusCode::PARTIAL_CONTENT, "01")
    );
    for changed in ["\"v0\"", "W/\"v1\"", "Sun, 06 Nov 1994 08:49:37 GMT"] {
        let r = client
            .get_with(
                "/complete",
                &[("range", "bytes=0-1"), ("if-range", changed)],
            )
            .await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::OK, BODY),
            "{changed}"
        );
        assert_eq!(r.x_cache(), "HIT");
    }
    assert_eq!(seen.count("GET", "/complete"), 1);
}

async fn rfc9111_3_3_a_206_from_the_origin_is_stored_for_the_same_range(store: Store) {
    let (seen, client) = setup(store).await;
    let first = client.get_with("/ranged", &[("range", "bytes=0-3")]).await;
    assert_eq!(
        (first.status, first.x_cache()),
        (StatusCode::PARTIAL_CONTENT, "MISS")
    );
    assert_eq!(seen.last_range().as_deref(), Some("bytes=0-3"));
    let again = client.get_with("/ranged", &[("range", "bytes=0-3")]).await;
    assert_eq!(
        (again.status, again.text().as_str(), again.x_cache()),
        (StatusCode::PARTIAL_CONTENT, "0123", "HIT")
    );
    assert_eq!(again.header("content-range"), Some("bytes 0-3/10"));
    assert_eq!(seen.count("GET", "/ranged"), 1);
    // Another range is another answer; the whole page is never a stored part.
    let other = client.get_with("/ranged", &[("range", "bytes=4-5")]).await;
    assert_eq!((other.text().as_str(), other.x_cache()), ("45", "MISS"));
    let whole = client.get("/ranged").await;
    assert_eq!(
        (whole.status, whole.text().as_str(), whole.x_cache()),
        (StatusCode::OK, BODY, "MISS")
    );
    assert_eq!(seen.last_range(), None);
    // Now the complete page is stored, and answers ranges itself.
    let from_page = client.get_with("/ranged", &[("range", "bytes=6-")]).await;
    assert_eq!(
        (from_page.text().as_str(), from_page.x_cache()),
        ("6789", "HIT")
    );
    assert_eq!(seen.count("GET", "/ranged"), 3);
    // An unsafe request drops the stored parts with the page.
    client.send("POST", "/ranged", &[], "x").await;
    let after = client.get_with("/ranged", &[("range", "bytes=0-3")]).await;
    assert_eq!((after.text().as_str(), after.x_cache()), ("0123", "MISS"));
    assert_eq!(seen.count("GET", "/ranged"), 4);
}
