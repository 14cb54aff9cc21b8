//! The cross-process lease of the stale family (`get_or_set_with_stale`), written once and run
//! by `webcache-core` on one shared locmem and by the Redis and memcached crates on a real
//! server: two `Cache`s over separate connections to one store stand for two processes (each
//! has its own single-flight state, so only the lease keeps them apart).
//!
//! Each case takes `make`, which builds a new `Cache` (a new connection) with the case's key
//! prefix; it may be called inside another runtime than the test's.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use webcache_core::Cache;

/// Fresh for a whole second: memcached keeps whole seconds (the fresh time is the entry's own,
/// but the backend keeps fresh + window).
pub const FRESH: Duration = Duration::from_secs(1);
/// Long enough that nothing in a case outlives the window.
pub const WINDOW: Duration = Duration::from_secs(120);
/// The longest any step waits on a busy machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// Time for a second process to compute if it wrongly would (it starts at once).
const SETTLE: Duration = Duration::from_millis(700);

/// A key prefix no other case or run shares.
pub fn prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("lease{}x{nanos:08x}", std::process::id())
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A computation that counts its runs and finishes when the gate opens.
fn gated(
    calls: &Arc<AtomicUsize>,
    gate: &Arc<Semaphore>,
    value: &str,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + 'static
{
    let (calls, gate, value) = (calls.clone(), gate.clone(), value.to_owned());
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            drop(gate.acquire().await.unwrap());
            value
        })
    }
}

async fn prime(cache: &Cache, key: &str) {
    let v: String = cache
        .get_or_set_with_stale(key, FRESH, WINDOW, || async { "old".to_owned() })
        .await
        .unwrap();
    assert_eq!(v, "old");
    tokio::time::sleep(FRESH + Duration::from_millis(100)).await;
}

/// A stale value read by several callers in two processes at once is refreshed once in all:
/// the process that takes the lease refreshes, the other serves stale and starts none.
pub async fn refresh_runs_once_across_processes(make: impl Fn() -> Cache) {
    let (a, b) = (make(), make());
    prime(&a, "k").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let callers: Vec<_> = [&a, &b, &a, &b, &a, &b]
        .into_iter()
        .enumerate()
        .map(|(i, cache)| {
            let (cache, compute) = (cache.clone(), gated(&calls, &gate, &format!("new{i}")));
            tokio::spawn(async move {
                cache
                    .get_or_set_with_stale("k", FRESH, WINDOW, compute)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for caller in callers {
        let served = tokio::time::timeout(PATIENCE, caller)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(served, "old", "the stale value is served at once");
    }
    eventually("one process starts the refresh", async || {
        calls.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "while one process refreshes, the other starts no refresh of its own"
    );
    gate.add_permits(100);
    eventually(
        "the refreshed value is seen by both processes",
        async || {
            let (x, y) = (
                a.get::<String>("k").await.unwrap(),
                b.get::<String>("k").await.unwrap(),
            );
            x.as_deref().is_some_and(|x| x != "old") && x == y
        },
    )
    .await;
    // Fresh again: neither process refreshes any more.
    for cache in [&a, &b] {
        let _: String = cache
            .get_or_set_with_stale("k", FRESH, WINDOW, gated(&calls, &gate, "again"))
            .await
            .unwrap();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one refresh across both processes"
    );

    // The lease was released with the write: once the value is stale again, the next
    // refresh runs at once (not after the lease would have expired).
    tokio::time::sleep(FRESH + Duration::from_millis(100)).await;
    let _: String = b
        .get_or_set_with_stale("k", FRESH, WINDOW, gated(&calls, &gate, "third"))
        .await
        .unwrap();
    eventually("the next expiry is refreshed again", async || {
        calls.load(Ordering::SeqCst) == 2
    })
    .await;
    eventually("the second refresh is stored", async || {
        a.get::<String>("k").await.unwrap().as_deref() == Some("third")
    })
    .await;
}

/// A key missing in two processes at once is computed once: the process with the lease
/// computes, the other waits for its value and returns it.
pub async fn miss_computes_once_across_processes(make: impl Fn() -> Cache) {
    let (a, b) = (make(), make());
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let callers: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .enumerate()
        .map(|(i, cache)| {
            let (cache, compute) = (cache.clone(), gated(&calls, &gate, &format!("v{i}")));
            tokio::spawn(async move {
                cache
                    .get_or_set_with_stale("m", FRESH, WINDOW, compute)
                    .await
                    .unwrap()
            })
        })
        .collect();
    eventually("one process computes", async || {
        calls.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "while one process computes a missing value, the other waits for it"
    );
    gate.add_permits(100);
    let mut values = Vec::new();
    for caller in callers {
        values.push(
            tokio::time::timeout(PATIENCE, caller)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        values.iter().all(|v| *v == values[0]),
        "every caller in both processes gets the one computed value: {values:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A process that took the lease and then froze (or died) mid-refresh holds nobody up for
/// long: its lease is not renewed, expires, and the next stale read elsewhere refreshes.
pub async fn a_crashed_holders_lease_expires(make: impl Fn() -> Cache + Send + Sync + 'static) {
    let make = Arc::new(make);
    let a = make();
    prime(&a, "k").await;

    // The holder: its own runtime on one thread, frozen inside the refresh it started (a
    // blocking sleep stops the thread, so nothing renews or releases the lease).
    let (started, holding) = std::sync::mpsc::channel();
    let holder = make.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let cache = holder();
            let served: String = cache
                .get_or_set_with_stale("k", FRESH, WINDOW, move || async move {
                    started.send(()).unwrap();
                    std::thread::sleep(Duration::from_secs(3600));
                    "frozen".to_owned()
                })
                .await
                .unwrap();
            assert_eq!(served, "old");
            // Let the spawned refresh run on this thread until it freezes it.
            std::future::pending::<()>().await;
        });
    });
    tokio::task::spawn_blocking(move || holding.recv_timeout(PATIENCE))
        .await
        .unwrap()
        .expect("the holder started its refresh");
    let held_since = Instant::now();

    let b = make();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(100));
    let served: String = b
        .get_or_set_with_stale("k", FRESH, WINDOW, gated(&calls, &gate, "new"))
        .await
        .unwrap();
    assert_eq!(served, "old");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The lease lasts 5 s; on a machine so busy that this point comes later, the check says
    // nothing and is skipped.
    if held_since.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "while the holder's lease lasts, nobody else refreshes"
        );
    }
    eventually(
        "the frozen holder's lease expires and the next stale read refreshes",
        async || {
            let _: String = b
                .get_or_set_with_stale("k", FRESH, WINDOW, gated(&calls, &gate, "new"))
                .await
                .unwrap();
            b.get::<String>("k").await.unwrap().as_deref() == Some("new")
        },
    )
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one refresh after the lease expired"
    );
}
