//! One memcached server: a small connection pool, per-request timeouts, and the up/down state
//! that lets a dead server be skipped and retried with backoff, and taken out of the ring
//! (failover) after repeated failures.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;
use webcache_core::backend::unix_ms;
use webcache_core::{Error, Result};

use crate::conn::{Answer, Code, Conn, Expect, WireError};
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
    /// Whether a server that failed `server_failure_limit` times in a row leaves the ring.
    pub(crate) remove_failed_servers: bool,
    /// Consecutive failures that take a server out of the ring.
    pub(crate) server_failure_limit: u32,
}

#[derive(Debug, Default)]
struct Health {
    /// Consecutive failed attempts; zero while the server is up. Requests that were already
    /// under way when the server failed count once, with the first of them: a burst of
    /// in-flight requests failing together is one failure, not many.
    failures: u32,
    /// No request is sent before this instant.
    down_until: Option<Instant>,
    /// A probe (one request let through after the backoff, or a background check of a
    /// server out of the ring) is under way; its failure counts.
    probing: bool,
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
    /// Whether keys are routed to this server: false while it is out of the ring after
    /// repeated failures (its keys go to the next server of the ring).
    in_ring: AtomicBool,
    /// How many servers of the backend are in the ring, shared by all of them: the last one
    /// is never taken out (its keys would have nowhere to go).
    members: Arc<AtomicUsize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing that holds these locks can panic half-way; a poisoned lock still holds good data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seconds since the unix epoch on this machine.
pub(crate) fn unix_now() -> i64 {
    unix_ms::now_secs()
}

impl Server {
    /// A server of a backend whose servers share `members` (the count of servers in the ring,
    /// all of them at first).
    pub(crate) fn new(addr: String, settings: Settings, members: Arc<AtomicUsize>) -> Server {
        Server {
            addr,
            settings,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(settings.pool_size),
            health: Mutex::new(Health::default()),
            item_size_max: AtomicUsize::new(0),
            clock_offset: AtomicI64::new(0),
            in_ring: AtomicBool::new(true),
            members,
        }
    }

    /// Whether keys are routed to this server (it has not been taken out after failures).
    pub(crate) fn in_ring(&self) -> bool {
        self.in_ring.load(Ordering::Acquire)
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

    /// Whether the server is currently marked down or out of the ring.
    pub(crate) fn is_down(&self) -> bool {
        !self.in_ring()
            || lock(&self.health)
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
    /// to probe it while the others keep failing fast. A server out of the ring takes no
    /// requests (one that got here was routed just before it left): it is probed in the
    /// background instead ([`Server::readmit`]).
    fn check_up(&self) -> Result<()> {
        let mut health = lock(&self.health);
        if !self.in_ring() {
            return Err(Error::backend_msg(
                BACKEND,
                format!(
                    "server {} is out of the ring after {} failed attempt(s) (last: {}); its keys go to the other servers",
                    self.addr, health.failures, health.last_error
                ),
            ));
        }
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
        health.down_until = Some(now + self.probe_window());
        health.probing = true;
        Ok(())
    }

    /// How long one probe may take (connecting, then one request) before another may start.
    fn probe_window(&self) -> Duration {
        self.settings.connect_timeout + self.settings.io_timeout
    }

    fn mark_down(&self, why: &str) {
        let mut health = lock(&self.health);
        let now = Instant::now();
        if !health.probing && health.down_until.is_some_and(|t| t > now) {
            // A request that was under way when another found the server down: the same
            // failure, already counted.
            health.last_error = why.to_owned();
            return;
        }
        health.probing = false;
        health.failures = health.failures.saturating_add(1);
        let doublings = health.failures.saturating_sub(1).min(16);
        let backoff = self
            .settings
            .retry_after
            .saturating_mul(1 << doublings)
            .min(MAX_BACKOFF);
        health.down_until = Some(now + backoff);
        health.last_error = why.to_owned();
        let failures = health.failures;
        let leaves = self.settings.remove_failed_servers
            && failures >= self.settings.server_failure_limit
            && self.leave_ring();
        drop(health);
        if leaves {
            tracing::warn!(server = %self.addr, "memcached server is out of the ring after {failures} failed attempt(s) ({why}); its keys go to the other servers, probing again in {backoff:?}");
        } else if failures == 1 {
            tracing::warn!(server = %self.addr, "memcached server is down ({why}); its keys miss, retrying in {backoff:?}");
        }
        lock(&self.idle).clear();
    }

    /// Takes the server out of the ring unless it is out already or the last one in.
    fn leave_ring(&self) -> bool {
        if !self.in_ring() {
            return false;
        }
        let left = self
            .members
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 1).then(|| n - 1)
            })
            .is_ok();
        if left {
            self.in_ring.store(false, Ordering::Release);
        }
        left
    }

