//! The caching proxy in RFC 9111 mode as a complete shared cache, through the real proxy in
//! front of an origin the test scripts path by path: which statuses are stored (§3, §4.2.2),
//! `no-cache` and `max-age=0` pages stored and revalidated (§5.2.2.4, §5.2.2.1, §4.3.4), HEAD
//! (§4.3.5), `Expires` in every date format (§5.3), the origin's `Age` (§4.2.3),
//! `must-understand` (§5.2.2.3), `only-if-cached` (§5.2.1.7), request `no-cache` (§5.2.1.4),
//! targeted cache control (RFC 9213), `Vary` normalisation (§4.1) and invalidation by unsafe
//! methods (§4.4).

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::{serve, serve_with_peer, HttpClient, Reply, Store};
use webcache_http::{proxy_layer, proxy_router, proxy_router_with, Policy, SharedCachePolicy};

/// What a scripted path answers: from the request's headers and the call's number (from 1).
type Script = Arc<dyn Fn(&HeaderMap, usize) -> Response + Send + Sync>;
/// A path, its status and its headers.
type Case = (&'static str, u16, Vec<(&'static str, String)>);

/// An origin whose paths are scripted by the test; it counts the calls of each path and keeps
/// the request headers of the last one.
#[derive(Clone, Default)]
struct Origin {
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    calls: Arc<Mutex<HashMap<String, usize>>>,
    last: Arc<Mutex<HashMap<String, HeaderMap>>>,
}

impl Origin {
    fn route(
        &self,
        path: &str,
        script: impl Fn(&HeaderMap, usize) -> Response + Send + Sync + 'static,
    ) {
        self.scripts
            .lock()
            .unwrap()
            .insert(path.to_owned(), Arc::new(script));
    }
    /// Calls of `METHOD /path`.
    fn calls(&self, key: &str) -> usize {
        self.calls.lock().unwrap().get(key).copied().unwrap_or(0)
    }
    /// The request headers of the last call of `/path`.
    fn last(&self, path: &str) -> HeaderMap {
        self.last
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

async fn origin(State(origin): State<Origin>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let key = format!("{} {path}", req.method());
    let n = {
        let mut calls = origin.calls.lock().unwrap();
        let n = calls.entry(key).or_default();
        *n += 1;
        *n
    };
    origin
        .last
        .lock()
        .unwrap()
        .insert(path.clone(), req.headers().clone());
    let script = origin.scripts.lock().unwrap().get(&path).cloned();
    match script {
        Some(script) => script(req.headers(), n),
        None => (StatusCode::NOT_FOUND, "no script").into_response(),
    }
}

/// A response with these headers (a `Date` of now is added) and this body.
fn answer(status: u16, headers: &[(&str, String)], body: &str) -> Response {
    let mut map = HeaderMap::new();
    map.insert(
        "date",
        HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())).unwrap(),
    );
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    (StatusCode::from_u16(status).unwrap(), map, body.to_owned()).into_response()
}

fn days_ago(days: u64) -> String {
    httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(days * 86_400))
}

/// An origin and the proxy in RFC mode in front of it.
async fn setup(store: Store) -> (Origin, HttpClient, SocketAddr) {
    let scripted = Origin::default();
    let origin_addr = serve(Router::new().fallback(origin).with_state(scripted.clone())).await;
    let proxy = proxy_router(&format!("http://{origin_addr}"), store.cache(), None).unwrap();
    let addr = serve_with_peer(proxy).await;
    (scripted, HttpClient::new(addr), addr)
}

async fn twice(client: &HttpClient, path: &str) -> (Reply, Reply) {
    (client.get(path).await, client.get(path).await)
}

on_every_store!(
    rfc9111_4_2_2_heuristic_freshness_for_404_and_the_other_heuristic_statuses,
    rfc9111_3_explicit_freshness_stores_any_final_status,
    rfc9111_5_2_2_4_no_cache_is_stored_and_every_use_revalidates,
    rfc9111_4_3_4_a_304_updates_the_stored_headers,
    rfc9111_4_3_4_a_304_that_forbids_storing_drops_only_its_variant,
    rfc9111_4_3_5_head_revalidates_and_updates_the_stored_headers,
    rfc9111_4_3_5_head_updates_stored_headers,
    rfc9111_4_3_5_head_with_another_etag_invalidates_the_stored_page,
    rfc9111_4_3_5_head_with_another_content_length_invalidates_the_stored_page,
    rfc9111_4_3_5_head_updates_only_the_variant_it_selects,
    rfc9111_4_3_5_head_on_a_miss_stores_the_get_page,
    rfc9111_5_3_expires_in_every_date_format_and_case,
    rfc9111_5_3_an_invalid_expires_means_stale,
    rfc9111_4_2_3_the_origins_age_is_counted,
    rfc9111_5_2_2_3_must_understand_with_a_known_status_is_stored,
    rfc9111_5_2_1_7_only_if_cached_gets_504_when_nothing_is_stored,
    rfc9111_5_2_1_4_request_no_cache_and_pragma_force_revalidation,
    rfc9213_targeted_cache_control_overrides_and_is_not_forwarded,
    rfc9111_4_1_vary_matching_normalises_whitespace_and_case,
    rfc9111_4_4_unsafe_methods_invalidate_location_and_content_location,
    rfc9111_5_2_2_2_must_revalidate_when_stale_revalidates,
    django_mode_keeps_djangos_rules,
);

