//! A failover under a running cache, with real sentinels: the backend follows the master the
//! sentinels promote on its own (nothing is restarted or rebuilt), no write it answered as
//! done and that the old master had replicated is lost, and operations resume within a
//! bound that is generous on purpose (30 s; they take a few seconds).
//!
//! Each test starts its own group (a master, a replica, three sentinels), since it moves the
//! master. The timeouts are generous too: the subject is the switch, not speed, and a busy
//! machine stalls servers.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use webcache_core::{Cache, CacheOptions};
use webcache_testkit::servers::redis::RedisServer;
use webcache_testkit::servers::sentinel::RedisSentinels;

/// How long operations may take to resume after a failover at most. A failover takes a few
/// seconds (detection, election, promotion); the bound leaves room for a busy machine.
const RESUME_BOUND: Duration = Duration::from_secs(30);
const GENEROUS: &str = "connect_timeout=3&response_timeout=3";

async fn open(url: &str) -> Cache {
    Cache::new(
        Arc::new(common::backend(url).await),
        CacheOptions::builder()
            .key_prefix(format!("failover{:08x}", rand::random::<u32>()))
            .build(),
    )
}

/// One operation of the stream: when it started, whether it was a write, and whether it
/// succeeded.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    started: Instant,
    write: bool,
    ok: bool,
}

/// What the stream saw: every operation, and the writes answered as done (key index to
/// value).
#[derive(Debug, Default)]
struct Log {
    outcomes: Vec<Outcome>,
    acked: BTreeMap<u64, u64>,
    /// Reads of an acknowledged key that answered "missing": lost writes.
    lost_on_read: Vec<u64>,
}

