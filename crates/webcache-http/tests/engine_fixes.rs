//! Issue 10, the engine's side: invalidation without a scan (on a real redis-server with many
//! unrelated keys), streaming responses passed through at once, hit-for-miss (an uncacheable
//! URL is never serialised), waiters sharing the leader's gateway error, and a frozen backend
//! that must not delay a response by the store.
//!
//! Concurrency is controlled by the test (gates and counters), never by sleeping and hoping;
//! the one timing bound is in the frozen-backend test, where time is the subject.

#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{serve, Counter, HttpClient};
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use tokio::sync::{mpsc, Semaphore};
use tower::util::MapRequestLayer;
use webcache_core::Cache;
use webcache_http::{proxy_router, CachePageLayer, Policy};
use webcache_testkit::servers::redis::RedisServer;
use webcache_testkit::servers::Frozen;

/// Waits (at most 20 s) until `ready` holds; panics with `what` otherwise.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The keys in Redis, not counting the tag generation that every miss pins (webcache-core's
/// tags: `<prefix>:0:webcache.tags`, here with the empty prefix).
fn dbsize(server: &RedisServer) -> u64 {
    let all: u64 = server.cli(&["dbsize"]).trim().parse().unwrap();
    let generation: u64 = server
        .cli(&["exists", ":0:webcache.tags"])
        .trim()
        .parse()
        .unwrap();
    all - generation
}

// ---------------------------------------------------------------------------------------------
// Item 7: invalidation costs O(variants), never a scan of the keyspace.

#[tokio::test]
async fn a_post_drops_every_variant_without_scanning_the_keyspace() {
    let server = RedisServer::start();
    server.cli(&[
        "eval",
        "for i=1,20000 do redis.call('SET','unrelated:'..i,'x') end return 1",
        "0",
    ]);
    let unrelated = dbsize(&server);
    assert_eq!(unrelated, 20_000);
    let calls = Counter::default();
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/page",
            get(move |req: Request| {
                let n = c.bump();
                let lang = req
                    .headers()
                    .get("accept-language")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                async move {
                    (
                        [
                            ("cache-control", "max-age=600"),
                            ("vary", "Accept-Language"),
                        ],
                        format!("{lang} #{n}"),
                    )
                }
            })
            .post(|| async { "saved" }),
        )
        .layer(CachePageLayer::new(common::redis_cache(&server)).policy(Policy::shared_cache()));
    let client = HttpClient::new(serve(app).await);
    let langs = ["en", "de", "fr"];
    for (i, lang) in langs.iter().enumerate() {
        let r = client.get_with("/page", &[("accept-language", lang)]).await;
        assert_eq!(r.x_cache(), "MISS", "{lang}");
        // Stored after answering: wait until Redis holds the vary entry and this variant.
        let want = unrelated + 2 + i as u64;
        until("the variant reaches Redis", || dbsize(&server) == want).await;
    }
    for lang in langs {
        let r = client.get_with("/page", &[("accept-language", lang)]).await;
        assert_eq!(r.x_cache(), "HIT", "{lang}");
    }
    server.cli(&["config", "resetstat"]);
    let post = client.send("POST", "/page", &[], "").await;
    assert_eq!(
        (post.status, post.text()),
        (StatusCode::OK, "saved".to_owned())
    );
    let commands = common::redis_command_calls(&server);
    for scan in ["scan", "keys"] {
        assert!(
            !commands.contains_key(scan),
            "the invalidation ran {scan}: {commands:?}"
        );
    }
    assert_eq!(
        dbsize(&server),
        unrelated,
        "the vary entry and every variant are gone, nothing else"
    );
    for lang in langs {
        let r = client.get_with("/page", &[("accept-language", lang)]).await;
        assert_eq!(r.x_cache(), "MISS", "{lang} survived the POST");
        assert!(r.text().starts_with(lang), "{lang}: {}", r.text());
    }
    assert_eq!(calls.get(), 6);
}

// ---------------------------------------------------------------------------------------------
// Item 8: a body of unknown length reaches the client as it comes.

/// A route whose every call hands the test the sender of its body: the body ends when the test
/// drops the sender.
type Handoff = mpsc::UnboundedReceiver<mpsc::UnboundedSender<Bytes>>;

