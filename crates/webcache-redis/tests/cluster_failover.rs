//! Redis Cluster: a master killed under load, with a replica ready to take over. The page
//! layer, with `on_error=degrade` and short timeouts, answers every request with 200 (misses
//! while the master's slots have no master) and serves hits again after the promotion,
//! without restarting anything.
//!
//! Run with `cargo test -p webcache-redis --test cluster_failover -- --nocapture` to see the
//! figures (requests answered and failed, seconds until the promotion and until hits resume).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webcache_core::backend::BackendFactory as _;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use webcache_core::config::CacheConfig;
use webcache_core::Cache;
use webcache_http::CachePageLayer;
use webcache_testkit::servers::redis::{RedisCluster, RedisServer};

/// Distinct pages, spread over the masters by their keys' slots.
const PAGES: u32 = 60;
/// Tasks sending requests one after another, all the time.
const WORKERS: usize = 4;
/// Generous bounds: the test shares two cores with several builds.
const REQUEST_BOUND: Duration = Duration::from_secs(10);
const RESUME_BOUND: Duration = Duration::from_secs(60);
const KEY_PREFIX: &str = "failover";

/// What one request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Hit,
    Miss,
    /// Not a 200, or no answer within [`REQUEST_BOUND`].
    Failed,
}

async fn request(app: &Router, page: u32) -> Answer {
    let request = Request::get(format!("/page/{page}"))
        .header("host", "example.com")
        .body(Body::empty())
        .unwrap();
    let answer = async {
        let response = app.clone().oneshot(request).await.unwrap();
        if response.status() != StatusCode::OK {
            return Answer::Failed;
        }
        let hit = response
            .headers()
            .get("x-cache")
            .is_some_and(|v| v.as_bytes() == b"HIT");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await;
        match body {
            Ok(body) if body == format!("page {page}").as_bytes() => {
                if hit {
                    Answer::Hit
                } else {
                    Answer::Miss
                }
            }
            _ => Answer::Failed,
        }
    };
    let started = Instant::now();
    let answer = tokio::time::timeout(REQUEST_BOUND, answer)
        .await
        .unwrap_or(Answer::Failed);
    if started.elapsed() > Duration::from_secs(2) {
        eprintln!(
            "page {page}: {answer:?} after {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    // A request answered without waiting for anything (a miss while the cache's breaker is
    // open) never gives its thread back: yield as a server's socket I/O would, so that the
    // load cannot starve the runtime's other tasks and timers.
    tokio::task::yield_now().await;
    answer
}

/// Asks for every page once, in order; panics past `deadline`.
async fn sweep(app: &Router, deadline: Instant, what: &str) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(PAGES as usize);
    for page in 0..PAGES {
        assert!(Instant::now() < deadline, "{what}: took too long");
        answers.push(request(app, page).await);
    }
    answers
}

/// Seconds since `start`, for progress lines.
fn at(start: Instant) -> String {
    format!("{:.1}s", start.elapsed().as_secs_f64())
}

/// How many of this cache's keys `node` holds.
fn keys_on(node: &RedisServer) -> usize {
    node.cli(&["--scan", "--pattern", &format!("{KEY_PREFIX}:*")])
        .lines()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_costs_no_page() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_test_writer()
        .try_init();
    let start = Instant::now();
    let cluster = RedisCluster::start_with_replicas(3, 1);
    let url = format!(
        "{}?connect_timeout=0.5&response_timeout=0.5&on_error=degrade&key_prefix={KEY_PREFIX}",
        cluster.url()
    );
    let mut config = CacheConfig::from_url("default", &url).unwrap();
    let backend = webcache_redis::RedisFactory
        .build(&mut config.backend)
        .await
        .unwrap();
    let cache = Cache::new(backend, config.options);
    let app = Router::new()
        .route(
            "/page/{n}",
            get(|Path(n): Path<u32>| async move { format!("page {n}") }),
        )
        .layer(CachePageLayer::new(cache.clone()).timeout(Duration::from_secs(600)));

    // Every page cached (pages are stored after answering: sweep until all hit).
    eprintln!("{}: cluster up", at(start));
    let warm = Instant::now() + RESUME_BOUND;
    while sweep(&app, warm, "caching every page")
        .await
        .iter()
        .any(|a| *a != Answer::Hit)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{}: every page cached", at(start));
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters");
    let victim = *masters.iter().max_by_key(|m| keys_on(m)).unwrap();
    assert!(keys_on(victim) > 0, "no page on any master");
    let replica = cluster.replicas_of(victim)[0];
    // A value on the victim's slots, read straight from Redis (not through the page layer,
    // which also answers from its own memory while a page's write is under way) to tell when
    // Redis serves those slots again.
    let probes: Vec<String> = (0..100).map(|i| format!("probe-{i}")).collect();
    for key in &probes {
        cache.set(key, "here", 600).await.unwrap();
    }
    let on_victim = victim.cli(&["--scan", "--pattern", &format!("{KEY_PREFIX}:*probe-*")]);
    let probe = probes
        .iter()
        .find(|k| on_victim.lines().any(|l| l.ends_with(&format!(":{k}"))))
        .expect("no probe key on the victim")
        .clone();
    // The replica has the pages too (what it will serve once promoted).
    let sync = Instant::now();
    while keys_on(replica) < keys_on(victim) {
        assert!(sync.elapsed() < RESUME_BOUND, "the replica never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Load: workers sweeping the pages until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let deadline = Instant::now() + 3 * RESUME_BOUND;
                while !stop.load(Ordering::Relaxed) {
                    answers.extend(sweep(&app, deadline, "load").await);
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let killed = Instant::now();
    victim.kill();
    eprintln!("{}: master on port {} killed", at(start), victim.port());
    // The promotion, watched from a thread of its own (redis-cli blocks).
    let port = replica.port();
    let watcher = std::thread::spawn(move || loop {
        let role = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "role"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if role.starts_with("master") {
            return Some(killed.elapsed());
        }
        if killed.elapsed() > RESUME_BOUND {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    });
    // Hits have resumed when Redis answers for the victim's slots again and then a whole
    // sweep hits (every page, the victim's included, comes from Redis or was stored again).
    let mut misses_seen = false;
    let mut redis_back: Option<Duration> = None;
    let mut watched = Vec::new();
    let resumed = loop {
        let sweep_started = killed.elapsed();
        let answers = sweep(&app, killed + RESUME_BOUND, "waiting for hits").await;
        assert!(
            !answers.contains(&Answer::Failed),
            "a request failed during the failover: {answers:?}"
        );
        misses_seen |= answers.contains(&Answer::Miss);
        watched.extend_from_slice(&answers);
        match redis_back {
            None => {
                if cache.get::<String>(&probe).await.unwrap().is_some() {
                    redis_back = Some(killed.elapsed());
                    eprintln!("{}: Redis serves the victim's slots again", at(start));
                }
            }
            Some(back) => {
                if back <= sweep_started && answers.iter().all(|a| *a == Answer::Hit) {
                    break killed.elapsed();
                }
            }
        }
    };
    assert!(misses_seen, "the kill was never felt: no misses");
    let promoted = watcher.join().unwrap();
    // A little more load after the recovery, then the tally.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = watched;
    for worker in workers {
        answers.extend(worker.await.unwrap());
    }
    let count = |which: Answer| answers.iter().filter(|a| **a == which).count();
    let (hits, misses, failed) = (
        count(Answer::Hit),
        count(Answer::Miss),
        count(Answer::Failed),
    );
    println!(
        "Redis Cluster, 3 masters with 1 replica each, one master killed under load ({WORKERS} \
         workers over {PAGES} pages): {} requests answered ({hits} hits, {misses} misses), \
         {failed} failed; replica promoted after {}, Redis answered for its slots after \
         {:.1} s, every page hit again {:.1} s after the kill",
        answers.len(),
        promoted.map_or("(not seen)".to_owned(), |p| format!(
            "{:.1} s",
            p.as_secs_f64()
        )),
        redis_back.unwrap_or_default().as_secs_f64(),
        resumed.as_secs_f64()
    );
    assert_eq!(failed, 0, "requests failed during the failover");
    assert!(
        promoted.is_some(),
        "the replica of the killed master was never promoted"
    );
}
