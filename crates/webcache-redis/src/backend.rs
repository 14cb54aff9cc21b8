//! [`RedisBackend`]: the [`Backend`] trait over Redis commands.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use redis::cluster_routing::Slot;
use redis::{Cmd, FromRedisValue, RedisError, RedisResult, Script};
use webcache_core::backend::entry::parse_integer;
use webcache_core::backend::unix_ms;
use webcache_core::backend::{Backend, BackendStats, FirstFailure, KeyStream, NodeBreakers};
use webcache_core::config::{BackendSpec, ConfigError};
use webcache_core::{glob_escape, Error, Expiry, Result, Ttl};

use crate::config::{ClearMode, RedisConfig, Target};
use crate::conn::{to_node, Conn, SentinelNodes, Topology};

/// The backend's name in logs and errors.
pub const NAME: &str = "redis";

/// Keys asked for per `SCAN` step: large enough to walk a big keyspace in few round trips,
/// small enough that one step does not stall the server.
const SCAN_COUNT: usize = 1000;

/// The longest expiry sent to Redis (about 31,000 years): Redis refuses expiries that
/// overflow its clock, and anything this long is "forever" in practice.
const MAX_EXPIRY_MS: u64 = 1_000_000_000_000_000;

/// Requests in flight on one cluster node's connection at most (more wait their turn).
///
/// Without a bound, about 50 concurrent calls meeting `MOVED` after slots moved (a reshard)
/// wedge the cluster client of redis 1.8.1 for good: every later call on that connection times
/// out, even after the reshard (a node connection's command queue holds 50, and the slot
/// refresh that `MOVED` starts then cannot get its own command through). A bound well under 50
/// keeps room for it and still pipelines plenty; `moved_after_a_reshard_under_concurrency` in
/// the cluster tests checks it.
const CLUSTER_IN_FLIGHT_PER_NODE: usize = 32;

/// `INCRBY` only on an existing key: plain `INCRBY` would create a missing key at 0.
/// Running as one script keeps the check and the increment atomic.
///
/// The script answers the new value as Redis stores it (a string, read back with `GET` inside
/// the same script), not `INCRBY`'s reply: Lua turns an integer reply into a double, which
/// rounds anything beyond 2^53 (`i64::MAX - 1` came back as `i64::MIN`).
const INCR_EXISTING: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('INCRBY', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[1])
";

/// A Redis cache backend: one node, a primary with replicas, or a Redis Cluster.
///
/// Cheap to clone (clones share the connections). Build it from a cache URL with
/// [`RedisFactory`](crate::RedisFactory) (through the `webcache` registry) or directly with
/// [`RedisBackend::from_url`] / [`RedisBackend::new`], then wrap it in a
/// [`Cache`](webcache_core::Cache) (`Cache::new(Arc::new(backend.clone()), options)`) while
/// keeping a handle for the Redis-only extras.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    topology: Topology,
    config: RedisConfig,
    /// Bound on a whole call: a connection attempt plus the command.
    deadline: Duration,
    incr: Script,
    /// Reports of changed keys for near tiers (see [`crate::tracking`]).
    tracking: crate::tracking::Tracking,
    /// A circuit breaker per node, for a Cluster (per master) and shards (per shard): one dead
    /// server makes only its own keys fail fast. `None` for one server (the cache's breaker
    /// is its breaker).
    node_breakers: Option<NodeBreakers>,
    /// Which master serves which slots, for a Cluster's node breakers.
    slots: crate::nodes::SlotMap,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.config.label)
            .field("replicas", &self.inner.topology.replica_count())
            .finish()
    }
}

/// One node to `SCAN`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ScanNode {
    /// The primary or master.
    Writer,
    /// A cluster master, by address.
    ClusterMaster(String, u16),
    /// A shard, by its position in the configuration.
    Shard(usize),
}

