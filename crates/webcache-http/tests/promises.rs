//! Issue 19: tests for what the crate's docs promise and no test checked: a HEAD miss stores
//! the whole GET page, a corrupt entry is a miss *and a warning*, backend errors are logged (a
//! warning at most every 10 s), a hit is one backend read, and a page whose `Vary` changes
//! between two stores is never served to the wrong variant, whatever a process remembers.
//!
//! Backend reads are counted by a wrapper that forwards to a real backend (locmem) and by a
//! real redis-server's command statistics; log lines are captured from `tracing`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::routing::{any, get};
use axum::Router;
use common::{serve, Counter, HttpClient, Logs};
use http::StatusCode;
use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::{Cache, CacheOptions};
use webcache_http::{CachePageLayer, Policy};
use webcache_testkit::forwarding::Forwarding;
use webcache_testkit::servers::redis::RedisServer;

/// Waits (at most 20 s) until the cache holds `n` page entries.
async fn until_stored(cache: &Cache, n: usize) {
    for _ in 0..2000 {
        if common::keys(cache, "views.cache_page.*").await.len() == n {
            // Let the task that wrote them finish its bookkeeping.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cache never held {n} page entries");
}

// ---------------------------------------------------------------------------------------------
// #1: a HEAD miss asks for GET and stores the whole page.

#[tokio::test]
async fn a_head_miss_asks_the_handler_for_get_and_a_later_get_has_the_whole_body() {
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let s = seen.clone();
    let app = Router::new()
        .route(
            "/page",
            any(move |req: Request| {
                *s.lock()
                    .unwrap()
                    .entry(req.method().to_string())
                    .or_default() += 1;
                async { "the whole page, as the origin wrote it" }
            }),
        )
        .layer(CachePageLayer::new(Cache::locmem()));
    let client = HttpClient::new(serve(app).await);
    let head = client.send("HEAD", "/page", &[], "").await;
    assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "MISS"));
    assert!(head.body.is_empty());
    let r = client.get("/page").await;
    assert_eq!(r.x_cache(), "HIT", "the HEAD miss stored the page");
    assert_eq!(r.text(), "the whole page, as the origin wrote it");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.get("GET"), Some(&1), "{seen:?}");
    assert_eq!(
        seen.get("HEAD"),
        None,
        "the handler was asked HEAD: {seen:?}"
    );
}

/// The same through the proxy, where the origin is a real HTTP server that answers HEAD
/// without a body: a HEAD forwarded as HEAD would store an empty page.
#[tokio::test]
async fn a_head_miss_through_the_proxy_stores_the_origins_get_body() {
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let s = seen.clone();
    let origin = Router::new().route(
        "/page",
        any(move |req: Request| {
            *s.lock()
                .unwrap()
                .entry(req.method().to_string())
                .or_default() += 1;
            async { ([("cache-control", "max-age=60")], "the origin's body") }
        }),
    );
    let origin = serve(origin).await;
    let proxy =
        webcache_http::proxy_router(&format!("http://{origin}"), Cache::locmem(), None).unwrap();
    let client = HttpClient::new(serve(proxy).await);
    let head = client.send("HEAD", "/page", &[], "").await;
    assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "MISS"));
    let r = client.get("/page").await;
    assert_eq!(
        (r.x_cache(), r.text()),
        ("HIT", "the origin's body".to_owned())
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        HashMap::from([("GET".to_owned(), 1)]),
        "what the origin was asked"
    );
}

// ---------------------------------------------------------------------------------------------
// #3: what is promised in the logs.

fn counting_page(calls: &Counter) -> Router {
    let c = calls.clone();
    Router::new().route(
        "/page",
        get(move || {
            let n = c.bump();
            async move { format!("page #{n}") }
        }),
    )
}

