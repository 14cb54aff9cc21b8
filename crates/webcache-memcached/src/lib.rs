//! The memcached backend of webcache: `memcached://host:11211[,host2:11211...]`.
//!
//! # Client
//!
//! A small async client of memcached's **meta protocol** (`mg`, `ms`, `md`, `ma`, memcached
//! 1.6+) over tokio TCP, written for this crate rather than borrowed: the meta commands give
//! in one round trip what the classic commands cannot (a value with its remaining TTL,
//! compare-and-swap tokens, touch-on-read, add as a mode of set), and a client that only speaks
//! what webcache needs stays small enough to test against a real server in full.
//!
//! * **Servers**: `memcached://` alone means `127.0.0.1:11211`; a port left out is 11211. TCP
//!   only (no unix sockets, TLS or SASL).
//! * **Several servers** (`h1:11211,h2:11211` or `h1:11211;h2:11211`) are combined by a
//!   ketama-style consistent-hash ring (160 points per server from MD5 digests of
//!   `host:port-N`), so adding a server moves only about `1/n` of the keys.
//! * **Pools and timeouts**: each server has a pool of at most `pool_size` connections
//!   (default 16); connecting is bounded by `connect_timeout` (default 1 s) and each request by
//!   `io_timeout` (default 2 s).
//! * **Dead servers** are skipped: after a failure a server is marked down and its keys fail
//!   fast with [`Error::Backend`] (which `on_error=degrade` turns into misses) while the other
//!   servers keep working; it is retried after `retry_after` (default 1 s), doubling up to 30 s.
//!   Keys are *not* moved to other servers while one is down, so a server that comes back never
//!   disagrees with another about a key. `get_many` returns what the live servers hold and
//!   treats the dead server's keys as misses; it fails only when no server answered.
//!
//! # Values, integers and expiry
//!
//! * Integers are stored as ASCII digits. `incr` uses memcached's native `ma` when the delta is
//!   non-negative; memcached arithmetic is unsigned, so negative values and decrements (which
//!   memcached floors at zero) go through a compare-and-swap loop (`mg … c t` then
//!   `ms … C<cas>`), which is just as atomic and keeps the remaining TTL. A result above
//!   `i64::MAX` is undone and reported as [`Error::Overflow`].
//! * Memcached keeps whole seconds: a timeout is rounded up and one second is added, because
//!   the server's clock ticks once a second and an item stored with `T1` may otherwise live only
//!   a few milliseconds. `ttl` therefore reports the server's remaining seconds minus that
//!   second (±1 s).
//! * Timeouts over 30 days are sent as absolute unix times, as memcached requires, computed from
//!   the server's clock (read with `stats` on every new connection, so a skewed client clock does
//!   not matter) and rounded two seconds short so that an entry never outlives its timeout.
//! * A value over the server's item size limit (`-I`, read from `stats settings`) fails with
//!   [`Error::ValueTooLarge`] and deletes the older value under the key, so no stale data stays.
//!
//! # Keys
//!
//! [`key_rules`](Backend::key_rules) is [`KeyRules::MEMCACHED`] (at most 250 bytes, no spaces
//! or control characters): the [`Cache`](webcache_core::Cache) above rejects such keys with an
//! error that says how to fix them, or hashes them with `invalid_keys=hash`. The backend checks
//! again so that no key can ever inject a command.
//!
//! # What the protocol limits
//!
//! * `scan`/`keys` and `clear` of one prefix list keys with `lru_crawler metadump all` on every
//!   server. That walks the whole server (slow on very large caches), sees a snapshot (keys
//!   written during the walk may be missed), and fails with [`Error::Unsupported`] if the server
//!   runs with `-X` (dumping disabled).
//! * `clear` without a prefix is `flush_all` on every server: it empties them entirely.
//! * `stats` sums `curr_items` and `bytes` of the live servers.
#![forbid(unsafe_code)]
// Library code answers every failure with an error, never a panic; tests may unwrap.
#![warn(clippy::unwrap_used)]

mod conn;
mod ring;
mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use futures::StreamExt;
use webcache_core::config::{BackendSpec, ConfigError};
use webcache_core::entry::parse_integer;
use webcache_core::{
    glob_match, Backend, BackendStats, Error, Expiry, KeyRules, KeyStream, Result, Ttl,
};