async fn rfc9111_4_2_2_heuristic_freshness_for_404_and_the_other_heuristic_statuses(store: Store) {
    let (origin, client, _) = setup(store).await;
    for status in [404u16, 203, 300, 301, 308, 405, 410, 414, 501] {
        let path = format!("/h{status}");
        origin.route(&path, move |_, n| {
            answer(
                status,
                &[("last-modified", days_ago(10))],
                &format!("{status} #{n}"),
            )
        });
        let (first, second) = twice(&client, &path).await;
        assert_eq!(second.status.as_u16(), status);
        assert_eq!(
            (first.x_cache(), second.x_cache()),
            ("MISS", "HIT"),
            "{path}"
        );
        assert_eq!(second.body, first.body);
        assert_eq!(origin.calls(&format!("GET {path}")), 1, "{path}");
    }
    // 204 has no body, and is stored the same way.
    origin.route("/h204", |_, _| {
        answer(204, &[("last-modified", days_ago(10))], "")
    });
    let (_, second) = twice(&client, "/h204").await;
    assert_eq!((second.status.as_u16(), second.x_cache()), (204, "HIT"));
    // Statuses that are not heuristically cacheable need explicit freshness.
    for status in [302u16, 307, 403, 500] {
        let path = format!("/n{status}");
        origin.route(&path, move |_, _| {
            answer(status, &[("last-modified", days_ago(10))], "x")
        });
        let (_, second) = twice(&client, &path).await;
        assert_eq!(second.x_cache(), "MISS", "{path}");
        assert_eq!(origin.calls(&format!("GET {path}")), 2, "{path}");
    }
}

async fn rfc9111_3_explicit_freshness_stores_any_final_status(store: Store) {
    let (origin, client, _) = setup(store).await;
    let in_an_hour = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    let cases: Vec<Case> = vec![
        (
            "/e302",
            302,
            vec![
                ("cache-control", "max-age=60".into()),
                ("location", "/x".into()),
            ],
        ),
        ("/e403", 403, vec![("cache-control", "s-maxage=60".into())]),
        ("/e500", 500, vec![("expires", in_an_hour)]),
        (
            "/e418",
            418,
            vec![
                ("cache-control", "public".into()),
                ("last-modified", days_ago(10)),
            ],
        ),
    ];
    for (path, status, headers) in cases {
        origin.route(path, move |_, n| answer(status, &headers, &format!("#{n}")));
        let (first, second) = twice(&client, path).await;
        assert_eq!(second.status.as_u16(), status, "{path}");
        assert_eq!(
            (first.x_cache(), second.x_cache()),
            ("MISS", "HIT"),
            "{path}"
        );
        assert_eq!(origin.calls(&format!("GET {path}")), 1, "{path}");
    }
}

/// An origin page with validator `"v1"` that answers a matching `If-None-Match` with a 304
/// carrying `x-version: N` (N = the call's number) and `extra` headers.
fn revalidating(
    origin: &Origin,
    path: &str,
    cache_control: &'static str,
    extra_304: &'static [(&'static str, &'static str)],
) {
    origin.route(path, move |req, n| {
        let matches = req.get("if-none-match").is_some_and(|v| v == "\"v1\"");
        let mut headers = vec![("etag", "\"v1\"".to_owned()), ("x-version", n.to_string())];
        if matches {
            headers.extend(extra_304.iter().map(|(k, v)| (*k, (*v).to_owned())));
            return answer(304, &headers, "");
        }
        headers.push(("cache-control", cache_control.to_owned()));
        answer(200, &headers, &format!("body #{n}"))
    });
}