impl RedisBackend {
    /// Builds a backend from its configuration. Nothing is dialled yet: connections are made
    /// by the first call that needs them and remade after failures. Must be called within a
    /// Tokio runtime.
    pub fn new(config: RedisConfig) -> Result<Self> {
        let open_error =
            |e: RedisError| Error::backend(NAME, format!("cannot use {}: {e}", config.label), e);
        let certificates = || redis::TlsCertificates {
            client_tls: None,
            root_cert: config.tls_root_cert.clone(),
        };
        let client = |url: &str| match config.tls_root_cert {
            Some(_) => redis::Client::build_with_tls(url, certificates()),
            None => redis::Client::open(url),
        };
        let topology = match &config.target {
            Target::Primary {
                primary, replicas, ..
            } => {
                let primary = client(primary).map_err(open_error)?;
                let replicas = replicas
                    .iter()
                    .map(|r| client(r))
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(open_error)?;
                Topology::primary(
                    primary,
                    replicas,
                    config.connect_timeout,
                    config.response_timeout,
                )
                .map_err(open_error)?
            }
            Target::Cluster {
                nodes,
                read_from_replicas,
            } => {
                let mut builder =
                    redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                        .connection_timeout(config.connect_timeout)
                        .response_timeout(config.response_timeout)
                        .connection_concurrency_limit(CLUSTER_IN_FLIGHT_PER_NODE)
                        // Follow MOVED/ASK and reconnects within the call's own bound.
                        .overall_response_timeout(Some(
                            config.connect_timeout + config.response_timeout,
                        ));
                if *read_from_replicas {
                    builder = builder
                        .read_routing_strategy(redis::cluster_read_routing::RandomReplicaStrategy);
                }
                let client = builder.build().map_err(open_error)?;
                Topology::cluster(&client, config.connect_timeout, config.response_timeout)
            }
            Target::Sentinel {
                sentinels,
                service,
                db,
                username,
                password,
                tls,
                read_from_replicas,
            } => {
                let mut redis_info = redis::RedisConnectionInfo::default().set_db(*db);
                if let Some(user) = username {
                    redis_info = redis_info.set_username(user);
                }
                if let Some(password) = password {
                    redis_info = redis_info.set_password(password);
                }
                let mut node_info = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(redis_info);
                if *tls {
                    node_info = node_info.set_tls_mode(redis::TlsMode::Secure);
                }
                let nodes = SentinelNodes::new(
                    sentinels.clone(),
                    service.clone(),
                    node_info,
                    config.connect_timeout,
                    config.response_timeout,
                )
                .map_err(open_error)?;
                Topology::Sentinel {
                    nodes: Arc::new(nodes),
                    read_from_replicas: *read_from_replicas,
                    db: *db,
                }
            }
            Target::Shards { shards, names } => {
                let clients = shards
                    .iter()
                    .map(|s| client(s))
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(open_error)?;
                Topology::shards(
                    clients,
                    names,
                    config.connect_timeout,
                    config.response_timeout,
                )
                .map_err(open_error)?
            }
        };
        webcache_core::backend::offer_invalidations::<RedisBackend>();
        let node_breakers = match &config.target {
            Target::Cluster { .. } => Some(NodeBreakers::new(NAME)),
            Target::Shards { names, .. } => {
                let breakers = NodeBreakers::new(NAME);
                breakers.register(names);
                Some(breakers)
            }
            Target::Primary { .. } | Target::Sentinel { .. } => None,
        };
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                node_breakers,
                slots: crate::nodes::SlotMap::default(),
                topology,
                deadline: config.connect_timeout + config.response_timeout,
                tracking: crate::tracking::Tracking::new(&config),
                config,
                incr: Script::new(INCR_EXISTING),
            }),
        })
    }

    /// A backend for one `redis://`, `rediss://` or `redis+unix://` URL with default options.
    /// Must be called within a Tokio runtime.
    pub fn from_url(url: &str) -> Result<Self> {
        let config = RedisConfig::single(url).map_err(|m| Error::backend_msg(NAME, m))?;
        Self::new(config)
    }

    /// Builds the backend a cache URL describes, refusing unknown options.
    pub async fn from_spec(spec: &mut BackendSpec) -> Result<Self, ConfigError> {
        let config = RedisConfig::from_spec(spec)?;
        Self::new(config).map_err(|e| spec.error("url", e.to_string()))
    }

    /// The configuration this backend was built with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// How long a call may take at most before it fails with [`Error::Timeout`]:
    /// `connect_timeout + response_timeout`.
    pub fn call_timeout(&self) -> Duration {
        self.inner.deadline
    }

    // ----- Redis-only extras -----------------------------------------------------------------

    /// Removes every key matching the glob `pattern` (final keys, as stored), walking the
    /// keyspace with `SCAN` (never `KEYS`) on every master or shard and removing with
    /// `UNLINK`; returns how many keys were removed. Use [`glob_escape`] on literal parts
    /// such as a prefix. A node that fails (a Cluster master or shard that is down) does not
    /// stop the others' keys from being removed; the first failure is then the answer, naming
    /// the node, so that the caller knows some keys may remain.
    pub async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        let mut batches = self.scan_batches(pattern.to_owned());
        let mut removed = 0;
        // A failing node does not stop the others' keys from going: every node is walked, and
        // the first failure is the answer (the caller must know that some keys may remain).
        let mut failures = FirstFailure::default();
        while let Some(batch) = batches.next().await {
            let unlinked = match batch {
                Ok((_, keys)) if keys.is_empty() => continue,
                // Where it was found, not where the ring puts it now: a key written before
                // the shard list changed is removed too.
                Ok((ScanNode::Shard(i), keys)) => {
                    let mut cmd = redis::cmd("UNLINK");
                    cmd.arg(&keys);
                    match self.shard(i) {
                        Ok(mut conn) => self.query::<u64>(&mut conn, "UNLINK", &cmd).await,
                        Err(e) => Err(e),
                    }
                }
                Ok((_, keys)) => self.unlink(&keys).await,
                Err(e) => Err(e),
            };
            if let Some(n) = failures.keep(unlinked) {
                removed += n;
            }
        }
        failures.or(removed)
    }

    /// Gives `key` (a final key) a new lifetime; returns `false` when the key is missing.
    pub async fn expire(&self, key: &str, after: Duration) -> Result<bool> {
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(key).arg(millis(after));
        Ok(self.write::<i64>(key, "PEXPIRE", &cmd).await? == 1)
    }

    /// Makes `key` (a final key) never expire; returns `false` when the key is missing or
    /// already had no expiry (as Redis's `PERSIST`).
    pub async fn persist(&self, key: &str) -> Result<bool> {
        let mut cmd = redis::cmd("PERSIST");
        cmd.arg(key);
        Ok(self.write::<i64>(key, "PERSIST", &cmd).await? == 1)
    }

    // ----- plumbing ----------------------------------------------------------------------------

    pub(crate) fn tracking(&self) -> &crate::tracking::Tracking {
        &self.inner.tracking
    }

    pub(crate) fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    pub(crate) fn fail(&self, what: &str, e: RedisError) -> Error {
        if e.is_timeout() {
            return Error::Timeout {
                backend: NAME,
                after: self.inner.config.response_timeout,
            };
        }
        // A Cluster client that holds no connection to a node (it dropped it after failures)
        // cannot reach that node either.
        let unreachable = e.is_connection_refusal()
            || e.is_io_error()
            || e.kind() == redis::ErrorKind::ClusterConnectionNotFound;
        if !unreachable {
            let message = format!("{what} on {} failed: {e}", self.inner.config.label);
            return Error::backend(NAME, message, e);
        }
        let message = format!(
            "{what} on {}: cannot reach the server: {e}",
            self.inner.config.label
        );
        // A connection the client found broken (`broken pipe`) carries no I/O error of its
        // own: give it one, so that the circuit breakers see it for the outage it is.
        let carries_io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        match carries_io {
            true => Error::backend(NAME, message, e),
            false => Error::backend(
                NAME,
                message,
                std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e),
            ),
        }
    }

    /// The node that holds `key`, for its breaker: the shard's name, or the Cluster master
    /// serving its slot (as last read; `None` until the slot map is first read, which this
    /// starts in the background when due).
    fn node_of(&self, key: &[u8]) -> Option<String> {
        match &self.inner.config.target {
            Target::Shards { names, .. } => {
                let Topology::Shards { ring, .. } = &self.inner.topology else {
                    return None;
                };
                names.get(ring.server_for(key)).cloned()
            }
            Target::Cluster { .. } => {
                let (node, due) = self.inner.slots.node_of(key);
                if due {
                    self.refresh_slots();
                }
                node
            }
            Target::Primary { .. } | Target::Sentinel { .. } => None,
        }
    }

    /// Reads the Cluster's slot map again in the background (one read at a time).
    fn refresh_slots(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.inner.slots.claim_refresh() {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            let ranges = this.read_slot_ranges().await;
            if let (Some(ranges), Some(breakers)) = (&ranges, &this.inner.node_breakers) {
                breakers.register(ranges.iter().map(|(_, _, node)| node));
            }
            this.inner.slots.refreshed(ranges);
        });
    }

    async fn read_slot_ranges(&self) -> Option<Vec<(u16, u16, String)>> {
        let Conn::Cluster(mut cluster) = self.inner.topology.writer() else {
            return None;
        };
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("NODES");
        match self.bounded(cmd.query_async::<String>(&mut cluster)).await {
            Ok(Ok(text)) => {
                Some(crate::cluster_nodes::slot_ranges(&text)).filter(|r| !r.is_empty())
            }
            _ => None,
        }
    }

    /// Runs `call`, a call about `key` only, through the breaker of the node holding `key`
    /// when there is one (see [`NodeBreakers`]).
    async fn on_node<T>(&self, key: &[u8], call: impl Future<Output = Result<T>>) -> Result<T> {
        match (&self.inner.node_breakers, self.node_of(key)) {
            (Some(breakers), Some(node)) => breakers.call(&node, call).await,
            _ => call.await,
        }
    }

    /// The nodes (Cluster masters or shards) whose circuit breaker is open now: their keys fail
    /// at once while the other nodes' keys keep working. Empty for one server.
    pub fn down_nodes(&self) -> Vec<String> {
        self.inner
            .node_breakers
            .as_ref()
            .map(NodeBreakers::down)
            .unwrap_or_default()
    }

    /// Runs `call` within the call deadline, without mapping the client's error.
    pub(crate) async fn bounded<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<RedisResult<T>> {
        tokio::time::timeout(self.inner.deadline, call)
            .await
            .map_err(|_| Error::Timeout {
                backend: NAME,
                after: self.inner.deadline,
            })
    }

    async fn query<T: FromRedisValue>(&self, conn: &mut Conn, what: &str, cmd: &Cmd) -> Result<T> {
        self.bounded(cmd.query_async(conn))
            .await?
            .map_err(|e| self.fail(what, e))
    }

    /// A read, from a replica when there are some. A replica that fails quickly (refused,
    /// broken) is replaced by the primary for this call; one that times out is not, so that a
    /// call never takes more than one deadline.
    async fn read<T: FromRedisValue>(&self, key: &str, what: &str, cmd: &Cmd) -> Result<T> {
        self.read_raw(key, what, cmd)
            .await?
            .map_err(|e| self.fail(what, e))
    }

    /// [`read`](Self::read) that hands back the server's error unmapped, for callers that
    /// answer some server errors themselves (a foreign value under a key).
    async fn read_raw<T: FromRedisValue>(
        &self,
        key: &str,
        what: &str,
        cmd: &Cmd,
    ) -> Result<RedisResult<T>> {
        let (mut conn, from_replica) = self.inner.topology.reader_for(key.as_bytes());
        match self.bounded(cmd.query_async(&mut conn)).await? {
            // The replica holds what the primary holds: its answer about the data stands.
            Err(e) if from_replica && !e.is_timeout() && !is_wrong_type(&e) => {
                tracing::debug!(
                    "redis replica failed, reading from the primary: {}",
                    self.fail(what, e)
                );
                self.bounded(cmd.query_async(&mut self.inner.topology.writer_for(key.as_bytes())))
                    .await
            }
            other => Ok(other),
        }
    }

    /// The Redis type of the value at `key` (`list`, `hash`, ...) for messages, or `"other"`
    /// if even that cannot be read.
    async fn type_of(&self, key: &str) -> String {
        let mut cmd = redis::cmd("TYPE");
        cmd.arg(key);
        match self
            .bounded(cmd.query_async::<String>(&mut self.inner.topology.writer_for(key.as_bytes())))
            .await
        {
            Ok(Ok(kind)) => kind,
            _ => "other".to_owned(),
        }
    }

    /// Sends the write `cmd` about `key` where the key lives, then [`after_write`] on the
    /// same connection.
    ///
    /// [`after_write`]: Self::after_write
    pub(crate) async fn write<T: FromRedisValue>(
        &self,
        key: &str,
        what: &str,
        cmd: &Cmd,
    ) -> Result<T> {
        let mut conn = self.inner.topology.writer_for(key.as_bytes());
        let value = self.query(&mut conn, what, cmd).await?;
        self.after_write(&mut conn).await?;
        Ok(value)
    }

    /// With `wait_replicas`, waits until that many replicas have the writes made so far on
    /// `conn` (the connection the write went on: `WAIT` counts that connection's writes).
    ///
    /// With one primary, too few acknowledgements only log a warning: the setting is there
    /// so that reads from replicas see the write. Behind Sentinel they fail the call: the
    /// setting is there so that a write answered as done survives a failover, and a write
    /// only the master holds would not.
    async fn after_write(&self, conn: &mut Conn) -> Result<()> {
        let wanted = self.inner.config.wait_replicas;
        if wanted == 0 || !self.inner.topology.has_replication() {
            return Ok(());
        }
        // The server must answer before the client stops waiting for it (the response
        // timeout), or a missing acknowledgement would read as a timeout of the whole call:
        // half of it leaves the other half for the answer to arrive on a busy machine.
        let patience = (self.inner.config.response_timeout / 2).max(Duration::from_millis(1));
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(wanted)
            .arg(u64::try_from(patience.as_millis()).unwrap_or(u64::MAX));
        let acked: u32 = self.query(conn, "WAIT", &cmd).await?;
        if acked < wanted {
            let message = format!(
                "only {acked} of {wanted} replicas acknowledged a write within {patience:?}"
            );
            if self.inner.topology.is_sentinel() {
                return Err(Error::backend_msg(
                    NAME,
                    format!(
                        "{}: {message}, so it may not survive a failover; lower `wait_replicas` or check the replicas",
                        self.inner.config.label
                    ),
                ));
            }
            tracing::warn!(url = %self.inner.config.label, "{message}");
        }
        Ok(())
    }

    /// The nodes holding keys: the primary, every shard, or every master of a cluster.
    async fn scan_nodes(&self) -> Result<Vec<ScanNode>> {
        match self.inner.topology.writer() {
            Conn::Node(_) | Conn::Sentinel(_) if self.inner.topology.is_sharded() => {
                Ok((0..self.inner.topology.nodes().len())
                    .map(ScanNode::Shard)
                    .collect())
            }
            Conn::Node(_) | Conn::Sentinel(_) => Ok(vec![ScanNode::Writer]),
            Conn::Cluster(mut cluster) => {
                let cmd = {
                    let mut c = redis::cmd("CLUSTER");
                    c.arg("NODES");
                    c
                };
                let text: String = self
                    .bounded(cmd.query_async(&mut cluster))
                    .await?
                    .map_err(|e| self.fail("CLUSTER NODES", e))?;
                let masters = crate::cluster_nodes::masters(&text);
                if masters.is_empty() {
                    return Err(Error::backend_msg(
                        NAME,
                        format!(
                            "{}: CLUSTER NODES lists no master serving slots",
                            self.inner.config.label
                        ),
                    ));
                }
                Ok(masters
                    .into_iter()
                    .map(|(host, port)| ScanNode::ClusterMaster(host, port))
                    .collect())
            }
        }
    }

    /// The name of a node's circuit breaker (see [`NodeBreakers`]), when it has one.
    fn scan_node_name(&self, node: &ScanNode) -> Option<String> {
        match (node, &self.inner.config.target) {
            (ScanNode::ClusterMaster(host, port), _) => {
                Some(crate::cluster_nodes::node_name(host, *port))
            }
            (ScanNode::Shard(i), Target::Shards { names, .. }) => names.get(*i).cloned(),
            _ => None,
        }
    }

    /// One `SCAN` step on `node`, through the node's breaker: a node known to be down fails at
    /// once, as that node's failure, instead of waiting out the call deadline.
    async fn scan_step(
        &self,
        node: &ScanNode,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        self.guarded(node, self.scan_step_unguarded(node, cursor, pattern))
            .await
    }

    /// Runs `call`, a call to `node` only, through the node's breaker when it has one.
    async fn guarded<T>(
        &self,
        node: &ScanNode,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match (&self.inner.node_breakers, self.scan_node_name(node)) {
            (Some(breakers), Some(name)) => breakers.call(&name, call).await,
            _ => call.await,
        }
    }

    async fn scan_step_unguarded(
        &self,
        node: &ScanNode,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        match (node, self.inner.topology.writer()) {
            (ScanNode::ClusterMaster(host, port), Conn::Cluster(mut cluster)) => {
                let value = self
                    .bounded(cluster.route_command(cmd, to_node(host, *port)))
                    .await?
                    .map_err(|e| self.fail("SCAN", e))?;
                redis::from_redis_value(value).map_err(|e| self.fail("SCAN", e.into()))
            }
            (ScanNode::Shard(i), _) => {
                let mut conn = self.shard(*i)?;
                self.query(&mut conn, "SCAN", &cmd).await
            }
            (_, mut conn) => self.query(&mut conn, "SCAN", &cmd).await,
        }
    }

    /// The keys matching `pattern`, in batches as `SCAN` returns them (possibly with
    /// repeats, as `SCAN` guarantees only that every key present throughout is seen), each
    /// with the node it was found on. A node that fails yields its error, and the walk goes on
    /// with the next node.
    fn scan_batches(
        &self,
        pattern: String,
    ) -> BoxStream<'static, Result<(ScanNode, Vec<Vec<u8>>)>> {
        struct Walk {
            nodes: Option<Vec<ScanNode>>,
            index: usize,
            cursor: u64,
        }
        let this = self.clone();
        let start = Walk {
            nodes: None,
            index: 0,
            cursor: 0,
        };
        stream::unfold(Some(start), move |walk| {
            let this = this.clone();
            let pattern = pattern.clone();
            async move {
                let mut walk = walk?;
                let nodes = match walk.nodes.take() {
                    Some(nodes) => nodes,
                    None => match this.scan_nodes().await {
                        Ok(nodes) => nodes,
                        Err(e) => return Some((Err(e), None)),
                    },
                };
                let node = nodes.get(walk.index)?.clone();
                match this.scan_step(&node, walk.cursor, &pattern).await {
                    // One node's failure: the walk goes on with the next node, so that the
                    // others' keys are still listed (and removed, by `delete_pattern`).
                    Err(e) => {
                        walk.index += 1;
                        walk.cursor = 0;
                        walk.nodes = Some(nodes);
                        Some((Err(e), Some(walk)))
                    }
                    Ok((next, keys)) => {
                        if next == 0 {
                            walk.index += 1;
                        }
                        walk.cursor = next;
                        walk.nodes = Some(nodes);
                        Some((Ok((node, keys)), Some(walk)))
                    }
                }
            }
        })
        .boxed()
    }

    /// The connection of shard `i`.
    fn shard(&self, i: usize) -> Result<Conn> {
        self.inner
            .topology
            .nodes()
            .into_iter()
            .nth(i)
            .ok_or_else(|| Error::backend_msg(NAME, format!("internal: no shard {i}")))
    }

    /// The positions of `keys` grouped by where they live (one group per slot on a cluster,
    /// per shard when sharded, one group otherwise), each with the connection to send on.
    fn groups<K: AsRef<[u8]>>(&self, keys: &[K], conn: Conn) -> Vec<(Conn, Vec<usize>)> {
        if let Some(groups) = self.inner.topology.by_shard(keys) {
            return groups;
        }
        if self.inner.topology.is_cluster() {
            return by_slot(keys)
                .into_iter()
                .map(|indices| (conn.clone(), indices))
                .collect();
        }
        vec![(conn, (0..keys.len()).collect())]
    }

    /// `UNLINK keys...`, one command per group (see [`groups`](Self::groups)); how many keys
    /// were removed.
    async fn unlink<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64> {
        if !self.inner.topology.is_cluster() && !self.inner.topology.is_sharded() {
            let mut cmd = redis::cmd("UNLINK");
            for key in keys {
                cmd.arg(key.as_ref());
            }
            let mut conn = self.inner.topology.writer();
            let removed = self.query(&mut conn, "UNLINK", &cmd).await?;
            self.after_write(&mut conn).await?;
            return Ok(removed);
        }
        let groups = self.groups(keys, self.inner.topology.writer());
        let counts = self
            .per_group(keys, &groups, "UNLINK", |mut conn, indices| {
                let mut cmd = redis::cmd("UNLINK");
                for &i in indices {
                    cmd.arg(keys[i].as_ref());
                }
                async move { cmd.query_async::<u64>(&mut conn).await }
            })
            .await?;
        Ok(counts.into_iter().sum())
    }

    /// One call per group of `keys` (see [`groups`](Self::groups)), all at once, each within
    /// the call deadline and through the breaker of the node its keys live on: a dead node's
    /// group fails at once, as that node's failure, and the other nodes' groups go on. Every
    /// group runs to its end (a group dropped half-way would count as a failure of its node);
    /// the answers come in the order of `groups`, or the first failure.
    async fn per_group<K, T, Q>(
        &self,
        keys: &[K],
        groups: &[(Conn, Vec<usize>)],
        what: &str,
        mut query: impl FnMut(Conn, &[usize]) -> Q,
    ) -> Result<Vec<T>>
    where
        K: AsRef<[u8]>,
        Q: Future<Output = RedisResult<T>>,
    {
        let calls = groups.iter().map(|(conn, indices)| {
            let first = indices.first().map_or(&b""[..], |&i| keys[i].as_ref());
            let call = query(conn.clone(), indices);
            self.on_node(first, async move {
                self.bounded(call).await?.map_err(|e| self.fail(what, e))
            })
        });
        futures::future::join_all(calls).await.into_iter().collect()
    }

    /// `MGET` over several groups (cluster slots or shards, see [`groups`](Self::groups)),
    /// the answers put back in the order of `keys`.
    async fn get_many_grouped(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        let (conn, _) = self.inner.topology.reader_for(b"");
        let groups = self.groups(keys, conn);
        let answers = self
            .per_group(keys, &groups, "MGET", |mut conn, indices| {
                let mut cmd = redis::cmd("MGET");
                for &i in indices {
                    cmd.arg(&keys[i]);
                }
                async move { cmd.query_async::<Vec<Option<Bytes>>>(&mut conn).await }
            })
            .await?;
        let mut values = vec![None; keys.len()];
        for ((_, indices), answer) in groups.iter().zip(answers) {
            if answer.len() != indices.len() {
                return Err(Error::backend_msg(
                    NAME,
                    format!(
                        "MGET on {} answered {} values for {} keys",
                        self.inner.config.label,
                        answer.len(),
                        indices.len()
                    ),
                ));
            }
            for (&i, value) in indices.iter().zip(answer) {
                values[i] = value;
            }
        }
        Ok(values)
    }

    /// Pipelined `SET`s over several groups: a cluster pipeline must stay within one slot,
    /// and a shard holds only its own keys. The pipelines run together.
    async fn set_many_grouped(&self, cmds: Vec<(String, Cmd)>) -> Result<()> {
        let keys: Vec<String> = cmds.iter().map(|(k, _)| k.clone()).collect();
        let groups = self.groups(&keys, self.inner.topology.writer());
        let mut cmds: Vec<Option<Cmd>> = cmds.into_iter().map(|(_, cmd)| Some(cmd)).collect();
        self.per_group(&keys, &groups, "SET (pipelined)", |mut conn, indices| {
            let mut pipe = redis::pipe();
            for &i in indices {
                if let Some(cmd) = cmds[i].take() {
                    pipe.add_command(cmd).ignore();
                }
            }
            async move { pipe.query_async::<()>(&mut conn).await }
        })
        .await?;
        Ok(())
    }
}

