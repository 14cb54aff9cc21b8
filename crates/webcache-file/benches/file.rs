//! Throughput of the file backend against plain file reads and writes driven the same way.
//!
//! `cargo bench -p webcache-file --bench file`
//!
//! In a fresh directory under the system temporary directory, measures get (hit) and set
//! operations per second with 16 concurrent tasks, 5 KB incompressible values and 1,000 keys:
//!
//! - `plain files`: `std::fs::read`, and write-to-temporary-then-rename, on tokio's blocking
//!   pool: the least a safe file cache must do;
//! - `FileBackend backend`: webcache's backend through the `Backend` trait (hashed names, header,
//!   expiry check, and for writes the striped `flock` and the entry count);
//! - `full Cache API`: `Cache::get_bytes`/`set_bytes` over it.
//!
//! Rounds alternate between the three (A B C A B C ...) and the median round is reported, with
//! its ratio to the plain files.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use webcache_core::backend::Backend;
use webcache_core::bytes::Bytes;
use webcache_core::{Cache, CacheOptions, Expiry};
use webcache_file::{FileBackend, FileConfig};
use webcache_testkit::bench::{alternating_rounds, print_comparison, throughput};
use webcache_testkit::servers::temp_dir;

const TASKS: usize = 16;
const KEYS: usize = 1000;
const VALUE_LEN: usize = 5 * 1024;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 5;
const EXPIRY: Expiry = Expiry::After(Duration::from_secs(300));

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
    let backend = Arc::new(FileBackend::open(&config).unwrap());
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
    let names = ["plain files", "FileBackend backend", "full Cache API"];
    for op in ["get", "set"] {
        let results = alternating_rounds(ROUNDS, names.len(), |c| {
            let (dir, backend, cache, value) = (
                plain_dir.clone(),
                backend.clone(),
                cache.clone(),
                value.clone(),
            );
            async move {
                match (op, c) {
                    ("get", 0) => {
                        throughput(TASKS, ROUND, move |i| {
                            let path = plain_path(&dir, i);
                            async move {
                                let read = tokio::task::spawn_blocking(move || std::fs::read(path));
                                assert_eq!(read.await.unwrap().unwrap().len(), VALUE_LEN);
                            }
                        })
                        .await
                    }
                    (_, 0) => {
                        throughput(TASKS, ROUND, move |i| {
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
                        throughput(TASKS, ROUND, move |i| {
                            let backend = backend.clone();
                            async move {
                                let key = format!("bench:1:page.{}", i % KEYS as u64);
                                assert!(backend.get(&key).await.unwrap().is_some());
                            }
                        })
                        .await
                    }
                    (_, 1) => {
                        throughput(TASKS, ROUND, move |i| {
                            let (backend, value) = (backend.clone(), value.clone());
                            async move {
                                let key = format!("bench:1:page.{}", i % KEYS as u64);
                                backend.set(&key, value, EXPIRY).await.unwrap();
                            }
                        })
                        .await
                    }
                    ("get", _) => {
                        throughput(TASKS, ROUND, move |i| {
                            let cache = cache.clone();
                            async move {
                                let key = format!("page.{}", i % KEYS as u64);
                                assert!(cache.get_bytes(&key).await.unwrap().is_some());
                            }
                        })
                        .await
                    }
                    _ => {
                        throughput(TASKS, ROUND, move |i| {
                            let (cache, value) = (cache.clone(), value.clone());
                            async move {
                                let key = format!("page.{}", i % KEYS as u64);
                                cache.set_bytes(&key, &value, 300).await.unwrap();
                            }
                        })
                        .await
                    }
                }
            }
        })
        .await;
        print_comparison(
            &format!("{op} (5 KB values, {TASKS} tasks, median of {ROUNDS} rounds of {ROUND:?})"),
            &names,
            &results,
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
