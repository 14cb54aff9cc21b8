//! Stale pages through the real caching proxy (RFC 9111 mode) in front of an origin the test
//! controls: RFC 5861 `stale-while-revalidate` and `stale-if-error` (a 5xx, a refused
//! connection, a timeout), the proxy's grace, the directives that forbid stale answers
//! (RFC 9111 §4.2.4, §5.2.2.10) and the client's `max-stale`, `min-fresh` and `max-age`
//! (§5.2.1). Pages arrive already old (the origin sends `Age`), so nothing waits for a page to
//! expire; a refresh is held at a semaphore to show that stale answers do not wait for it.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::{serve, HttpClient, Reply, Store};
use tokio::sync::Semaphore;
use webcache_http::{proxy_layer, proxy_router_with, proxy_router_with_origin, Origin};

on_every_store!(
    rfc5861_3_stale_while_revalidate_serves_at_once_and_refreshes_once,
    rfc5861_4_stale_if_error_answers_for_an_origin_5xx,
    rfc5861_4_stale_if_error_ended_passes_the_error_on,
);

#[derive(Clone)]
struct OriginState {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    /// Later calls of `/swr` wait here.
    gate: Arc<Semaphore>,
}

impl OriginState {
    fn new() -> Self {
        OriginState {
            calls: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }
    fn bump(&self, path: &str) -> usize {
        let mut map = self.calls.lock().unwrap();
        let n = map.entry(path.to_owned()).or_default();
        *n += 1;
        *n
    }
    fn calls(&self, path: &str) -> usize {
        self.calls.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// The first answer of each path is a page that is already old (`Age`), the later ones are
/// given below; every call is counted per path.
async fn origin(State(state): State<OriginState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let n = state.bump(&path);
    let mut headers = HeaderMap::new();
    let mut set = |k: &'static str, v: &str| {
        headers.insert(k, HeaderValue::from_str(v).unwrap());
    };
    set("date", &httpdate::fmt_http_date(SystemTime::now()));
    let body = format!("{path} #{n}");
    if n == 1 {
        let (cache_control, age) = match path.as_str() {
            "/swr" => ("max-age=1, stale-while-revalidate=3600", "5"),
            "/sie" | "/sie-hangs" => ("max-age=1, stale-if-error=3600", "5"),
            // Stored for revalidation (a validator), past its stale-if-error window.
            "/sie-ended" => ("max-age=1, stale-if-error=2", "10"),
            "/must-revalidate" => (
                "max-age=1, must-revalidate, stale-while-revalidate=3600, stale-if-error=3600",
                "5",
            ),
            "/proxy-revalidate" => (
                "max-age=1, proxy-revalidate, stale-while-revalidate=3600, stale-if-error=3600",
                "5",
            ),
            "/s-maxage" => ("s-maxage=1", "5"),
            "/s-maxage-swr" => ("s-maxage=1, stale-while-revalidate=3600", "5"),
            "/plain" | "/graced" => ("max-age=1", "5"),
            "/fresh" => ("max-age=100", "50"),
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        set("cache-control", cache_control);
        set("age", age);
        if path != "/graced" {
            set("etag", "\"v1\"");
        }
        return (headers, body).into_response();
    }
    match path.as_str() {
        "/swr" => {
            state.gate.acquire().await.unwrap().forget();
            set("cache-control", "max-age=3600");
            (headers, body).into_response()
        }
        "/sie-hangs" => std::future::pending().await,
        "/plain" | "/fresh" => {
            set("cache-control", "max-age=3600");
            (headers, body).into_response()
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, body).into_response(),
    }
}

async fn start_origin() -> (SocketAddr, OriginState) {
    let state = OriginState::new();
    let app = Router::new().fallback(origin).with_state(state.clone());
    (serve(app).await, state)
}

/// The proxy in RFC 9111 mode in front of `origin`, with `grace`.
async fn proxy(store: Store, origin: SocketAddr, grace: Duration) -> HttpClient {
    let layer = proxy_layer(store.cache(), None).grace(grace);
    let app = proxy_router_with(&format!("http://{origin}"), &layer).unwrap();
    HttpClient::new(serve(app).await)
}

async fn at_once(request: impl Future<Output = Reply>) -> Reply {
    tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("a stale page is answered at once, without waiting for the refresh")
}

fn assert_stale(r: &Reply, body: &str) {
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!((r.x_cache(), r.text().as_str()), ("STALE", body), "{r:?}");
    let age: u64 = r.header("age").unwrap().parse().unwrap();
    assert!(age >= 5, "Age counts the origin's: {age}");
}

async fn rfc5861_3_stale_while_revalidate_serves_at_once_and_refreshes_once(store: Store) {
    let (addr, origin) = start_origin().await;
    let client = proxy(store, addr, Duration::ZERO).await;
    assert_eq!(client.get("/swr").await.x_cache(), "MISS");
    // The refresh is held at the gate; every request meanwhile gets the stale page at once.
    let answers = futures::future::join_all((0..8).map(|_| at_once(client.get("/swr")))).await;
    for r in &answers {
        assert_stale(r, "/swr #1");
    }
    for _ in 0..3000 {
        if origin.calls("/swr") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_stale(&at_once(client.get("/swr")).await, "/swr #1");
    assert_eq!(origin.calls("/swr"), 2, "one refresh in the background");
    origin.gate.add_permits(1);
    for _ in 0..3000 {
        let r = client.get("/swr").await;
        if r.x_cache() == "HIT" {
            assert_eq!(r.text(), "/swr #2");
            assert_eq!(origin.calls("/swr"), 2);
            return;
        }
        assert_stale(&r, "/swr #1");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the refreshed page was never served");
}

async fn rfc5861_4_stale_if_error_answers_for_an_origin_5xx(store: Store) {
    let (addr, origin) = start_origin().await;
    let client = proxy(store, addr, Duration::ZERO).await;
    assert_eq!(client.get("/sie").await.x_cache(), "MISS");
    // Stale, no stale-while-revalidate: the origin is asked, answers 503, the page answers.
    for n in 2..4 {
        assert_stale(&client.get("/sie").await, "/sie #1");
        assert_eq!(origin.calls("/sie"), n);
    }
    // A client that asks for a validated answer gets the origin's error (§5.2.1.4).
    let r = client
        .get_with("/sie", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

async fn rfc5861_4_stale_if_error_ended_passes_the_error_on(store: Store) {
    let (addr, origin) = start_origin().await;
    let client = proxy(store, addr, Duration::ZERO).await;
    client.get("/sie-ended").await;
    // Kept (it has a validator) but 9 s past its freshness, beyond stale-if-error=2.
    let r = client.get("/sie-ended").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.x_cache(), "MISS");
    assert_eq!(origin.calls("/sie-ended"), 2);
}

#[tokio::test]
async fn rfc5861_4_stale_if_error_answers_for_a_refused_connection() {
    let state = OriginState::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = Router::new().fallback(origin).with_state(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let client = proxy(Store::Locmem, addr, Duration::ZERO).await;
    assert_eq!(client.get("/sie").await.x_cache(), "MISS");
    stop.send(()).unwrap();
    server.await.unwrap();
    // The origin is gone: the proxy's Origin answers 502, the stale page answers instead.
    assert_stale(&client.get("/sie").await, "/sie #1");
    assert_eq!(state.calls("/sie"), 1);
    // Without a stale page the 502 is passed on.
    let r = client.get("/plain").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn rfc5861_4_stale_if_error_answers_for_an_origin_timeout() {
    let (addr, origin) = start_origin().await;
    let upstream = Origin::new(&format!("http://{addr}"))
        .unwrap()
        .first_byte_timeout(Duration::from_millis(500));
    let layer = proxy_layer(Store::Locmem.cache(), None);
    let client = HttpClient::new(serve(proxy_router_with_origin(upstream, &layer)).await);
    assert_eq!(client.get("/sie-hangs").await.x_cache(), "MISS");
    // The origin never answers: the proxy's 504 is replaced by the stale page.
    assert_stale(&client.get("/sie-hangs").await, "/sie-hangs #1");
    assert_eq!(origin.calls("/sie-hangs"), 2);
}

#[tokio::test]
async fn grace_serves_stale_pages_without_rfc5861_directives() {
    let (addr, origin) = start_origin().await;
    // Without grace, a page that arrives stale without a validator is not even stored.
    let plain = proxy(Store::Locmem, addr, Duration::ZERO).await;
    plain.get("/graced").await;
    let r = plain.get("/graced").await;
    assert_eq!(
        (r.status, r.x_cache()),
        (StatusCode::SERVICE_UNAVAILABLE, "MISS")
    );
    assert_eq!(origin.calls("/graced"), 2);

    let (addr, origin) = start_origin().await;
    let graced = proxy(Store::Locmem, addr, Duration::from_secs(3600)).await;
    graced.get("/graced").await;
    // Within the grace: served at once, refreshed in the background (which fails: the page
    // stays).
    assert_stale(&at_once(graced.get("/graced")).await, "/graced #1");
    for _ in 0..3000 {
        if origin.calls("/graced") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_stale(&at_once(graced.get("/graced")).await, "/graced #1");
}

#[tokio::test]
async fn rfc9111_4_2_4_forbidding_directives_are_never_served_stale() {
    let (addr, origin) = start_origin().await;
    let client = proxy(Store::Locmem, addr, Duration::from_secs(3600)).await;
    // must-revalidate, proxy-revalidate (§5.2.2.2, §5.2.2.8), and s-maxage, which implies
    // proxy-revalidate for a shared cache (§5.2.2.10): neither the grace nor max-stale apply.
    for path in ["/must-revalidate", "/proxy-revalidate", "/s-maxage"] {
        client.get(path).await;
        for request in [&[][..], &[("cache-control", "max-stale")][..]] {
            let r = client.get_with(path, request).await;
            assert_eq!(
                r.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{path} {request:?}"
            );
            assert_eq!(r.x_cache(), "MISS", "{path}");
        }
        assert_eq!(origin.calls(path), 3, "{path}");
    }
    // An s-maxage page's own stale-while-revalidate is explicit permission (RFC 5861).
    client.get("/s-maxage-swr").await;
    assert_stale(
        &at_once(client.get("/s-maxage-swr")).await,
        "/s-maxage-swr #1",
    );
}

#[tokio::test]
async fn rfc9111_5_2_1_2_max_stale_accepts_a_stale_page() {
    let (addr, origin) = start_origin().await;
    let client = proxy(Store::Locmem, addr, Duration::ZERO).await;
    client.get("/plain").await;
    // 4 s stale, no stale window of its own: max-stale (any, or more than 4 s) accepts it,
    // and no refresh is started.
    for max_stale in ["max-stale", "max-stale=3600", "max-stale=60"] {
        let r = client
            .get_with("/plain", &[("cache-control", max_stale)])
            .await;
        assert_stale(&r, "/plain #1");
    }
    assert_eq!(origin.calls("/plain"), 1);
    // Less than its staleness: the origin is asked.
    let r = client
        .get_with("/plain", &[("cache-control", "max-stale=2")])
        .await;
    assert_eq!((r.x_cache(), r.text().as_str()), ("MISS", "/plain #2"));
    assert_eq!(origin.calls("/plain"), 2);
}

#[tokio::test]
async fn rfc9111_5_2_1_1_and_5_2_1_3_max_age_and_min_fresh_refuse_a_page() {
    let (addr, origin) = start_origin().await;
    let client = proxy(Store::Locmem, addr, Duration::ZERO).await;
    client.get("/fresh").await;
    // 50 s old, fresh for 50 s more.
    for accepting in ["max-age=100", "min-fresh=10"] {
        let r = client
            .get_with("/fresh", &[("cache-control", accepting)])
            .await;
        assert_eq!(r.x_cache(), "HIT", "{accepting}");
    }
    assert_eq!(origin.calls("/fresh"), 1);
    let r = client
        .get_with("/fresh", &[("cache-control", "min-fresh=60")])
        .await;
    assert_eq!((r.x_cache(), r.text().as_str()), ("MISS", "/fresh #2"));
    // The new page is young: max-age=10 accepts it now.
    let r = client
        .get_with("/fresh", &[("cache-control", "max-age=10")])
        .await;
    assert_eq!((r.x_cache(), r.text().as_str()), ("HIT", "/fresh #2"));
    assert_eq!(origin.calls("/fresh"), 2);

    // A stale page within stale-while-revalidate is not served to a client that asked for an
    // age or a freshness: it waits for the origin.
    client.get("/plain").await;
    for refusing in ["max-age=1", "min-fresh=0"] {
        let r = client
            .get_with("/plain", &[("cache-control", refusing)])
            .await;
        assert_ne!(r.x_cache(), "STALE", "{refusing}");
    }
}
