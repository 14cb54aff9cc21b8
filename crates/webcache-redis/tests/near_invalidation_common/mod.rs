//! What the near-tier invalidation tests share, on one node and on a cluster.
#![allow(dead_code)] // Not every test binary uses every helper.

use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use webcache_core::backends::NearCache;
use webcache_core::{Cache, CacheOptions};
use webcache_testkit::servers::redis::RedisServer;

/// Far longer than any test waits: a copy that is still served was not invalidated.
pub(crate) const NEAR_TTL: Duration = Duration::from_secs(60);
/// How long a change may take to reach the other process in these tests (the goal is 100 ms;
/// BENCHMARKS.md has the measured delay). Generous for a busy machine.
pub(crate) const WITHIN: Duration = Duration::from_secs(5);
/// Tells a child process what to do: `URL\nPREFIX\nCOMMAND`.
pub(crate) const CHILD_ENV: &str = "WEBCACHE_NEAR_TEST_CHILD";
/// The password that locks new connections out of a server while reports must stay down.
const LOCK: &str = "near-test-lock";

/// A key prefix no other test uses.
pub(crate) fn prefix(name: &str) -> String {
    format!("near-{name}-{:08x}", rand::random::<u32>())
}

/// A cache with a near tier over its own connections to `url`, as one process has.
pub(crate) async fn process(url: &str, prefix: &str) -> Cache {
    Cache::new(
        Arc::new(crate::common::backend(url).await),
        CacheOptions::builder()
            .key_prefix(prefix)
            .near_ttl(NEAR_TTL)
            .build(),
    )
}

/// Whether `cache`'s near tier serves its copies now (its change reports are connected).
pub(crate) fn serving(cache: &Cache) -> bool {
    cache
        .backend_as::<NearCache>()
        .expect("the cache has a near tier")
        .serves_copies()
}

/// How many local copies `cache`'s near tier holds.
pub(crate) async fn copies(cache: &Cache) -> u64 {
    let stats = cache.backend().stats().await.unwrap();
    stats
        .extra
        .iter()
        .find(|(name, _)| name == "near_entries")
        .expect("the near tier reports its entries")
        .1
        .parse()
        .unwrap()
}

/// Waits (at most [`WITHIN`]) until `check` holds; panics naming `what` otherwise.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WITHIN;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "not seen within {WITHIN:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `cache`'s change reports are connected.
pub(crate) async fn wait_serving(cache: &Cache) {
    eventually("the change reports connect", || async { serving(cache) }).await;
}

/// Two processes with near tiers over `url`: each change one makes (set, set_many, delete,
/// tag invalidation, clear) is seen by the other long before `near_ttl`.
pub(crate) async fn writes_of_another_process_are_seen(url: &str) {
    let prefix = prefix("seen");
    let (a, b) = (process(url, &prefix).await, process(url, &prefix).await);
    wait_serving(&a).await;
    wait_serving(&b).await;
    let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();

    for key in &keys {
        a.set(key, &1, 600).await.unwrap();
        // Waited for, not assumed: where `b` reads from a replica, a write reaches it a moment
        // after the primary acknowledged it.
        eventually(&format!("b reads a's first write of {key}"), || async {
            b.get::<i32>(key).await.unwrap() == Some(1)
        })
        .await;
    }
    // The near tier's entry count is its store's estimate, which may lag a busy machine:
    // waited for, never assumed. Read again while waiting: over a replica, b's first reads
    // may have missed (the write had not reached it yet), and the change reports of those
    // reads can arrive after a later read made its copy, which they then drop (dropping is
    // always safe); a read after them keeps its copy.
    eventually("b keeps copies of what it reads", || async {
        for key in &keys {
            b.get::<i32>(key).await.unwrap();
        }
        copies(&b).await >= 1
    })
    .await;
    for key in &keys {
        a.set(key, &2, 600).await.unwrap();
    }
    for key in &keys {
        eventually(&format!("a's write of {key}"), || async {
            b.get::<i32>(key).await.unwrap() == Some(2)
        })
        .await;
    }

    a.delete(&keys[0]).await.unwrap();
    eventually("a's delete", || async {
        b.get::<i32>(&keys[0]).await.unwrap().is_none()
    })
    .await;

    a.set_many(keys.iter().map(|k| (k.as_str(), 3)), 600)
        .await
        .unwrap();
    for key in &keys {
        eventually(&format!("a's set_many of {key}"), || async {
            b.get::<i32>(key).await.unwrap() == Some(3)
        })
        .await;
    }

    a.tagged(["near-tag"]).set("tagged", &1, 600).await.unwrap();
    eventually("b reads a's tagged write", || async {
        b.get::<i32>("tagged").await.unwrap() == Some(1)
    })
    .await;
    a.invalidate_tags(["near-tag"]).await.unwrap();
    eventually("a's tag invalidation", || async {
        b.get::<i32>("tagged").await.unwrap().is_none()
    })
    .await;

    a.clear().await.unwrap();
    for key in &keys {
        eventually(&format!("a's clear, for {key}"), || async {
            b.get::<i32>(key).await.unwrap().is_none()
        })
        .await;
    }
}

