//! Throughput of the memcached backend against a plain memcached client driven the same way.
//!
//! `cargo bench -p webcache-memcached --bench memcached`
//!
//! Starts one memcached on a free loopback port, then measures get (hit) and set operations
//! per second with 16 concurrent tasks, 5 KB incompressible values and 1,000 keys:
//!
//! - `plain client`: a minimal client of the classic text protocol (`set`/`get`), one TCP
//!   connection per task, no pooling, no checks: the floor any client pays;
//! - `Memcached backend`: webcache's backend through the `Backend` trait (meta protocol, pool
//!   of 16 connections, ketama lookup, timeouts);
//! - `full Cache API`: `Cache::get_bytes`/`set_bytes` over it (keys, entry framing, an LZ4
//!   attempt on the incompressible value, counters).
//!
//! Rounds alternate between the clients (A B C A B C ...) and the median round is reported,
//! with its ratio to the plain client.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use webcache_core::bytes::Bytes;
use webcache_core::{Backend, Cache, CacheOptions, Expiry};
use webcache_memcached::{Memcached, MemcachedConfig};
use webcache_testkit::servers::memcached::MemcachedServer;

const TASKS: usize = 16;
const KEYS: usize = 1000;
const VALUE_LEN: usize = 5 * 1024;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 5;

/// A minimal classic-protocol client on one connection.
struct Plain(BufStream<TcpStream>);

impl Plain {
    async fn connect(addr: &str) -> Plain {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Plain(BufStream::new(stream))
    }

    async fn set(&mut self, key: &str, value: &[u8]) {
        let s = &mut self.0;
        s.write_all(format!("set {key} 0 300 {}\r\n", value.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(value).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        s.flush().await.unwrap();
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        assert_eq!(line, "STORED\r\n");
    }

    async fn get(&mut self, key: &str) -> Vec<u8> {
        let s = &mut self.0;
        s.write_all(format!("get {key}\r\n").as_bytes())
            .await
            .unwrap();
        s.flush().await.unwrap();
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        let len: usize = line.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
        let mut value = vec![0u8; len + 2];
        s.read_exact(&mut value).await.unwrap();
        value.truncate(len);
        line.clear();
        s.read_line(&mut line).await.unwrap();
        assert_eq!(line, "END\r\n");
        value
    }
}

/// Runs `TASKS` loops of `op` for one round; returns operations per second.
async fn round<S, F, Fut>(state: impl Fn(usize) -> S, op: F) -> f64
where
    S: Send + 'static,
    F: Fn(S, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = S> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (stop, done, op) = (stop.clone(), done.clone(), op.clone());
            let mut s = state(t);
            tokio::spawn(async move {
                let mut i = t as u64 * 7919;
                while !stop.load(Ordering::Relaxed) {
                    s = op(s, i).await;
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

fn key(i: u64) -> String {
    format!("bench:1:page.{}", i % KEYS as u64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = MemcachedServer::start();
    let addr = server.address();
    let value = Bytes::from(
        (0..VALUE_LEN)
            .map(|_| rand::random::<u8>())
            .collect::<Vec<u8>>(),
    );
    let backend = Arc::new(Memcached::new(&MemcachedConfig::new([addr.clone()])));
    let cache = Cache::new(backend.clone(), CacheOptions::default());
    for i in 0..KEYS as u64 {
        backend
            .set(
                &key(i),
                value.clone(),
                Expiry::After(Duration::from_secs(300)),
            )
            .await
            .unwrap();
        cache
            .set_bytes(&format!("page.{i}"), &value, 300)
            .await
            .unwrap();
    }
    let names = ["plain client", "Memcached backend", "full Cache API"];
    for op in ["get", "set"] {
        let mut results = vec![Vec::new(); names.len()];
        for _ in 0..ROUNDS {
            for (c, slot) in results.iter_mut().enumerate() {
                let ops = match (op, c) {
                    (_, 0) => {
                        let mut conns = Vec::new();
                        for _ in 0..TASKS {
                            conns.push(Some(Plain::connect(&addr).await));
                        }
                        let conns = std::sync::Mutex::new(conns);
                        let value = value.clone();
                        let is_get = op == "get";
                        round(
                            |t| conns.lock().unwrap()[t].take().unwrap(),
                            move |mut conn: Plain, i| {
                                let value = value.clone();
                                async move {
                                    if is_get {
                                        assert_eq!(conn.get(&key(i)).await.len(), VALUE_LEN);
                                    } else {
                                        conn.set(&key(i), &value).await;
                                    }
                                    conn
                                }
                            },
                        )
                        .await
                    }
                    ("get", 1) => {
                        round(
                            |_| backend.clone(),
                            |b, i| async move {
                                assert!(b.get(&key(i)).await.unwrap().is_some());
                                b
                            },
                        )
                        .await
                    }
                    (_, 1) => {
                        let value = value.clone();
                        round(
                            |_| backend.clone(),
                            move |b, i| {
                                let value = value.clone();
                                async move {
                                    b.set(&key(i), value, Expiry::After(Duration::from_secs(300)))
                                        .await
                                        .unwrap();
                                    b
                                }
                            },
                        )
                        .await
                    }
                    ("get", _) => {
                        round(
                            |_| cache.clone(),
                            |c, i| async move {
                                let k = format!("page.{}", i % KEYS as u64);
                                assert!(c.get_bytes(&k).await.unwrap().is_some());
                                c
                            },
                        )
                        .await
                    }
                    _ => {
                        let value = value.clone();
                        round(
                            |_| cache.clone(),
                            move |c, i| {
                                let value = value.clone();
                                async move {
                                    let k = format!("page.{}", i % KEYS as u64);
                                    c.set_bytes(&k, &value, 300).await.unwrap();
                                    c
                                }
                            },
                        )
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
}