/// Whether Redis refused a command because the key holds another type (a list, a hash...).
fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

/// Why Redis refused an `INCRBY` on an existing key, when the refusal is about the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IncrRefusal {
    /// The key holds a list, hash, set... (`WRONGTYPE`).
    WrongType,
    /// The string is not the canonical decimal form of an `i64` (`042`, ` 42`, `4.2`, a number
    /// past the `i64` range): "value is not an integer or out of range".
    NotAnInteger,
    /// The sum would leave the `i64` range: "increment or decrement would overflow".
    Overflow,
}

/// Reads Redis's refusal of `INCRBY` (raised inside the script, whose error keeps Redis's
/// code and text and adds where in the script it happened).
fn incr_refusal(e: &RedisError) -> Option<IncrRefusal> {
    if is_wrong_type(e) {
        return Some(IncrRefusal::WrongType);
    }
    if e.code() != Some("ERR") {
        return None;
    }
    let detail = e.detail().unwrap_or_default();
    if detail.starts_with("value is not an integer") {
        Some(IncrRefusal::NotAnInteger)
    } else if detail.starts_with("increment or decrement would overflow") {
        Some(IncrRefusal::Overflow)
    } else {
        None
    }
}

/// The positions of `keys` grouped by cluster slot, for multi-key commands sent one per slot.
/// The cluster client would split a multi-slot `MGET`/`UNLINK` itself, but into commands
/// that bypass the bound on commands in flight (`conn::CLUSTER_IN_FLIGHT`), and hundreds of
/// them meeting `MOVED` at once wedge it.
fn by_slot<K: AsRef<[u8]>>(keys: &[K]) -> Vec<Vec<usize>> {
    let mut groups: HashMap<Slot, Vec<usize>> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        groups
            .entry(Slot::for_key(key.as_ref()))
            .or_default()
            .push(i);
    }
    groups.into_values().collect()
}

