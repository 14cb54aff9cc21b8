//! The `_outcome` forms of the `get_or_set` family say what they did (issue 14): a hit, a
//! computation, a wait for another caller's computation, a stale value served.
//!
//! The waits are made certain without timing: each future is polled by hand up to the point
//! where it waits (locmem answers at once), and only then is the computation let go.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::{Cache, CacheOptions, Error, Outcome};

/// Polls `future` once and says that it is waiting (not finished).
async fn park<F: Future>(future: std::pin::Pin<&mut F>) {
    assert!(futures::poll!(future).is_pending(), "expected it to wait");
}

#[tokio::test]
async fn a_miss_is_computed_then_a_hit() {
    let cache = Cache::locmem();
    let (v, outcome) = cache
        .get_or_set_with_outcome("k", 60, || async { 1 })
        .await
        .unwrap();
    assert_eq!((v, outcome), (1, Outcome::Computed));
    assert!(!outcome.is_hit());
    let (v, outcome) = cache
        .get_or_set_with_outcome("k", 60, || async { 2 })
        .await
        .unwrap();
    assert_eq!((v, outcome), (1, Outcome::Hit));
    assert!(outcome.is_hit());
    // The plain forms are the same rules without the report.
    assert_eq!(
        cache
            .get_or_set_with("k", 60, || async { 3 })
            .await
            .unwrap(),
        1
    );
    // A value kept for no time is computed every time, and still returned.
    let (v, outcome) = cache
        .get_or_set_with_outcome("zero", 0, || async { 4 })
        .await
        .unwrap();
    assert_eq!((v, outcome), (4, Outcome::Computed));
    // A failed computation is an error, not an outcome, and stores nothing.
    let failed = cache
        .try_get_or_set_with_outcome("fails", 60, || async {
            Err::<i32, _>(Error::backend_msg("test", "no value"))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(cache.get::<i32>("fails").await.unwrap(), None);
}

#[tokio::test]
async fn concurrent_misses_wait_for_the_one_computation() {
    let cache = Cache::locmem();
    let runs = AtomicUsize::new(0);
    let (release, gate) = oneshot::channel::<()>();
    let mut leader = pin!(cache.get_or_set_with_outcome("k", 60, || async {
        runs.fetch_add(1, Ordering::SeqCst);
        gate.await.unwrap();
        7
    }));
    park(leader.as_mut()).await;
    let compute_again = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        8
    };
    let mut first = pin!(cache.get_or_set_with_outcome("k", 60, compute_again));
    let mut second = pin!(cache.get_or_set_with_outcome("k", 60, compute_again));
    park(first.as_mut()).await;
    park(second.as_mut()).await;
    release.send(()).unwrap();
    let (leader, first, second) = tokio::join!(leader, first, second);
    assert_eq!(leader.unwrap(), (7, Outcome::Computed));
    assert_eq!(first.unwrap(), (7, Outcome::Waited));
    assert_eq!(second.unwrap(), (7, Outcome::Waited));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_stale_family_says_fresh_stale_computed() {
    let cache = Cache::locmem();
    let fresh = Duration::from_millis(50);
    let window = Duration::from_secs(600);
    let (v, outcome) = cache
        .get_or_set_with_stale_outcome("k", fresh, window, || async { 1 })
        .await
        .unwrap();
    assert_eq!((v, outcome), (1, Outcome::Computed));
    // Past its fresh time (the clock only moves forward), within the window.
    tokio::time::sleep(fresh * 3).await;
    let (v, outcome) = cache
        .get_or_set_with_stale_outcome("k", fresh, window, || async { 2 })
        .await
        .unwrap();
    assert_eq!((v, outcome), (1, Outcome::Stale));
    assert!(outcome.is_hit());
    // Without a window the call is the plain family's, and says so.
    let (v, outcome) = cache
        .get_or_set_with_stale_outcome("plain", 60, Duration::ZERO, || async { 3 })
        .await
        .unwrap();
    assert_eq!((v, outcome), (3, Outcome::Computed));
    let (v, outcome) = cache
        .get_or_set_with_stale_outcome("plain", 60, Duration::ZERO, || async { 4 })
        .await
        .unwrap();
    assert_eq!((v, outcome), (3, Outcome::Hit));
}

#[tokio::test]
async fn a_miss_waiting_for_another_process_lease_says_waited() {
    // Two caches over one store: two processes' worth of single-flight state.
    let store: Arc<dyn Backend> = Arc::new(LocMemBackend::private(LocMemConfig::default()));
    let here = Cache::new(store.clone(), CacheOptions::default());
    let there = Cache::new(store, CacheOptions::default());
    let window = Duration::from_secs(600);
    let (release, gate) = oneshot::channel::<()>();
    let mut holder = pin!(
        there.get_or_set_with_stale_outcome("k", 60, window, || async {
            gate.await.unwrap();
            "theirs".to_owned()
        })
    );
    // It holds the lease and computes.
    park(holder.as_mut()).await;
    let ran_here = Arc::new(AtomicUsize::new(0));
    let runs = ran_here.clone();
    let mut waiter =
        pin!(
            here.get_or_set_with_stale_outcome("k", 60, window, move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                "ours".to_owned()
            })
        );
    // It found the lease taken and polls for the other's value.
    park(waiter.as_mut()).await;
    release.send(()).unwrap();
    let (holder, waiter) = tokio::join!(holder, waiter);
    assert_eq!(holder.unwrap(), ("theirs".to_owned(), Outcome::Computed));
    assert_eq!(waiter.unwrap(), ("theirs".to_owned(), Outcome::Waited));
    assert_eq!(ran_here.load(Ordering::SeqCst), 0);
}