async fn rfc9111_5_2_2_4_no_cache_is_stored_and_every_use_revalidates(store: Store) {
    let (origin, client, _) = setup(store).await;
    revalidating(&origin, "/no-cache", "no-cache", &[]);
    revalidating(&origin, "/max-age-0", "max-age=0", &[]);
    for path in ["/no-cache", "/max-age-0"] {
        let first = client.get(path).await;
        assert_eq!(
            (first.x_cache(), first.text().as_str()),
            ("MISS", "body #1")
        );
        for n in 2..=3 {
            // Every use asks the origin, conditionally; the 304 lets the stored body answer.
            let again = client.get(path).await;
            assert_eq!(again.status, StatusCode::OK, "{path}");
            assert_eq!(
                (again.x_cache(), again.text().as_str()),
                ("HIT", "body #1"),
                "{path}"
            );
            assert_eq!(origin.last(path)["if-none-match"], "\"v1\"", "{path}");
            assert_eq!(origin.calls(&format!("GET {path}")), n, "{path}");
        }
    }
}

async fn rfc9111_4_3_4_a_304_updates_the_stored_headers(store: Store) {
    let (origin, client, _) = setup(store).await;
    revalidating(
        &origin,
        "/updated",
        "no-cache",
        &[("x-extra", "from the 304")],
    );
    assert_eq!(client.get("/updated").await.header("x-version"), Some("1"));
    let revalidated = client.get("/updated").await;
    assert_eq!(revalidated.header("x-version"), Some("2"));
    assert_eq!(revalidated.header("x-extra"), Some("from the 304"));
    assert_eq!(revalidated.header("cache-control"), Some("no-cache"));
    assert_eq!(revalidated.text(), "body #1");
}