use crate::conn::{Answer, Code, Expect, Reply};
use crate::ring::Ring;
use crate::server::{stat, Retry, Server, Settings, DEFAULT_ITEM_SIZE_MAX};

/// The backend's name in logs and errors.
pub(crate) const BACKEND: &str = "memcached";

/// The server of a URL (or configuration) that names none.
const DEFAULT_SERVER: &str = "127.0.0.1:11211";

/// Memcached reads expiry times above this many seconds as absolute unix times.
const RELATIVE_LIMIT: u64 = 30 * 24 * 3600;

/// Keys per pipelined round trip: small enough that requests and replies never fill both
/// socket buffers at once.
const BATCH: usize = 100;

/// Bound on one `lru_crawler metadump` (it walks the whole server).
const DUMP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long to wait for another client's metadump to finish (the crawler runs one at a time).
const DUMP_BUSY_WAIT: Duration = Duration::from_secs(10);

/// Compare-and-swap attempts before `incr` gives up under contention.
const CAS_ATTEMPTS: usize = 1000;

/// Options of a `memcached://` URL, with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcachedConfig {
    /// `host:port` of each server, in order (the order does not matter for hashing).
    pub servers: Vec<String>,
    /// Connections per server (`pool_size`, default 16).
    pub pool_size: usize,
    /// Bound on connecting (`connect_timeout`, default 1 s).
    pub connect_timeout: Duration,
    /// Bound on one request (`io_timeout`, default 2 s).
    pub io_timeout: Duration,
    /// First wait before retrying a dead server (`retry_after`, default 1 s), doubled after
    /// each failure up to 30 s.
    pub retry_after: Duration,
}

impl MemcachedConfig {
    /// The configuration for these `host:port` servers with default settings.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> Self {
        MemcachedConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// The memcached backend; see the [crate documentation](crate).
#[derive(Debug, Clone)]
pub struct Memcached {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    servers: Vec<Server>,
    ring: Ring,
}

/// Builds the backend a cache URL describes: `memcached://h1:11211,h2:11211?pool_size=16`.
///
/// No connection is made here: a server that is down when the application starts is only a
/// source of misses until it comes up.
pub async fn from_spec(spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
    Ok(Arc::new(Memcached::from_spec(spec)?))
}

impl Memcached {
    /// A backend over the servers of `config` (`127.0.0.1:11211` if it lists none).
    pub fn new(config: &MemcachedConfig) -> Self {
        if config.servers.is_empty() {
            let mut local = config.clone();
            local.servers.push(DEFAULT_SERVER.to_owned());
            return Self::new(&local);
        }
        let settings = Settings {
            pool_size: config.pool_size.max(1),
            connect_timeout: config.connect_timeout,
            io_timeout: config.io_timeout,
            retry_after: config.retry_after,
        };
        let ring = Ring::new(&config.servers);
        let servers = config
            .servers
            .iter()
            .map(|addr| Server::new(addr.clone(), settings))
            .collect();
        Memcached {
            shared: Arc::new(Shared { servers, ring }),
        }
    }

    /// Parses a `memcached://` spec (see [`from_spec`]).
    pub fn from_spec(spec: &mut BackendSpec) -> Result<Self, ConfigError> {
        let mut config = MemcachedConfig::new(parse_servers(spec)?);
        if let Some(n) =
            spec.take::<usize>("pool_size", "a whole number of connections such as 16")?
        {
            if n == 0 {
                return Err(spec.error(
                    "pool_size",
                    "0 connections cannot serve anything; use 1 or more",
                ));
            }
            config.pool_size = n;
        }
        for (name, slot) in [
            ("connect_timeout", &mut config.connect_timeout),
            ("io_timeout", &mut config.io_timeout),
            ("retry_after", &mut config.retry_after),
        ] {
            if let Some(d) = spec.take_seconds(name)? {
                if d.is_zero() {
                    return Err(spec.error(name, "must be more than 0 seconds"));
                }
                *slot = d;
            }
        }
        spec.finish(&["pool_size", "connect_timeout", "io_timeout", "retry_after"])?;
        Ok(Memcached::new(&config))
    }

    fn server(&self, key: &str) -> &Server {
        &self.shared.servers[self.shared.ring.server_for(key)]
    }

