//! Redis going away under a running cache: in degrade mode reads miss and writes are dropped;
//! in raise mode callers get a typed error; and the same cache works again once Redis is back
//! on its port, without being rebuilt.
//!
//! The README promises that a refused connection fails at once with `Error::Backend` naming
//! the URL. The tests check it without timing anything: a refusal takes milliseconds (a
//! connection attempt and a short reconnection backoff), their timeouts are 2 s + 2 s (ample
//! on a busy machine), and a call that waited instead of failing at once (a long reconnection
//! loop, waiting for a timeout) would end in `Error::Timeout`, which they refuse. Only the
//! hung-server test, whose subject is the timeout, uses tight ones.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use webcache_core::{Cache, CacheOptions, Error, OnError};
use webcache_testkit::servers::redis::RedisServer;
use webcache_testkit::servers::RefusedPort;

/// Timeouts far longer than a refused connection takes to fail, even on a busy machine, and
/// shorter than a call that waits for something (a reconnection loop with backoff) takes.
const GENEROUS: &str = "connect_timeout=2&response_timeout=2";

async fn open(url: &str, on_error: OnError) -> Cache {
    Cache::new(
        Arc::new(common::backend(url).await),
        CacheOptions::builder()
            .key_prefix("outage")
            .on_error(on_error)
            .build(),
    )
}

fn url(server: &RedisServer) -> String {
    format!("{}?{GENEROUS}", server.url(0))
}

/// The error a refused connection must give: `Error::Backend` from redis whose message names
/// `url` (so not a timeout: the call failed at once).
fn assert_refused(what: &str, err: &Error, url: &str) {
    match err {
        Error::Backend {
            backend: "redis",
            message,
            ..
        } => assert!(
            message.contains(url),
            "{what}: the error names the server ({url}): {message}"
        ),
        other => panic!("{what}: a refused connection must fail at once with a backend error naming {url}, got {other:?}"),
    }
}

async fn wait_for_recovery(cache: &Cache) -> Duration {
    let started = Instant::now();
    loop {
        if cache.set("back", "again", 60).await.is_ok()
            && cache.get::<String>("back").await.ok().flatten().as_deref() == Some("again")
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the cache did not recover within 30 s of Redis returning"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_mode_misses_and_drops_writes_then_recovers() {
    let server = RedisServer::start();
    let cache = open(&url(&server), OnError::Degrade).await;
    cache.set("k", "v", 60).await.unwrap();
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );

    server.kill();
    for round in 0..3 {
        assert_eq!(
            cache.get::<String>("k").await.unwrap(),
            None,
            "round {round}"
        );
        cache.set("k", "dropped", 60).await.unwrap();
        assert!(!cache.add("a", "dropped", 60).await.unwrap());
        assert!(cache
            .get_many::<String, _>(["k", "a"])
            .await
            .unwrap()
            .is_empty());
        assert!(!cache.has_key("k").await.unwrap());
        assert!(!cache.delete("k").await.unwrap());
        let v: String = cache
            .get_or_set_with("g", 60, || async { "fresh".to_owned() })
            .await
            .unwrap();
        assert_eq!(v, "fresh", "get_or_set computes when Redis is down");
    }
    assert!(
        cache.metrics().errors >= 3,
        "failures are counted: {:?}",
        cache.metrics()
    );
    // incr has no made-up answer: it stays an error, the refused connection's.
    let err = cache.incr("n", 1).await.unwrap_err();
    assert_refused("incr", &err, &server.url(0));

    server.restart();
    let took = wait_for_recovery(&cache).await;
    eprintln!("recovered {took:?} after the restart");
    assert_eq!(
        server.cli(&["exists", "outage:1:back"]).trim(),
        "1",
        "writes reach the restarted server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raise_mode_fails_at_once_with_a_backend_error_naming_the_url_then_recovers() {
    let server = RedisServer::start();
    let cache = open(&url(&server), OnError::Raise).await;
    cache.set("k", "v", 60).await.unwrap();

    server.kill();
    for round in 0..3 {
        let err = cache.get::<String>("k").await.unwrap_err();
        assert_refused(&format!("get, round {round}"), &err, &server.url(0));
        let err = cache.set("k", "v", 60).await.unwrap_err();
        assert_refused(&format!("set, round {round}"), &err, &server.url(0));
    }

    server.restart();
    wait_for_recovery(&cache).await;
    assert_eq!(
        cache.get::<String>("k").await.unwrap(),
        None,
        "the restarted server kept nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_from_the_start_fails_fast_and_hides_the_password() {
    let refused = RefusedPort::new();
    let port = refused.port();
    let url = format!("redis://app:sekrit@127.0.0.1:{port}/0?{GENEROUS}");
    let cache = open(&url, OnError::Raise).await;
    for (what, err) in [
        ("get", cache.get::<String>("k").await.unwrap_err()),
        ("set", cache.set("k", "v", 60).await.unwrap_err()),
        ("incr", cache.incr("k", 1).await.unwrap_err()),
    ] {
        assert_refused(what, &err, &format!("redis://app:***@127.0.0.1:{port}/0"));
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(
                !text.contains("sekrit"),
                "{what}: the password leaked: {text}"
            );
        }
    }
    let degraded = open(&url, OnError::Degrade).await;
    assert_eq!(degraded.get::<String>("k").await.unwrap(), None);
}

/// A server that accepts connections but never answers (stopped with SIGSTOP): every call
/// ends with `Error::Timeout` at the configured bound, and answers resume after SIGCONT. The
/// timeout is the subject here, so the timeouts are tight (0.3 s + 0.3 s) and the call is
/// checked to end near the bound (with slack for a busy machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_times_out_at_the_bound() {
    let server = RedisServer::start();
    let url = format!("{}?connect_timeout=0.3&response_timeout=0.3", server.url(0));
    let cache = open(&url, OnError::Raise).await;
    cache.set("k", "v", 60).await.unwrap();
    let frozen = webcache_testkit::servers::Frozen::stop(server.pid());
    // connect_timeout + response_timeout, plus slack for a busy machine.
    let bound = Duration::from_millis(600) + Duration::from_secs(2);
    let quick = |what: &'static str, started: Instant| {
        let took = started.elapsed();
        assert!(took < bound, "{what} took {took:?} while Redis was hung");
    };
    let started = Instant::now();
    let err = cache.get::<String>("k").await.unwrap_err();
    quick("get", started);
    assert!(
        matches!(
            err,
            Error::Timeout {
                backend: "redis",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "a timeout before the bound: {:?}",
        started.elapsed()
    );
    let degraded = Cache::new(
        cache.backend().clone(),
        cache
            .options()
            .to_builder()
            .on_error(OnError::Degrade)
            .build(),
    );
    let started = Instant::now();
    assert_eq!(degraded.get::<String>("k").await.unwrap(), None);
    quick("degraded get", started);
    drop(frozen);
    wait_for_recovery(&cache).await;
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
}