    fn mark_up(&self) {
        if !self.in_ring() {
            // Only a probe that has emptied the server puts it back ([`Server::readmit`]).
            return;
        }
        let mut health = lock(&self.health);
        if health.failures > 0 || health.probing {
            if health.failures > 0 {
                tracing::info!(server = %self.addr, "memcached server is back after {} failed attempt(s)", health.failures);
            }
            *health = Health::default();
        }
    }

    /// For a server out of the ring whose backoff has passed, claims the next probe (so that
    /// only one runs at a time) and returns true; the caller then runs [`Server::readmit`].
    pub(crate) fn claim_probe(&self) -> bool {
        if self.in_ring() {
            return false;
        }
        let mut health = lock(&self.health);
        let now = Instant::now();
        if health.down_until.is_some_and(|t| t > now) {
            return false;
        }
        health.down_until = Some(now + self.probe_window() + self.settings.io_timeout);
        health.probing = true;
        true
    }

    /// Probes a server out of the ring and, if it answers, empties it (`flush_all`) and puts it
    /// back. Emptying it first means it never serves a value that was replaced or deleted on
    /// another server while it was out (a server that was unreachable rather than restarted
    /// still holds its old values). A failed probe counts as a failure and backs off further.
    pub(crate) async fn readmit(&self) {
        let Ok(mut conn) = self.connect().await else {
            // `connect` marked the failure.
            return;
        };
        let flush = [Bytes::from_static(b"flush_all\r\n")];
        let answer = tokio::time::timeout(
            self.settings.io_timeout,
            conn.request(&flush, Expect::Replies(1), None),
        )
        .await;
        match answer {
            Ok(Ok(Answer::Replies(replies)))
                if replies.first().is_some_and(|r| r.code == Code::Ok) =>
            {
                lock(&self.idle).push(conn);
                let mut health = lock(&self.health);
                let failures = health.failures;
                *health = Health::default();
                self.members.fetch_add(1, Ordering::AcqRel);
                self.in_ring.store(true, Ordering::Release);
                drop(health);
                tracing::info!(server = %self.addr, "memcached server is back in the ring after {failures} failed attempt(s), emptied so that it serves no value replaced elsewhere meanwhile");
            }
            Ok(Ok(answer)) => self.mark_down(&format!("flush_all answered {answer:?}")),
            Ok(Err(e)) => self.mark_down(&format!("flush_all failed: {e}")),
            Err(_) => self.mark_down(&format!(
                "no answer to flush_all within {:?}",
                self.settings.io_timeout
            )),
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
                let message = format!("cannot connect to memcached at {}: {e}", self.addr);
                // The socket's error stays the cause: it is what says "outage" (the cache's
                // breaker, a pool's per-server failure) rather than a mistake in the request.
                Err(match e {
                    WireError::Io(io) => Error::backend(BACKEND, message, io),
                    WireError::Stalled(after) => Error::backend(
                        BACKEND,
                        message,
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer within {after:?}"),
                        ),
                    ),
                    WireError::Protocol(_) => Error::backend_msg(BACKEND, message),
                })
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