/// Milliseconds for `PX`/`PEXPIRE`: rounded up as every backend rounds a lifetime
/// ([`unix_ms::ceil`]), at least 1 (a sub-millisecond expiry would be refused as 0) and at most
/// [`MAX_EXPIRY_MS`].
fn millis(d: Duration) -> u64 {
    unix_ms::ceil(d).clamp(1, MAX_EXPIRY_MS)
}

/// Which `SET` to send: plain, `NX` (only if absent) or `XX` (only if present).
#[derive(Clone, Copy)]
enum SetIf {
    Always,
    Absent,
    Present,
}

fn set_cmd(key: &str, value: &[u8], expiry: Expiry, only: SetIf) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    match only {
        SetIf::Always => {}
        SetIf::Absent => {
            cmd.arg("NX");
        }
        SetIf::Present => {
            cmd.arg("XX");
        }
    }
    if let Expiry::After(d) = expiry {
        cmd.arg("PX").arg(millis(d));
    }
    cmd
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn node_breakers(&self) -> Option<&NodeBreakers> {
        self.inner.node_breakers.as_ref()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.on_node(key.as_bytes(), async {
            let mut cmd = redis::cmd("GET");
            cmd.arg(key);
            match self.read_raw(key, "GET", &cmd).await? {
                Ok(value) => Ok(value),
                // A list, hash, set... put under the prefix by something else: unreadable as an
                // entry, so a miss with a warning, as for a corrupt entry (`MGET` answers nil).
                Err(e) if is_wrong_type(&e) => {
                    let kind = self.type_of(key).await;
                    tracing::warn!(
                        url = %self.inner.config.label,
                        key,
                        "the value at this key is a Redis {kind}, not a cache entry; treated as a miss"
                    );
                    Ok(None)
                }
                Err(e) => Err(self.fail("GET", e)),
            }
        })
        .await
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        self.on_node(key.as_bytes(), async {
            self.write::<()>(key, "SET", &set_cmd(key, &value, expiry, SetIf::Always))
                .await
        })
        .await
    }

    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.on_node(key.as_bytes(), async {
            let stored: Option<String> = self
                .write(key, "SET NX", &set_cmd(key, &value, expiry, SetIf::Absent))
                .await?;
            Ok(stored.is_some())
        })
        .await
    }

    async fn set_if_present(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.on_node(key.as_bytes(), async {
            // Redis drops an expired key before running a command on it: `XX` sees it absent.
            let stored: Option<String> = self
                .write(key, "SET XX", &set_cmd(key, &value, expiry, SetIf::Present))
                .await?;
            Ok(stored.is_some())
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.on_node(key.as_bytes(), async {
            let mut cmd = redis::cmd("UNLINK");
            cmd.arg(key);
            Ok(self.write::<u64>(key, "UNLINK", &cmd).await? > 0)
        })
        .await
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.on_node(key.as_bytes(), async {
            match expiry {
                Expiry::After(d) => self.expire(key, d).await,
                Expiry::Never => {
                    // PERSIST answers 0 for a key that exists without expiry too, so ask EXISTS
                    // in the same round trip.
                    let mut pipe = redis::pipe();
                    pipe.cmd("PERSIST").arg(key).ignore().cmd("EXISTS").arg(key);
                    let mut conn = self.inner.topology.writer_for(key.as_bytes());
                    let (exists,): (u64,) = self
                        .bounded(pipe.query_async(&mut conn))
                        .await?
                        .map_err(|e| self.fail("PERSIST", e))?;
                    self.after_write(&mut conn).await?;
                    Ok(exists == 1)
                }
            }
        })
        .await
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.on_node(key.as_bytes(), async {
            let mut conn = self.inner.topology.writer_for(key.as_bytes());
            let mut invocation = self.inner.incr.key(key);
            invocation.arg(delta);
            let result: RedisResult<Option<Vec<u8>>> =
                self.bounded(invocation.invoke_async(&mut conn)).await?;
            let value = match result {
                Ok(Some(digits)) => parse_integer(&digits).ok_or_else(|| {
                    Error::backend_msg(
                        NAME,
                        format!(
                            "the incr script answered {:?} for `{key}`, not an integer; is the server a Redis?",
                            String::from_utf8_lossy(&digits)
                        ),
                    )
                })?,
                Ok(None) => {
                    return Err(Error::KeyNotFound {
                        key: key.to_owned(),
                    })
                }
                Err(e) => {
                    return Err(match incr_refusal(&e) {
                        Some(IncrRefusal::WrongType) => {
                            let kind = self.type_of(key).await;
                            tracing::warn!(
                                url = %self.inner.config.label,
                                key,
                                "cannot increment: the value at this key is a Redis {kind}, not an integer"
                            );
                            Error::NotAnInteger {
                                key: key.to_owned(),
                            }
                        }
                        Some(IncrRefusal::NotAnInteger) => Error::NotAnInteger {
                            key: key.to_owned(),
                        },
                        Some(IncrRefusal::Overflow) => Error::Overflow {
                            key: key.to_owned(),
                        },
                        None => self.fail("INCRBY", e),
                    });
                }
            };
            self.after_write(&mut conn).await?;
            Ok(value)
        })
        .await
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        self.on_node(key.as_bytes(), async {
            let mut cmd = redis::cmd("PTTL");
            cmd.arg(key);
            Ok(match self.read::<i64>(key, "PTTL", &cmd).await? {
                -2 => Ttl::Missing,
                -1 => Ttl::Forever,
                ms => Ttl::Remaining(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            })
        })
        .await
    }

    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        match (self.inner.config.clear, prefix) {
            (ClearMode::FlushDb, _) => {
                // As in `delete_pattern`: a failing node does not keep the others from being
                // emptied, and the first failure is the answer.
                let mut failures = FirstFailure::default();
                for (i, mut conn) in self.inner.topology.nodes().into_iter().enumerate() {
                    let flush = async {
                        self.query::<()>(&mut conn, "FLUSHDB", &redis::cmd("FLUSHDB"))
                            .await?;
                        self.after_write(&mut conn).await
                    };
                    // A shard's own connection; one connection for the others.
                    failures.keep(self.guarded(&ScanNode::Shard(i), flush).await);
                }
                failures.or(())
            }
            (ClearMode::Prefix, Some(prefix)) => {
                let removed = self
                    .delete_pattern(&format!("{}*", glob_escape(prefix)))
                    .await?;
                tracing::debug!(url = %self.inner.config.label, prefix, removed, "cleared");
                Ok(())
            }
            (ClearMode::Prefix, None) => self.delete_pattern("*").await.map(drop),
        }
    }

    fn scan(&self, pattern: &str) -> KeyStream {
        let mut seen = HashSet::new();
        self.scan_batches(pattern.to_owned())
            .flat_map(|batch| {
                let items: Vec<Result<String>> = match batch {
                    // A key that is not UTF-8 was not written by webcache.
                    Ok((_, keys)) => keys
                        .into_iter()
                        .filter_map(|k| String::from_utf8(k).ok())
                        .map(Ok)
                        .collect(),
                    Err(e) => vec![Err(e)],
                };
                stream::iter(items)
            })
            .filter(move |item| {
                let fresh = match item {
                    Ok(key) => seen.insert(key.clone()),
                    Err(_) => true,
                };
                futures::future::ready(fresh)
            })
            .boxed()
    }

    async fn stats(&self) -> Result<BackendStats> {
        let mut entries: u64 = 0;
        let nodes = self.inner.topology.nodes();
        for mut conn in nodes.iter().cloned() {
            // The cluster client sums DBSIZE over the masters itself.
            entries += self
                .query::<u64>(&mut conn, "DBSIZE", &redis::cmd("DBSIZE"))
                .await?;
        }
        let mut extra = vec![("url".to_owned(), self.inner.config.label.clone())];
        if self.inner.topology.is_cluster() {
            extra.push((
                "masters".to_owned(),
                self.scan_nodes().await?.len().to_string(),
            ));
        } else if nodes.len() > 1 {
            extra.push(("shards".to_owned(), nodes.len().to_string()));
        } else {
            let mut cmd = redis::cmd("INFO");
            cmd.arg("memory");
            let info: String = self
                .query(&mut self.inner.topology.writer(), "INFO", &cmd)
                .await?;
            extra.extend(info.lines().filter_map(|line| {
                let (name, value) = line.trim().split_once(':')?;
                matches!(
                    name,
                    "used_memory" | "used_memory_human" | "maxmemory" | "maxmemory_policy"
                )
                .then(|| (name.to_owned(), value.to_owned()))
            }));
            extra.push((
                "replicas".to_owned(),
                self.inner.topology.replica_count().to_string(),
            ));
        }
        Ok(BackendStats {
            // DBSIZE counts the whole database, not only this cache's prefix.
            entries: Some(entries),
            bytes: None,
            extra,
        })
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if self.inner.topology.is_cluster() || self.inner.topology.is_sharded() {
            return self.get_many_grouped(keys).await;
        }
        let mut cmd = redis::cmd("MGET");
        cmd.arg(keys);
        self.read("", "MGET", &cmd).await
    }

    async fn set_many(&self, entries: Vec<(String, Bytes)>, expiry: Expiry) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let cmds: Vec<(String, Cmd)> = entries
            .into_iter()
            .map(|(key, value)| {
                let cmd = set_cmd(&key, &value, expiry, SetIf::Always);
                (key, cmd)
            })
            .collect();
        if self.inner.topology.is_cluster() || self.inner.topology.is_sharded() {
            return self.set_many_grouped(cmds).await;
        }
        let mut pipe = redis::pipe();
        for (_, cmd) in cmds {
            pipe.add_command(cmd).ignore();
        }
        let mut conn = self.inner.topology.writer();
        self.bounded(pipe.query_async::<()>(&mut conn))
            .await?
            .map_err(|e| self.fail("SET (pipelined)", e))?;
        self.after_write(&mut conn).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.unlink(keys).await
    }

    async fn has_key(&self, key: &str) -> Result<bool> {
        self.on_node(key.as_bytes(), async {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(key);
            Ok(self.read::<u64>(key, "EXISTS", &cmd).await? == 1)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn px_rounds_up_like_every_stored_deadline() {
        // One rounding rule with the deadlines of the SQL and file backends (`unix_ms::ceil`):
        // 1.5 ms is 2 ms, never 1 (which would expire the key earlier than they do).
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::MAX), MAX_EXPIRY_MS);
    }

    /// The error Redis's reply line `-{line}` gives the client.
    fn server_error(line: &str) -> RedisError {
        let reply = format!("-{line}\r\n");
        match redis::parse_redis_value(reply.as_bytes()).and_then(|v| v.extract_error()) {
            Err(e) => e,
            Ok(v) => panic!("{line:?} parsed as {v:?}"),
        }
    }

    #[test]
    fn incr_refusals_are_read_from_redis_replies() {
        let script = " script: 8cd0, on @user_script:1.";
        for (line, expected) in [
            (
                format!("ERR value is not an integer or out of range{script}"),
                Some(IncrRefusal::NotAnInteger),
            ),
            (
                format!("ERR increment or decrement would overflow{script}"),
                Some(IncrRefusal::Overflow),
            ),
            (
                format!(
                    "WRONGTYPE Operation against a key holding the wrong kind of value{script}"
                ),
                Some(IncrRefusal::WrongType),
            ),
            ("ERR something else overflow".to_owned(), None),
            (
                "OOM command not allowed when used memory > 'maxmemory'".to_owned(),
                None,
            ),
            ("NOSCRIPT No matching script".to_owned(), None),
        ] {
            assert_eq!(incr_refusal(&server_error(&line)), expected, "{line}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any error line from a server is read without a panic, and only Redis's own three
        /// refusals are taken as being about the value.
        #[test]
        fn any_error_reply_is_read_without_panic(
            head in prop_oneof![
                Just("ERR value is not an integer"),
                Just("ERR increment or decrement would overflow"),
                Just("WRONGTYPE"),
                Just("ERR "),
                Just("ERR"),
                Just("WRONGTYPEX"),
                Just(""),
            ],
            tail in "[^\r\n]{0,60}",
        ) {
            let line = format!("{head}{tail}");
            prop_assume!(!line.is_empty());
            let (code, detail) = line.split_once(' ').unwrap_or((&line, ""));
            let expected = match code {
                "WRONGTYPE" => Some(IncrRefusal::WrongType),
                "ERR" if detail.starts_with("value is not an integer") => {
                    Some(IncrRefusal::NotAnInteger)
                }
                "ERR" if detail.starts_with("increment or decrement would overflow") => {
                    Some(IncrRefusal::Overflow)
                }
                _ => None,
            };
            prop_assert_eq!(incr_refusal(&server_error(&line)), expected, "{:?}", line);
        }
    }
}
