//! A near tier over a backend that reports changes ([`Invalidations`]): copies are dropped
//! when reported changed, served only while the reports are connected, all dropped when they
//! connect again, and a read that raced with a reported change does not keep what it read.
//!
//! The backend here is a shared locmem store whose reports the test sends by hand, to reach
//! each state exactly; the Redis crate's `near_invalidation` tests drive the same through a
//! real server.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use webcache_core::backend::{
    async_trait, offer_invalidations, Backend, BackendStats, InvalidationFeed, Invalidations,
    KeyStream,
};
use webcache_core::backends::{LocMemBackend, LocMemConfig, NearCache};
use webcache_core::bytes::Bytes;
use webcache_core::{Cache, CacheOptions, Expiry, Result, Ttl};

/// A shared store that reports changes when the test says so, and whose reads can be held
/// between reading the store and answering (to race a change with a read).
#[derive(Debug)]
struct Reporting {
    store: LocMemBackend,
    accept: bool,
    feed: Mutex<Option<InvalidationFeed>>,
    /// When set, each `get` reads the store, then waits for one permit before answering.
    hold: Mutex<Option<Arc<Semaphore>>>,
    /// When set, each `set` stores, then takes this long to answer (a slow network).
    slow_set: Mutex<Option<Duration>>,
}

impl Reporting {
    fn new(accept: bool) -> Arc<Self> {
        offer_invalidations::<Reporting>();
        Arc::new(Reporting {
            store: LocMemBackend::private(LocMemConfig::default()),
            accept,
            feed: Mutex::new(None),
            hold: Mutex::new(None),
            slow_set: Mutex::new(None),
        })
    }

    fn feed(&self) -> InvalidationFeed {
        self.feed
            .lock()
            .unwrap()
            .clone()
            .expect("a near tier subscribed")
    }

    /// Changes `key` behind every near tier's back (nothing is reported).
    async fn write_unreported(&self, key: &str, value: &str) {
        self.store
            .set(key, Bytes::from(value.to_owned()), Expiry::Never)
            .await
            .unwrap();
    }
}

impl Invalidations for Reporting {
    fn subscribe(&self, feed: InvalidationFeed) -> bool {
        if self.accept {
            *self.feed.lock().unwrap() = Some(feed);
        }
        self.accept
    }
}

#[async_trait]
impl Backend for Reporting {
    fn name(&self) -> &'static str {
        "reporting"
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let value = self.store.get(key).await?;
        let hold = self.hold.lock().unwrap().clone();
        if let Some(hold) = hold {
            hold.acquire().await.unwrap().forget();
        }
        Ok(value)
    }
    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        self.store.set(key, value, expiry).await?;
        let slow = *self.slow_set.lock().unwrap();
        if let Some(slow) = slow {
            tokio::time::sleep(slow).await;
        }
        Ok(())
    }
    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.store.add(key, value, expiry).await
    }
    async fn set_if_present(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.store.set_if_present(key, value, expiry).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.store.delete(key).await
    }
    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.store.touch(key, expiry).await
    }
    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.store.incr(key, delta).await
    }
    async fn ttl(&self, key: &str) -> Result<Ttl> {
        self.store.ttl(key).await
    }
    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        self.store.clear(prefix).await
    }
    fn scan(&self, pattern: &str) -> KeyStream {
        self.store.scan(pattern)
    }
    async fn stats(&self) -> Result<BackendStats> {
        self.store.stats().await
    }
}

const KEY: &str = "k";

fn near(far: &Arc<Reporting>) -> NearCache {
    let far: Arc<dyn Backend> = far.clone();
    NearCache::new(far, Duration::from_secs(600), 100)
}

async fn read(near: &NearCache) -> Option<String> {
    near.get(KEY)
        .await
        .unwrap()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
}

#[tokio::test]
async fn copies_are_served_only_while_reports_are_connected() {
    let far = Reporting::new(true);
    let near = near(&far);
    far.write_unreported(KEY, "1").await;

    assert!(!near.serves_copies(), "not before the reports connect");
    assert_eq!(read(&near).await.as_deref(), Some("1"));
    far.write_unreported(KEY, "2").await;
    assert_eq!(
        read(&near).await.as_deref(),
        Some("2"),
        "nothing read before the reports connect is kept"
    );

    far.feed().connected().await;
    assert!(near.serves_copies());
    assert_eq!(read(&near).await.as_deref(), Some("2"));
    far.write_unreported(KEY, "3").await;
    assert_eq!(
        read(&near).await.as_deref(),
        Some("2"),
        "connected: the copy is served (nothing reported a change)"
    );

    far.feed().keys_changed(&[KEY]).await;
    assert_eq!(
        read(&near).await.as_deref(),
        Some("3"),
        "a reported change drops the copy"
    );

    far.feed().disconnected();
    assert!(!near.serves_copies());
    far.write_unreported(KEY, "4").await;
    assert_eq!(
        read(&near).await.as_deref(),
        Some("4"),
        "disconnected: the copy is not served"
    );
}