/// For a page in the request's language (`en` unless it asks for another): the language,
/// and the headers of its every answer (`Vary: accept-language`, the language as its ETag).
fn by_language(req: &HeaderMap) -> (String, Vec<(&'static str, String)>) {
    let lang = req
        .get("accept-language")
        .map_or("en", |v| v.to_str().unwrap())
        .to_owned();
    let headers = vec![
        ("vary", "accept-language".to_owned()),
        ("etag", format!("\"{lang}\"")),
    ];
    (lang, headers)
}

async fn rfc9111_4_3_4_a_304_that_forbids_storing_drops_only_its_variant(store: Store) {
    let (origin, client, _) = setup(store).await;
    // `en` is stored already stale (its `Age` past `max-age`), `de` fresh for a minute; a
    // revalidation of `en` is answered by a 304 that says `no-store`.
    origin.route("/lang304", |req, n| {
        let (lang, mut headers) = by_language(req);
        if req.contains_key("if-none-match") {
            headers.push(("cache-control", "no-store".into()));
            return answer(304, &headers, "");
        }
        headers.push(("x-version", format!("#{n}")));
        if lang == "en" {
            headers.push(("cache-control", "max-age=1".into()));
            headers.push(("age", "5".into()));
        } else {
            headers.push(("cache-control", "max-age=60".into()));
        }
        answer(200, &headers, &lang)
    });
    let (en, de) = ([("accept-language", "en")], [("accept-language", "de")]);
    assert_eq!(client.get_with("/lang304", &de).await.x_cache(), "MISS");
    assert_eq!(client.get_with("/lang304", &en).await.x_cache(), "MISS");
    let revalidated = client.get_with("/lang304", &en).await;
    assert_eq!(revalidated.text(), "en");
    assert_eq!(origin.last("/lang304")["if-none-match"], "\"en\"");
    assert_eq!(origin.calls("GET /lang304"), 3);
    // The other variant is still stored and fresh: a hit, the origin not asked.
    let other = client.get_with("/lang304", &de).await;
    assert_eq!(
        (other.x_cache(), other.text().as_str()),
        ("HIT", "de"),
        "a 304 for one variant dropped the others"
    );
    assert_eq!(origin.calls("GET /lang304"), 3);
    // The variant the 304 forbade storing is gone: asked for unconditionally.
    let again = client.get_with("/lang304", &en).await;
    assert_eq!((again.x_cache(), again.text().as_str()), ("MISS", "en"));
    assert!(!origin.last("/lang304").contains_key("if-none-match"));
}

async fn rfc9111_4_3_5_head_revalidates_and_updates_the_stored_headers(store: Store) {
    let (origin, client, _) = setup(store).await;
    // Stored already stale (Age past max-age); the 304 makes it fresh for a minute.
    origin.route("/head", |req, n| {
        let mut headers = vec![("etag", "\"v1\"".to_owned())];
        if req.get("if-none-match").is_some_and(|v| v == "\"v1\"") {
            headers.push(("x-version", "from the 304".into()));
            headers.push(("cache-control", "max-age=60".into()));
            return answer(304, &headers, "");
        }
        headers.push(("x-version", n.to_string()));
        headers.push(("cache-control", "max-age=1".into()));
        headers.push(("age", "5".into()));
        answer(200, &headers, "the page")
    });
    assert_eq!(client.get("/head").await.x_cache(), "MISS");
    let head = client.send("HEAD", "/head", &[], "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("x-version"), Some("from the 304"));
    assert!(head.body.is_empty());
    // Asked as a conditional HEAD, never as a GET.
    assert_eq!(origin.last("/head")["if-none-match"], "\"v1\"");
    assert_eq!(origin.calls("HEAD /head"), 1);
    // The GET is answered by the page the HEAD's revalidation refreshed.
    let get = client.get("/head").await;
    assert_eq!((get.x_cache(), get.text().as_str()), ("HIT", "the page"));
    assert_eq!(get.header("x-version"), Some("from the 304"));
    assert_eq!(get.header("cache-control"), Some("max-age=60"));
    assert_eq!(origin.calls("GET /head"), 1);
}

/// The `Last-Modified` of the pages of the §4.3.5 tests.
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// An origin page stored already stale (`Age` past `max-age`), with validators `"v1"` and
/// [`LAST_MODIFIED`], that answers a revalidation (the request carries `If-None-Match`; the
/// origin ignores it, as it may) with a 200 carrying `etag` and `body` (whose length is the
/// HEAD answer's `Content-Length`), fresh for a minute, `x-version: from the HEAD`.
fn head_answering(origin: &Origin, path: &str, etag: &'static str, body: &'static str) {
    origin.route(path, move |req, n| {
        let mut headers = vec![("last-modified", LAST_MODIFIED.to_owned())];
        if req.contains_key("if-none-match") {
            headers.push(("etag", etag.to_owned()));
            headers.push(("x-version", "from the HEAD".into()));
            headers.push(("cache-control", "max-age=60".into()));
            return answer(200, &headers, body);
        }
        headers.push(("etag", "\"v1\"".into()));
        headers.push(("x-version", format!("stored #{n}")));
        headers.push(("cache-control", "max-age=1".into()));
        headers.push(("age", "5".into()));
        answer(200, &headers, "the page")
    });
}

async fn rfc9111_4_3_5_head_updates_stored_headers(store: Store) {
    let (origin, client, _) = setup(store).await;
    head_answering(&origin, "/same", "\"v1\"", "the page");
    assert_eq!(client.get("/same").await.x_cache(), "MISS");
    let head = client.send("HEAD", "/same", &[], "").await;
    // The client gets the origin's HEAD answer.
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("x-version"), Some("from the HEAD"));
    assert_eq!(head.header("content-length"), Some("8"));
    assert!(head.body.is_empty());
    assert_eq!(origin.calls("HEAD /same"), 1, "the origin is asked HEAD");
    assert_eq!(origin.calls("GET /same"), 1, "and not GET");
    // Its validators and length match the stored page: the page's headers and freshness are
    // updated, its body kept. The next GET is answered from the cache.
    let get = client.get("/same").await;
    assert_eq!((get.x_cache(), get.text().as_str()), ("HIT", "the page"));
    assert_eq!(get.header("x-version"), Some("from the HEAD"));
    assert_eq!(get.header("cache-control"), Some("max-age=60"));
    assert_eq!(origin.calls("GET /same"), 1);
}

async fn rfc9111_4_3_5_head_with_another_etag_invalidates_the_stored_page(store: Store) {
    let (origin, client, _) = setup(store).await;
    head_answering(&origin, "/etag", "\"v2\"", "the page");
    assert_eq!(client.get("/etag").await.x_cache(), "MISS");
    let head = client.send("HEAD", "/etag", &[], "").await;
    assert_eq!(head.header("etag"), Some("\"v2\""));
    assert!(head.body.is_empty());
    assert_eq!(origin.calls("HEAD /etag"), 1);
    // The representation changed: the stored page is not used again, and the HEAD answer
    // did not become a page (with an empty body) either.
    let get = client.get("/etag").await;
    assert_eq!(get.x_cache(), "MISS");
    assert_eq!(get.text(), "the page");
    assert_eq!(get.header("x-version"), Some("stored #2"));
    assert_eq!(origin.calls("GET /etag"), 2);
}

async fn rfc9111_4_3_5_head_with_another_content_length_invalidates_the_stored_page(store: Store) {
    let (origin, client, _) = setup(store).await;
    // The same validators, another length: not the stored body.
    head_answering(&origin, "/length", "\"v1\"", "the page, longer now");
    assert_eq!(client.get("/length").await.x_cache(), "MISS");
    let head = client.send("HEAD", "/length", &[], "").await;
    assert_eq!(head.header("content-length"), Some("20"));
    assert!(head.body.is_empty());
    assert_eq!(origin.calls("HEAD /length"), 1);
    let get = client.get("/length").await;
    assert_eq!(get.x_cache(), "MISS");
    assert_eq!(get.text(), "the page");
    assert_eq!(origin.calls("GET /length"), 2);
}

async fn rfc9111_4_3_5_head_updates_only_the_variant_it_selects(store: Store) {
    let (origin, client, _) = setup(store).await;
    origin.route("/lang", |req, n| {
        let (lang, mut headers) = by_language(req);
        if req.contains_key("if-none-match") {
            headers.push(("x-version", "from the HEAD".into()));
            headers.push(("cache-control", "max-age=60".into()));
        } else {
            headers.push(("x-version", format!("stored #{n}")));
            headers.push(("cache-control", "max-age=1".into()));
            headers.push(("age", "5".into()));
        }
        answer(200, &headers, &lang)
    });
    let (en, de) = ([("accept-language", "en")], [("accept-language", "de")]);
    assert_eq!(client.get_with("/lang", &en).await.x_cache(), "MISS");
    assert_eq!(client.get_with("/lang", &de).await.x_cache(), "MISS");
    let head = client.send("HEAD", "/lang", &en, "").await;
    assert_eq!(head.header("x-version"), Some("from the HEAD"));
    assert_eq!(origin.calls("HEAD /lang"), 1);
    // The variant the HEAD selects is updated (fresh now)...
    let get = client.get_with("/lang", &en).await;
    assert_eq!((get.x_cache(), get.text().as_str()), ("HIT", "en"));
    assert_eq!(get.header("x-version"), Some("from the HEAD"));
    // ...the other one could not have been chosen for it, and is still stale: revalidated.
    let get = client.get_with("/lang", &de).await;
    assert_eq!(get.text(), "de");
    assert_eq!(origin.last("/lang")["if-none-match"], "\"de\"");
    assert_eq!(origin.calls("GET /lang"), 3);
}

async fn rfc9111_4_3_5_head_on_a_miss_stores_the_get_page(store: Store) {
    let (origin, client, _) = setup(store).await;
    origin.route("/first", |_, n| {
        answer(
            200,
            &[("cache-control", "max-age=60".into())],
            &format!("page #{n}"),
        )
    });
    // Nothing stored: the HEAD is asked as GET, so that the page is stored.
    let head = client.send("HEAD", "/first", &[], "").await;
    assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "MISS"));
    assert!(head.body.is_empty());
    assert_eq!(origin.calls("HEAD /first"), 0);
    let get = client.get("/first").await;
    assert_eq!((get.x_cache(), get.text().as_str()), ("HIT", "page #1"));
    assert_eq!(origin.calls("GET /first"), 1);
}