    /// Sends one command to the server of `key` and returns its single reply.
    async fn one(&self, server: &Server, segments: &[Bytes], retry: Retry) -> Result<Reply> {
        match server.request(segments, Expect::Replies(1), retry).await? {
            Answer::Replies(mut replies) if replies.len() == 1 => Ok(replies.remove(0)),
            other => Err(Error::backend_msg(
                BACKEND,
                format!("{} gave an unexpected answer: {other:?}", server.addr),
            )),
        }
    }

    /// Sends `mg <key><flags>` to the key's server; returns the server and its reply.
    async fn meta_get(&self, key: &str, flags: &str) -> Result<(&Server, Reply)> {
        check_key(key)?;
        let server = self.server(key);
        let command = Bytes::from(format!("mg {key}{flags}\r\n"));
        let reply = self.one(server, &[command], Retry::Idempotent).await?;
        Ok((server, reply))
    }

    /// `mg` without a value (`has_key`, `touch`): whether the key is there.
    async fn meta_hit(&self, key: &str, flags: &str) -> Result<bool> {
        let (server, reply) = self.meta_get(key, flags).await?;
        match reply.code {
            Code::Stored => Ok(true),
            Code::Miss => Ok(false),
            _ => Err(unexpected(server, "mg", &reply)),
        }
    }

    /// Stores `value` with `ms`; `mode` is `""` (set) or `" ME"` (add). Returns whether it was
    /// stored.
    async fn store(&self, key: &str, value: Bytes, expiry: Expiry, mode: &str) -> Result<bool> {
        check_key(key)?;
        let server = self.server(key);
        let size = value.len();
        if server.item_size_max().is_some_and(|max| size > max) {
            return Err(self.too_large(server, key, size).await);
        }
        let token = exptime_token(server, expiry_secs(expiry));
        let head = format!("ms {key} {size} T{token}{mode}\r\n");
        let retry = if mode.is_empty() {
            Retry::Idempotent
        } else {
            Retry::Once
        };
        let reply = self
            .one(
                server,
                &[Bytes::from(head), value, Bytes::from_static(b"\r\n")],
                retry,
            )
            .await?;
        match reply.code {
            Code::Stored => Ok(true),
            Code::NotStored if !mode.is_empty() => Ok(false),
            Code::ServerError if reply.message().contains("too large") => {
                Err(self.too_large(server, key, size).await)
            }
            Code::ServerError => {
                // Memcached drops the older value when it cannot store a new one; make sure.
                let _ = self.delete(key).await;
                Err(unexpected(server, "ms", &reply))
            }
            _ => Err(unexpected(server, "ms", &reply)),
        }
    }

    /// Removes the older value of a key whose new value is too large, and builds the error.
    async fn too_large(&self, server: &Server, key: &str, size: usize) -> Error {
        if let Err(e) = self.delete(key).await {
            tracing::warn!(server = %server.addr, key, "cannot remove the older value of a key whose new value is too large: {e}");
        }
        Error::ValueTooLarge {
            key: key.to_owned(),
            size,
            limit: server.item_size_max().unwrap_or(DEFAULT_ITEM_SIZE_MAX),
        }
    }

    /// `incr` by a compare-and-swap loop: correct for negative values and results.
    async fn incr_cas(&self, server: &Server, key: &str, delta: i64) -> Result<i64> {
        let read = Bytes::from(format!("mg {key} v c t\r\n"));
        for _ in 0..CAS_ATTEMPTS {
            let reply = self
                .one(server, std::slice::from_ref(&read), Retry::Idempotent)
                .await?;
            match reply.code {
                Code::Value => {}
                Code::Miss => {
                    return Err(Error::KeyNotFound {
                        key: key.to_owned(),
                    })
                }
                _ => return Err(unexpected(server, "mg", &reply)),
            }
            let current = parse_integer(&reply.data).ok_or_else(|| Error::NotAnInteger {
                key: key.to_owned(),
            })?;
            let next = current.checked_add(delta).ok_or_else(|| Error::Overflow {
                key: key.to_owned(),
            })?;
            let cas = reply
                .flag(b'c')
                .ok_or_else(|| unexpected(server, "mg (no cas token)", &reply))?;
            let remaining: i64 = reply
                .flag(b't')
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| unexpected(server, "mg (no ttl)", &reply))?;
            let token = match remaining {
                // -1: no expiry; keep none.
                r if r < 0 => 0,
                // 0 would mean "never" to memcached; the item expires within this second.
                r => exptime_token(server, r.max(1).unsigned_abs()),
            };
            let digits = next.to_string();
            let head = format!("ms {key} {} C{cas} T{token}\r\n{digits}\r\n", digits.len());
            let reply = self.one(server, &[Bytes::from(head)], Retry::Once).await?;
            match reply.code {
                Code::Stored => return Ok(next),
                // Another writer changed the value in between: read it again.
                Code::Exists => continue,
                Code::NotFound => {
                    return Err(Error::KeyNotFound {
                        key: key.to_owned(),
                    })
                }
                _ => return Err(unexpected(server, "ms", &reply)),
            }
        }
        Err(Error::backend_msg(
            BACKEND,
            format!("incr of `{key}` lost {CAS_ATTEMPTS} compare-and-swap races in a row; too much contention on one key"),
        ))
    }

