//! Stale windows on the low-level API (`get_or_set_with_stale`), what the conformance cases do
//! not cover: plain reads of a stale value, the entry format with and without a window,
//! `lifetime`, and a refresh outside a runtime.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use webcache_core::backend::entry;
use webcache_core::{Cache, Error, Lifetime, Timeout, Ttl};

const FRESH: Duration = Duration::from_millis(200);
/// Long enough that nothing in a test outlives the window by accident.
const WINDOW: Duration = Duration::from_secs(60);

async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Stores `value` through the stale API (a miss: computed in the foreground).
async fn prime(cache: &Cache, key: &str, value: &str, fresh: Duration, window: Duration) {
    let value = value.to_owned();
    let stored: String = cache
        .get_or_set_with_stale(key, fresh, window, move || async move { value })
        .await
        .unwrap();
    assert!(!stored.is_empty());
}

// Serving stale at once with one background refresh, waiting past the window, and keeping the
// stale value when a refresh fails are conformance cases (webcache-testkit), run on locmem by
// this crate's conformance suite and on every other backend.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_reads_return_a_stale_value_and_old_entries_are_fresh() {
    let cache = Cache::locmem();
    prime(&cache, "k", "old", FRESH, WINDOW).await;
    sleep(FRESH + Duration::from_millis(100)).await;
    // `get` and the stale-unaware get_or_set read whatever the backend still holds.
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("old")
    );
    let v: String = cache
        .get_or_set_with("k", 60, || async { panic!("the value is there") })
        .await
        .unwrap();
    assert_eq!(v, "old");

    // An entry without a fresh-until time (plain `set`, or an older build) is fresh for as
    // long as the backend keeps it.
    cache.set("plain", "stored", 60).await.unwrap();
    let v: String = cache
        .get_or_set_with_stale("plain", FRESH, WINDOW, || async {
            panic!("an entry without a window is never stale")
        })
        .await
        .unwrap();
    assert_eq!(v, "stored");
}

#[tokio::test]
async fn without_a_window_the_entry_is_the_plain_one() {
    let cache = Cache::locmem();
    // No window, or a fresh time that never ends or keeps nothing: get_or_set_with.
    let n: i64 = cache
        .get_or_set_with_stale("n", 60, Duration::ZERO, || async { 5 })
        .await
        .unwrap();
    assert_eq!(n, 5);
    assert_eq!(
        cache.get_raw("n").await.unwrap().as_deref(),
        Some(&b"5"[..])
    );
    assert_eq!(cache.incr("n", 1).await.unwrap(), 6);
    let _: String = cache
        .get_or_set_with_stale("f", Timeout::Forever, WINDOW, || async { "f".to_owned() })
        .await
        .unwrap();
    assert_eq!(cache.ttl("f").await.unwrap(), Ttl::Forever);
    assert_eq!(cache.lifetime("f").await.unwrap(), Lifetime::Forever);
    let _: String = cache
        .get_or_set_with_stale("z", 0, WINDOW, || async { "z".to_owned() })
        .await
        .unwrap();
    assert!(!cache.has_key("z").await.unwrap(), "zero keeps nothing");

    // With a window even an integer is framed (it needs the header), so it is not incr-able.
    let n: i64 = cache
        .get_or_set_with_stale("w", 60, WINDOW, || async { 5 })
        .await
        .unwrap();
    assert_eq!(n, 5);
    assert_eq!(cache.get::<i64>("w").await.unwrap(), Some(5));
    let raw = cache.get_raw("w").await.unwrap().unwrap();
    assert!(entry::fresh_until(&raw).is_some());
    assert!(matches!(
        cache.incr("w", 1).await,
        Err(Error::NotAnInteger { .. })
    ));
}

#[tokio::test]
async fn lifetime_splits_fresh_and_stale() {
    let cache = Cache::locmem();
    let secs = Duration::from_secs;
    let _: String = cache
        .get_or_set_with_stale("w", 60, secs(300), || async { "v".to_owned() })
        .await
        .unwrap();
    let Lifetime::Expires { fresh, stale } = cache.lifetime("w").await.unwrap() else {
        panic!("expires")
    };
    assert!(fresh > secs(55) && fresh <= secs(60), "{fresh:?}");
    assert!(stale > secs(295) && stale <= secs(301), "{stale:?}");
    // `ttl` is how long the backend keeps it, window included.
    let Ttl::Remaining(total) = cache.ttl("w").await.unwrap() else {
        panic!("remaining")
    };
    assert!(total > secs(355) && total <= secs(360), "{total:?}");

    cache.set("plain", "v", 60).await.unwrap();
    let Lifetime::Expires { fresh, stale } = cache.lifetime("plain").await.unwrap() else {
        panic!("expires")
    };
    assert!(fresh > secs(55) && fresh <= secs(60), "{fresh:?}");
    assert_eq!(stale, Duration::ZERO);

    prime(&cache, "stale", "v", FRESH, WINDOW).await;
    sleep(FRESH + Duration::from_millis(100)).await;
    let Lifetime::Expires { fresh, stale } = cache.lifetime("stale").await.unwrap() else {
        panic!("expires")
    };
    assert_eq!(fresh, Duration::ZERO, "past its fresh time");
    assert!(stale > secs(55), "{stale:?}");

    cache.set("forever", "v", Timeout::Forever).await.unwrap();
    assert_eq!(cache.lifetime("forever").await.unwrap(), Lifetime::Forever);
    assert_eq!(cache.lifetime("missing").await.unwrap(), Lifetime::Missing);
}

/// Outside a tokio runtime there is nothing to spawn on: the refresh runs before the call
/// returns, never a panic.
#[test]
fn outside_a_runtime_the_refresh_runs_in_the_call() {
    let cache = Cache::locmem();
    futures::executor::block_on(async {
        prime(&cache, "k", "old", Duration::from_millis(50), WINDOW).await;
        std::thread::sleep(Duration::from_millis(100));
        let v: String = cache
            .get_or_set_with_stale("k", FRESH, WINDOW, || async { "new".to_owned() })
            .await
            .unwrap();
        assert_eq!(v, "old");
        assert_eq!(
            cache.get::<String>("k").await.unwrap().as_deref(),
            Some("new")
        );
    });
}
