//! One memcached server: a small connection pool, per-request timeouts, and the up/down state
//! that lets a dead server be skipped and retried with backoff.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Semaphore;
use webcache_core::{Error, Result};

use crate::conn::{Answer, Conn, Expect, WireError};
use crate::BACKEND;

/// The longest wait between two attempts to reach a dead server.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Memcached's default item size limit, reported when the server has not said its own.
pub(crate) const DEFAULT_ITEM_SIZE_MAX: usize = 1024 * 1024;

/// The largest item size limit memcached can run with (`-I` above 1 GiB is refused); a server
/// claiming more is not believed.
const ITEM_SIZE_MAX_UPPER: usize = 1024 * 1024 * 1024;

/// Connection settings shared by every server of a backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Connections kept (and used at once) per server.
    pub(crate) pool_size: usize,
    /// Bound on establishing a connection.
    pub(crate) connect_timeout: Duration,
    /// Bound on one request and its replies.
    pub(crate) io_timeout: Duration,
    /// First wait before retrying a dead server; doubles on each failure up to 30 s.
    pub(crate) retry_after: Duration,
}

#[derive(Debug, Default)]
struct Health {
    /// Consecutive failed attempts; zero while the server is up.
    failures: u32,
    /// No request is sent before this instant.
    down_until: Option<Instant>,
    last_error: String,
}

/// What `io_timeout` bounds in a request.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// The whole exchange.
    Total,
    /// Each wait for the server (an answer of any length that keeps coming is not cut).
    Idle,
}

/// How a request may be retried when a pooled connection turns out to be dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Sending it twice has the same effect as once (get, set, delete, touch).
    Idempotent,
    /// A second send could apply it twice (add, incr, compare-and-swap).
    Once,
}