async fn rfc9111_5_3_expires_in_every_date_format_and_case(store: Store) {
    let (origin, client, _) = setup(store).await;
    // An hour from now, written three ways, in odd cases.
    let at = SystemTime::now() + Duration::from_secs(3600);
    let imf = httpdate::fmt_http_date(at);
    let date: Vec<String> = imf
        .split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let (wday, day, mon, year, time) = (&date[0], &date[1], &date[2], &date[3], &date[4]);
    let long = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ]
    .into_iter()
    .find(|l| l.starts_with(wday.as_str()))
    .unwrap();
    let formats = [
        ("/imf", imf.to_ascii_uppercase()),
        (
            "/rfc850",
            format!("{long}, {day}-{mon}-{} {time} gmt", &year[2..]).to_ascii_lowercase(),
        ),
        (
            "/asctime",
            format!(
                "{wday} {mon} {:>2} {time} {year}",
                day.trim_start_matches('0')
            )
            .to_ascii_uppercase(),
        ),
    ];
    for (path, expires) in formats {
        origin.route(path, move |_, n| {
            answer(200, &[("expires", expires.clone())], &format!("#{n}"))
        });
        let (first, second) = twice(&client, path).await;
        assert_eq!(
            (first.x_cache(), second.x_cache()),
            ("MISS", "HIT"),
            "{path}"
        );
        assert_eq!(origin.calls(&format!("GET {path}")), 1, "{path}");
    }
}

