//! Setup shared by the `#[cached]` and fragment tests: a fresh cache per test, on locmem or the
//! shared test Redis, so tests running at once never see each other's keys.

use webcache::{Cache, Caches};

/// The URL of a cache on `backend` (`locmem` or `redis`) whose keys start with `prefix`. Two
/// `Caches` built from one such URL share the stored data but not their connections (nor
/// their in-process single flight), as two processes would.
pub(crate) fn url(backend: &str, prefix: &str) -> String {
    match backend {
        "locmem" => format!("locmem://{prefix}"),
        #[cfg(feature = "redis")]
        "redis" => format!(
            "{}?key_prefix={prefix}",
            webcache_testkit::servers::redis::RedisServer::shared().url(0)
        ),
        other => panic!("no backend {other} in this build"),
    }
}

/// A key prefix no other test uses.
pub(crate) fn fresh_prefix() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!(
        "t{}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}

/// A fresh cache: locmem with its own name, or the shared test Redis with its own key prefix.
pub(crate) async fn cache(backend: &str) -> Cache {
    Caches::from_url(&url(backend, &fresh_prefix()))
        .await
        .unwrap()
        .default_cache()
        .clone()
}
