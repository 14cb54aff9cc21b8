//! A server reached through its Unix socket (`redis+unix://`): the conformance suite, and the
//! `db` option choosing the database.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::{Arc, OnceLock};

use webcache_core::backend::Backend;
use webcache_core::{Cache, CacheOptions};
use webcache_testkit::servers::redis::RedisServer;
use webcache_testkit::{conformance_suite, Harness};

/// The socket server of this test binary, started on first use.
fn server() -> &'static RedisServer {
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    SHARED.get_or_init(RedisServer::start_unix)
}

struct UnixSocket;

#[async_trait::async_trait]
impl Harness for UnixSocket {
    async fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(common::backend(&server().unix_url(0)).await)
    }
}

conformance_suite!(UnixSocket; skip: {
    eviction_keeps_the_bound: "Redis evicts by memory (maxmemory), it has no entry bound",
});

/// `?db=5` is database 5 of the server: what the cache writes there is seen over TCP in
/// database 5 and not in database 0.
#[tokio::test]
async fn the_db_option_chooses_the_database() {
    let server = server();
    let backend = common::backend(&server.unix_url(5)).await;
    let cache = Cache::new(Arc::new(backend), CacheOptions::builder().build());
    let key = format!("unix-db-{}", rand::random::<u32>());
    cache
        .set_bytes(&key, b"through the socket", 60)
        .await
        .unwrap();
    let stored = cache.make_key(&key).unwrap();
    assert_eq!(server.cli(&["-n", "5", "exists", &stored]).trim(), "1");
    assert_eq!(server.cli(&["-n", "0", "exists", &stored]).trim(), "0");
    assert_eq!(
        cache.get_bytes(&key).await.unwrap().as_deref(),
        Some(&b"through the socket"[..])
    );
}

/// A socket nobody listens on is an error when the cache is used, naming the socket, never a
/// hang or a panic; the cache is built all the same (nothing is dialled when it is built).
#[tokio::test]
async fn a_missing_socket_fails_the_call_in_words() {
    let url = "redis+unix:///nonexistent/webcache-test/redis.sock?db=0&connect_timeout=0.5&response_timeout=0.5";
    let cache = Cache::new(
        Arc::new(common::backend(url).await),
        CacheOptions::builder().build(),
    );
    let error = cache.get_bytes("k").await.unwrap_err().to_string();
    assert!(
        error.contains("/nonexistent/webcache-test/redis.sock") && error.contains("No such file"),
        "{error}"
    );
}