async fn rfc9111_5_3_an_invalid_expires_means_stale(store: Store) {
    let (origin, client, _) = setup(store).await;
    for path in ["/expires-0", "/expires-junk"] {
        let expires = if path == "/expires-0" {
            "0"
        } else {
            "tomorrow"
        };
        origin.route(path, move |req, n| {
            let headers = [
                ("etag", "\"v1\"".to_owned()),
                ("expires", expires.to_owned()),
            ];
            if req.get("if-none-match").is_some() {
                return answer(304, &headers, "");
            }
            answer(200, &headers, &format!("#{n}"))
        });
        let (first, second) = twice(&client, path).await;
        assert_eq!(
            (first.x_cache(), second.text()),
            ("MISS", "#1".to_owned()),
            "{path}"
        );
        // Stored, but stale: the second use was revalidated.
        assert_eq!(origin.last(path)["if-none-match"], "\"v1\"", "{path}");
        assert_eq!(origin.calls(&format!("GET {path}")), 2, "{path}");
    }
}

async fn rfc9111_4_2_3_the_origins_age_is_counted(store: Store) {
    let (origin, client, _) = setup(store).await;
    origin.route("/aged", |_, n| {
        answer(
            200,
            &[
                ("cache-control", "max-age=100".into()),
                ("age", "40".into()),
            ],
            &format!("#{n}"),
        )
    });
    let (_, hit) = twice(&client, "/aged").await;
    assert_eq!(hit.x_cache(), "HIT");
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!(age >= 40, "the origin's Age is part of the age: {age}");
    // Older than its lifetime on arrival, without a validator: not stored.
    origin.route("/too-old", |_, n| {
        answer(
            200,
            &[
                ("cache-control", "max-age=100".into()),
                ("age", "150".into()),
            ],
            &format!("#{n}"),
        )
    });
    let (_, second) = twice(&client, "/too-old").await;
    assert_eq!(second.x_cache(), "MISS");
    assert_eq!(origin.calls("GET /too-old"), 2);
}

async fn rfc9111_5_2_2_3_must_understand_with_a_known_status_is_stored(store: Store) {
    let (origin, client, _) = setup(store).await;
    let cc = "must-understand, no-store, max-age=60";
    origin.route("/mu-200", move |_, n| {
        answer(200, &[("cache-control", cc.into())], &format!("#{n}"))
    });
    origin.route("/mu-299", move |_, n| {
        answer(299, &[("cache-control", cc.into())], &format!("#{n}"))
    });
    origin.route("/no-store", |_, n| {
        answer(
            200,
            &[("cache-control", "no-store, max-age=60".into())],
            &format!("#{n}"),
        )
    });
    let (_, second) = twice(&client, "/mu-200").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(origin.calls("GET /mu-200"), 1);
    // An unknown status: must-understand keeps it out, as its no-store says.
    for path in ["/mu-299", "/no-store"] {
        let (_, second) = twice(&client, path).await;
        assert_eq!(second.x_cache(), "MISS", "{path}");
        assert_eq!(origin.calls(&format!("GET {path}")), 2, "{path}");
    }
}

async fn rfc9111_5_2_1_7_only_if_cached_gets_504_when_nothing_is_stored(store: Store) {
    let (origin, client, _) = setup(store).await;
    origin.route("/page", |_, n| {
        answer(
            200,
            &[("cache-control", "max-age=60".into())],
            &format!("#{n}"),
        )
    });
    revalidating(&origin, "/always-stale", "no-cache", &[]);
    let only = [("cache-control", "only-if-cached")];
    let nothing = client.get_with("/page", &only).await;
    assert_eq!(nothing.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        nothing.text().contains("only-if-cached"),
        "{}",
        nothing.text()
    );
    assert_eq!(origin.calls("GET /page"), 0);
    client.get("/page").await;
    let stored = client.get_with("/page", &only).await;
    assert_eq!((stored.status, stored.x_cache()), (StatusCode::OK, "HIT"));
    // A stored page that would need the origin to revalidate it does not answer either.
    client.get("/always-stale").await;
    let stale = client.get_with("/always-stale", &only).await;
    assert_eq!(stale.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.calls("GET /always-stale"), 1);
}

async fn rfc9111_5_2_1_4_request_no_cache_and_pragma_force_revalidation(store: Store) {
    let (origin, client, _) = setup(store).await;
    revalidating(&origin, "/fresh", "max-age=600", &[]);
    assert_eq!(client.get("/fresh").await.x_cache(), "MISS");
    assert_eq!(client.get("/fresh").await.x_cache(), "HIT");
    let mut calls = 1;
    for asks in [("cache-control", "no-cache"), ("pragma", "no-cache")] {
        let r = client.get_with("/fresh", &[asks]).await;
        calls += 1;
        assert_eq!(origin.calls("GET /fresh"), calls, "{asks:?}");
        assert_eq!(origin.last("/fresh")["if-none-match"], "\"v1\"", "{asks:?}");
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "body #1"));
    }
}