/// Writes `k0, k1, ...` and reads back earlier acknowledged keys, until `stop`.
fn stream(
    cache: Cache,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let value = i * 7 + 1;
            let ok = cache.set(&format!("k{i}"), &value, 600).await.is_ok();
            {
                let mut log = log.lock().unwrap();
                log.outcomes.push(Outcome {
                    started,
                    write: true,
                    ok,
                });
                if ok {
                    log.acked.insert(i, value);
                }
            }
            // Read back an earlier acknowledged write: it must be there, or the call fail.
            let earlier = {
                let log = log.lock().unwrap();
                log.acked.range(..i).next_back().map(|(k, v)| (*k, *v))
            };
            if let Some((k, v)) = earlier {
                let started = Instant::now();
                let read = cache.get::<u64>(&format!("k{k}")).await;
                let mut log = log.lock().unwrap();
                log.outcomes.push(Outcome {
                    started,
                    write: false,
                    ok: read.is_ok(),
                });
                match read {
                    Ok(Some(found)) => assert_eq!(found, v, "k{k} holds another value"),
                    Ok(None) => log.lost_on_read.push(k),
                    Err(_) => {}
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// How long after `from` the writes (or reads) resumed: until the first success of one that
/// started after the last failure of its kind (zero if none failed).
fn resumed_after(outcomes: &[Outcome], from: Instant, write: bool) -> Duration {
    let kind = || outcomes.iter().filter(move |o| o.write == write);
    let Some(last_failure) = kind().filter(|o| !o.ok).map(|o| o.started).max() else {
        return Duration::ZERO;
    };
    let first_success = kind()
        .filter(|o| o.ok && o.started > last_failure)
        .map(|o| o.started)
        .min()
        .expect("operations succeed again after the last failure");
    first_success.saturating_duration_since(from)
}

/// Prints what the stream saw (for the record of how long a failover costs) and checks the
/// bound.
fn report(what: &str, log: &Log, from: Instant) {
    let count = |write: bool, ok: bool| {
        log.outcomes
            .iter()
            .filter(|o| o.write == write && o.ok == ok)
            .count()
    };
    let (writes, reads) = (
        resumed_after(&log.outcomes, from, true),
        resumed_after(&log.outcomes, from, false),
    );
    eprintln!(
        "{what}: writes {} ok / {} failed, resumed after {:.2} s; reads {} ok / {} failed, resumed after {:.2} s",
        count(true, true),
        count(true, false),
        writes.as_secs_f64(),
        count(false, true),
        count(false, false),
        reads.as_secs_f64(),
    );
    assert!(
        writes <= RESUME_BOUND,
        "writes resumed only after {writes:?}"
    );
    assert!(reads <= RESUME_BOUND, "reads resumed only after {reads:?}");
}

/// Waits (without blocking the runtime) until the stream has `n` successes that started after
/// `since`, for at most [`RESUME_BOUND`] from `since`.
async fn wait_for_successes_after(log: &Mutex<Log>, since: Instant, n: usize) {
    loop {
        let done = log
            .lock()
            .unwrap()
            .outcomes
            .iter()
            .filter(|o| o.ok && o.started > since)
            .count();
        if done >= n {
            return;
        }
        assert!(
            since.elapsed() < RESUME_BOUND,
            "operations did not resume within {RESUME_BOUND:?} of the failover ({done} successes since)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every acknowledged write, read from the master the sentinels name now.
async fn assert_all_acked_present(cache: &Cache, acked: &BTreeMap<u64, u64>) {
    let keys: Vec<String> = acked.keys().map(|k| format!("k{k}")).collect();
    for chunk in keys.chunks(200) {
        let found: std::collections::HashMap<String, u64> = cache.get_many(chunk).await.unwrap();
        for key in chunk {
            let index: u64 = key[1..].parse().unwrap();
            assert_eq!(
                found.get(key),
                Some(&acked[&index]),
                "{key} was acknowledged but is gone after the failover"
            );
        }
    }
}

fn replication_offset(server: &RedisServer) -> u64 {
    server
        .cli(&["info", "replication"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:")?.parse().ok())
        .unwrap_or(0)
}

/// `SENTINEL FAILOVER` during a stream of writes and reads. With `wait_replicas=1` a write is
/// answered as done only once the replica has it (`WAIT 1`; fewer acknowledgements fail the
/// call), so every acknowledged write must be on the promoted replica, and no read of an
/// acknowledged key may answer "missing". The cache follows the new master by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_loses_no_acknowledged_write_and_operations_resume() {
    let group = Arc::new(
        tokio::task::spawn_blocking(RedisSentinels::start)
            .await
            .unwrap(),
    );
    let cache = open(&group.url(0, &format!("?wait_replicas=1&{GENEROUS}"))).await;
    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = stream(cache.clone(), log.clone(), stop.clone());

    wait_for_successes_after(&log, Instant::now(), 100).await;
    let requested = Instant::now();
    let g = group.clone();
    let (old, new) = tokio::task::spawn_blocking(move || {
        let old = g.failover();
        (old, g.wait_for_master_other_than(old))
    })
    .await
    .unwrap();
    assert_ne!(old, new);
    let switched = Instant::now();
    // Resumed on the new master: successes that started after the switch.
    wait_for_successes_after(&log, switched, 100).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let log = std::mem::take(&mut *log.lock().unwrap());
    report(
        &format!("SENTINEL FAILOVER (master {old} -> {new})"),
        &log,
        requested,
    );
    assert!(
        log.lost_on_read.is_empty(),
        "acknowledged writes read as missing: {:?}",
        log.lost_on_read
    );
    assert_all_acked_present(&cache, &log.acked).await;
    // The writes after the switch are on the node that was the replica.
    let key = cache
        .make_key(&format!("k{}", log.acked.keys().last().unwrap()))
        .unwrap();
    let on_new = group.nodes().iter().find(|n| n.port() == new).unwrap();
    assert!(
        !on_new.cli(&["get", &key]).trim().is_empty(),
        "the last write is on the new master"
    );
}

/// The master is killed: the sentinels notice (after 1 s of silence), agree and promote the
/// replica, and the same cache carries on against it. The writes made before the kill were
/// replicated (the test waits until the replica's replication offset reaches the master's),
/// so all of them must be readable afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_without_a_restart() {
    let group = Arc::new(
        tokio::task::spawn_blocking(RedisSentinels::start)
            .await
            .unwrap(),
    );
    let cache = open(&group.url(0, &format!("?{GENEROUS}"))).await;
    let mut before = BTreeMap::new();
    for i in 0..200u64 {
        cache
            .set(&format!("k{i}"), &(i * 7 + 1), 600)
            .await
            .unwrap();
        before.insert(i, i * 7 + 1);
    }
    let g = group.clone();
    let (old, killed) = tokio::task::spawn_blocking(move || {
        let (master, replica) = (g.master(), g.replica());
        let target = replication_offset(master);
        let deadline = Instant::now() + Duration::from_secs(30);
        while replication_offset(replica) < target {
            assert!(Instant::now() < deadline, "the replica did not catch up");
            std::thread::sleep(Duration::from_millis(20));
        }
        let old = master.port();
        master.kill();
        (old, Instant::now())
    })
    .await
    .unwrap();

    // The stream rewrites the same keys with the same values, and reads back the replicated
    // ones from the start, during the outage too.
    let log = Arc::new(Mutex::new(Log {
        acked: before.clone(),
        ..Log::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = stream(cache.clone(), log.clone(), stop.clone());
    let g = group.clone();
    let new = tokio::task::spawn_blocking(move || g.wait_for_master_other_than(old))
        .await
        .unwrap();
    wait_for_successes_after(&log, Instant::now(), 100).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let log = std::mem::take(&mut *log.lock().unwrap());
    report(
        &format!("master killed (master {old} -> {new})"),
        &log,
        killed,
    );
    assert!(
        log.outcomes.iter().any(|o| !o.ok),
        "the kill was felt (otherwise the test saw no failover)"
    );
    assert!(
        log.lost_on_read.is_empty(),
        "acknowledged writes read as missing: {:?}",
        log.lost_on_read
    );
    assert_all_acked_present(&cache, &before).await;
    assert_all_acked_present(&cache, &log.acked).await;
}

/// With `wait_replicas=1`, a write the replica did not acknowledge (it is frozen) fails
/// instead of being answered as done: the master alone holds it, and a failover would lose
/// it. (Before, the shortfall was only logged and the write reported as stored.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_replica_did_not_take_is_not_acknowledged() {
    use webcache_core::Error;
    use webcache_testkit::servers::Frozen;
    let group = Arc::new(
        tokio::task::spawn_blocking(RedisSentinels::start)
            .await
            .unwrap(),
    );
    let cache = open(&group.url(0, "?wait_replicas=1&connect_timeout=3&response_timeout=1")).await;
    cache.set("before", &1, 600).await.unwrap();
    let g = group.clone();
    let frozen = tokio::task::spawn_blocking(move || Frozen::stop(g.replica().pid()))
        .await
        .unwrap();
    let err = cache.set("unreplicated", &2, 600).await.unwrap_err();
    assert!(
        matches!(&err, Error::Backend { message, .. } if message.contains("0 of 1 replicas")),
        "{err:?}"
    );
    drop(frozen);
    // Once the replica is back, writes are acknowledged again.
    let deadline = Instant::now() + RESUME_BOUND;
    while cache.set("after", &3, 600).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "writes not acknowledged after the replica returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A replica that stops answering while the sentinels still list it (they wait
/// `down-after-milliseconds`, 30 s by default, before calling it down): reads look for a
/// replica once, find none that answers, and go to the master for a while, rather than each
/// read queueing behind its own lookup (a `ROLE` check that waits for the frozen replica)
/// until the reads time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_master_while_the_listed_replica_is_silent() {
    use webcache_testkit::servers::Frozen;
    let group = Arc::new(
        tokio::task::spawn_blocking(RedisSentinels::start)
            .await
            .unwrap(),
    );
    let g = group.clone();
    tokio::task::spawn_blocking(move || {
        for sentinel in g.sentinels() {
            let answer = sentinel.cli(&[
                "sentinel",
                "set",
                "mymaster",
                "down-after-milliseconds",
                "120000",
            ]);
            assert_eq!(answer.trim(), "OK", "{answer}");
        }
    })
    .await
    .unwrap();
    let cache = open(&group.url(
        0,
        "?read_from_replicas=true&wait_replicas=1&connect_timeout=2&response_timeout=2",
    ))
    .await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for key in &keys {
        cache.set(key, &1, 600).await.unwrap();
        assert_eq!(cache.get::<i32>(key).await.unwrap(), Some(1));
    }
    let g = group.clone();
    let frozen = tokio::task::spawn_blocking(move || Frozen::stop(g.replica().pid()))
        .await
        .unwrap();
    // The reads on the connection to the frozen replica time out (a timeout is not retried
    // elsewhere, so that a call never takes two deadlines); the connection is then dropped.
    let _ = cache.get::<i32>("k0").await;
    let reads = keys.iter().map(|key| {
        let cache = cache.clone();
        let key = key.clone();
        tokio::spawn(async move { cache.get::<i32>(&key).await })
    });
    let mut failed = Vec::new();
    for (key, read) in keys.iter().zip(futures::future::join_all(reads).await) {
        match read.unwrap() {
            Ok(Some(1)) => {}
            other => failed.push(format!("{key}: {other:?}")),
        }
    }
    drop(frozen);
    assert!(
        failed.is_empty(),
        "reads failed while the replica was silent: {failed:?}"
    );
}
