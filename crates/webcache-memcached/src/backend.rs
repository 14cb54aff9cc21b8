//! The backend itself: the key's server, storing with `ms`, and the [`Backend`] operations.

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use futures::StreamExt;
use webcache_core::backend::{
    glob_match, node_failure, Backend, BackendStats, KeyRules, KeyStream,
};
use webcache_core::{Error, Expiry, Result, Ttl};

use crate::config::{MemcachedConfig, DEFAULT_SERVER};
use crate::conn::{Answer, Code, Expect, Reply};
use crate::expiry::{expiry_secs, exptime_token};
use crate::server::{stat, Retry, Server, Settings, DEFAULT_ITEM_SIZE_MAX};
use crate::BACKEND;
use webcache_core::backend::Ring;

/// Keys per pipelined round trip: small enough that requests and replies never fill both
/// socket buffers at once.
const BATCH: usize = 100;

/// The memcached backend; see the [crate documentation](crate).
#[derive(Debug, Clone)]
pub struct MemcachedBackend {
    shared: Arc<Shared>,
}

/// What every clone of a [`MemcachedBackend`] shares: the servers (with their pools) and the ring.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) servers: Vec<Server>,
    ring: Ring,
}

impl MemcachedBackend {
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
            remove_failed_servers: config.remove_failed_servers,
            server_failure_limit: config.server_failure_limit.max(1),
        };
        let ring = Ring::new(&config.servers);
        let members = Arc::new(AtomicUsize::new(config.servers.len()));
        let servers = config
            .servers
            .iter()
            .map(|addr| Server::new(addr.clone(), settings, members.clone()))
            .collect();
        MemcachedBackend {
            shared: Arc::new(Shared { servers, ring }),
        }
    }

    /// The server that holds `key`.
    pub(crate) fn server(&self, key: &str) -> &Server {
        &self.shared.servers[self.route(key)]
    }

    /// The index of the server that holds `key`: its owner, or while the owner is out of the
    /// ring the next server in it. Routing a key past its owner is what starts the owner's
    /// probe once its backoff has passed, so a server comes back when its keys are asked for.
    fn route(&self, key: &str) -> usize {
        let servers = &self.shared.servers;
        let (owner, holder) = self
            .shared
            .ring
            .route(key, |i| servers.get(i).is_some_and(Server::in_ring));
        if owner != holder {
            self.probe(owner);
        }
        holder
    }

    /// Starts a background probe of the server `index` (out of the ring) if one is due.
    fn probe(&self, index: usize) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .shared
            .servers
            .get(index)
            .is_some_and(Server::claim_probe)
        {
            let shared = self.shared.clone();
            runtime.spawn(async move {
                if let Some(server) = shared.servers.get(index) {
                    server.readmit().await;
                }
            });
        }
    }

    /// Sends one command to the server of `key` and returns its single reply.
    pub(crate) async fn one(
        &self,
        server: &Server,
        segments: &[Bytes],
        retry: Retry,
    ) -> Result<Reply> {
        match server.request(segments, Expect::Replies(1), retry).await? {
            Answer::Replies(mut replies) if replies.len() == 1 => Ok(replies.remove(0)),
            other => Err(Error::backend_msg(
                BACKEND,
                format!("{} gave an unexpected answer: {other:?}", server.addr),
            )),
        }
    }

    /// Runs `call`, a call about `key` only: in a pool, an outage it meets is marked as the
    /// key's server's ([`node_failure`]) while another server is up, so that the cache's own
    /// breaker leaves it to this server's health (marked down, probed, out of the ring) and
    /// the other servers' keys keep working.
    async fn on_node<T>(&self, key: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let servers = &self.shared.servers;
        match call.await {
            Err(e) if servers.len() > 1 && servers.iter().any(|s| !s.is_down()) => {
                Err(node_failure(BACKEND, &self.server(key).addr, e))
            }
            other => other,
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

    /// Stores `value` with `ms`; `mode` is `""` (set), `" ME"` (add) or `" MR"` (replace: only
    /// over a live item). Returns whether it was stored.
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
            groups[self.route(key)].push((i, key));
        }
        let work = groups
            .into_iter()
            .zip(&self.shared.servers)
            .filter(|(group, _)| !group.is_empty())
            .map(|(group, server)| work(server, group));
        Ok(join_all(work).await)
    }
}

/// Refuses keys that would break the text protocol (the `Cache` above has already applied the
/// same rules with a friendlier message; this guards direct backend use).
pub(crate) fn check_key(key: &str) -> Result<()> {
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

pub(crate) fn replies(answer: Answer) -> Vec<Reply> {
    match answer {
        Answer::Replies(r) => r,
        Answer::Lines(_) => Vec::new(),
    }
}

pub(crate) fn unexpected(server: &Server, command: &str, reply: &Reply) -> Error {
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

#[async_trait]
impl Backend for MemcachedBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn key_rules(&self) -> KeyRules {
        KeyRules::MEMCACHED
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.on_node(key, async {
            let (server, reply) = self.meta_get(key, " v").await?;
            match reply.code {
                Code::Value => Ok(Some(reply.data)),
                Code::Miss => Ok(None),
                _ => Err(unexpected(server, "mg", &reply)),
            }
        })
        .await
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        self.on_node(key, async {
            self.store(key, value, expiry, "").await.map(|_| ())
        })
        .await
    }

    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.on_node(key, async { self.store(key, value, expiry, " ME").await })
            .await
    }

    async fn set_if_present(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.on_node(key, async { self.store(key, value, expiry, " MR").await })
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.on_node(key, async {
            check_key(key)?;
            Ok(Self::delete_on(self.server(key), &[key]).await? > 0)
        })
        .await
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.on_node(key, async {
            check_key(key)?;
            let token = exptime_token(self.server(key), expiry_secs(expiry));
            self.meta_hit(key, &format!(" T{token}")).await
        })
        .await
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.on_node(key, async { self.increment(key, delta).await })
            .await
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        self.on_node(key, async {
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
        })
        .await
    }

    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        let shared = &self.shared;
        let results = join_all(shared.servers.iter().map(|server| async move {
            if !server.in_ring() {
                // It is emptied before it takes keys again.
                return Ok(());
            }
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
        // Every server in the ring was tried; a dead one keeps its keys, which is worth an
        // error.
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
        self.on_node(key, async { self.meta_hit(key, "").await })
            .await
    }

    async fn close(&self) -> Result<()> {
        for server in &self.shared.servers {
            server.close();
        }
        Ok(())
    }
}

impl MemcachedBackend {
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

    #[test]
    fn no_server_means_the_local_one() {
        let mc = MemcachedBackend::new(&MemcachedConfig::new(Vec::<String>::new()));
        assert_eq!(mc.server("any").addr, DEFAULT_SERVER);
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
}
