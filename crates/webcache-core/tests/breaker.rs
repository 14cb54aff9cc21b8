//! The circuit breaker against a real server (issue 11 #8): a memcached is stopped under a
//! running cache, and once three calls in a row have failed to connect, calls fail at once
//! without reaching the backend (a raise-mode error saying since when it is down, or a miss and
//! a dropped write in degrade mode) until the server is back, which the cache notices within
//! `breaker_max_delay`.
//!
//! The backend here is written in this file so that core needs no server crate, but it is not
//! a stand-in: it speaks memcached's text protocol to a real `memcached` over TCP, one
//! connection per call (as a pool that finds no live connection would).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use webcache_core::backend::{async_trait, Backend, BackendStats, KeyStream};
use webcache_core::bytes::Bytes;
use webcache_core::{Cache, CacheOptions, Error, Expiry, OnError, Result, Ttl};
use webcache_testkit::servers::memcached::MemcachedServer;

const NAME: &str = "memcached-wire";

/// A minimal memcached client: `get`, `set` and `version` (for everything else).
#[derive(Debug)]
struct Wire {
    address: String,
    /// Calls that reached this backend (the breaker lets through only some).
    calls: AtomicUsize,
}

impl Wire {
    fn new(address: String) -> Self {
        Wire {
            address,
            calls: AtomicUsize::new(0),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Sends `request` on a new connection; returns the connection to read the reply from.
    async fn send(&self, request: &[u8]) -> Result<BufReader<TcpStream>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut stream = TcpStream::connect(&self.address)
            .await
            .map_err(|e| self.fail("cannot connect to", e))?;
        stream
            .write_all(request)
            .await
            .map_err(|e| self.fail("cannot write to", e))?;
        Ok(BufReader::new(stream))
    }

    fn fail(&self, what: &str, e: std::io::Error) -> Error {
        Error::backend(NAME, format!("{what} {}", self.address), e)
    }

    async fn line(&self, reader: &mut BufReader<TcpStream>) -> Result<String> {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => Err(self.fail(
                "connection closed by",
                std::io::ErrorKind::UnexpectedEof.into(),
            )),
            Ok(_) => Ok(String::from_utf8_lossy(&line).trim_end().to_owned()),
            Err(e) => Err(self.fail("cannot read from", e)),
        }
    }

    async fn version(&self) -> Result<()> {
        let mut reader = self.send(b"version\r\n").await?;
        let reply = self.line(&mut reader).await?;
        assert!(reply.starts_with("VERSION "), "{reply:?}");
        Ok(())
    }
}

#[async_trait]
impl Backend for Wire {
    fn name(&self) -> &'static str {
        NAME
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let mut reader = self.send(format!("get {key}\r\n").as_bytes()).await?;
        let header = self.line(&mut reader).await?;
        if header == "END" {
            return Ok(None);
        }
        // VALUE <key> <flags> <length>, the data and its CRLF, then END.
        let length: usize = header.rsplit(' ').next().unwrap().parse().unwrap();
        let mut data = vec![0; length + 2];
        reader
            .read_exact(&mut data)
            .await
            .map_err(|e| self.fail("cannot read from", e))?;
        data.truncate(length);
        assert_eq!(self.line(&mut reader).await?, "END");
        Ok(Some(Bytes::from(data)))
    }
    async fn set(&self, key: &str, value: Bytes, _: Expiry) -> Result<()> {
        let mut request = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
        request.extend_from_slice(&value);
        request.extend_from_slice(b"\r\n");
        let mut reader = self.send(&request).await?;
        assert_eq!(self.line(&mut reader).await?, "STORED");
        Ok(())
    }
    async fn add(&self, _: &str, _: Bytes, _: Expiry) -> Result<bool> {
        self.version().await.map(|()| false)
    }
    async fn set_if_present(&self, _: &str, _: Bytes, _: Expiry) -> Result<bool> {
        self.version().await.map(|()| false)
    }
    async fn delete(&self, _: &str) -> Result<bool> {
        self.version().await.map(|()| false)
    }
    async fn touch(&self, _: &str, _: Expiry) -> Result<bool> {
        self.version().await.map(|()| false)
    }
    async fn incr(&self, key: &str, _: i64) -> Result<i64> {
        // The server answers; the key is not there: a usage error, not an outage.
        self.version().await?;
        Err(Error::KeyNotFound {
            key: key.to_owned(),
        })
    }
    async fn ttl(&self, _: &str) -> Result<Ttl> {
        self.version().await.map(|()| Ttl::Missing)
    }
    async fn clear(&self, _: Option<&str>) -> Result<()> {
        self.version().await
    }
    fn scan(&self, _: &str) -> KeyStream {
        Box::pin(futures::stream::empty())
    }
    async fn stats(&self) -> Result<BackendStats> {
        self.version().await.map(|()| BackendStats::default())
    }
}