fn streaming_app(content_type: &'static str, layer: CachePageLayer) -> (Router, Handoff, Counter) {
    let (handoff_tx, handoff) = mpsc::unbounded_channel();
    let calls = Counter::default();
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/stream",
            get(move || {
                c.bump();
                let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                handoff_tx.send(tx).unwrap();
                let chunks = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
                });
                async move { ([("content-type", content_type)], Body::from_stream(chunks)) }
            }),
        )
        .layer(layer);
    (app, handoff, calls)
}

/// Asks for `/stream`, sends `first` and checks the client gets it while the handler still
/// holds the rest; then sends `rest`, ends the body and returns the whole body and `x-cache`.
async fn stream_through(
    addr: std::net::SocketAddr,
    handoff: &mut Handoff,
    first: &'static str,
    rest: &'static str,
) -> (String, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let request = tokio::spawn(client.get(format!("http://{addr}/stream").parse().unwrap()));
    let sender = handoff.recv().await.unwrap();
    sender.send(Bytes::from_static(first.as_bytes())).unwrap();
    // The rest is still in the test's hands: the first chunk must arrive without it.
    let (x_cache, body, got) = tokio::time::timeout(Duration::from_secs(20), async {
        let response = request.await.unwrap().unwrap();
        let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
        let mut body = response.into_body();
        let frame = body.frame().await.unwrap().unwrap();
        let got = frame.into_data().unwrap();
        (x_cache, body, got)
    })
    .await
    .expect("the first chunk never reached the client while the body was unfinished: buffered");
    assert_eq!(got, first.as_bytes());
    sender.send(Bytes::from_static(rest.as_bytes())).unwrap();
    drop(sender);
    let mut whole = got.to_vec();
    whole.extend_from_slice(&body.collect().await.unwrap().to_bytes());
    (String::from_utf8(whole).unwrap(), x_cache)
}

#[tokio::test]
async fn an_event_stream_reaches_the_client_at_once_and_is_not_stored() {
    let cache = Cache::locmem();
    let (app, mut handoff, calls) =
        streaming_app("text/event-stream", CachePageLayer::new(cache.clone()));
    let addr = serve(app).await;
    for round in 1..=2 {
        let (body, x_cache) =
            stream_through(addr, &mut handoff, "data: 1\n\n", "data: 2\n\n").await;
        assert_eq!(body, "data: 1\n\ndata: 2\n\n");
        assert_eq!(x_cache, "MISS", "round {round}");
        assert_eq!(
            calls.get(),
            round,
            "an event stream is never answered from the cache"
        );
    }
    assert!(common::keys(&cache, "*").await.is_empty());
}

