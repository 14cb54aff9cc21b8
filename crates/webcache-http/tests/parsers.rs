//! Property tests of the parsers of client and origin input, through the public API and the
//! real page-cache layer (over locmem, called as a tower service): arbitrary bytes in caching
//! headers never panic, and a response whose caching headers do not parse is never stored.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{Layer, ServiceExt};
use webcache_core::Cache;
use webcache_http::conditional::{evaluate, Precondition};
use webcache_http::headers::{
    http_date, parse_http_date, patch_cache_control, patch_vary_headers, vary_names, CacheControl,
    CacheControlPatch,
};
use webcache_http::{CachePageLayer, Policy};

/// Header values built from what matters to caching headers (quotes, backslashes, commas,
/// `=`, whitespace, non-ASCII, directive names, digits, dates) and any other byte.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let piece = prop_oneof![
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b", ".to_vec()),
        Just(b"=".to_vec()),
        Just(b"W/".to_vec()),
        Just(b"*".to_vec()),
        Just(b"private".to_vec()),
        Just(b"max-age=".to_vec()),
        Just(b"s-maxage=".to_vec()),
        Just(b"accept-language".to_vec()),
        Just(b"Sun, 06 Nov 1994 08:49:37 GMT".to_vec()),
        "[0-9]{1,22}".prop_map(String::into_bytes),
        "[a-z-]{1,6}".prop_map(String::into_bytes),
        (0x80u8..=0xff).prop_map(|b| vec![b]),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    proptest::collection::vec(piece, 0..10).prop_filter_map("not a header value", |pieces| {
        HeaderValue::from_bytes(&pieces.concat()).ok()
    })
}

const CACHING_HEADERS: [&str; 8] = [
    "cache-control",
    "vary",
    "age",
    "date",
    "expires",
    "last-modified",
    "etag",
    "x-other",
];