fn cache(wire: &Arc<Wire>, on_error: OnError) -> Cache {
    Cache::new(
        wire.clone(),
        CacheOptions::builder()
            .on_error(on_error)
            // What issue 11 saw on PostgreSQL: a call on a dead server may take this long.
            .operation_timeout(Duration::from_secs(5))
            .build(),
    )
}

/// Waits past the longest delay between trial calls, so that the next call is a trial.
async fn past_max_delay() {
    tokio::time::sleep(CacheOptions::default().breaker_max_delay + Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn a_down_server_is_not_called_until_it_is_back() {
    let mut server = MemcachedServer::start();
    let port = server.port();
    let wire = Arc::new(Wire::new(server.address()));
    let c = cache(&wire, OnError::Raise);
    c.set_bytes("k", b"v", 60).await.unwrap();
    assert_eq!(c.get_bytes("k").await.unwrap().as_deref(), Some(&b"v"[..]));

    server.stop();
    let before = wire.calls();
    let mut last = None;
    for _ in 0..50 {
        let err = c.get_bytes("k").await.unwrap_err();
        assert!(err.is_backend_failure(), "{err}");
        last = Some(err);
    }
    let reached = wire.calls() - before;
    // Three failures open the breaker; after that only the occasional trial call goes out
    // (one per 50 ms at first, then doubling), never one per operation.
    assert!(
        (3..10).contains(&reached),
        "{reached} of 50 calls reached the stopped server"
    );
    let last = last.unwrap().to_string();
    assert!(
        last.contains("down since") && last.contains("connection failures in a row"),
        "{last}"
    );
    assert!(c.metrics().errors >= 50, "{:?}", c.metrics());

    // The server returns (empty: memcached keeps nothing across a restart).
    let _server = MemcachedServer::start_on(port, &[]);
    past_max_delay().await;
    c.set_bytes("k", b"again", 60).await.unwrap();
    assert_eq!(
        c.get_bytes("k").await.unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

#[tokio::test]
async fn degrade_mode_misses_and_drops_writes_without_calling_a_down_server() {
    let mut server = MemcachedServer::start();
    let port = server.port();
    let wire = Arc::new(Wire::new(server.address()));
    let c = cache(&wire, OnError::Degrade);
    c.set_bytes("k", b"v", 60).await.unwrap();

    server.stop();
    let before = wire.calls();
    for _ in 0..25 {
        assert_eq!(c.get_bytes("k").await.unwrap(), None);
        c.set_bytes("k", b"dropped", 60).await.unwrap();
    }
    let reached = wire.calls() - before;
    assert!(
        (3..10).contains(&reached),
        "{reached} of 50 calls reached the stopped server"
    );

    let _server = MemcachedServer::start_on(port, &[]);
    past_max_delay().await;
    c.set_bytes("k", b"stored", 60).await.unwrap();
    assert_eq!(
        c.get_bytes("k").await.unwrap().as_deref(),
        Some(&b"stored"[..]),
        "the write after the return reached the server"
    );
}

#[tokio::test]
async fn usage_errors_never_trip_it() {
    let server = MemcachedServer::start();
    let wire = Arc::new(Wire::new(server.address()));
    let c = cache(&wire, OnError::Raise);
    for _ in 0..10 {
        assert!(matches!(
            c.incr("missing", 1).await,
            Err(Error::KeyNotFound { .. })
        ));
    }
    assert_eq!(wire.calls(), 10, "every call reached the server");
    assert_eq!(c.get_bytes("k").await.unwrap(), None);
}

#[tokio::test]
async fn it_can_be_turned_off() {
    let mut server = MemcachedServer::start();
    let wire = Arc::new(Wire::new(server.address()));
    let mut config =
        webcache_core::config::CacheConfig::from_url("default", "dummy://?breaker_failures=0")
            .unwrap();
    config.options.operation_timeout = Some(Duration::from_secs(5));
    let c = Cache::new(wire.clone(), config.options);
    server.stop();
    for _ in 0..10 {
        assert!(c.get_bytes("k").await.is_err());
    }
    assert_eq!(wire.calls(), 10, "without a breaker every call tries");
}

#[tokio::test]
async fn near_copies_are_still_served_while_the_server_is_down() {
    let mut server = MemcachedServer::start();
    let wire = Arc::new(Wire::new(server.address()));
    let c = Cache::new(
        wire.clone(),
        CacheOptions::builder()
            .on_error(OnError::Raise)
            .near_ttl(Duration::from_secs(600))
            .build(),
    );
    c.set_bytes("hot", b"local", 60).await.unwrap();
    server.stop();
    // Keys without a local copy go to the server, fail, and open the breaker.
    let mut refused = 0;
    for i in 0..20 {
        let err = c.get_bytes(&format!("cold{i}")).await.unwrap_err();
        refused += usize::from(err.to_string().contains("down since"));
    }
    assert!(refused > 0, "the breaker opened");
    assert_eq!(
        c.get_bytes("hot").await.unwrap().as_deref(),
        Some(&b"local"[..]),
        "the near tier's copy is served while the breaker is open"
    );
}