async fn rfc9213_targeted_cache_control_overrides_and_is_not_forwarded(store: Store) {
    let scripted = Origin::default();
    let origin_addr = serve(Router::new().fallback(origin).with_state(scripted.clone())).await;
    let upstream = format!("http://{origin_addr}");
    let default = HttpClient::new(
        serve_with_peer(proxy_router(&upstream, store.cache(), None).unwrap()).await,
    );
    let edge = Policy::SharedCache(
        SharedCachePolicy::default()
            .targeted_field(http::HeaderName::from_static("edge-cache-control")),
    );
    let custom = HttpClient::new(
        serve_with_peer(
            proxy_router_with(&upstream, &proxy_layer(store.cache(), None).policy(edge)).unwrap(),
        )
        .await,
    );
    let o = &scripted;
    o.route("/cdn", |_, n| {
        answer(
            200,
            &[
                ("cache-control", "no-store".into()),
                ("cdn-cache-control", "max-age=60".into()),
            ],
            &format!("#{n}"),
        )
    });
    o.route("/own", |_, n| {
        answer(
            200,
            &[
                ("cache-control", "max-age=60".into()),
                ("cdn-cache-control", "max-age=60".into()),
                ("webcache-cache-control", "no-store".into()),
                ("edge-cache-control", "private".into()),
            ],
            &format!("#{n}"),
        )
    });
    o.route("/junk", |_, n| {
        answer(
            200,
            &[
                ("cache-control", "max-age=60".into()),
                ("cdn-cache-control", "No-Store".into()),
            ],
            &format!("#{n}"),
        )
    });
    // CDN-Cache-Control wins over Cache-Control; neither targeted field reaches the client.
    let (first, second) = twice(&default, "/cdn").await;
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    for reply in [&first, &second] {
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(reply.header("cdn-cache-control"), None);
    }
    // The own field wins over both; with another name configured, that name does.
    let (first, second) = twice(&default, "/own").await;
    assert_eq!(second.x_cache(), "MISS");
    assert_eq!(first.header("webcache-cache-control"), None);
    assert_eq!(scripted.calls("GET /own"), 2);
    let (first, second) = twice(&custom, "/own").await;
    assert_eq!(second.x_cache(), "MISS");
    assert_eq!(first.header("edge-cache-control"), None);
    assert_eq!(first.header("webcache-cache-control"), Some("no-store"));
    assert_eq!(scripted.calls("GET /own"), 4);
    // A targeted field that is not a structured dictionary is ignored.
    let (_, second) = twice(&default, "/junk").await;
    assert_eq!(second.x_cache(), "HIT");
}

async fn rfc9111_4_1_vary_matching_normalises_whitespace_and_case(store: Store) {
    let (origin, client, _) = setup(store).await;
    origin.route("/negotiated", |_, n| {
        answer(
            200,
            &[
                ("cache-control", "max-age=60".into()),
                ("vary", "Accept-Encoding, Accept-Language".into()),
            ],
            &format!("#{n}"),
        )
    });
    let first = client
        .get_with(
            "/negotiated",
            &[
                ("accept-encoding", "gzip, br"),
                ("accept-language", "en-US,fr;q=0.5"),
            ],
        )
        .await;
    assert_eq!(first.x_cache(), "MISS");
    let same = client
        .get_with(
            "/negotiated",
            &[
                ("accept-encoding", "GZIP ,br"),
                ("accept-language", "en-us , fr ; q=0.5"),
            ],
        )
        .await;
    assert_eq!((same.x_cache(), same.text().as_str()), ("HIT", "#1"));
    let other = client
        .get_with(
            "/negotiated",
            &[
                ("accept-encoding", "gzip"),
                ("accept-language", "en-US,fr;q=0.5"),
            ],
        )
        .await;
    assert_eq!((other.x_cache(), other.text().as_str()), ("MISS", "#2"));
}