/// One server and its pool.
#[derive(Debug)]
pub(crate) struct Server {
    /// `host:port`.
    pub(crate) addr: String,
    settings: Settings,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
    health: Mutex<Health>,
    item_size_max: AtomicUsize,
    /// The server's unix time minus ours, in seconds, as of the last connection.
    clock_offset: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing that holds these locks can panic half-way; a poisoned lock still holds good data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seconds since the unix epoch on this machine.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Server {
    pub(crate) fn new(addr: String, settings: Settings) -> Server {
        Server {
            addr,
            settings,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(settings.pool_size),
            health: Mutex::new(Health::default()),
            item_size_max: AtomicUsize::new(0),
            clock_offset: AtomicI64::new(0),
        }
    }

    /// The server's item size limit (`-I`), as read when connecting; `None` before the first
    /// connection (values are then sent and the server judges).
    pub(crate) fn item_size_max(&self) -> Option<usize> {
        Some(self.item_size_max.load(Ordering::Relaxed)).filter(|max| *max > 0)
    }

    /// The server's current unix time, estimated from our clock and the offset measured when
    /// connecting (memcached reads expiry times over 30 days against its own clock).
    pub(crate) fn server_now(&self) -> i64 {
        unix_now() + self.clock_offset.load(Ordering::Relaxed)
    }

    /// Whether the server is currently marked down.
    pub(crate) fn is_down(&self) -> bool {
        lock(&self.health)
            .down_until
            .is_some_and(|t| t > Instant::now())
    }

    /// Drops idle connections.
    pub(crate) fn close(&self) {
        lock(&self.idle).clear();
    }

    /// Sends pipelined commands and reads `expect`, all within `io_timeout`.
    pub(crate) async fn request(
        &self,
        segments: &[Bytes],
        expect: Expect,
        retry: Retry,
    ) -> Result<Answer> {
        self.request_bounded(segments, expect, retry, Bound::Total)
            .await
    }

    /// Like [`request`](Self::request) for an answer of any length (a metadump of the whole
    /// server): each wait for more of it is bounded by `io_timeout`, not the whole.
    pub(crate) async fn request_streaming(
        &self,
        segments: &[Bytes],
        expect: Expect,
        retry: Retry,
    ) -> Result<Answer> {
        self.request_bounded(segments, expect, retry, Bound::Idle)
            .await
    }

    async fn request_bounded(
        &self,
        segments: &[Bytes],
        expect: Expect,
        retry: Retry,
        bound: Bound,
    ) -> Result<Answer> {
        let io_timeout = self.settings.io_timeout;
        self.check_up()?;
        let _slot = tokio::time::timeout(self.settings.io_timeout, self.slots.acquire())
            .await
            .map_err(|_| Error::Timeout {
                backend: BACKEND,
                after: self.settings.io_timeout,
            })?
            .map_err(|_| Error::backend_msg(BACKEND, "the backend was closed"))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut conn, reused) = match self.pooled() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            let outcome = match bound {
                Bound::Total => {
                    tokio::time::timeout(io_timeout, conn.request(segments, expect, None)).await
                }
                Bound::Idle => Ok(conn.request(segments, expect, Some(io_timeout)).await),
            };
            match outcome {
                Ok(Ok(answer)) => {
                    lock(&self.idle).push(conn);
                    // Also ends a probe that went through a connection opened before the failure.
                    self.mark_up();
                    return Ok(answer);
                }
                Ok(Err(WireError::Io(e))) if reused => {
                    // The server probably restarted: every pooled connection is dead.
                    lock(&self.idle).clear();
                    if retry == Retry::Idempotent && attempt == 1 {
                        tracing::debug!(server = %self.addr, "pooled connection failed ({e}); retrying on a new one");
                        continue;
                    }
                    return Err(Error::backend(
                        BACKEND,
                        format!("request to {} failed on a pooled connection", self.addr),
                        e,
                    ));
                }
                Ok(Err(WireError::Io(e))) => {
                    self.mark_down(&e.to_string());
                    return Err(Error::backend(
                        BACKEND,
                        format!("request to {} failed", self.addr),
                        e,
                    ));
                }
                Ok(Err(WireError::Protocol(m))) => {
                    return Err(Error::backend_msg(
                        BACKEND,
                        format!("{} answered out of protocol: {m}", self.addr),
                    ));
                }
                Err(_) | Ok(Err(WireError::Stalled(_))) => {
                    // A server that stops answering is as good as dead for the next requests.
                    self.mark_down(&format!("no answer within {io_timeout:?}"));
                    return Err(Error::Timeout {
                        backend: BACKEND,
                        after: io_timeout,
                    });
                }
            }
        }
    }

    fn pooled(&self) -> Option<Conn> {
        let mut idle = lock(&self.idle);
        while let Some(mut conn) = idle.pop() {
            if !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    /// Fails fast while the server is marked down; after the backoff, lets one request through
    /// to probe it while the others keep failing fast.
    fn check_up(&self) -> Result<()> {
        let mut health = lock(&self.health);
        let Some(until) = health.down_until else {
            return Ok(());
        };
        let now = Instant::now();
        if until > now {
            return Err(Error::backend_msg(
                BACKEND,
                format!(
                    "server {} is marked down after {} failed attempt(s) (last: {}); next retry in {:.1}s",
                    self.addr,
                    health.failures,
                    health.last_error,
                    (until - now).as_secs_f64()
                ),
            ));
        }
        health.down_until = Some(now + self.settings.connect_timeout + self.settings.io_timeout);
        Ok(())
    }

    fn mark_down(&self, why: &str) {
        let mut health = lock(&self.health);
        health.failures = health.failures.saturating_add(1);
        let doublings = health.failures.saturating_sub(1).min(16);
        let backoff = self
            .settings
            .retry_after
            .saturating_mul(1 << doublings)
            .min(MAX_BACKOFF);
        health.down_until = Some(Instant::now() + backoff);
        health.last_error = why.to_owned();
        if health.failures == 1 {
            tracing::warn!(server = %self.addr, "memcached server is down ({why}); its keys miss, retrying in {backoff:?}");
        }
        drop(health);
        lock(&self.idle).clear();
    }

    fn mark_up(&self) {
        let mut health = lock(&self.health);
        if health.failures > 0 {
            tracing::info!(server = %self.addr, "memcached server is back after {} failed attempt(s)", health.failures);
            *health = Health::default();
        }
    }

    /// A new connection, with the server's item size limit and clock read from it.
    async fn connect(&self) -> Result<Conn> {
        let result = async {
            let mut conn = Conn::connect(&self.addr, self.settings.connect_timeout).await?;
            let segments = [Bytes::from_static(b"stats settings\r\nstats\r\n")];
            let (settings, stats) = tokio::time::timeout(self.settings.io_timeout, async {
                let settings = conn.request(&segments, Expect::LinesUntilEnd, None).await?;
                let stats = conn.request(&[], Expect::LinesUntilEnd, None).await?;
                Ok::<_, WireError>((settings, stats))
            })
            .await
            .map_err(|_| {
                WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer to `stats` after connecting",
                ))
            })??;
            Ok::<_, WireError>((conn, settings, stats))
        }
        .await;
        match result {
            Ok((mut conn, settings, stats)) => {
                match stat(&settings, "item_size_max").and_then(|v| v.parse::<usize>().ok()) {
                    Some(max) if max > 0 && max <= ITEM_SIZE_MAX_UPPER => {
                        self.item_size_max.store(max, Ordering::Relaxed);
                    }
                    Some(max) => {
                        tracing::warn!(server = %self.addr, "ignoring an item size limit of {max} bytes (memcached allows at most {ITEM_SIZE_MAX_UPPER})");
                    }
                    None => {}
                }
                // Replies carry no value longer than what the server can hold.
                conn.set_value_limit(self.item_size_max().unwrap_or(DEFAULT_ITEM_SIZE_MAX));
                if let Some(time) = stat(&stats, "time").and_then(|v| v.parse::<i64>().ok()) {
                    self.clock_offset
                        .store(time - unix_now(), Ordering::Relaxed);
                }
                self.mark_up();
                Ok(conn)
            }
            Err(e) => {
                self.mark_down(&e.to_string());
                Err(Error::backend_msg(
                    BACKEND,
                    format!("cannot connect to memcached at {}: {e}", self.addr),
                ))
            }
        }
    }
}

/// The value of `STAT name value` in a `stats` answer.
pub(crate) fn stat(answer: &Answer, name: &str) -> Option<String> {
    let Answer::Lines(lines) = answer else {
        return None;
    };
    lines.iter().find_map(|line| {
        let text = std::str::from_utf8(line).ok()?;
        let mut parts = text.splitn(3, ' ');
        (parts.next() == Some("STAT") && parts.next() == Some(name))
            .then(|| parts.next().unwrap_or("").to_owned())
    })
}