#[tokio::test]
async fn a_corrupt_entry_is_a_miss_and_a_warning() {
    let cache = Cache::locmem();
    let calls = Counter::default();
    let client = HttpClient::new(
        serve(counting_page(&calls).layer(CachePageLayer::new(cache.clone()))).await,
    );
    assert_eq!(client.get("/page").await.x_cache(), "MISS");
    until_stored(&cache, 1).await;
    let key = common::keys(&cache, "views.cache_page.*").await.remove(0);
    cache.set_bytes(&key, b"garbage", 60).await.unwrap();
    let (logs, _guard) = Logs::capture(tracing::Level::WARN);
    let r = client.get("/page").await;
    assert_eq!((r.x_cache(), r.text()), ("MISS", "page #2".to_owned()));
    let warnings = logs.lines("WARN", "treated as a miss");
    assert_eq!(warnings.len(), 1, "logs: {}", logs.text());
    assert!(
        warnings[0].contains(&key),
        "the warning names the key: {warnings:?}"
    );
}

#[tokio::test]
async fn backend_errors_are_a_warning_at_most_every_10_s_and_debug_otherwise() {
    let server = RedisServer::start();
    let cache = common::redis_cache_with_timeouts(&server, "0.3").await;
    let calls = Counter::default();
    let client =
        HttpClient::new(serve(counting_page(&calls).layer(CachePageLayer::new(cache))).await);
    assert_eq!(client.get("/page").await.x_cache(), "MISS");
    server.kill();
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    for n in 2..=6 {
        // A URL of its own each time: a page stored in this process's memory while the
        // backend has not refused it yet would be a hit.
        let r = client.get(&format!("/page?{n}")).await;
        assert_eq!((r.status, r.text()), (StatusCode::OK, format!("page #{n}")));
    }
    // Each miss read (and tried to write) a backend that is down: five failures at least.
    let needle = "page cache backend failed";
    let debug = logs.lines("DEBUG", needle);
    let warn = logs.lines("WARN", needle);
    assert_eq!(warn.len(), 1, "one warning in 10 s; logs: {}", logs.text());
    assert!(
        debug.len() >= 4,
        "the other failures are logged at debug; logs: {}",
        logs.text()
    );
}

// ---------------------------------------------------------------------------------------------
// "A hit is one backend read."

/// A real backend whose reads are counted (keys read, whichever way they are made), and the
/// count.
fn counting_reads(inner: Arc<dyn Backend>) -> (Arc<dyn Backend>, Arc<AtomicUsize>) {
    let reads = Arc::new(AtomicUsize::new(0));
    let count = reads.clone();
    let backend = Forwarding::new("counting", inner, move |call| {
        count.fetch_add(call.reads(), Ordering::SeqCst);
        Forwarding::go_on()
    });
    (Arc::new(backend), reads)
}

fn varying_page() -> Router {
    Router::new()
        .route("/plain", get(|| async { "plain" }))
        .route(
            "/vary",
            get(|req: Request| async move {
                let lang = req
                    .headers()
                    .get("accept-language")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                ([("vary", "Accept-Language")], format!("lang={lang}"))
            }),
        )
}

#[tokio::test]
async fn a_hit_is_one_backend_read() {
    let (backend, reads) =
        counting_reads(Arc::new(LocMemBackend::private(LocMemConfig::default())));
    let cache = Cache::new(backend, CacheOptions::default());
    let take = || reads.swap(0, Ordering::SeqCst);
    let a = HttpClient::new(serve(varying_page().layer(CachePageLayer::new(cache.clone()))).await);

    assert_eq!(a.get("/plain").await.x_cache(), "MISS");
    until_stored(&cache, 1).await;
    take();
    assert_eq!(a.get("/plain").await.x_cache(), "HIT");
    assert_eq!(take(), 1, "a hit of a page that does not vary");

    // Both "processes" are asked for the same site (the key includes the host and port).
    let en = [("accept-language", "en"), ("host", "site.example")];
    let de = [("accept-language", "de"), ("host", "site.example")];
    assert_eq!(a.get_with("/vary", &en).await.x_cache(), "MISS");
    until_stored(&cache, 3).await;
    take();
    let r = a.get_with("/vary", &en).await;
    assert_eq!((r.x_cache(), r.text()), ("HIT", "lang=en".to_owned()));
    assert_eq!(take(), 1, "a hit of a variant, the vary list known");
    assert_eq!(a.get_with("/vary", &de).await.x_cache(), "MISS");
    until_stored(&cache, 4).await;
    take();
    let r = a.get_with("/vary", &de).await;
    assert_eq!((r.x_cache(), r.text()), ("HIT", "lang=de".to_owned()));
    assert_eq!(take(), 1, "a hit of another variant");

    // Another process (a layer of its own over the same store) learns the list once.
    let b = HttpClient::new(serve(varying_page().layer(CachePageLayer::new(cache.clone()))).await);
    take();
    assert_eq!(b.get_with("/vary", &en).await.x_cache(), "HIT");
    assert_eq!(
        take(),
        2,
        "the first hit in a process reads the vary list too"
    );
    assert_eq!(b.get_with("/vary", &de).await.x_cache(), "HIT");
    assert_eq!(take(), 1);
}

