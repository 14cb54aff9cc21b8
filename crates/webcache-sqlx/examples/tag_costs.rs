//! What tags cost, in one run: a tagged hit against an untagged one, and `invalidate_tags` as
//! the number of entries carrying the tag grows (1, 1,000, 100,000), over locmem and over a
//! real Redis (started on a free loopback port).
//!
//! `cargo run --release -p webcache-sqlx --example tag_costs` (prints a Markdown table).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use webcache_core::{Cache, CacheOptions};
use webcache_redis::RedisBackend;
use webcache_testkit::servers::redis::RedisServer;

/// Reads timed per hit measurement.
const HITS: u32 = 20_000;
/// Invalidations timed per size.
const INVALIDATIONS: u32 = 2_000;
/// Values of about a cached row set.
const VALUE: &str = "[[1,\"teapot\",12],[2,\"kettle\",30],[3,\"cup\",4]]";

fn per_op(elapsed: Duration, n: u32) -> String {
    let ns = elapsed.as_nanos() as f64 / f64::from(n);
    if ns >= 1_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

async fn hits(cache: &Cache, name: &str, rounds: u32) {
    cache.set("plain", VALUE, 3600).await.unwrap();
    cache
        .tagged(["table:products"])
        .set("tagged", VALUE, 3600)
        .await
        .unwrap();
    // Warm up, and check both are hits.
    for key in ["plain", "tagged"] {
        assert!(cache.get::<String>(key).await.unwrap().is_some());
    }
    let mut results = Vec::new();
    for key in ["plain", "tagged"] {
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(cache.get::<String>(key).await.unwrap());
        }
        results.push(per_op(start.elapsed(), rounds));
    }
    println!(
        "| {name} | hit, untagged | {} |\n| {name} | hit, 1 tag | {} |",
        results[0], results[1]
    );
}

async fn invalidations(cache: &Cache, name: &str, rounds: u32) {
    for entries in [1usize, 1_000, 100_000] {
        let tag = format!("table:t{entries}");
        let tagged = cache.tagged([tag.as_str()]);
        for chunk in (0..entries).collect::<Vec<_>>().chunks(1_000) {
            tagged
                .set_many(chunk.iter().map(|i| (format!("{tag}:{i}"), VALUE)), 3600)
                .await
                .unwrap();
        }
        assert!(cache
            .get::<String>(&format!("{tag}:0"))
            .await
            .unwrap()
            .is_some());
        let start = Instant::now();
        for _ in 0..rounds {
            cache.invalidate_tags([tag.as_str()]).await.unwrap();
        }
        let took = per_op(start.elapsed(), rounds);
        assert!(cache
            .get::<String>(&format!("{tag}:0"))
            .await
            .unwrap()
            .is_none());
        println!("| {name} | invalidate_tags, entries carrying the tag: {entries} | {took} |");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let redis = RedisServer::start();
    // Unbounded, so that the 100,000 tagged entries all stay.
    let locmem = Cache::with_backend(webcache_core::backends::LocMemBackend::private(
        webcache_core::backends::LocMemConfig::default()
            .max_entries(None)
            .max_bytes(None)
            .cull_frequency(3),
    ));
    let remote = Cache::new(
        std::sync::Arc::new(RedisBackend::from_url(&redis.url(0)).unwrap()),
        CacheOptions::default(),
    );
    println!("| backend | operation | per operation |\n|---|---|---|");
    hits(&locmem, "locmem", HITS * 10).await;
    hits(&remote, "Redis", HITS).await;
    invalidations(&locmem, "locmem", INVALIDATIONS * 10).await;
    invalidations(&remote, "Redis", INVALIDATIONS).await;
}
