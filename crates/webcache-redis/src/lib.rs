//! The Redis backend of webcache: one node, a primary with replicas, a master found through
//! Redis Sentinel, independent servers sharded by the client, or a Redis Cluster.
//!
//! ```toml
//! [caches.default]
//! url = "redis://127.0.0.1:6379/2"        # `/2`: database 2; rediss:// for TLS
//! key_prefix = "shop"
//! connect_timeout = 0.5                   # seconds per connection attempt (default 1)
//! response_timeout = 0.5                  # seconds per command (default 1)
//!
//! [caches.replicated]                     # writes to the primary, reads over the replicas
//! url = "redis://10.0.0.1:6379/0"
//! replicas = "redis://10.0.0.2:6379/0,redis://10.0.0.3:6379/0"
//! wait_replicas = 0                       # >0: each write WAITs for that many replicas
//!
//! [caches.cluster]
//! url = "redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000"
//! read_from_replicas = false
//! tls = false                             # true: reach the nodes over TLS
//! clear = "prefix"                        # or "flushdb" to empty whole databases on clear()
//!
//! [caches.sentinel]                       # the master the sentinels know as `mymaster`, db 2
//! url = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/2"
//! read_from_replicas = true
//! wait_replicas = 1                       # a write is done once a replica has it
//!
//! [caches.sharded]                        # keys spread over independent servers (ketama)
//! url = "redis://10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379/0"
//!
//! [caches.private_ca]
//! url = "rediss://redis.internal:6380/0"
//! tls_ca_file = "/etc/ssl/private-ca.pem" # trust this root instead of the system's
//! ```
//!
//! Built on the [`redis`] crate: a [`ConnectionManager`](redis::aio::ConnectionManager)
//! (one multiplexed connection per node, which pipelines concurrent calls and reconnects with
//! backoff) or its async cluster client (slot routing, `MOVED`/`ASK`). On a node's connection,
//! the single commands that concurrent calls send at the same moment (the `GET`s of
//! simultaneous page hits) leave as one pipeline: one write here and one read and one
//! write in redis-server for all of them, not one each. Connections are made
//! lazily, so an application starts while Redis is down; every call is bounded by
//! `connect_timeout + response_timeout` and fails with [`Error::Timeout`](webcache_core::Error::Timeout) or
//! [`Error::Backend`](webcache_core::Error::Backend) (which a cache in [`OnError::Degrade`](webcache_core::OnError) mode turns
//! into misses and dropped writes) and the next call after Redis returns succeeds.
//!
//! Over a Cluster or shards, each master or shard has a circuit breaker of its own
//! ([`NodeBreakers`](webcache_core::backend::NodeBreakers): 3 connection failures in a row open
//! it, a trial call at most every second closes it): while one node is down its keys fail at
//! once (no timeout wait), the other nodes' keys keep working, and the cache's own breaker
//! opens only when every node is down. [`RedisBackend::down_nodes`] lists the open ones. A
//! Cluster that lost every copy of some slots keeps serving the others only with
//! `cluster-require-full-coverage no` on its nodes.
//!
//! Each cache operation is one native command: `SET … PX` (`add`: `SET … NX PX`,
//! `set_if_present`: `SET … XX PX`), `MGET`,
//! pipelined `SET`s for `set_many` (one pipeline per slot on a cluster), `UNLINK`,
//! `PEXPIRE`/`PERSIST` for `touch`, `PTTL`, and a small Lua script for `incr` (`INCRBY` only
//! when the key exists, so the key keeps its TTL and a missing key is not created; it answers
//! the new value as a string, exact across the whole `i64` range). Keys are
//! stored as the cache builds them (`prefix:version:key`), readable in `redis-cli`, with real
//! Redis TTLs.
//!
//! `clear()` removes only the cache's prefix, with `SCAN` + `UNLINK` (on every master of a
//! cluster), never `KEYS` and never `FLUSHDB` unless configured with `clear = "flushdb"`. A
//! master or shard that is down does not stop the others from being cleared, and is not
//! skipped either: `clear()` then fails, naming that node, since its keys come back with it.
//!
//! Redis-only extras live on [`RedisBackend`]: [`delete_pattern`](RedisBackend::delete_pattern),
//! [`expire`](RedisBackend::expire)/[`persist`](RedisBackend::persist), a distributed
//! [`lock`](RedisBackend::try_lock), and [`get_or_set_locked`], a `get_or_set` whose
//! computation runs once across processes.
#![forbid(unsafe_code)]
// Library code answers every failure with an error, never a panic; tests may unwrap.
#![warn(clippy::unwrap_used)]

mod backend;
mod batch;
mod cluster_nodes;
mod config;
mod conn;
mod lock;
mod nodes;
mod tracking;

use config::OPTIONS;

use std::sync::Arc;

use webcache_core::backend::async_trait;
use webcache_core::backend::{Backend, BackendFactory, Scheme};
use webcache_core::config::{BackendSpec, ConfigError};

pub use backend::{RedisBackend, NAME};
pub use config::{
    ClearMode, RedisConfig, Target, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT,
};
pub use lock::{get_or_set_locked, LockOptions, RedisLock};

/// Builds the backend a cache URL describes (`redis://`, `rediss://`, `redis+unix://`,
/// `redis+cluster://`, `redis+sentinel://`).
///
/// Nothing is dialled here: a bad URL or option is a [`ConfigError`] naming the field, but an
/// unreachable server only shows when the cache is used (as an error bounded by the timeouts,
/// or a miss in degrade mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisFactory;

#[async_trait]
impl BackendFactory for RedisFactory {
    fn schemes(&self) -> &[Scheme] {
        &[
            Scheme {
                name: "redis",
                usage: "redis://[user:pass@]host:port/db",
            },
            Scheme {
                name: "rediss",
                usage: "rediss://[user:pass@]host:port/db  (TLS)",
            },
            Scheme {
                name: "redis+unix",
                usage: "redis+unix:///path/to/redis.sock?db=0  (a local server's socket)",
            },
            Scheme {
                name: "redis+cluster",
                usage: "redis+cluster://h1:p1,h2:p2",
            },
            Scheme {
                name: "redis+sentinel",
                usage: "redis+sentinel://s1:26379,s2:26379/master-name/db",
            },
        ]
    }

    fn options(&self) -> &[&str] {
        OPTIONS
    }

    async fn build(&self, spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
        Ok(Arc::new(RedisBackend::from_spec(spec).await?))
    }
}
