//! Redis going away under a running cache: in degrade mode reads miss and writes are dropped,
//! quickly; in raise mode callers get a typed error, quickly; and the same cache works again
//! once Redis is back on its port, without being rebuilt.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use webcache_core::{Cache, CacheOptions, Error, OnError};
use webcache_testkit::servers::free_port;
use webcache_testkit::servers::redis::RedisServer;

/// connect_timeout + response_timeout of the URLs below, plus scheduling slack.
const BOUND: Duration = Duration::from_millis(600 + 400);

async fn open(url: &str, on_error: OnError) -> Cache {
    Cache::new(
        Arc::new(common::backend(url).await),
        CacheOptions {
            key_prefix: "outage".into(),
            on_error,
            ..CacheOptions::default()
        },
    )
}

fn url(server: &RedisServer) -> String {
    format!("{}?connect_timeout=0.3&response_timeout=0.3", server.url(0))
}

/// Runs `call`, checks it ended within [`BOUND`], and returns its result.
async fn quick<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let result = call.await;
    let took = started.elapsed();
    assert!(took < BOUND, "{what} took {took:?} while Redis was down");
    result
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
            started.elapsed() < Duration::from_secs(10),
            "the cache did not recover within 10 s of Redis returning"
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
            quick("get", cache.get::<String>("k")).await.unwrap(),
            None,
            "round {round}"
        );
        quick("set", cache.set("k", "dropped", 60)).await.unwrap();
        assert!(!quick("add", cache.add("a", "dropped", 60)).await.unwrap());
        assert!(quick("get_many", cache.get_many::<String, _>(["k", "a"]))
            .await
            .unwrap()
            .is_empty());
        assert!(!quick("has_key", cache.has_key("k")).await.unwrap());
        assert!(!quick("delete", cache.delete("k")).await.unwrap());
        let v: String = quick(
            "get_or_set",
            cache.get_or_set_with("g", 60, || async { "fresh".to_owned() }),
        )
        .await
        .unwrap();
        assert_eq!(v, "fresh", "get_or_set computes when Redis is down");
    }
    assert!(
        cache.metrics().errors >= 3,
        "failures are counted: {:?}",
        cache.metrics()
    );
    // incr has no made-up answer: it stays an error, quickly.
    assert!(quick("incr", cache.incr("n", 1))
        .await
        .unwrap_err()
        .is_backend_failure());

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
async fn raise_mode_gives_a_typed_error_quickly_then_recovers() {
    let server = RedisServer::start();
    let cache = open(&url(&server), OnError::Raise).await;
    cache.set("k", "v", 60).await.unwrap();

    server.kill();
    for _ in 0..3 {
        let err = quick("get", cache.get::<String>("k")).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Backend {
                    backend: "redis",
                    ..
                } | Error::Timeout {
                    backend: "redis",
                    ..
                }
            ),
            "{err:?}"
        );
        if let Error::Backend { message, .. } = &err {
            assert!(
                message.contains(&format!("127.0.0.1:{}", server.port())),
                "the error names the server: {message}"
            );
        }
        let err = quick("set", cache.set("k", "v", 60)).await.unwrap_err();
        assert!(err.is_backend_failure(), "{err:?}");
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
    let port = free_port();
    let url =
        format!("redis://app:sekrit@127.0.0.1:{port}/0?connect_timeout=0.3&response_timeout=0.3");
    let cache = open(&url, OnError::Raise).await;
    let err = quick("get", cache.get::<String>("k")).await.unwrap_err();
    let text = err.to_string();
    assert!(err.is_backend_failure(), "{err:?}");
    assert!(!text.contains("sekrit"), "the password leaked: {text}");
    if matches!(err, Error::Backend { .. }) {
        assert!(
            text.contains(&format!("redis://app:***@127.0.0.1:{port}/0")),
            "{text}"
        );
    }
    let degraded = open(&url, OnError::Degrade).await;
    assert_eq!(
        quick("get", degraded.get::<String>("k")).await.unwrap(),
        None
    );
}

/// A server that accepts connections but never answers (stopped with SIGSTOP): every call
/// ends with `Error::Timeout` at the configured bound, and answers resume after SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_times_out_at_the_bound() {
    let server = RedisServer::start();
    let pid = server
        .cli(&["info", "server"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("process_id:").map(str::to_owned))
        .expect("INFO server gives the process id");
    let cache = open(&url(&server), OnError::Raise).await;
    cache.set("k", "v", 60).await.unwrap();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let started = Instant::now();
    let err = quick("get", cache.get::<String>("k")).await.unwrap_err();
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
        CacheOptions {
            on_error: OnError::Degrade,
            ..cache.options().clone()
        },
    );
    assert_eq!(
        quick("get", degraded.get::<String>("k")).await.unwrap(),
        None
    );
    signal("-CONT");
    wait_for_recovery(&cache).await;
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
}
