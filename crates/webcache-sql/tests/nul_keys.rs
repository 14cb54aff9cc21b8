//! PostgreSQL's key rules say "no NUL" (issue 11 #10): with `invalid_keys = "hash"` a key with
//! a NUL is stored under its hash like any other key the backend cannot hold, and with the
//! default policy it is a usage error that names the way out.

mod common;

use common::{backend, postgres_url};
use webcache_core::{Cache, CacheOptions, Error, InvalidKeyPolicy};

#[tokio::test]
async fn postgres_hashes_keys_with_a_nul_when_asked_to() {
    let url = postgres_url().await;
    let hashing = Cache::new(
        backend(&url).await,
        CacheOptions::builder()
            .key_prefix("nul-hash")
            .invalid_keys(InvalidKeyPolicy::Hash)
            .build(),
    );
    hashing.set("a\0b", &7, 60).await.unwrap();
    assert_eq!(hashing.get::<i64>("a\0b").await.unwrap(), Some(7));
    assert_eq!(hashing.incr("a\0b", 1).await.unwrap(), 8);
    assert!(hashing.delete("a\0b").await.unwrap());
    assert_eq!(hashing.get::<i64>("a\0b").await.unwrap(), None);

    let rejecting = Cache::new(backend(&url).await, CacheOptions::default());
    let err = rejecting.set("a\0b", &1, 60).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidKey { .. })
            && err.to_string().contains("NUL")
            && err.to_string().contains("invalid_keys = \"hash\""),
        "{err}"
    );
}
