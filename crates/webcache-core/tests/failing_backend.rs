//! What a cache does when its backend fails or hangs: typed errors by default, misses and
//! dropped writes in degrade mode, and an operation timeout that bounds every call.

use std::time::{Duration, Instant};

use webcache_core::backend::{async_trait, Backend, BackendStats, KeyStream};
use webcache_core::bytes::Bytes;
use webcache_core::{Cache, CacheOptions, Error, Expiry, OnError, Result, Ttl};

/// A backend whose server is unreachable (every call fails like a refused connection) or hangs.
#[derive(Debug)]
struct Unreachable {
    hang: bool,
}

impl Unreachable {
    async fn fail<T>(&self) -> Result<T> {
        if self.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Err(Error::backend_msg(
            "test",
            "connection refused (127.0.0.1:1)",
        ))
    }
}

#[async_trait]
impl Backend for Unreachable {
    fn name(&self) -> &'static str {
        "test"
    }
    async fn get(&self, _: &str) -> Result<Option<Bytes>> {
        self.fail().await
    }
    async fn set(&self, _: &str, _: Bytes, _: Expiry) -> Result<()> {
        self.fail().await
    }
    async fn add(&self, _: &str, _: Bytes, _: Expiry) -> Result<bool> {
        self.fail().await
    }
    async fn set_if_present(&self, _: &str, _: Bytes, _: Expiry) -> Result<bool> {
        self.fail().await
    }
    async fn delete(&self, _: &str) -> Result<bool> {
        self.fail().await
    }
    async fn touch(&self, _: &str, _: Expiry) -> Result<bool> {
        self.fail().await
    }
    async fn incr(&self, _: &str, _: i64) -> Result<i64> {
        self.fail().await
    }
    async fn ttl(&self, _: &str) -> Result<Ttl> {
        self.fail().await
    }
    async fn clear(&self, _: Option<&str>) -> Result<()> {
        self.fail().await
    }
    fn scan(&self, _: &str) -> KeyStream {
        Box::pin(futures::stream::once(async {
            Err(Error::backend_msg("test", "connection refused"))
        }))
    }
    async fn stats(&self) -> Result<BackendStats> {
        self.fail().await
    }
}

fn cache(on_error: OnError, hang: bool) -> Cache {
    Cache::new(
        std::sync::Arc::new(Unreachable { hang }),
        CacheOptions::builder()
            .on_error(on_error)
            .operation_timeout(Duration::from_millis(200))
            .build(),
    )
}

#[tokio::test]
async fn raise_mode_returns_typed_errors() {
    let c = cache(OnError::Raise, false);
    let err = c.get::<String>("k").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                backend: "test",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(c.set("k", "v", 60).await.is_err());
    assert_eq!(c.metrics().errors, 2);
}

#[tokio::test]
async fn degrade_mode_turns_failures_into_misses_and_dropped_writes() {
    let c = cache(OnError::Degrade, false);
    assert_eq!(c.get::<String>("k").await.unwrap(), None);
    c.set("k", "v", 60).await.unwrap();
    assert!(!c.add("k", "v", 60).await.unwrap());
    assert!(!c.delete("k").await.unwrap());
    assert_eq!(c.ttl("k").await.unwrap(), Ttl::Missing);
    // get_or_set still answers with the computed value.
    let v: u32 = c.get_or_set_with("k", 60, || async { 9 }).await.unwrap();
    assert_eq!(v, 9);
    // incr cannot invent a value: it stays an error.
    assert!(c.incr("k", 1).await.is_err());
    assert!(c.metrics().errors >= 6);
}

#[tokio::test]
async fn a_hanging_backend_is_bounded_by_the_operation_timeout() {
    for mode in [OnError::Raise, OnError::Degrade] {
        let c = cache(mode, true);
        let started = Instant::now();
        let result = c.get::<String>("k").await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        match mode {
            OnError::Raise => assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}"),
            OnError::Degrade => assert_eq!(result.unwrap(), None),
        }
    }
}
