//! `Cache::keys` is a backend call like the others (issue 11 #9): on a hung server (a real
//! memcached stopped with SIGSTOP) the listing fails with `Error::Timeout` within the
//! operation timeout instead of waiting for ever, and such failures open the circuit breaker,
//! after which listings and other calls fail at once until the server answers again.
//!
//! The backend here speaks memcached's text protocol to a real `memcached` over TCP (one
//! connection per call), listing keys with `lru_crawler metadump all` as the memcached crate
//! does, so that core needs no server crate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use webcache_core::backend::{async_trait, Backend, BackendStats, KeyStream};
use webcache_core::bytes::Bytes;
use webcache_core::{Cache, CacheOptions, Error, Expiry, OnError, Result, Ttl};
use webcache_testkit::servers::memcached::MemcachedServer;
use webcache_testkit::servers::Frozen;

const NAME: &str = "memcached-wire";

#[derive(Debug)]
struct Wire {
    address: String,
    /// Connections opened: calls that reached the server.
    calls: Arc<AtomicUsize>,
}

async fn connect(
    address: &str,
    calls: &AtomicUsize,
    request: &[u8],
) -> Result<BufReader<TcpStream>> {
    calls.fetch_add(1, Ordering::SeqCst);
    let fail = |e| Error::backend(NAME, format!("cannot talk to {address}"), e);
    let mut stream = TcpStream::connect(address).await.map_err(fail)?;
    stream.write_all(request).await.map_err(fail)?;
    Ok(BufReader::new(stream))
}

async fn line(reader: &mut BufReader<TcpStream>) -> Result<String> {
    let mut line = String::new();
    match reader.read_line(&mut line).await {
        Ok(0) => Err(Error::backend(
            NAME,
            "connection closed",
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        )),
        Ok(_) => Ok(line.trim_end().to_owned()),
        Err(e) => Err(Error::backend(NAME, "cannot read", e)),
    }
}

impl Wire {
    /// One request, one reply line.
    async fn call(&self, request: &[u8]) -> Result<String> {
        let mut reader = connect(&self.address, &self.calls, request).await?;
        line(&mut reader).await
    }
}

#[async_trait]
impl Backend for Wire {
    fn name(&self) -> &'static str {
        NAME
    }
    async fn get(&self, _: &str) -> Result<Option<Bytes>> {
        self.call(b"version\r\n").await.map(|_| None)
    }
    async fn set(&self, key: &str, value: Bytes, _: Expiry) -> Result<()> {
        let mut request = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
        request.extend_from_slice(&value);
        request.extend_from_slice(b"\r\n");
        let reply = self.call(&request).await?;
        assert_eq!(reply, "STORED");
        Ok(())
    }
    async fn add(&self, _: &str, _: Bytes, _: Expiry) -> Result<bool> {
        self.call(b"version\r\n").await.map(|_| false)
    }
    async fn set_if_present(&self, _: &str, _: Bytes, _: Expiry) -> Result<bool> {
        self.call(b"version\r\n").await.map(|_| false)
    }
    async fn delete(&self, _: &str) -> Result<bool> {
        self.call(b"version\r\n").await.map(|_| false)
    }
    async fn touch(&self, _: &str, _: Expiry) -> Result<bool> {
        self.call(b"version\r\n").await.map(|_| false)
    }
    async fn incr(&self, key: &str, _: i64) -> Result<i64> {
        self.call(b"version\r\n").await?;
        Err(Error::KeyNotFound {
            key: key.to_owned(),
        })
    }
    async fn ttl(&self, _: &str) -> Result<Ttl> {
        self.call(b"version\r\n").await.map(|_| Ttl::Missing)
    }
    async fn clear(&self, _: Option<&str>) -> Result<()> {
        self.call(b"version\r\n").await.map(|_| ())
    }
    /// Every key the server holds (the test keys are plain, so no glob matching): the
    /// connection opens on the first poll, and each `key=...` line is one item.
    fn scan(&self, _: &str) -> KeyStream {
        let (address, calls) = (self.address.clone(), self.calls.clone());
        futures::stream::once(async move {
            connect(&address, &calls, b"lru_crawler metadump all\r\n").await
        })
        .map_ok(|reader| {
            futures::stream::try_unfold(reader, |mut reader| async move {
                let line = line(&mut reader).await?;
                if line == "END" {
                    return Ok(None);
                }
                let key = line
                    .strip_prefix("key=")
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap_or_default()
                    // metadump percent-encodes keys; the test's keys need only `:` back.
                    .replace("%3A", ":");
                Ok(Some((key, reader)))
            })
        })
        .try_flatten()
        .boxed()
    }
    async fn stats(&self) -> Result<BackendStats> {
        self.call(b"version\r\n")
            .await
            .map(|_| BackendStats::default())
    }
}

/// Lists the keys, failing the test (rather than hanging it) if the listing takes a minute.
async fn keys(c: &Cache) -> Result<Vec<String>> {
    let mut keys =
        tokio::time::timeout(Duration::from_secs(60), c.keys("*").try_collect::<Vec<_>>())
            .await
            .expect("the listing ended, with keys or an error, instead of hanging")?;
    keys.sort();
    Ok(keys)
}

#[tokio::test]
async fn listing_keys_on_a_hung_server_times_out_and_opens_the_breaker() {
    let server = MemcachedServer::start();
    let wire = Arc::new(Wire {
        address: server.address(),
        calls: Arc::new(AtomicUsize::new(0)),
    });
    let operation_timeout = Duration::from_secs(1);
    let c = Cache::new(
        wire.clone(),
        CacheOptions::builder()
            .on_error(OnError::Degrade)
            .operation_timeout(operation_timeout)
            .build(),
    );
    c.set_bytes("a", b"1", 60).await.unwrap();
    c.set_bytes("b", b"2", 60).await.unwrap();
    assert_eq!(keys(&c).await.unwrap(), ["a", "b"]);

    let frozen = Frozen::stop(server.pid());
    // Three listings in a row time out (even in degrade mode: a listing cannot be made up).
    for _ in 0..3 {
        match keys(&c).await {
            Err(Error::Timeout { after, .. }) => assert_eq!(after, operation_timeout),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    assert!(c.metrics().errors >= 3, "{:?}", c.metrics());
    // They opened the breaker: the next listing fails without reaching the server.
    let before = wire.calls.load(Ordering::SeqCst);
    let err = keys(&c).await.unwrap_err();
    assert!(err.to_string().contains("down since"), "{err}");
    assert_eq!(
        wire.calls.load(Ordering::SeqCst),
        before,
        "the listing was refused, not sent"
    );
    // So is a listing of stored keys, which tools use.
    let err = c.scan(":1:*").try_collect::<Vec<_>>().await.unwrap_err();
    assert!(err.to_string().contains("down since"), "{err}");
    assert_eq!(wire.calls.load(Ordering::SeqCst), before);

    // Thawed, the server answers a trial call and listings work again.
    drop(frozen);
    tokio::time::sleep(CacheOptions::default().breaker_max_delay + Duration::from_millis(200))
        .await;
    assert_eq!(keys(&c).await.unwrap(), ["a", "b"]);

    // A stored-key listing on the hung server times out too.
    let frozen = Frozen::stop(server.pid());
    let listing =
        tokio::time::timeout(Duration::from_secs(60), c.scan("*").try_collect::<Vec<_>>());
    match listing.await.expect("the listing ended instead of hanging") {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(frozen);
    drop(server);
}
