//! The storage policy against hostile or careless origins, through the real layer over real
//! HTTP: huge delta-seconds and dates never panic (each request gets a proper answer), caching
//! headers that do not parse make a response unstorable (never a partial reading that misses
//! `private`), entity-tags with commas compare whole, and error pages get no caching headers.
//! Each runs against locmem and against a real Redis server.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

on_every_store!(
    rfc_max_age_of_u64_max_with_an_etag_is_answered_and_stored,
    django_max_age_of_i64_max_is_answered_and_stored_with_a_clamped_max_age,
    django_layer_timeout_of_duration_max_is_answered,
    rfc_age_beyond_u64_makes_the_response_stale_and_never_panics,
    rfc_expires_in_year_9999_and_a_huge_heuristic_are_answered,
    non_utf8_vary_is_not_stored,
    non_utf8_cache_control_is_not_stored_nor_rewritten,
    quoted_pair_or_unbalanced_quote_cannot_hide_private,
    unparsable_date_or_age_is_not_stored_by_the_shared_cache,
    entity_tags_with_commas_are_compared_whole,
    error_pages_get_no_caching_headers,
);

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use common::{serve, Counter, HttpClient, Reply, Store};
use webcache_http::{CachePageLayer, Policy, SharedCachePolicy};

/// A site whose one page `/` answers `status` with these raw header lines (any bytes) and a
/// body that says how many times it was called.
async fn site(
    layer: CachePageLayer,
    status: StatusCode,
    headers: &[(&'static str, &[u8])],
) -> (HttpClient, Counter) {
    let counter = Counter::default();
    let c = counter.clone();
    let headers: Vec<(HeaderName, HeaderValue)> = headers
        .iter()
        .map(|(n, v)| {
            (
                HeaderName::from_static(n),
                HeaderValue::from_bytes(v).unwrap(),
            )
        })
        .collect();
    let router = Router::new()
        .route(
            "/",
            get(move || {
                let n = c.bump();
                let headers = headers.clone();
                async move {
                    let mut response = Response::new(Body::from(format!("call {n}")));
                    *response.status_mut() = status;
                    for (name, value) in headers {
                        response.headers_mut().append(name, value);
                    }
                    response
                }
            }),
        )
        .layer(layer);
    (HttpClient::new(serve(router).await), counter)
}

fn rfc(store: Store) -> CachePageLayer {
    CachePageLayer::new(store.cache()).policy(Policy::shared_cache())
}

fn django(store: Store) -> CachePageLayer {
    CachePageLayer::new(store.cache())
}

/// Two GETs: the first a MISS from the handler, the second a HIT with the same body.
async fn assert_stored(client: &HttpClient, counter: &Counter) -> (Reply, Reply) {
    let first = client.get("/").await;
    let second = client.get("/").await;
    assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
    assert_eq!((second.status, second.x_cache()), (StatusCode::OK, "HIT"));
    assert_eq!(first.body, second.body);
    assert_eq!(counter.get(), 1);
    (first, second)
}

/// Two GETs, both answered by the handler.
async fn assert_not_stored(client: &HttpClient, counter: &Counter, why: &str) -> Reply {
    let first = client.get("/").await;
    let second = client.get("/").await;
    assert_eq!(first.status, StatusCode::OK, "{why}");
    assert_eq!(
        (first.x_cache(), second.x_cache()),
        ("MISS", "MISS"),
        "{why}"
    );
    assert_eq!(first.text(), "call 1", "{why}");
    assert_eq!(second.text(), "call 2", "{why}");
    assert_eq!(counter.get(), 2, "{why}");
    first
}

fn raw<'a>(reply: &'a Reply, name: &str) -> Vec<&'a [u8]> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect()
}

