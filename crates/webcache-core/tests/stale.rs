//! Stale windows on the low-level API (`get_or_set_with_stale`): a stale value is served at
//! once while one refresh runs in the background, a failed refresh keeps it until its window
//! ends, and past the window callers wait. Computations are counted; the only times waited for
//! are the fresh times and windows themselves, with generous margins.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use webcache_core::{entry, Cache, Error, Lifetime, Timeout, Ttl};

const FRESH: Duration = Duration::from_millis(200);
/// Long enough that nothing in a test outlives the window by accident.
const WINDOW: Duration = Duration::from_secs(60);
const PATIENCE: Duration = Duration::from_secs(10);

async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Polls `check` until it holds, for at most [`PATIENCE`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        sleep(Duration::from_millis(20)).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_value_is_served_at_once_while_one_refresh_runs_in_the_background() {
    let cache = Cache::locmem();
    prime(&cache, "k", "old", FRESH, WINDOW).await;
    sleep(FRESH + Duration::from_millis(100)).await;

    // The refresh cannot finish until the gate opens: every caller that returns "old" before
    // that did not wait for it.
    let gate = Arc::new(Semaphore::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (cache, gate, calls) = (cache.clone(), gate.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get_or_set_with_stale("k", FRESH, WINDOW, move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        drop(gate.acquire().await.unwrap());
                        "new".to_owned()
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for caller in callers {
        let served = tokio::time::timeout(PATIENCE, caller)
            .await
            .expect("a caller waited for the refresh instead of being served the stale value");
        assert_eq!(served.unwrap(), "old");
    }
    // The callers are gone; the refresh they started is not.
    eventually("the refresh starts", async || {
        calls.load(Ordering::SeqCst) == 1
    })
    .await;
    gate.add_permits(1);
    eventually("the refreshed value is stored", async || {
        cache.get::<String>("k").await.unwrap().as_deref() == Some("new")
    })
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one refresh per key in this process"
    );
    // Fresh again: no computation.
    let v: String = cache
        .get_or_set_with_stale("k", FRESH, WINDOW, || async {
            panic!("a fresh value is not recomputed")
        })
        .await
        .unwrap();
    assert_eq!(v, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_window_callers_wait_for_the_computation() {
    let cache = Cache::locmem();
    let window = Duration::from_millis(300);
    prime(&cache, "k", "old", FRESH, window).await;
    sleep(FRESH + window + Duration::from_millis(200)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let v: String = cache
        .get_or_set_with_stale("k", FRESH, window, move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            "new".to_owned()
        })
        .await
        .unwrap();
    assert_eq!(v, "new", "past its window the old value is gone");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[derive(Debug, PartialEq)]
struct Upstream(String);

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for Upstream {
    fn from(e: Error) -> Self {
        Upstream(e.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_serving_the_stale_value_until_the_window_ends() {
    let cache = Cache::locmem();
    let window = Duration::from_millis(1500);
    prime(&cache, "k", "old", FRESH, window).await;
    let stored_at = Instant::now();
    sleep(FRESH + Duration::from_millis(100)).await;

    let failures = Arc::new(AtomicUsize::new(0));
    let failing = |failures: Arc<AtomicUsize>| {
        move || async move {
            failures.fetch_add(1, Ordering::SeqCst);
            Err::<String, _>(Upstream("upstream down".into()))
        }
    };
    let v = cache
        .try_get_or_set_with_stale("k", FRESH, window, failing(failures.clone()))
        .await;
    assert_eq!(v, Ok("old".to_owned()));
    eventually("the refresh fails", async || {
        failures.load(Ordering::SeqCst) == 1
    })
    .await;
    // The failure kept the stale value; the next caller is served it and tries again.
    eventually(
        "a second refresh is tried after the first failed",
        async || {
            let v = cache
                .try_get_or_set_with_stale("k", FRESH, window, failing(failures.clone()))
                .await;
            assert_eq!(v, Ok("old".to_owned()), "stale-if-error");
            failures.load(Ordering::SeqCst) >= 2
        },
    )
    .await;
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("old")
    );

    // Past the window the caller waits for its own computation and gets its error.
    let end = stored_at + FRESH + window + Duration::from_millis(200);
    sleep(end.saturating_duration_since(Instant::now())).await;
    let before = failures.load(Ordering::SeqCst);
    let v = cache
        .try_get_or_set_with_stale("k", FRESH, window, failing(failures.clone()))
        .await;
    assert_eq!(v, Err(Upstream("upstream down".into())));
    assert_eq!(failures.load(Ordering::SeqCst), before + 1);
    assert!(
        !cache.has_key("k").await.unwrap(),
        "a failure stores nothing"
    );
}

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
