//! Throughput of the file backend against plain file reads and writes driven the same way.
//!
//! `cargo bench -p webcache-file --bench file`
//!
//! In a fresh directory under the system temporary directory, measures get (hit) and set
//! operations per second with 16 concurrent tasks, 5 KB incompressible values and 1,000 keys:
//!
//! - `plain files`: `std::fs::read`, and write-to-temporary-then-rename, on tokio's blocking
//!   pool: the least a safe file cache must do;
//! - `FileCache backend`: webcache's backend through the `Backend` trait (hashed names, header,
//!   expiry check, and for writes the striped `flock` and the entry count);
//! - `full Cache API`: `Cache::get_bytes`/`set_bytes` over it.
//!
//! Rounds alternate between the three (A B C A B C ...) and the median round is reported, with
//! its ratio to the plain files.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use webcache_core::bytes::Bytes;
use webcache_core::{Backend, Cache, CacheOptions, Expiry};
use webcache_file::{FileCache, FileConfig};
use webcache_testkit::servers::temp_dir;

const TASKS: usize = 16;
const KEYS: usize = 1000;
const VALUE_LEN: usize = 5 * 1024;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 5;
const EXPIRY: Expiry = Expiry::After(Duration::from_secs(300));

/// Runs `TASKS` loops of `op` for one round; returns operations per second.
async fn round<F, Fut>(op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|t| {
            let (stop, done, op) = (stop.clone(), done.clone(), op.clone());
            tokio::spawn(async move {
                let mut i = t * 7919;
                while !stop.load(Ordering::Relaxed) {
                    op(i).await;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn plain_path(dir: &std::path::Path, i: u64) -> PathBuf {
    dir.join(format!("plain-{}", i % KEYS as u64))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let root = temp_dir("file-bench");
    let plain_dir = Arc::new(root.join("plain"));
    std::fs::create_dir_all(plain_dir.as_ref()).unwrap();
    let mut config = FileConfig::new(root.join("cache"));
    config.max_entries = Some(10_000);
    let backend = Arc::new(FileCache::open(&config).unwrap());
    let cache = Cache::new(backend.clone(), CacheOptions::default());
    let value = Bytes::from(
        (0..VALUE_LEN)
            .map(|_| rand::random::<u8>())
            .collect::<Vec<u8>>(),
    );
    for i in 0..KEYS as u64 {
        std::fs::write(plain_path(&plain_dir, i), &value).unwrap();
        backend
            .set(&format!("bench:1:page.{i}"), value.clone(), EXPIRY)
            .await
            .unwrap();
        cache
            .set_bytes(&format!("page.{i}"), &value, 300)
            .await
            .unwrap();
    }
    let names = ["plain files", "FileCache backend", "full Cache API"];
    for op in ["get", "set"] {
        let mut results = vec![Vec::new(); names.len()];
        for _ in 0..ROUNDS {
            for (c, slot) in results.iter_mut().enumerate() {
                let (dir, backend, cache, value) = (
                    plain_dir.clone(),
                    backend.clone(),
                    cache.clone(),
                    value.clone(),
                );
                let ops = match (op, c) {
                    ("get", 0) => {
                        round(move |i| {
                            let path = plain_path(&dir, i);
                            async move {
                                let read = tokio::task::spawn_blocking(move || std::fs::read(path));
                                assert_eq!(read.await.unwrap().unwrap().len(), VALUE_LEN);
                            }
                        })
                        .await
                    }
                    (_, 0) => {
                        round(move |i| {
                            let (path, value) = (plain_path(&dir, i), value.clone());
                            async move {
                                tokio::task::spawn_blocking(move || {
                                    let tmp = path
                                        .with_extension(format!("tmp{}", rand::random::<u32>()));
                                    std::fs::write(&tmp, &value).unwrap();
                                    std::fs::rename(&tmp, &path).unwrap();
                                })
                                .await
                                .unwrap();
                            }
                        })
                        .await
                    }
                    ("get", 1) => {
                        round(move |i| {
                            let backend = backend.clone();
                            async move {
                                let key = format!("bench:1:page.{}", i % KEYS as u64);
                                assert!(backend.get(&key).await.unwrap().is_some());
                            }
                        })
                        .await
                    }
                    (_, 1) => {
                        round(move |i| {
                            let (backend, value) = (backend.clone(), value.clone());
                            async move {
                                let key = format!("bench:1:page.{}", i % KEYS as u64);
                                backend.set(&key, value, EXPIRY).await.unwrap();
                            }
                        })
                        .await
                    }
                    ("get", _) => {
                        round(move |i| {
                            let cache = cache.clone();
                            async move {
                                let key = format!("page.{}", i % KEYS as u64);
                                assert!(cache.get_bytes(&key).await.unwrap().is_some());
                            }
                        })
                        .await
                    }
                    _ => {
                        round(move |i| {
                            let (cache, value) = (cache.clone(), value.clone());
                            async move {
                                let key = format!("page.{}", i % KEYS as u64);
                                cache.set_bytes(&key, &value, 300).await.unwrap();
                            }
                        })
                        .await
                    }
                };
                slot.push(ops);
            }
        }
        let baseline = median(results[0].clone());
        println!("\n{op} (5 KB values, {TASKS} tasks, median of {ROUNDS} rounds of {ROUND:?})");
        for (name, rounds) in names.iter().zip(results) {
            let m = median(rounds.clone());
            println!(
                "  {name:<20} {m:>9.0} ops/s   {:.2}x plain   rounds: {:?}",
                m / baseline,
                rounds.iter().map(|r| r.round() as u64).collect::<Vec<_>>()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
