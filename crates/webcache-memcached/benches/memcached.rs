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

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use webcache_core::backend::Backend;
use webcache_core::bytes::Bytes;
use webcache_core::{Cache, CacheOptions, Expiry};
use webcache_memcached::{MemcachedBackend, MemcachedConfig};
use webcache_testkit::bench::{alternating_rounds, print_comparison, throughput_with};
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

fn key(i: u64) -> String {
    format!("bench:1:page.{}", i % KEYS as u64)
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
    let backend = Arc::new(MemcachedBackend::new(&MemcachedConfig::new([addr.clone()])));
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
        let results = alternating_rounds(ROUNDS, names.len(), |c| {
            let (addr, backend, cache, value) =
                (addr.clone(), backend.clone(), cache.clone(), value.clone());
            async move {
                match (op, c) {
                    (_, 0) => {
                        let mut conns = Vec::new();
                        for _ in 0..TASKS {
                            conns.push(Some(Plain::connect(&addr).await));
                        }
                        let is_get = op == "get";
                        throughput_with(
                            TASKS,
                            ROUND,
                            |t| conns[t].take().unwrap(),
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
                        throughput_with(
                            TASKS,
                            ROUND,
                            |_| backend.clone(),
                            |b, i| async move {
                                assert!(b.get(&key(i)).await.unwrap().is_some());
                                b
                            },
                        )
                        .await
                    }
                    (_, 1) => {
                        throughput_with(
                            TASKS,
                            ROUND,
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
                        throughput_with(
                            TASKS,
                            ROUND,
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
                        throughput_with(
                            TASKS,
                            ROUND,
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
}