    /// Every key of every server with its absolute expiry (`None`: never), via metadump.
    async fn dump(server: &Server) -> Result<Vec<(String, Option<i64>)>> {
        let command = [Bytes::from_static(b"lru_crawler metadump all\r\n")];
        let started = tokio::time::Instant::now();
        loop {
            let answer = server
                .request_within(
                    &command,
                    Expect::LinesUntilEnd,
                    Retry::Idempotent,
                    DUMP_TIMEOUT,
                )
                .await?;
            let Answer::Lines(lines) = answer else {
                return Err(Error::backend_msg(BACKEND, "metadump gave meta replies"));
            };
            if let Some(last) = lines.last() {
                if last.starts_with(b"BUSY") && started.elapsed() < DUMP_BUSY_WAIT {
                    // Another client's dump is running; the crawler does one at a time.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                if last.starts_with(b"BUSY") {
                    return Err(Error::backend_msg(
                        BACKEND,
                        format!(
                            "{}: the LRU crawler stayed busy for {DUMP_BUSY_WAIT:?}",
                            server.addr
                        ),
                    ));
                }
                if last.starts_with(b"ERROR")
                    || last.starts_with(b"CLIENT_ERROR")
                    || last.starts_with(b"SERVER_ERROR")
                {
                    tracing::warn!(server = %server.addr, "metadump refused: {}", String::from_utf8_lossy(last));
                    return Err(Error::Unsupported {
                        backend: BACKEND,
                        operation: "listing keys",
                        why: "the server refuses `lru_crawler metadump` (started with -X, or too old); run memcached 1.6+ without -X",
                    });
                }
            }
            return Ok(lines.iter().filter_map(|l| parse_dump_line(l)).collect());
        }
    }

    /// The live keys of every server, from metadump.
    async fn live_keys(shared: &Shared) -> Result<Vec<String>> {
        let dumps = join_all(shared.servers.iter().map(|s| async move {
            let now = s.server_now();
            Self::dump(s).await.map(|entries| {
                entries
                    .into_iter()
                    .filter(|(_, exp)| exp.is_none_or(|t| t > now))
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>()
            })
        }))
        .await;
        let mut keys = Vec::new();
        for dump in dumps {
            keys.extend(dump?);
        }
        Ok(keys)
    }

    /// Sends `<command> <key><flags>` for every key as one pipelined request; one reply each.
    async fn pipelined<'k>(
        server: &Server,
        keys: impl Iterator<Item = &'k str>,
        command: &str,
        flags: &str,
    ) -> Result<Vec<Reply>> {
        let mut request = BytesMut::new();
        let mut count = 0;
        for key in keys {
            request.extend_from_slice(format!("{command} {key}{flags}\r\n").as_bytes());
            count += 1;
        }
        let answer = server
            .request(
                &[request.freeze()],
                Expect::Replies(count),
                Retry::Idempotent,
            )
            .await?;
        Ok(replies(answer))
    }

    /// Deletes `keys` (all on `server`) in pipelined batches; returns how many existed.
    async fn delete_on(server: &Server, keys: &[&str]) -> Result<u64> {
        let mut removed = 0;
        for batch in keys.chunks(BATCH) {
            for reply in Self::pipelined(server, batch.iter().copied(), "md", "").await? {
                match reply.code {
                    Code::Stored => removed += 1,
                    Code::NotFound => {}
                    _ => return Err(unexpected(server, "md", &reply)),
                }
            }
        }
        Ok(removed)
    }

    /// Checks `keys`, groups them (with their positions) by server, and runs `work` on every
    /// server that has some, concurrently. One result per such server.
    async fn per_server<'s, 'k, T, Fut>(
        &'s self,
        keys: impl Iterator<Item = &'k str>,
        work: impl Fn(&'s Server, Vec<(usize, &'k str)>) -> Fut,
    ) -> Result<Vec<Result<T>>>
    where
        Fut: Future<Output = Result<T>>,
    {
        let mut groups = vec![Vec::new(); self.shared.servers.len()];
        for (i, key) in keys.enumerate() {
            check_key(key)?;
            groups[self.shared.ring.server_for(key)].push((i, key));
        }
        let work = groups
            .into_iter()
            .zip(&self.shared.servers)
            .filter(|(group, _)| !group.is_empty())
            .map(|(group, server)| work(server, group));
        Ok(join_all(work).await)
    }
}