#[tokio::test]
async fn a_hit_is_one_command_on_a_real_redis_server() {
    let server = RedisServer::start();
    let cache = common::redis_cache(&server);
    let client =
        HttpClient::new(serve(varying_page().layer(CachePageLayer::new(cache.clone()))).await);
    let en = [("accept-language", "en")];
    assert_eq!(client.get("/plain").await.x_cache(), "MISS");
    assert_eq!(client.get_with("/vary", &en).await.x_cache(), "MISS");
    until_stored(&cache, 3).await;
    for (path, headers) in [("/plain", &[][..]), ("/vary", &en[..])] {
        server.cli(&["config", "resetstat"]);
        assert_eq!(
            client.get_with(path, headers).await.x_cache(),
            "HIT",
            "{path}"
        );
        let mut calls = common::redis_command_calls(&server);
        calls.remove("config|resetstat");
        assert_eq!(
            calls,
            HashMap::from([("get".to_owned(), 1)]),
            "{path}: a hit is one GET"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The per-process vary memory going stale.

#[tokio::test]
async fn a_page_whose_vary_changes_is_never_served_to_the_wrong_variant() {
    let cache = Cache::locmem();
    let version = Arc::new(AtomicUsize::new(1));
    let calls = Counter::default();
    let app = |cache: &Cache| {
        let (version, calls) = (version.clone(), calls.clone());
        Router::new()
            .route(
                "/page",
                get(move |req: Request| {
                    calls.bump();
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    let answer = if version.load(Ordering::SeqCst) == 1 {
                        (
                            "Accept-Language",
                            format!("v1 lang={}", header("accept-language")),
                        )
                    } else {
                        (
                            "Accept-Encoding",
                            format!("v2 enc={}", header("accept-encoding")),
                        )
                    };
                    async move {
                        (
                            [("cache-control", "max-age=600"), ("vary", answer.0)],
                            answer.1,
                        )
                    }
                })
                .post(|| async { "changed" }),
            )
            .layer(CachePageLayer::new(cache.clone()).policy(Policy::shared_cache()))
    };
    // Two processes sharing one store, each with its own memory of the URL's vary list.
    let a = HttpClient::new(serve(app(&cache)).await);
    let b = HttpClient::new(serve(app(&cache)).await);
    let ask = |client: &HttpClient, lang: &'static str, enc: &'static str| {
        let client = client.clone();
        async move {
            let r = client
                .get_with(
                    "/page",
                    &[
                        ("host", "site.example"),
                        ("accept-language", lang),
                        ("accept-encoding", enc),
                    ],
                )
                .await;
            (r.x_cache().to_owned(), r.text())
        }
    };
    let hit = |text: &str| ("HIT".to_owned(), text.to_owned());
    let miss = |text: &str| ("MISS".to_owned(), text.to_owned());

    assert_eq!(ask(&a, "en", "gzip").await, miss("v1 lang=en"));
    until_stored(&cache, 2).await;
    // Both processes now remember that the page varies on Accept-Language.
    assert_eq!(ask(&b, "en", "gzip").await, hit("v1 lang=en"));
    assert_eq!(ask(&a, "en", "identity").await, hit("v1 lang=en"));

    // The page changes: it now varies on Accept-Encoding. A (only) sees the POST.
    version.store(2, Ordering::SeqCst);
    assert_eq!(
        a.send("POST", "/page", &[("host", "site.example")], "")
            .await
            .text(),
        "changed"
    );
    assert_eq!(ask(&a, "en", "gzip").await, miss("v2 enc=gzip"));
    until_stored(&cache, 2).await;
    // B still remembers Accept-Language: it must not hand the gzip page to another encoding.
    assert_eq!(ask(&b, "en", "identity").await, miss("v2 enc=identity"));
    until_stored(&cache, 3).await;
    assert_eq!(ask(&b, "en", "gzip").await, hit("v2 enc=gzip"));
    assert_eq!(ask(&b, "de", "gzip").await, hit("v2 enc=gzip"));
    assert_eq!(ask(&a, "de", "identity").await, hit("v2 enc=identity"));
    assert_eq!(ask(&a, "de", "br").await, miss("v2 enc=br"));
    assert_eq!(calls.get(), 4);
}

/// A process whose memory of the vary list is stale (the page changed in another process)
/// computes concurrent misses of different variants under one key: the request that waited
/// must not take the leader's page unless it is its own variant.
#[tokio::test]
async fn a_stale_vary_memory_never_hands_a_waiting_request_another_variant() {
    let cache = Cache::locmem();
    let version = Arc::new(AtomicUsize::new(1));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let arrived_at_b = Counter::default();
    let app = |cache: &Cache| {
        let (version, gate) = (version.clone(), gate.clone());
        Router::new()
            .route(
                "/page",
                get(move |req: Request| {
                    let (version, gate) = (version.load(Ordering::SeqCst), gate.clone());
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    let (lang, enc) = (header("accept-language"), header("accept-encoding"));
                    async move {
                        if version == 1 {
                            return (
                                [
                                    ("cache-control", "max-age=600"),
                                    ("vary", "Accept-Language"),
                                ],
                                format!("v1 lang={lang}"),
                            );
                        }
                        gate.acquire().await.unwrap().forget();
                        (
                            [
                                ("cache-control", "max-age=600"),
                                ("vary", "Accept-Encoding"),
                            ],
                            format!("v2 enc={enc}"),
                        )
                    }
                })
                .post(|| async { "changed" }),
            )
            .layer(CachePageLayer::new(cache.clone()).policy(Policy::shared_cache()))
    };
    let page = |enc: &'static str| -> [(&'static str, &'static str); 3] {
        [
            ("host", "site.example"),
            ("accept-language", "en"),
            ("accept-encoding", enc),
        ]
    };
    let a = HttpClient::new(serve(app(&cache)).await);
    let counter = arrived_at_b.clone();
    let b = HttpClient::new(
        serve(
            app(&cache).layer(tower::util::MapRequestLayer::new(move |req: Request| {
                counter.bump();
                req
            })),
        )
        .await,
    );
    let first = a.get_with("/page", &page("gzip")).await;
    assert_eq!(first.text(), "v1 lang=en");
    until_stored(&cache, 2).await;
    // B learns that the page varies on Accept-Language; then the page changes, which only A
    // hears of.
    assert_eq!(b.get_with("/page", &page("gzip")).await.x_cache(), "HIT");
    assert_eq!(
        a.send("POST", "/page", &[("host", "site.example")], "")
            .await
            .text(),
        "changed"
    );
    version.store(2, Ordering::SeqCst);
    let before = arrived_at_b.get();
    let tasks: Vec<_> = ["gzip", "identity"]
        .into_iter()
        .map(|enc| {
            let (b, headers) = (b.clone(), page(enc));
            tokio::spawn(async move { (enc, b.get_with("/page", &headers).await.text()) })
        })
        .collect();
    for _ in 0..2000 {
        if arrived_at_b.get() == before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(arrived_at_b.get(), before + 2);
    // Both have arrived; let them reach the single flight, then let the handler answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.add_permits(2);
    for t in tasks {
        let (enc, text) = t.await.unwrap();
        assert_eq!(text, format!("v2 enc={enc}"), "served another variant");
    }
}
