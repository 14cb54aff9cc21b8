//! `get`/`set` of 5 KB values from 16 concurrent tasks through a webcache [`Cache`] on Redis,
//! side by side with `redis-benchmark -c 16 -d 5000 -t get,set` (no pipelining) against the
//! same `redis-server`, started by this benchmark on a free port. Rounds alternate
//! (webcache, redis-benchmark, webcache, ...) and the medians are compared.
//!
//! ```text
//! cargo bench -p webcache-redis --bench vs_redis_benchmark            # 3 rounds of 100k ops
//! ROUNDS=5 OPS=200000 cargo bench -p webcache-redis --bench vs_redis_benchmark
//! ```
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: fail loudly, print results

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use webcache_core::backend::BackendFactory as _;

use webcache_core::config::CacheConfig;
use webcache_core::{Cache, CacheOptions};
use webcache_testkit::bench::median;
use webcache_testkit::servers::redis::RedisServer;

const TASKS: usize = 16;
const VALUE_BYTES: usize = 5000;
const KEYS: usize = 1000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Operations per second of `ops` calls of `op` spread over [`TASKS`] tasks.
async fn run(cache: &Cache, ops: usize, op: &'static str, value: &Arc<Vec<u8>>) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let cache = cache.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in (t..ops).step_by(TASKS) {
                    let key = format!("bench:{}", i % KEYS);
                    if op == "set" {
                        cache.set_bytes(&key, &value, 300).await.unwrap();
                    } else {
                        let got = cache.get_bytes(&key).await.unwrap();
                        assert_eq!(got.map(|v| v.len()), Some(VALUE_BYTES));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// `redis-benchmark`'s requests per second for SET and GET.
fn redis_benchmark(port: u16, ops: usize) -> (f64, f64) {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &TASKS.to_string(), "-d", &VALUE_BYTES.to_string()])
        .args(["-n", &ops.to_string(), "-t", "set,get", "-q"])
        .output()
        .expect("redis-benchmark is not installed (Debian: apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = |name: &str| -> f64 {
        // `-q` prints progress lines ending in \r, then "SET: 81037.28 requests per second, ...".
        text.split(['\r', '\n'])
            .filter_map(|line| line.trim().strip_prefix(&format!("{name}: ")))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .next_back()
            .unwrap_or_else(|| panic!("no {name} figure in redis-benchmark's output: {text}"))
    };
    (rate("SET"), rate("GET"))
}

fn main() {
    let rounds = env_or("ROUNDS", 3);
    let ops = env_or("OPS", 100_000);
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let value = Arc::new(vec![b'x'; VALUE_BYTES]);
    let (mut ours_set, mut ours_get, mut theirs_set, mut theirs_get) =
        (vec![], vec![], vec![], vec![]);
    runtime.block_on(async {
        let mut spec = CacheConfig::from_url("bench", &server.url(0)).unwrap().backend;
        let backend = webcache_redis::RedisFactory.build(&mut spec).await.unwrap();
        let cache = Cache::new(backend, CacheOptions::default());
        // Warm-up: connect and fill the keys that `get` reads.
        run(&cache, KEYS, "set", &value).await;
        for round in 1..=rounds {
            let set = run(&cache, ops, "set", &value).await;
            let get = run(&cache, ops, "get", &value).await;
            let (their_set, their_get) = redis_benchmark(server.port(), ops);
            println!(
                "round {round}: webcache set {set:>9.0}/s get {get:>9.0}/s | redis-benchmark set {their_set:>9.0}/s get {their_get:>9.0}/s"
            );
            ours_set.push(set);
            ours_get.push(get);
            theirs_set.push(their_set);
            theirs_get.push(their_get);
        }
    });
    // Per-round ratios compare runs made seconds apart, which cancels much of the noise of a
    // shared machine; the medians of the rates are printed too.
    let ratio = |ours: &[f64], theirs: &[f64]| {
        median(
            &ours
                .iter()
                .zip(theirs)
                .map(|(o, t)| o / t)
                .collect::<Vec<_>>(),
        )
    };
    let (set_ratio, get_ratio) = (ratio(&ours_set, &theirs_set), ratio(&ours_get, &theirs_get));
    let (os, og, ts, tg) = (
        median(&ours_set),
        median(&ours_get),
        median(&theirs_set),
        median(&theirs_get),
    );
    println!();
    println!("5 KB values, {TASKS} concurrent tasks/clients, {ops} ops per test, median of {rounds} rounds");
    println!("| operation | webcache (Cache over RedisBackend) | redis-benchmark -c {TASKS} -d {VALUE_BYTES} | ratio of medians | median of per-round ratios |");
    println!("|---|---|---|---|---|");
    println!(
        "| set | {os:.0} ops/s | {ts:.0} ops/s | {:.2} | {set_ratio:.2} |",
        os / ts
    );
    println!(
        "| get | {og:.0} ops/s | {tg:.0} ops/s | {:.2} | {get_ratio:.2} |",
        og / tg
    );
}
