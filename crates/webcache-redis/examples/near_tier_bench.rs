//! Measures the near tier (`near_ttl`) over Redis with change reports (client tracking):
//!
//! 1. the cost of a near hit against a locmem hit, through the full `Cache` API, in one run
//!    (one task, 5 KB values, 1,000 hot keys, rounds alternating; Redis without a near tier
//!    for scale);
//! 2. how long another cache's write takes to reach this one: a reader holds a copy, a writer
//!    on its own connections sets a new value, and the reader reads in a loop until it sees
//!    it (measured from the writer's `set` returning).
//!
//! ```text
//! cargo run --release -p webcache-redis --example near_tier_bench
//! ROUNDS=7 WRITES=2000 cargo run --release -p webcache-redis --example near_tier_bench
//! ```
//!
//! Starts its own `redis-server` on a free port (the test fixture).
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: fail loudly, print results

use std::sync::Arc;
use std::time::{Duration, Instant};

use webcache_core::backends::NearCache;
use webcache_core::config::CacheConfig;
use webcache_core::{Cache, CacheOptions};
use webcache_redis::RedisBackend;
use webcache_testkit::bench::median;
use webcache_testkit::servers::redis::RedisServer;

const KEYS: usize = 1000;
const VALUE_BYTES: usize = 5 * 1024;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn redis_cache(url: &str, prefix: &str, near: bool) -> Cache {
    let mut spec = CacheConfig::from_url("default", url).unwrap().backend;
    let backend = RedisBackend::from_spec(&mut spec).await.unwrap();
    Cache::new(
        Arc::new(backend),
        CacheOptions::builder()
            .key_prefix(prefix)
            .near_ttl(near.then_some(Duration::from_secs(600)))
            .build(),
    )
}

fn serving(cache: &Cache) -> bool {
    cache.backend_as::<NearCache>().unwrap().serves_copies()
}

async fn wait_serving(cache: &Cache) {
    while !serving(cache) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Nanoseconds per `get_bytes` hit, over `ops` reads of the hot keys.
async fn hits(cache: &Cache, keys: &[String], ops: usize) -> f64 {
    let started = Instant::now();
    for i in 0..ops {
        let got = cache.get_bytes(&keys[i % KEYS]).await.unwrap();
        assert_eq!(got.map(|v| v.len()), Some(VALUE_BYTES));
    }
    started.elapsed().as_nanos() as f64 / ops as f64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_or("ROUNDS", 5);
    let ops = env_or("OPS", 200_000);
    let writes = env_or("WRITES", 1000);
    let server = RedisServer::start();
    let url = server.url(0);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("page.{i}")).collect();
    let value = vec![b'x'; VALUE_BYTES];

    // 1. Hits.
    let locmem = Cache::locmem();
    let near = redis_cache(&url, "hits", true).await;
    let plain = redis_cache(&url, "hits", false).await;
    wait_serving(&near).await;
    for key in &keys {
        locmem.set_bytes(key, &value, 600).await.unwrap();
        plain.set_bytes(key, &value, 600).await.unwrap();
    }
    // Let the reports of those writes arrive, then read every key once: the near tier keeps
    // its copies (nothing writes during the rounds).
    tokio::time::sleep(Duration::from_millis(200)).await;
    hits(&near, &keys, KEYS).await;
    let names = ["locmem", "near tier (Redis)", "Redis, no near tier"];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        results[0].push(hits(&locmem, &keys, ops).await);
        results[1].push(hits(&near, &keys, ops).await);
        results[2].push(hits(&plain, &keys, ops / 20).await);
    }
    println!(
        "\nget hit, full Cache API (5 KB values, {KEYS} keys, one task, median of {rounds} rounds)"
    );
    let base = median(&results[0]);
    for (name, rounds) in names.iter().zip(&results) {
        let m = median(rounds);
        println!(
            "  {name:<22} {m:>9.0} ns/op   {:.2}x locmem   rounds: {:?}",
            m / base,
            rounds.iter().map(|r| r.round() as u64).collect::<Vec<_>>()
        );
    }

    // 2. Invalidation delay.
    let reader = redis_cache(&url, "delay", true).await;
    let writer = redis_cache(&url, "delay", true).await;
    wait_serving(&reader).await;
    wait_serving(&writer).await;
    let mut delays = Vec::with_capacity(writes);
    let mut polls = 0u64;
    for i in 0..writes as u64 {
        writer.set("k", &i, 600).await.unwrap();
        // Let the report of that write arrive, then take a copy of it.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(reader.get::<u64>("k").await.unwrap(), Some(i));
        writer.set("k", &(i + 1_000_000), 600).await.unwrap();
        let written = Instant::now();
        while reader.get::<u64>("k").await.unwrap() != Some(i + 1_000_000) {
            polls += 1;
            tokio::task::yield_now().await;
        }
        delays.push(written.elapsed());
    }
    delays.sort();
    println!(
        "\nanother cache's write seen by this one ({writes} writes, from the writer's set returning)"
    );
    println!(
        "  median {:?}   p90 {:?}   p99 {:?}   max {:?}   reads of the old copy meanwhile: {:.1} per write",
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        percentile(&delays, 0.99),
        delays[delays.len() - 1],
        polls as f64 / writes as f64
    );
}