async fn rfc9111_4_4_unsafe_methods_invalidate_location_and_content_location(store: Store) {
    let (origin, client, addr) = setup(store).await;
    for path in ["/target", "/created", "/content", "/relative/item", "/kept"] {
        origin.route(path, |_, n| {
            answer(
                200,
                &[("cache-control", "max-age=600".into())],
                &format!("#{n}"),
            )
        });
    }
    origin.route("/relative/form", move |_, _| {
        answer(
            201,
            &[
                ("location", "item".into()),
                ("content-location", format!("http://{addr}/content")),
            ],
            "",
        )
    });
    origin.route("/other-host", |_, _| {
        answer(
            303,
            &[("location", "http://elsewhere.example/kept".into())],
            "",
        )
    });
    let paths = ["/target", "/created", "/content", "/relative/item"];
    for path in paths {
        client.get(path).await;
        assert_eq!(client.get(path).await.x_cache(), "HIT", "{path}");
    }
    let kept = [("host", "elsewhere.example")];
    client.get_with("/kept", &kept).await;
    assert_eq!(client.get_with("/kept", &kept).await.x_cache(), "HIT");

    // Location (relative to the request) and Content-Location (absolute, same host) go.
    let posted = client.send("POST", "/relative/form", &[], "x").await;
    assert_eq!(posted.status, StatusCode::CREATED);
    for (path, gone) in [
        ("/relative/item", true),
        ("/content", true),
        ("/target", false),
    ] {
        let expected = if gone { "MISS" } else { "HIT" };
        assert_eq!(client.get(path).await.x_cache(), expected, "{path}");
    }
    // A Location on another host is not this request's to invalidate.
    origin.route("/target", |_, n| {
        answer(
            200,
            &[
                ("cache-control", "max-age=600".into()),
                ("location", "/created".into()),
            ],
            &format!("#{n}"),
        )
    });
    client.send("DELETE", "/other-host", &[], "").await;
    assert_eq!(client.get_with("/kept", &kept).await.x_cache(), "HIT");
    // The target itself and a Location given by a PUT's answer.
    origin.route("/target", |_, _| {
        answer(204, &[("location", "/created".into())], "")
    });
    client.send("PUT", "/target", &[], "x").await;
    assert_eq!(client.get("/created").await.x_cache(), "MISS");
    assert_eq!(origin.calls("GET /created"), 2);
}

async fn rfc9111_5_2_2_2_must_revalidate_when_stale_revalidates(store: Store) {
    let (origin, client, _) = setup(store).await;
    // Arrives stale (Age past max-age): every use revalidates; a 304 makes it fresh again.
    origin.route("/must", |req, n| {
        let mut headers = vec![("etag", "\"v1\"".to_owned())];
        if req.get("if-none-match").is_some() {
            headers.push(("cache-control", "max-age=60, must-revalidate".into()));
            return answer(304, &headers, "");
        }
        headers.push(("cache-control", "max-age=1, must-revalidate".into()));
        headers.push(("age", "5".into()));
        answer(200, &headers, &format!("#{n}"))
    });
    assert_eq!(client.get("/must").await.x_cache(), "MISS");
    let revalidated = client.get("/must").await;
    assert_eq!(
        (revalidated.x_cache(), revalidated.text().as_str()),
        ("HIT", "#1")
    );
    assert_eq!(origin.last("/must")["if-none-match"], "\"v1\"");
    assert_eq!(client.get("/must").await.x_cache(), "HIT");
    assert_eq!(origin.calls("GET /must"), 2);
}

/// `--default-ttl`: none of the shared cache's rules apply.
async fn django_mode_keeps_djangos_rules(store: Store) {
    let scripted = Origin::default();
    let origin_addr = serve(Router::new().fallback(origin).with_state(scripted.clone())).await;
    let proxy = proxy_router(
        &format!("http://{origin_addr}"),
        store.cache(),
        Some(Duration::from_secs(60)),
    )
    .unwrap();
    let client = HttpClient::new(serve_with_peer(proxy).await);
    scripted.route("/404", |_, n| {
        answer(404, &[("last-modified", days_ago(10))], &format!("#{n}"))
    });
    scripted.route("/e500", |_, n| {
        answer(
            500,
            &[("cache-control", "max-age=60".into())],
            &format!("#{n}"),
        )
    });
    revalidating(&scripted, "/no-cache", "no-cache", &[]);
    for path in ["/404", "/e500", "/no-cache"] {
        let (_, second) = twice(&client, path).await;
        assert_eq!(second.x_cache(), "MISS", "{path}");
        assert_eq!(scripted.calls(&format!("GET {path}")), 2, "{path}");
    }
    // Targeted fields are not read, and passed on.
    scripted.route("/cdn", |_, n| {
        answer(
            200,
            &[("cdn-cache-control", "no-store".into())],
            &format!("#{n}"),
        )
    });
    let (_, second) = twice(&client, "/cdn").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.header("cdn-cache-control"), Some("no-store"));
    // Nor is only-if-cached.
    scripted.route("/fresh", |_, n| answer(200, &[], &format!("#{n}")));
    let r = client
        .get_with("/fresh", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "MISS"));
}
