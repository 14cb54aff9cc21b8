//! What every test binary of this crate shares.

use webcache_core::CacheConfig;
use webcache_redis::RedisBackend;

/// A backend built from a cache URL, as an application's configuration would build it.
pub(crate) async fn backend(url: &str) -> RedisBackend {
    let mut spec = CacheConfig::from_url("default", url).unwrap().backend;
    RedisBackend::from_spec(&mut spec).await.unwrap()
}