fn response_headers() -> impl Strategy<Value = Vec<(&'static str, HeaderValue)>> {
    proptest::collection::vec(
        (
            proptest::sample::select(&CACHING_HEADERS[..]),
            header_value(),
        ),
        0..6,
    )
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Whether a response with these headers must not be stored because one does not parse (or
/// says `Vary: *`), as the policy documents it.
fn unreadable(headers: &HeaderMap, shared_cache: bool) -> bool {
    let bad_date = headers
        .get("date")
        .is_some_and(|d| parse_http_date(d).is_none());
    let bad_age = headers.get("age").is_some_and(|a| {
        let first = a.as_bytes().split(|b| *b == b',').next().unwrap();
        let first = first.trim_ascii();
        first.is_empty() || !first.iter().all(u8::is_ascii_digit)
    });
    CacheControl::from_headers(headers).is_err()
        || vary_names(headers).iter().any(|n| n == "*")
        || (shared_cache && (bad_date || bad_age))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever caching headers the origin sends, the layer answers both requests with the
    /// origin's status, never panics, and serves the second from the cache only when every
    /// caching header parsed.
    #[test]
    fn the_layer_never_panics_nor_stores_what_it_cannot_read(
        headers in response_headers(),
        shared_cache in any::<bool>(),
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let sent: Arc<Vec<(&'static str, HeaderValue)>> = Arc::new(headers);
        let origin = {
            let calls = calls.clone();
            let sent = sent.clone();
            tower::service_fn(move |_req: Request<Full<Bytes>>| {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                let sent = sent.clone();
                async move {
                    let mut response = Response::new(Full::new(Bytes::from(format!("call {n}"))));
                    for (name, value) in sent.iter() {
                        response
                            .headers_mut()
                            .append(HeaderName::from_static(name), value.clone());
                    }
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let mut layer = CachePageLayer::new(Cache::locmem());
        if shared_cache {
            layer = layer.policy(Policy::shared_cache());
        }
        let service = layer.layer(origin);
        let answers: Vec<(StatusCode, HeaderMap, Bytes)> = runtime().block_on(async {
            let mut answers = Vec::new();
            for _ in 0..2 {
                let request = Request::builder()
                    .uri("http://example.com/")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = service.clone().oneshot(request).await.unwrap();
                let (parts, body) = response.into_parts();
                answers.push((parts.status, parts.headers, body.collect().await.unwrap().to_bytes()));
            }
            answers
        });
        let mut origin_headers = HeaderMap::new();
        for (name, value) in sent.iter() {
            origin_headers.append(*name, value.clone());
        }
        for (status, _, _) in &answers {
            prop_assert_eq!(*status, StatusCode::OK);
        }
        if unreadable(&origin_headers, shared_cache) {
            prop_assert_eq!(&answers[1].1["x-cache"], "MISS");
            prop_assert_eq!(calls.load(Ordering::SeqCst), 2);
            // An unreadable Cache-Control reaches the client as the origin sent it.
            if CacheControl::from_headers(&origin_headers).is_err() {
                let sent_cc: Vec<_> = origin_headers.get_all("cache-control").iter().collect();
                let got_cc: Vec<_> = answers[0].1.get_all("cache-control").iter().collect();
                prop_assert_eq!(sent_cc, got_cc);
            }
        }
        if answers[1].1["x-cache"] == "HIT" {
            prop_assert_eq!(&answers[0].2, &answers[1].2);
        }
    }

    /// Any bytes: `Cache-Control` parses or is refused, never a panic.
    #[test]
    fn cache_control_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(cc) = CacheControl::parse(&bytes) {
            prop_assert_eq!(CacheControl::parse(cc.to_string()), Ok(cc));
        }
    }

    /// Patching `Cache-Control` and `Vary` with any directive or name never panics; what the
    /// response said is kept.
    #[test]
    fn patches_never_panic(
        cc in header_value(),
        vary in header_value(),
        name in "[ -~]{0,12}",
        value in proptest::option::of("[ -~]{0,12}"),
        seconds in any::<u64>(),
    ) {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", cc.clone());
        headers.insert("vary", vary);
        let patch = CacheControlPatch::new()
            .directive(&name, value.as_deref())
            .max_age(Duration::from_secs(seconds));
        patch_cache_control(&mut headers, &patch);
        if CacheControl::parse(cc.as_bytes()).is_err() {
            prop_assert_eq!(&headers["cache-control"], &cc);
        }
        let before = vary_names(&headers);
        patch_vary_headers(&mut headers, &["cookie", name.as_str()]);
        let after = vary_names(&headers);
        for n in before {
            prop_assert!(after.contains(&n) || after.iter().any(|a| a == "*"));
        }
    }

    /// Any bytes as validators and preconditions: an answer, never a panic; a list that does
    /// not parse never yields 304.
    #[test]
    fn preconditions_never_panic(
        etag in proptest::option::of(header_value()),
        last_modified in proptest::option::of(header_value()),
        if_none_match in proptest::option::of(header_value()),
        if_modified_since in proptest::option::of(header_value()),
        if_match in proptest::option::of(header_value()),
    ) {
        let mut response = HeaderMap::new();
        if let Some(v) = etag { response.insert("etag", v); }
        if let Some(v) = last_modified { response.insert("last-modified", v); }
        let mut request = HeaderMap::new();
        if let Some(v) = if_none_match.clone() { request.insert("if-none-match", v); }
        if let Some(v) = if_modified_since { request.insert("if-modified-since", v); }
        if let Some(v) = if_match { request.insert("if-match", v); }
        let outcome = evaluate(&Method::GET, &request, &response);
        if let Some(inm) = if_none_match {
            let bytes = inm.as_bytes().trim_ascii();
            if outcome == Precondition::NotModified && bytes != b"*" {
                // It matched: it must contain a quoted tag.
                prop_assert!(bytes.contains(&b'"'));
            }
        }
    }

    /// Any bytes as a date: a time or none; any time written reads back.
    #[test]
    fn dates_never_panic(value in header_value(), secs in any::<u64>()) {
        let _ = parse_http_date(&value);
        let at = std::time::SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        prop_assert!(parse_http_date(&http_date(at)).is_some());
    }
}