/// Parses `host:port` lists separated by `,` or `;` (port 11211 when omitted).
fn parse_servers(spec: &BackendSpec) -> Result<Vec<String>, ConfigError> {
    let location = spec.location.trim().trim_end_matches('/');
    if location.is_empty() {
        return Ok(vec![DEFAULT_SERVER.to_owned()]);
    }
    let mut servers = Vec::new();
    for part in location.split([',', ';']).map(str::trim) {
        if part.is_empty() {
            return Err(spec.error("url", format!("`{location}` has an empty server entry; separate servers with `,` as in memcached://h1:11211,h2:11211")));
        }
        if part.contains('/') || part.contains('@') {
            return Err(spec.error("url", format!("`{part}` is not a `host:port` server; memcached URLs take no path or credentials, as in memcached://h1:11211,h2:11211")));
        }
        let server = match part.rsplit_once(':') {
            // `[::1]:11211` and `host:11211`.
            Some((host, port)) if !host.is_empty() && !host.ends_with(':') => {
                port.parse::<u16>().map_err(|_| {
                    spec.error("url", format!("`{port}` in `{part}` is not a port number"))
                })?;
                part.to_owned()
            }
            _ => format!("{part}:11211"),
        };
        if servers.contains(&server) {
            return Err(spec.error("url", format!("server `{server}` is listed twice")));
        }
        servers.push(server);
    }
    Ok(servers)
}

/// Refuses keys that would break the text protocol (the `Cache` above has already applied the
/// same rules with a friendlier message; this guards direct backend use).
fn check_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        Some("it is empty".to_owned())
    } else {
        KeyRules::MEMCACHED.violation(key)
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidKey {
            key: key.chars().take(80).collect(),
            reason: format!("{reason}; memcached cannot store it (use invalid_keys=hash)"),
        }),
    }
}

/// Whole seconds for an expiry: rounded up, plus one for memcached's once-a-second clock.
/// Zero means "no expiry" to memcached. Beyond 30 days the time is sent as an absolute date
/// computed from an estimate of the server's clock (good to about a second each way), so it is
/// made two seconds short instead, so that the entry never outlives its timeout.
fn expiry_secs(expiry: Expiry) -> u64 {
    match expiry {
        Expiry::Never => 0,
        Expiry::After(d) => {
            let secs = (d.as_secs() + u64::from(d.subsec_nanos() > 0)).saturating_add(1);
            if secs > RELATIVE_LIMIT {
                secs - 3
            } else {
                secs
            }
        }
    }
}

/// The `T` token for `secs` seconds from now: relative up to 30 days, an absolute unix time on
/// the server's clock beyond.
fn exptime_token(server: &Server, secs: u64) -> u64 {
    if secs <= RELATIVE_LIMIT {
        return secs;
    }
    u64::try_from(server.server_now())
        .unwrap_or(0)
        .saturating_add(secs)
}

fn replies(answer: Answer) -> Vec<Reply> {
    match answer {
        Answer::Replies(r) => r,
        Answer::Lines(_) => Vec::new(),
    }
}

fn unexpected(server: &Server, command: &str, reply: &Reply) -> Error {
    Error::backend_msg(
        BACKEND,
        format!(
            "{} answered {:?} {} to `{command}`",
            server.addr,
            reply.code,
            reply.message()
        ),
    )
}