#[tokio::test]
async fn a_chunked_page_streams_at_once_and_is_stored_when_it_ends() {
    let cache = Cache::locmem();
    let (app, mut handoff, calls) = streaming_app("text/html", CachePageLayer::new(cache.clone()));
    let addr = serve(app).await;
    let (body, x_cache) = stream_through(addr, &mut handoff, "<p>first</p>", "<p>rest</p>").await;
    assert_eq!(
        (body.as_str(), x_cache.as_str()),
        ("<p>first</p><p>rest</p>", "MISS")
    );
    // Stored in the background once the body ended.
    let mut stored = false;
    for _ in 0..500 {
        if !common::keys(&cache, "views.cache_page.*").await.is_empty() {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stored, "the page was never stored");
    let r = HttpClient::new(addr).get("/stream").await;
    assert_eq!(
        (r.x_cache(), r.text()),
        ("HIT", "<p>first</p><p>rest</p>".to_owned())
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn a_chunked_page_that_grows_past_max_body_streams_at_once_and_is_not_stored() {
    let cache = Cache::locmem();
    let layer = CachePageLayer::new(cache.clone()).max_body(16);
    let (app, mut handoff, calls) = streaming_app("text/html", layer);
    let addr = serve(app).await;
    for round in 1..=2 {
        let (body, x_cache) = stream_through(
            addr,
            &mut handoff,
            "<p>first</p>",
            "<p>more than max_body allows</p>",
        )
        .await;
        assert_eq!(body, "<p>first</p><p>more than max_body allows</p>");
        assert_eq!(x_cache, "MISS", "round {round}");
        assert_eq!(calls.get(), round, "a page past max_body is never stored");
    }
    assert!(common::keys(&cache, "*").await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Item 12: hit-for-miss.

#[tokio::test]
async fn once_a_page_is_known_uncacheable_concurrent_requests_run_the_handler_together() {
    const N: usize = 8;
    let gate = Arc::new(Semaphore::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let calls = Counter::default();
    let (g, i, p, c) = (gate.clone(), in_flight.clone(), peak.clone(), calls.clone());
    let app = Router::new()
        .route(
            "/cart",
            get(move || {
                let (gate, in_flight, peak) = (g.clone(), i.clone(), p.clone());
                c.bump();
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    gate.acquire().await.unwrap().forget();
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    ([("set-cookie", "cart=42")], "your cart")
                }
            }),
        )
        // Long enough that a request serialised behind another never gives up in this test.
        .layer(CachePageLayer::new(Cache::locmem()).stampede_wait(Duration::from_secs(120)));
    let client = HttpClient::new(serve(app).await);
    gate.add_permits(1);
    let first = client.get("/cart").await;
    assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
    peak.store(0, Ordering::SeqCst);
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get("/cart").await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight.load(Ordering::SeqCst) < N {
        assert!(
            Instant::now() < deadline,
            "the requests for a page known to be uncacheable were serialised: {} handlers in \
             flight at most, of {N}",
            peak.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.add_permits(N);
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(
            (r.status, r.text()),
            (StatusCode::OK, "your cart".to_owned())
        );
    }
    assert_eq!(peak.load(Ordering::SeqCst), N);
    assert_eq!(calls.get(), N + 1);
}

// ---------------------------------------------------------------------------------------------
// Item 6: the requests that waited share the leader's gateway error.

/// Fires `N` concurrent requests at `addr`, waits until all of them have reached the layer
/// (`arrived`), lets the gated inner service answer, and returns the replies.
async fn burst_behind_gate(
    addr: std::net::SocketAddr,
    arrived: &Counter,
    gate: &Semaphore,
    n: usize,
) -> Vec<common::Reply> {
    let client = HttpClient::new(addr);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get("/slow").await })
        })
        .collect();
    until("every request reaches the layer", || arrived.get() == n).await;
    // The requests have arrived; let them reach the single flight (a lookup in locmem), then
    // open the gate. The permits let every caller finish even if they all called.
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.add_permits(n);
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    replies
}

fn gated_504(gate: Arc<Semaphore>, calls: Counter) -> Router {
    Router::new().route(
        "/slow",
        get(move || {
            let gate = gate.clone();
            calls.bump();
            async move {
                gate.acquire().await.unwrap().forget();
                (StatusCode::GATEWAY_TIMEOUT, "upstream timed out").into_response()
            }
        }),
    )
}

#[tokio::test]
async fn waiters_share_the_handlers_504() {
    const N: usize = 6;
    let gate = Arc::new(Semaphore::new(0));
    let (calls, arrived) = (Counter::default(), Counter::default());
    let a = arrived.clone();
    let app = gated_504(gate.clone(), calls.clone())
        .layer(CachePageLayer::new(Cache::locmem()))
        .layer(MapRequestLayer::new(move |req: Request| {
            a.bump();
            req
        }));
    let replies = burst_behind_gate(serve(app).await, &arrived, &gate, N).await;
    for r in &replies {
        assert_eq!(
            (r.status, r.text()),
            (StatusCode::GATEWAY_TIMEOUT, "upstream timed out".to_owned())
        );
    }
    assert_eq!(
        calls.get(),
        1,
        "the waiters asked the failing handler again"
    );
}

#[tokio::test]
async fn waiters_share_the_origins_504_through_the_proxy() {
    const N: usize = 6;
    let gate = Arc::new(Semaphore::new(0));
    let (calls, arrived) = (Counter::default(), Counter::default());
    let origin = serve(gated_504(gate.clone(), calls.clone())).await;
    let a = arrived.clone();
    let proxy = proxy_router(&format!("http://{origin}"), Cache::locmem(), None)
        .unwrap()
        .layer(MapRequestLayer::new(move |req: Request| {
            a.bump();
            req
        }));
    let replies = burst_behind_gate(serve(proxy).await, &arrived, &gate, N).await;
    for r in &replies {
        assert_eq!(
            (r.status, r.text()),
            (StatusCode::GATEWAY_TIMEOUT, "upstream timed out".to_owned())
        );
    }
    assert_eq!(calls.get(), 1, "the waiters asked the failing origin again");
}

// ---------------------------------------------------------------------------------------------
// Item 13: storing happens after answering.

#[tokio::test]
async fn a_frozen_backend_delays_a_miss_by_the_lookup_only_not_by_the_store() {
    let server = RedisServer::start();
    // 2 s per operation: a miss on a frozen server costs one lookup timeout (2 s); storing
    // before answering would add another.
    let cache = common::redis_cache_with_timeouts(&server, "2").await;
    let calls = Counter::default();
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/{page}",
            get(move || {
                let n = c.bump();
                async move { format!("page #{n}") }
            }),
        )
        .layer(CachePageLayer::new(cache));
    let client = HttpClient::new(serve(app).await);
    // The connection is up and working.
    assert_eq!(client.get("/warm").await.x_cache(), "MISS");
    until("the page reaches Redis", || dbsize(&server) == 1).await;
    let frozen = Frozen::stop(server.pid());
    let started = Instant::now();
    let r = client.get("/cold").await;
    let took = started.elapsed();
    drop(frozen);
    assert_eq!(
        (r.status, r.x_cache(), r.text()),
        (StatusCode::OK, "MISS", "page #2".to_owned())
    );
    assert!(
        took < Duration::from_millis(3500),
        "a miss on a frozen backend took {took:?}: it waited for the store, not only the lookup"
    );
}

/// The vary entry lists every stored variant, also when several variants are stored at once
/// (their writes interleave on the server): otherwise an invalidation misses the unlisted ones
/// and they are served after the POST.
#[tokio::test]
async fn variants_stored_concurrently_are_all_listed_and_all_invalidated() {
    const LANGS: [&str; 4] = ["en", "de", "fr", "it"];
    let server = RedisServer::start();
    let gate = Arc::new(Semaphore::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (g, i) = (gate.clone(), in_flight.clone());
    let app = Router::new()
        .route(
            "/page",
            get(move |req: Request| {
                let (gate, in_flight) = (g.clone(), i.clone());
                let lang = req
                    .headers()
                    .get("accept-language")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                async move {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    gate.acquire().await.unwrap().forget();
                    (
                        [
                            ("cache-control", "max-age=600"),
                            ("vary", "Accept-Language"),
                        ],
                        format!("lang={lang}"),
                    )
                }
            })
            .post(|| async { "saved" }),
        )
        .layer(CachePageLayer::new(common::redis_cache(&server)).policy(Policy::shared_cache()));
    let client = HttpClient::new(serve(app).await);
    // One variant first, so that the process knows the page's vary list and the concurrent
    // misses below each have a key (and a single flight) of their own.
    gate.add_permits(1);
    let warm = client.get_with("/page", &[("accept-language", "pt")]).await;
    assert_eq!(warm.x_cache(), "MISS");
    until("the first variant reaches Redis", || dbsize(&server) == 2).await;
    in_flight.store(0, Ordering::SeqCst);
    let tasks: Vec<_> = LANGS
        .into_iter()
        .map(|lang| {
            let client = client.clone();
            tokio::spawn(
                async move { client.get_with("/page", &[("accept-language", lang)]).await },
            )
        })
        .collect();
    until("every variant's handler runs", || {
        in_flight.load(Ordering::SeqCst) == LANGS.len()
    })
    .await;
    // All four answer at once, so their stores run at once.
    gate.add_permits(LANGS.len());
    for t in tasks {
        assert_eq!(t.await.unwrap().x_cache(), "MISS");
    }
    until("the vary entry and five variants reach Redis", || {
        dbsize(&server) == 2 + LANGS.len() as u64
    })
    .await;
    // Let the last vary-entry write land too (it follows its variant's write).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let post = client.send("POST", "/page", &[], "").await;
    assert_eq!(post.status, StatusCode::OK);
    let left = server.cli(&["keys", "*"]).replace('\n', " ");
    assert_eq!(
        dbsize(&server),
        0,
        "variants missing from the vary entry survived the invalidation: {left}"
    );
    gate.add_permits(LANGS.len() + 1);
    for lang in LANGS.into_iter().chain(["pt"]) {
        let r = client.get_with("/page", &[("accept-language", lang)]).await;
        assert_eq!(r.x_cache(), "MISS", "{lang} was served after the POST");
    }
}