/// Runs this test binary again as another process, running only `child_process` with
/// `command` (`set KEY N`, `invalidate TAG`, `clear`) on a near-tier cache of `url`.
pub(crate) fn run_child(url: &str, prefix: &str, command: &str) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process", "--test-threads=1", "--quiet"])
        .env(CHILD_ENV, format!("{url}\n{prefix}\n{command}"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the child process failed: {status}");
}

/// The child process's side of [`run_child`]; nothing when not run as a child.
pub(crate) async fn child_process() {
    let Ok(order) = std::env::var(CHILD_ENV) else {
        return; // Run as a normal test: nothing to do, the parent test drives it.
    };
    let mut lines = order.lines();
    let (url, prefix) = (lines.next().unwrap(), lines.next().unwrap());
    let command: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let cache = process(url, prefix).await;
    match command.as_slice() {
        ["set", key, n] => cache
            .set(key, &n.parse::<i32>().unwrap(), 600)
            .await
            .unwrap(),
        ["invalidate", tag] => cache.invalidate_tags([tag]).await.unwrap(),
        ["clear"] => cache.clear().await.unwrap(),
        other => panic!("unknown child command {other:?}"),
    }
}

/// Runs `redis-cli` on `server`, with the lock's password while it may be set.
fn cli(server: &RedisServer, args: &[&str]) -> String {
    let mut all = vec!["-a", LOCK, "--no-auth-warning"];
    all.extend_from_slice(args);
    server.cli(&all)
}

/// Two processes over `url` (served by `servers`). The change reports of both are cut (their
/// tracking connections killed, new connections refused by a password the running
/// connections do not need): copies are not served, so the other process's write is read at
/// once. When the reports are back, the copies taken before the cut are gone.
pub(crate) async fn stream_down_then_back(url: &str, servers: &[&RedisServer]) {
    let prefix = prefix("down");
    let (a, b) = (process(url, &prefix).await, process(url, &prefix).await);
    wait_serving(&a).await;
    wait_serving(&b).await;
    let keys: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
    let later: Vec<String> = (0..6).map(|i| format!("later{i}")).collect();
    for key in keys.iter().chain(&later) {
        b.set(key, &1, 600).await.unwrap();
        assert_eq!(a.get::<i32>(key).await.unwrap(), Some(1));
    }
    eventually("a keeps copies of what it read", || async {
        copies(&a).await >= 1
    })
    .await;

    for server in servers {
        assert_eq!(
            server.cli(&["config", "set", "requirepass", LOCK]).trim(),
            "OK"
        );
        for line in cli(server, &["client", "list"]).lines() {
            if line.contains("name=webcache-tracking") {
                let id = line
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("id="))
                    .unwrap();
                cli(server, &["client", "kill", "id", id]);
            }
        }
    }
    eventually("a notices its reports stopped", || async { !serving(&a) }).await;
    for key in keys.iter().chain(&later) {
        b.set(key, &2, 600).await.unwrap();
    }
    for key in &keys {
        assert_eq!(
            a.get::<i32>(key).await.unwrap(),
            Some(2),
            "a copy of {key} was served while nothing reported changes"
        );
    }
    assert!(!serving(&a), "the reports are still down");

    for server in servers {
        assert_eq!(
            cli(server, &["config", "set", "requirepass", ""]).trim(),
            "OK"
        );
    }
    wait_serving(&a).await;
    for key in &later {
        assert_eq!(
            a.get::<i32>(key).await.unwrap(),
            Some(2),
            "a copy of {key} taken before the reports stopped survived their return"
        );
    }
    // And copies are kept and invalidated again.
    assert_eq!(a.get::<i32>(&keys[0]).await.unwrap(), Some(2));
    b.set(&keys[0], &3, 600).await.unwrap();
    eventually("b's write after the reports came back", || async {
        a.get::<i32>(&keys[0]).await.unwrap() == Some(3)
    })
    .await;
}