async fn rfc_max_age_of_u64_max_with_an_etag_is_answered_and_stored(store: Store) {
    let (client, counter) = site(
        rfc(store),
        StatusCode::OK,
        &[
            ("cache-control", b"max-age=18446744073709551615"),
            ("etag", b"\"v1\""),
        ],
    )
    .await;
    let (_, hit) = assert_stored(&client, &counter).await;
    assert_eq!(hit.text(), "call 1");
    let revalidated = client.get_with("/", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (revalidated.status, revalidated.x_cache()),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    assert_eq!(counter.get(), 1);
}

async fn django_max_age_of_i64_max_is_answered_and_stored_with_a_clamped_max_age(store: Store) {
    let (client, counter) = site(
        django(store),
        StatusCode::OK,
        &[("cache-control", b"max-age=9223372036854775807")],
    )
    .await;
    let (miss, hit) = assert_stored(&client, &counter).await;
    for reply in [&miss, &hit] {
        // RFC 9111 §1.2.2: delta-seconds beyond 2^31 count as 2^31.
        assert_eq!(reply.header("cache-control"), Some("max-age=2147483648"));
        let expires = httpdate::parse_http_date(reply.header("expires").unwrap()).unwrap();
        let years_ahead =
            expires.duration_since(SystemTime::now()).unwrap().as_secs() / (365 * 24 * 3600);
        assert!((67..=68).contains(&years_ahead), "{years_ahead}");
    }
}

async fn django_layer_timeout_of_duration_max_is_answered(store: Store) {
    let (client, counter) = site(django(store).timeout(Duration::MAX), StatusCode::OK, &[]).await;
    let (miss, _) = assert_stored(&client, &counter).await;
    assert_eq!(miss.header("cache-control"), Some("max-age=2147483648"));
    assert!(httpdate::parse_http_date(miss.header("expires").unwrap()).is_ok());
}

async fn rfc_age_beyond_u64_makes_the_response_stale_and_never_panics(store: Store) {
    // An Age too large for any integer counts as 2^31 s (RFC 9111 §1.2.2), not as 0: the
    // response is stale on arrival and, with no validator, not stored.
    let (client, counter) = site(
        rfc(store),
        StatusCode::OK,
        &[
            ("cache-control", b"max-age=60"),
            ("age", b"99999999999999999999"),
        ],
    )
    .await;
    assert_not_stored(&client, &counter, "Age beyond u64").await;
    // With a validator it is kept only to be revalidated (the handler answers 200 again).
    let (client, counter) = site(
        rfc(store),
        StatusCode::OK,
        &[
            ("cache-control", b"max-age=60"),
            ("age", b"18446744073709551615"),
            ("etag", b"\"v1\""),
        ],
    )
    .await;
    assert_not_stored(&client, &counter, "Age of u64::MAX with an ETag").await;
}

async fn rfc_expires_in_year_9999_and_a_huge_heuristic_are_answered(store: Store) {
    let (client, counter) = site(
        rfc(store),
        StatusCode::OK,
        &[
            ("date", b"Thu, 01 Jan 1970 00:00:00 GMT"),
            ("expires", b"Fri, 31 Dec 9999 23:59:59 GMT"),
        ],
    )
    .await;
    assert_stored(&client, &counter).await;
    let huge_heuristic = Policy::SharedCache(
        SharedCachePolicy::default()
            .heuristic_fraction(1e300)
            .max_heuristic(Duration::MAX),
    );
    let (client, counter) = site(
        CachePageLayer::new(store.cache()).policy(huge_heuristic),
        StatusCode::OK,
        &[("last-modified", b"Thu, 01 Jan 1970 00:00:00 GMT")],
    )
    .await;
    assert_stored(&client, &counter).await;
}

async fn non_utf8_vary_is_not_stored(store: Store) {
    for layer in [
        django(store),
        rfc(store).default_ttl(Duration::from_secs(60)),
    ] {
        let (client, counter) = site(
            layer,
            StatusCode::OK,
            &[
                ("cache-control", b"max-age=60"),
                ("vary", b"Accept-Language, X-\xe9t\xe9"),
            ],
        )
        .await;
        let first = assert_not_stored(&client, &counter, "non-UTF-8 Vary").await;
        assert_eq!(raw(&first, "vary"), [&b"Accept-Language, X-\xe9t\xe9"[..]]);
    }
    // Also when the unreadable line sits next to a readable one.
    let (client, counter) = site(
        django(store),
        StatusCode::OK,
        &[("vary", b"accept-language"), ("vary", b"\xff")],
    )
    .await;
    assert_not_stored(&client, &counter, "second Vary line unreadable").await;
}

async fn non_utf8_cache_control_is_not_stored_nor_rewritten(store: Store) {
    let cc: &[u8] = b"private, x=\"\xe9\"";
    let (client, counter) = site(django(store), StatusCode::OK, &[("cache-control", cc)]).await;
    let first = assert_not_stored(&client, &counter, "non-UTF-8 Cache-Control").await;
    // Django mode does not rewrite it to max-age=600 (which would drop `private`).
    assert_eq!(raw(&first, "cache-control"), [cc]);
    assert!(first.header("expires").is_none());
    let (client, counter) = site(
        rfc(store),
        StatusCode::OK,
        &[("cache-control", b"max-age=60"), ("cache-control", cc)],
    )
    .await;
    assert_not_stored(&client, &counter, "second Cache-Control line unreadable").await;
}

async fn quoted_pair_or_unbalanced_quote_cannot_hide_private(store: Store) {
    for cc in [
        // A quoted pair: the old parser toggled its quote state on `\"` and read `, private`
        // as part of a quoted string.
        &b"max-age=60, foo=\"a\\\"\", private"[..],
        // An unbalanced quote.
        b"max-age=60, foo=\"bar, private",
        // A space before `=`, which is not the grammar.
        b"max-age=60, foo =1, private",
    ] {
        for layer in [django(store), rfc(store)] {
            let (client, counter) = site(layer, StatusCode::OK, &[("cache-control", cc)]).await;
            let first = assert_not_stored(&client, &counter, &String::from_utf8_lossy(cc)).await;
            assert_eq!(raw(&first, "cache-control"), [cc]);
        }
    }
    // A quoted pair in a well-formed header is read as the grammar says: the escaped quote and
    // the comma belong to the value, and the page is stored.
    let (client, counter) = site(
        rfc(store),
        StatusCode::OK,
        &[("cache-control", b"max-age=60, foo=\"a\\\",b\"")],
    )
    .await;
    assert_stored(&client, &counter).await;
}

async fn unparsable_date_or_age_is_not_stored_by_the_shared_cache(store: Store) {
    for (name, value) in [("date", &b"yesterday"[..]), ("age", b"-5"), ("age", b"ten")] {
        let (client, counter) = site(
            rfc(store),
            StatusCode::OK,
            &[("cache-control", b"max-age=60"), (name, value)],
        )
        .await;
        assert_not_stored(&client, &counter, name).await;
    }
    // Of an Age list, the first member counts (RFC 9111 §5.1).
    let (client, counter) = site(
        rfc(store),
        StatusCode::OK,
        &[("cache-control", b"max-age=60"), ("age", b"5, 7")],
    )
    .await;
    let (_, hit) = assert_stored(&client, &counter).await;
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((5..=8).contains(&age), "{age}");
}

async fn entity_tags_with_commas_are_compared_whole(store: Store) {
    let (client, counter) = site(django(store), StatusCode::OK, &[("etag", b"W/\"a,b\"")]).await;
    assert_eq!(client.get("/").await.x_cache(), "MISS");
    for (header, value, status) in [
        (
            "if-none-match",
            "\"x\", W/\"a,b\"",
            StatusCode::NOT_MODIFIED,
        ),
        ("if-none-match", "\"a,b\"", StatusCode::NOT_MODIFIED),
        ("if-none-match", "\"a\", \"b\"", StatusCode::OK),
        ("if-none-match", "W/\"a", StatusCode::OK),
        // Not a list of entity-tags: nothing matches, the page is sent whole.
        ("if-none-match", "\"zz, W/\"a,b\"", StatusCode::OK),
        // If-Match compares strongly: a weak tag never passes.
        ("if-match", "W/\"a,b\"", StatusCode::PRECONDITION_FAILED),
        ("if-match", "*", StatusCode::OK),
    ] {
        let r = client.get_with("/", &[(header, value)]).await;
        assert_eq!(
            (r.status, r.x_cache()),
            (status, "HIT"),
            "{header}: {value}"
        );
    }
    let (client, _) = site(django(store), StatusCode::OK, &[("etag", b"\"a,b\"")]).await;
    assert_eq!(client.get("/").await.x_cache(), "MISS");
    for (value, status) in [
        ("\"a,b\"", StatusCode::OK),
        ("\"x\",\"a,b\"", StatusCode::OK),
        ("\"a\", \"b\"", StatusCode::PRECONDITION_FAILED),
        // Not a list of entity-tags: it cannot be shown to match.
        ("\"a,b", StatusCode::PRECONDITION_FAILED),
    ] {
        let r = client.get_with("/", &[("if-match", value)]).await;
        assert_eq!(
            (r.status, r.x_cache()),
            (status, "HIT"),
            "if-match: {value}"
        );
    }
    assert_eq!(counter.get(), 1);
}

async fn error_pages_get_no_caching_headers(store: Store) {
    for status in [
        StatusCode::NOT_FOUND,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::NON_AUTHORITATIVE_INFORMATION,
        StatusCode::MOVED_PERMANENTLY,
    ] {
        for layer in [
            django(store),
            django(store).timeout(Duration::from_secs(600)),
            rfc(store),
        ] {
            let (client, counter) = site(layer, status, &[]).await;
            let r = client.get("/").await;
            assert_eq!((r.status, r.x_cache()), (status, "MISS"));
            assert!(r.header("cache-control").is_none(), "{status}: {r:?}");
            assert!(r.header("expires").is_none(), "{status}: {r:?}");
            assert_eq!(client.get("/").await.x_cache(), "MISS");
            assert_eq!(counter.get(), 2);
        }
        // A Cache-Control of the origin's own is left exactly as it was.
        let (client, _) = site(django(store), status, &[("cache-control", b"max-age=3600")]).await;
        let r = client.get("/").await;
        assert_eq!(r.header("cache-control"), Some("max-age=3600"), "{status}");
        assert!(r.header("expires").is_none(), "{status}");
    }
}
