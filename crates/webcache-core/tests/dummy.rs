//! The dummy backend's own documented semantics: it stores nothing.

use std::collections::HashMap;

use futures::StreamExt;
use webcache_core::backends::DummyBackend;
use webcache_core::{Cache, Error, Timeout, Ttl};

#[tokio::test]
async fn dummy_stores_nothing_and_says_so() {
    let c = Cache::with_backend(DummyBackend);
    c.set("k", "v", 60).await.unwrap();
    assert_eq!(c.get::<String>("k").await.unwrap(), None);
    assert!(
        c.add("k", "v", 60).await.unwrap(),
        "add reports it would have stored"
    );
    assert!(!c.has_key("k").await.unwrap());
    assert!(!c.delete("k").await.unwrap());
    assert!(!c.touch("k", 60).await.unwrap());
    assert!(matches!(
        c.incr("k", 1).await,
        Err(Error::KeyNotFound { .. })
    ));
    assert_eq!(c.ttl("k").await.unwrap(), Ttl::Missing);
    let v: u32 = c
        .get_or_set_with("k", Timeout::Default, || async { 5 })
        .await
        .unwrap();
    assert_eq!(v, 5, "get_or_set computes every time");
    c.set_many([("a", 1)], 60).await.unwrap();
    let many: HashMap<String, i32> = c.get_many(["a"]).await.unwrap();
    assert!(many.is_empty());
    assert_eq!(c.keys("*").count().await, 0);
    c.clear().await.unwrap();
    assert_eq!(c.metrics().hits, 0);
}