/// `key=<url-encoded> exp=<unix time or -1> ...` → `(key, expiry)`.
fn parse_dump_line(line: &[u8]) -> Option<(String, Option<i64>)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut key = None;
    let mut exp = None;
    for field in text.split(' ') {
        if let Some(k) = field.strip_prefix("key=") {
            key = percent_encoding::percent_decode_str(k)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned());
        } else if let Some(e) = field.strip_prefix("exp=") {
            exp = e.parse::<i64>().ok();
        }
    }
    Some((key?, exp.filter(|e| *e > 0)))
}

#[async_trait]
impl Backend for Memcached {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn key_rules(&self) -> KeyRules {
        KeyRules::MEMCACHED
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let (server, reply) = self.meta_get(key, " v").await?;
        match reply.code {
            Code::Value => Ok(Some(reply.data)),
            Code::Miss => Ok(None),
            _ => Err(unexpected(server, "mg", &reply)),
        }
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        self.store(key, value, expiry, "").await.map(|_| ())
    }

    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.store(key, value, expiry, " ME").await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        Ok(Self::delete_on(self.server(key), &[key]).await? > 0)
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        check_key(key)?;
        let token = exptime_token(self.server(key), expiry_secs(expiry));
        self.meta_hit(key, &format!(" T{token}")).await
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        check_key(key)?;
        let server = self.server(key);
        if delta < 0 {
            // Memcached's decr floors at zero and cannot go negative.
            return self.incr_cas(server, key, delta).await;
        }
        let reply = self
            .one(
                server,
                &[Bytes::from(format!("ma {key} v D{delta}\r\n"))],
                Retry::Once,
            )
            .await?;
        match reply.code {
            Code::Value => {
                let text = std::str::from_utf8(&reply.data).unwrap_or("");
                let value: u64 = text.parse().map_err(|_| unexpected(server, "ma", &reply))?;
                match i64::try_from(value) {
                    Ok(v) => Ok(v),
                    Err(_) => {
                        // Unsigned memcached went past i64::MAX: take the delta back.
                        let undo = Bytes::from(format!("ma {key} MD D{delta}\r\n"));
                        let reply = self.one(server, &[undo], Retry::Once).await?;
                        if reply.code != Code::Stored {
                            tracing::warn!(
                                key,
                                "cannot undo an overflowing incr: {:?}",
                                reply.code
                            );
                        }
                        Err(Error::Overflow {
                            key: key.to_owned(),
                        })
                    }
                }
            }
            Code::NotFound => Err(Error::KeyNotFound {
                key: key.to_owned(),
            }),
            // A negative number (or no number): the CAS loop tells which.
            Code::ClientError => self.incr_cas(server, key, delta).await,
            _ => Err(unexpected(server, "ma", &reply)),
        }
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        let (server, reply) = self.meta_get(key, " t").await?;
        match reply.code {
            Code::Miss => Ok(Ttl::Missing),
            Code::Stored => {
                let t: i64 = reply
                    .flag(b't')
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| unexpected(server, "mg t", &reply))?;
                Ok(if t < 0 {
                    Ttl::Forever
                } else {
                    // Take back the second `expiry_secs` added.
                    Ttl::Remaining(Duration::from_secs(
                        t.unsigned_abs().saturating_sub(1).max(1),
                    ))
                })
            }
            _ => Err(unexpected(server, "mg t", &reply)),
        }
    }

    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        let shared = &self.shared;
        let results = join_all(shared.servers.iter().map(|server| async move {
            match prefix {
                None => {
                    let reply = self
                        .one(
                            server,
                            &[Bytes::from_static(b"flush_all\r\n")],
                            Retry::Idempotent,
                        )
                        .await?;
                    match reply.code {
                        Code::Ok => Ok(()),
                        _ => Err(unexpected(server, "flush_all", &reply)),
                    }
                }
                Some(prefix) => {
                    let keys = Self::dump(server).await?;
                    let doomed: Vec<&str> = keys
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .filter(|k| k.starts_with(prefix))
                        .collect();
                    Self::delete_on(server, &doomed).await.map(|_| ())
                }
            }
        }))
        .await;
        // Every server was tried; a dead one keeps its keys, which is worth an error.
        results.into_iter().collect()
    }

    fn scan(&self, pattern: &str) -> KeyStream {
        let shared = self.shared.clone();
        let pattern = pattern.to_owned();
        futures::stream::once(async move {
            match Self::live_keys(&shared).await {
                Ok(keys) => keys
                    .into_iter()
                    .filter(|k| glob_match(&pattern, k))
                    .map(Ok)
                    .collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        })
        .flat_map(futures::stream::iter)
        .boxed()
    }

    async fn stats(&self) -> Result<BackendStats> {
        let answers = join_all(self.shared.servers.iter().map(|s| async move {
            (
                s,
                s.request(
                    &[Bytes::from_static(b"stats\r\n")],
                    Expect::LinesUntilEnd,
                    Retry::Idempotent,
                )
                .await,
            )
        }))
        .await;
        let mut stats = BackendStats {
            entries: Some(0),
            bytes: Some(0),
            extra: Vec::new(),
        };
        let mut last_error = None;
        let mut live = 0;
        for (server, answer) in answers {
            match answer {
                Ok(answer) => {
                    live += 1;
                    let number =
                        |name: &str| stat(&answer, name).and_then(|v| v.parse::<u64>().ok());
                    let (items, bytes) = (number("curr_items"), number("bytes"));
                    stats.entries = stats.entries.zip(items).map(|(a, b)| a + b);
                    stats.bytes = stats.bytes.zip(bytes).map(|(a, b)| a + b);
                    for name in [
                        "curr_items",
                        "bytes",
                        "limit_maxbytes",
                        "evictions",
                        "curr_connections",
                        "version",
                    ] {
                        if let Some(v) = stat(&answer, name) {
                            stats.extra.push((format!("{} {name}", server.addr), v));
                        }
                    }
                }
                Err(e) => {
                    stats
                        .extra
                        .push((format!("{} down", server.addr), e.to_string()));
                    last_error = Some(e);
                }
            }
        }
        match last_error {
            Some(e) if live == 0 => Err(e),
            _ => Ok(stats),
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        let results = self
            .per_server(
                keys.iter().map(String::as_str),
                |server, group| async move {
                    let mut found = Vec::with_capacity(group.len());
                    for batch in group.chunks(BATCH) {
                        let keys = batch.iter().map(|(_, key)| *key);
                        let answer = Self::pipelined(server, keys, "mg", " v").await?;
                        for ((slot, _), reply) in batch.iter().zip(answer) {
                            match reply.code {
                                Code::Value => found.push((*slot, reply.data)),
                                Code::Miss => {}
                                _ => return Err(unexpected(server, "mg", &reply)),
                            }
                        }
                    }
                    Ok(found)
                },
            )
            .await?;
        let mut values = vec![None; keys.len()];
        let (mut answered, mut failure) = (0, None);
        for result in results {
            match result {
                Ok(found) => {
                    answered += 1;
                    for (slot, value) in found {
                        values[slot] = Some(value);
                    }
                }
                Err(e) => {
                    tracing::debug!("get_many: a server failed, its keys miss: {e}");
                    failure = Some(e);
                }
            }
        }
        match failure {
            Some(e) if answered == 0 => Err(e),
            _ => Ok(values),
        }
    }

    async fn set_many(&self, entries: Vec<(String, Bytes)>, expiry: Expiry) -> Result<()> {
        let secs = expiry_secs(expiry);
        let entries = &entries;
        let results = self
            .per_server(
                entries.iter().map(|(k, _)| k.as_str()),
                |server, group| async move {
                    let token = exptime_token(server, secs);
                    let mut first_error = None;
                    for batch in group.chunks(BATCH) {
                        let mut segments = Vec::with_capacity(batch.len() * 3);
                        let mut sent = Vec::with_capacity(batch.len());
                        for (slot, key) in batch {
                            let value = &entries[*slot].1;
                            if server.item_size_max().is_some_and(|max| value.len() > max) {
                                let e = self.too_large(server, key, value.len()).await;
                                first_error.get_or_insert(e);
                                continue;
                            }
                            let head = format!("ms {key} {} T{token}\r\n", value.len());
                            segments.extend([
                                Bytes::from(head),
                                value.clone(),
                                Bytes::from_static(b"\r\n"),
                            ]);
                            sent.push((*key, value.len()));
                        }
                        if sent.is_empty() {
                            continue;
                        }
                        let answer = server
                            .request(&segments, Expect::Replies(sent.len()), Retry::Idempotent)
                            .await?;
                        for ((key, size), reply) in sent.into_iter().zip(replies(answer)) {
                            match reply.code {
                                Code::Stored => {}
                                Code::ServerError if reply.message().contains("too large") => {
                                    let e = self.too_large(server, key, size).await;
                                    first_error.get_or_insert(e);
                                }
                                _ => {
                                    first_error.get_or_insert(unexpected(server, "ms", &reply));
                                }
                            }
                        }
                    }
                    first_error.map_or(Ok(()), Err)
                },
            )
            .await?;
        results.into_iter().collect()
    }

    async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        let results = self
            .per_server(
                keys.iter().map(String::as_str),
                |server, group| async move {
                    let keys: Vec<&str> = group.iter().map(|(_, k)| *k).collect();
                    Self::delete_on(server, &keys).await
                },
            )
            .await?;
        let mut removed = 0;
        for result in results {
            removed += result?;
        }
        Ok(removed)
    }

    async fn has_key(&self, key: &str) -> Result<bool> {
        self.meta_hit(key, "").await
    }

    async fn close(&self) -> Result<()> {
        for server in &self.shared.servers {
            server.close();
        }
        Ok(())
    }
}