#[tokio::test]
async fn reconnecting_drops_every_copy() {
    let far = Reporting::new(true);
    let near = near(&far);
    far.feed().connected().await;
    far.write_unreported(KEY, "1").await;
    assert_eq!(read(&near).await.as_deref(), Some("1"));

    far.feed().disconnected();
    // A change made while the reports were down is never reported.
    far.write_unreported(KEY, "2").await;
    far.feed().connected().await;
    assert_eq!(read(&near).await.as_deref(), Some("2"));

    far.write_unreported(KEY, "3").await;
    far.feed().all_changed().await;
    assert_eq!(
        read(&near).await.as_deref(),
        Some("3"),
        "all_changed drops every copy"
    );
}

#[tokio::test]
async fn a_read_that_raced_with_a_reported_change_is_not_kept() {
    let far = Reporting::new(true);
    let near = Arc::new(near(&far));
    far.feed().connected().await;
    far.write_unreported(KEY, "old").await;

    // The read takes "old" from the store, then waits: meanwhile the key changes and the
    // change is reported (before the read's answer arrives, as a push can overtake it).
    let hold = Arc::new(Semaphore::new(0));
    *far.hold.lock().unwrap() = Some(hold.clone());
    let reading = tokio::spawn({
        let near = near.clone();
        async move { read(&near).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    far.write_unreported(KEY, "new").await;
    far.feed().keys_changed(&[KEY]).await;
    hold.add_permits(1);
    assert_eq!(reading.await.unwrap().as_deref(), Some("old"));

    *far.hold.lock().unwrap() = None;
    assert_eq!(
        read(&near).await.as_deref(),
        Some("new"),
        "the value read before the change was kept as a copy"
    );
}

#[tokio::test]
async fn get_many_and_set_many_follow_the_same_rules() {
    let far = Reporting::new(true);
    let near = near(&far);
    let keys: Vec<String> = vec!["a".into(), "b".into()];
    near.set_many(
        keys.iter()
            .map(|k| (k.clone(), Bytes::from_static(b"1")))
            .collect(),
        Expiry::Never,
    )
    .await
    .unwrap();
    far.write_unreported("a", "2").await;
    assert_eq!(
        near.get_many(&keys).await.unwrap(),
        vec![
            Some(Bytes::from_static(b"2")),
            Some(Bytes::from_static(b"1"))
        ],
        "nothing was kept before the reports connected"
    );
    far.feed().connected().await;
    near.get_many(&keys).await.unwrap();
    far.write_unreported("a", "3").await;
    far.write_unreported("b", "3").await;
    far.feed().keys_changed(&["b"]).await;
    assert_eq!(
        near.get_many(&keys).await.unwrap(),
        vec![
            Some(Bytes::from_static(b"2")),
            Some(Bytes::from_static(b"3"))
        ],
        "a's copy is served, b's was dropped"
    );
}

#[tokio::test]
async fn a_backend_that_declines_keeps_the_near_ttl_bound() {
    let far = Reporting::new(false);
    let near = near(&far);
    assert!(near.serves_copies(), "copies are served at once, as before");
    far.write_unreported(KEY, "1").await;
    assert_eq!(read(&near).await.as_deref(), Some("1"));
    far.write_unreported(KEY, "2").await;
    assert_eq!(
        read(&near).await.as_deref(),
        Some("1"),
        "kept up to near_ttl"
    );
}

#[tokio::test]
async fn the_feed_closes_with_the_near_tier_and_stats_tell_the_state() {
    let far = Reporting::new(true);
    let cache = Cache::new(
        far.clone(),
        CacheOptions::builder()
            .near_ttl(Duration::from_secs(60))
            .build(),
    );
    let state = |stats: BackendStats| {
        stats
            .extra
            .into_iter()
            .find(|(name, _)| name == "near_invalidations")
            .unwrap()
            .1
    };
    assert!(state(cache.backend().stats().await.unwrap()).starts_with("disconnected"));
    far.feed().connected().await;
    assert_eq!(state(cache.backend().stats().await.unwrap()), "connected");
    let feed = far.feed();
    assert!(!feed.is_closed());
    drop(cache);
    assert!(feed.is_closed(), "the backend may stop reporting");
    // Reports to a closed feed are ignored.
    feed.keys_changed(&[KEY]).await;
}

#[tokio::test]
async fn a_copy_never_outlives_the_shared_entry() {
    // Without reports the copy of a write lives its timeout: counted from before the write
    // was sent, not from its answer (which may come late), or it would be served after the
    // shared entry expired.
    let far = Reporting::new(false);
    let near = near(&far);
    *far.slow_set.lock().unwrap() = Some(Duration::from_secs(1));
    near.set(
        KEY,
        Bytes::from_static(b"v"),
        Expiry::After(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    while far.store.get(KEY).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        read(&near).await,
        None,
        "the copy outlived the shared entry"
    );
}
