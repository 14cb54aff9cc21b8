//! Metrics through the Prometheus exporter, read back from its text: outcomes per route
//! pattern, not-stored reasons, bytes served from the cache, stampede waiters, the cache's own
//! hits, misses, latency and health, and the `tracing` spans of backend calls. Each test uses
//! its own routes and alias: the recorder is the process's, shared by the tests.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{serve, Counter, HttpClient};
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::{Cache, CacheOptions};
use webcache_http::metrics::PrometheusMetrics;
use webcache_http::CachePageLayer;

fn cache(alias: &str) -> Cache {
    Cache::new(
        Arc::new(LocMemBackend::private(LocMemConfig::default())),
        CacheOptions::builder().alias(alias).build(),
    )
}

/// The value of the sample `name{labels}` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())?
        })
        .reduce(|a, b| a + b)
}

async fn scrape(metrics: &PrometheusMetrics) -> String {
    metrics.render().await
}

#[tokio::test]
async fn outcomes_are_counted_per_route_pattern_never_per_url() {
    let metrics = PrometheusMetrics::install().unwrap();
    let cache = cache("metrics-outcomes");
    let counter = Counter::default();
    let c = counter.clone();
    let app = Router::new()
        .route(
            "/outcomes/{id}",
            get(move || {
                let n = c.bump();
                async move { ([("cache-control", "max-age=60")], format!("page {n}")) }
            }),
        )
        .route(
            "/outcomes-cookie",
            get(|| async { ([("set-cookie", "a=b")], "personal") }),
        )
        .layer(CachePageLayer::new(cache.clone()));
    let client = HttpClient::new(serve(app).await);
    assert_eq!(client.get("/outcomes/41").await.x_cache(), "MISS");
    let hit = client.get("/outcomes/41").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(client.get("/outcomes/42").await.x_cache(), "MISS");
    assert_eq!(client.get("/outcomes-cookie").await.x_cache(), "MISS");
    let bypass = client.send("POST", "/outcomes/41", &[], "").await;
    assert_eq!(bypass.x_cache(), "BYPASS");

    let text = scrape(&metrics.watch(cache)).await;
    let route = ("route", "/outcomes/{id}");
    let responses = "webcache_page_responses_total";
    assert_eq!(
        sample(&text, responses, &[route, ("outcome", "MISS")]),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, responses, &[route, ("outcome", "HIT")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, responses, &[route, ("outcome", "BYPASS")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "webcache_page_not_stored_total",
            &[("route", "/outcomes-cookie"), ("reason", "sets_cookie")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "webcache_page_cached_bytes_total", &[route]),
        Some(hit.body.len() as f64)
    );
    // Labels carry route patterns, never the URLs asked.
    assert!(!text.contains("/outcomes/41"), "{text}");
    assert!(!text.contains("/outcomes/42"), "{text}");

    // The cache's own figures for the alias: 2 misses + 1 hit of pages (a page lookup is one
    // read), latency of its gets, and its health.
    let alias = ("alias", "metrics-outcomes");
    assert!(sample(&text, "webcache_cache_hits_total", &[alias]) >= Some(1.0));
    assert!(sample(&text, "webcache_cache_misses_total", &[alias]) >= Some(2.0));
    assert!(
        sample(
            &text,
            "webcache_cache_operation_duration_seconds_count",
            &[alias, ("operation", "get")]
        ) >= Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "webcache_cache_backend_up", &[alias]),
        Some(1.0)
    );
    assert_eq!(sample(&text, "webcache_cache_entries", &[alias]), Some(2.0));
    assert_eq!(
        sample(&text, "webcache_cache_degrade_mode", &[alias]),
        Some(0.0)
    );
}

#[tokio::test]
async fn requests_without_a_matched_route_are_unmatched() {
    let metrics = PrometheusMetrics::install().unwrap();
    let cache = cache("metrics-unmatched");
    let app = Router::new()
        .fallback(|| async { ([("cache-control", "max-age=60")], "fallback") })
        .layer(CachePageLayer::new(cache));
    let client = HttpClient::new(serve(app).await);
    let before = sample(
        &scrape(&metrics).await,
        "webcache_page_responses_total",
        &[("route", "unmatched"), ("outcome", "MISS")],
    )
    .unwrap_or(0.0);
    client.get("/some/secret-path?token=1").await;
    let text = scrape(&metrics).await;
    let after = sample(
        &text,
        "webcache_page_responses_total",
        &[("route", "unmatched"), ("outcome", "MISS")],
    );
    assert!(after >= Some(before + 1.0), "{text}");
    assert!(!text.contains("secret-path"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_waiters_are_counted() {
    let metrics = PrometheusMetrics::install().unwrap();
    let counter = Counter::default();
    let c = counter.clone();
    let app = Router::new()
        .route(
            "/stampede-metrics",
            get(move || {
                c.bump();
                async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    ([("cache-control", "max-age=60")], "slow")
                }
            }),
        )
        .layer(CachePageLayer::new(cache("metrics-stampede")));
    let client = HttpClient::new(serve(app).await);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get("/stampede-metrics").await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let text = scrape(&metrics).await;
    let waits = sample(
        &text,
        "webcache_page_stampede_waits_total",
        &[("route", "/stampede-metrics")],
    );
    // Every request but the one that called the handler waited for it.
    assert_eq!(waits, Some((6 - counter.get()) as f64), "{text}");
    assert!(counter.get() < 6);
}

#[tokio::test]
async fn backend_failures_are_counted_per_operation() {
    let metrics = PrometheusMetrics::install().unwrap();
    // Nothing listens on port 1: every call fails at once.
    let backend = webcache_redis::RedisBackend::from_url("redis://127.0.0.1:1/0").unwrap();
    let down = Cache::new(
        Arc::new(backend),
        CacheOptions::builder().alias("metrics-down").build(),
    );
    assert!(down.get::<String>("k").await.is_err());
    assert!(down.set("k", "v", 60).await.is_err());
    let text = scrape(&metrics.watch(down)).await;
    let alias = ("alias", "metrics-down");
    assert!(
        sample(
            &text,
            "webcache_cache_errors_total",
            &[alias, ("operation", "get")]
        ) >= Some(1.0)
    );
    assert!(
        sample(
            &text,
            "webcache_cache_errors_total",
            &[alias, ("operation", "set")]
        ) >= Some(1.0)
    );
    assert_eq!(
        sample(&text, "webcache_cache_backend_up", &[alias]),
        Some(0.0),
        "{text}"
    );
}

#[tokio::test]
async fn the_router_answers_scrapes_in_the_text_format() {
    let metrics = PrometheusMetrics::install().unwrap();
    let cache = cache("metrics-router");
    cache.set("k", "v", 60).await.unwrap();
    let app = metrics.clone().watch(cache).router("/metrics");
    let client = HttpClient::new(serve(app).await);
    let reply = client.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = reply.text();
    assert!(
        text.contains("# TYPE webcache_cache_entries gauge"),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "webcache_cache_entries",
            &[("alias", "metrics-router")]
        ),
        Some(1.0)
    );
}

/// Backend calls run in a `cache` span with the alias and the operation, never the key or
/// the value.
#[tokio::test]
async fn backend_calls_run_in_spans_without_keys_or_values() {
    let logs = common::Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::INFO)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let _guard = webcache_testkit::logs::capture_on_this_thread(subscriber);
    let cache = cache("metrics-spans");
    cache
        .set("the-secret-key", "the-secret-value", 60)
        .await
        .unwrap();
    let _: Option<String> = cache.get("the-secret-key").await.unwrap();
    let text = logs.text();
    let spans: Vec<&str> = text.lines().filter(|l| l.contains("cache{")).collect();
    assert!(
        spans
            .iter()
            .any(|l| l.contains("alias=metrics-spans") && l.contains("operation=\"set\"")),
        "{text}"
    );
    assert!(
        spans.iter().any(|l| l.contains("operation=\"get\"")),
        "{text}"
    );
    assert!(!text.contains("the-secret"), "{text}");
}

#[tokio::test]
async fn hits_and_misses_are_counted_per_operation_through_the_metrics_route() {
    let metrics = PrometheusMetrics::install().unwrap();
    let cache = cache("metrics-operations");
    cache.set("present", &1u32, None).await.unwrap();
    // Each operation once on a present key, and (but `get_many`) once on a missing one.
    assert_eq!(cache.get::<u32>("present").await.unwrap(), Some(1));
    assert_eq!(cache.get::<u32>("absent").await.unwrap(), None);
    assert!(cache.has_key("present").await.unwrap());
    assert!(!cache.has_key("absent").await.unwrap());
    let found = cache
        .get_many::<u32, _>(["present", "absent", "gone"])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(cache.get_or_set("present", 2u32, None).await.unwrap(), 1);
    assert_eq!(cache.get_or_set("computed", 3u32, None).await.unwrap(), 3);
    // Page lookups are `get_bytes`: a MISS then a HIT.
    let app = Router::new()
        .route(
            "/operations",
            get(|| async { ([("cache-control", "max-age=60")], "page") }),
        )
        .layer(CachePageLayer::new(cache.clone()))
        .merge(metrics.router("/metrics"));
    let client = HttpClient::new(serve(app).await);
    assert_eq!(client.get("/operations").await.x_cache(), "MISS");
    assert_eq!(client.get("/operations").await.x_cache(), "HIT");

    let text = client.get("/metrics").await.text();
    let alias = ("alias", "metrics-operations");
    let count =
        |name: &str, operation: &str| sample(&text, name, &[alias, ("operation", operation)]);
    let (hits, misses) = ("webcache_cache_hits_total", "webcache_cache_misses_total");
    for operation in ["get", "has_key", "get_bytes"] {
        assert_eq!(count(hits, operation), Some(1.0), "{operation}: {text}");
        assert_eq!(count(misses, operation), Some(1.0), "{operation}: {text}");
    }
    assert_eq!(count(hits, "get_many"), Some(1.0), "{text}");
    assert_eq!(count(misses, "get_many"), Some(2.0), "{text}");
    assert_eq!(count(hits, "get_or_set"), Some(1.0), "{text}");
    assert_eq!(count(misses, "get_or_set"), Some(1.0), "{text}");
    // The same figures in `stats`, and no key in any label.
    let reads = cache.reads();
    let get_many = reads.iter().find(|r| r.operation == "get_many").unwrap();
    assert_eq!((get_many.hits, get_many.misses), (1, 2));
    assert!(
        !text.contains("present") && !text.contains("absent"),
        "{text}"
    );
}

/// A read is timed once: a backend that cannot answer at once (`Backend::get_ready` says
/// `None`, as every networked backend does) is asked with `get`, and only that call counts in
/// the latency histogram; an in-process answer counts once too.
#[tokio::test]
async fn each_read_is_timed_once() {
    let metrics = PrometheusMetrics::install().unwrap();
    let networked = Cache::new(
        Arc::new(webcache_core::backends::DummyBackend),
        CacheOptions::builder().alias("metrics-timed-once").build(),
    );
    let in_process = cache("metrics-timed-once-locmem");
    for key in ["a", "b", "c"] {
        networked.get_bytes(key).await.unwrap();
        in_process.get_bytes(key).await.unwrap();
    }
    let text = metrics.render().await;
    for alias in ["metrics-timed-once", "metrics-timed-once-locmem"] {
        assert_eq!(
            sample(
                &text,
                "webcache_cache_operation_duration_seconds_count",
                &[("alias", alias), ("operation", "get")]
            ),
            Some(3.0),
            "{alias}: {text}"
        );
    }
}