impl Memcached {
    /// `host:port` of the servers currently marked down.
    pub fn down_servers(&self) -> Vec<String> {
        self.shared
            .servers
            .iter()
            .filter(|s| s.is_down())
            .map(|s| s.addr.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webcache_core::CacheConfig;

    fn servers(url: &str) -> Result<Vec<String>, ConfigError> {
        parse_servers(&CacheConfig::from_url("default", url)?.backend)
    }

    #[test]
    fn server_lists() {
        assert_eq!(servers("memcached://h1:1,h2:2").unwrap(), ["h1:1", "h2:2"]);
        assert_eq!(
            servers("memcached://h1;h2:2").unwrap(),
            ["h1:11211", "h2:2"]
        );
        assert_eq!(servers("memcached://").unwrap(), ["127.0.0.1:11211"]);
        assert_eq!(servers("memcached://[::1]:5").unwrap(), ["[::1]:5"]);
        let err = servers("memcached://h1:x").unwrap_err().to_string();
        assert!(err.contains("not a port number"), "{err}");
        let err = servers("memcached://h1,,h2").unwrap_err().to_string();
        assert!(err.contains("empty server entry"), "{err}");
        let err = servers("memcached://h1,h1:11211").unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn no_server_means_the_local_one() {
        let mc = Memcached::new(&MemcachedConfig::new(Vec::<String>::new()));
        assert_eq!(mc.server("any").addr, DEFAULT_SERVER);
    }

    #[test]
    fn options_are_checked() {
        let mut spec = CacheConfig::from_url("default", "memcached://h1?pool_size=0")
            .unwrap()
            .backend;
        let err = Memcached::from_spec(&mut spec).unwrap_err().to_string();
        assert!(err.contains("pool_size"), "{err}");
        let mut spec = CacheConfig::from_url("default", "memcached://h1?pool=3")
            .unwrap()
            .backend;
        let err = Memcached::from_spec(&mut spec).unwrap_err().to_string();
        assert!(
            err.contains("accepted options: pool_size, connect_timeout"),
            "{err}"
        );
    }

    #[test]
    fn expiry_rounds_up_with_a_spare_second() {
        assert_eq!(expiry_secs(Expiry::Never), 0);
        assert_eq!(expiry_secs(Expiry::After(Duration::from_millis(300))), 2);
        assert_eq!(expiry_secs(Expiry::After(Duration::from_secs(1))), 2);
        assert_eq!(expiry_secs(Expiry::After(Duration::from_millis(1001))), 3);
        let days_31 = Duration::from_secs(31 * 24 * 3600);
        assert_eq!(expiry_secs(Expiry::After(days_31)), days_31.as_secs() - 2);
    }

    #[test]
    fn keys_that_break_the_protocol_are_refused() {
        assert!(check_key("fine:1:key").is_ok());
        for bad in ["", "a b", "a\r\nset x", &"k".repeat(251)] {
            assert!(
                matches!(check_key(bad), Err(Error::InvalidKey { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn metadump_lines() {
        assert_eq!(
            parse_dump_line(b"key=a%3Ab%C4%8D exp=-1 la=1 cas=2 fetch=no cls=1 size=64"),
            Some(("a:bč".to_owned(), None))
        );
        assert_eq!(
            parse_dump_line(b"key=k exp=1795652759 la=1"),
            Some(("k".to_owned(), Some(1795652759)))
        );
        assert_eq!(parse_dump_line(b"garbage"), None);
    }
}
