//! The connections under a [`RedisBackend`](crate::RedisBackend): one auto-reconnecting
//! multiplexed connection per node (a primary and its replicas, or each shard), one cluster
//! connection, or connections to the master (and a replica) the sentinels name.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::Semaphore;

use webcache_core::backend::Ring;

use crate::batch::Node;

/// How long to wait between reconnection attempts at most: short, so that a cache resumes
/// soon after Redis returns.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(20);
/// Attempts per reconnection round. A failed round ends with an I/O error, and the next call
/// starts a new round, so a small number keeps calls from queueing behind a long backoff.
const RECONNECT_ATTEMPTS: usize = 2;

/// Commands in flight on a cluster connection at most; more wait their turn outside the
/// cluster client.
///
/// The cluster client of redis 1.8.1 wedges for good when about 50 commands meet `MOVED` at
/// once (right after slots moved): the slot refresh that `MOVED` starts needs room in a node
/// connection's queue (50 commands), that room goes to commands queued before it, and those
/// commands are not driven while the refresh runs, so every later call times out. Keeping
/// fewer commands than that inside the client leaves room for the refresh, and a multiplexed
/// connection still pipelines this many. `moved_after_a_reshard_under_concurrency` in the
/// cluster tests checks it.
pub(crate) const CLUSTER_IN_FLIGHT: usize = 32;

/// One connection handle, cheap to clone, that any command can be sent on.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A single node (a primary, a replica or a shard); its single commands are sent in
    /// batches (see [`crate::batch`]).
    Node(Node),
    /// Redis Cluster: commands are routed by slot; `MOVED`/`ASK` are followed by the client.
    Cluster(GatedCluster),
    /// The master (or a replica) the sentinels name, looked up again after a failure.
    Sentinel(SentinelConn),
}

/// Which node of a sentinel-watched group a connection goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Master,
    Replica,
}

/// How long reads go to the master, without asking the sentinels again, after no replica
/// could be found (none listed, or none answering): a replica lookup checks each listed
/// replica, which takes as long as a silent one makes it wait, and lookups run one at a time.
const NO_REPLICA_PAUSE: Duration = Duration::from_secs(1);

/// A connection the sentinels named, with the lookup it came from (its generation), so that
/// a failure forgets this connection and not a newer one another call already found.
type Found = (u64, MultiplexedConnection);

/// The nodes of one sentinel-watched group: the sentinels, and the master and replica
/// connections found through them so far.
///
/// A connection is kept until a command on it fails in a way that says the node may no
/// longer be what it was (the connection broke or was refused, timed out, or a former master
/// answers `READONLY`); the next command then asks the sentinels again. Sentinel closes the
/// clients of both nodes when it switches them (`CLIENT KILL TYPE normal`), so a failover is
/// noticed at the next command.
pub(crate) struct SentinelNodes {
    /// The sentinels' client; one lookup at a time, so that a failover is looked up once and
    /// not by every waiting call.
    sentinel: tokio::sync::Mutex<Sentinel>,
    service: String,
    node_info: SentinelNodeConnectionInfo,
    config: AsyncConnectionConfig,
    master: Mutex<Option<Found>>,
    replica: Mutex<Option<Found>>,
    /// Until when a replica is not looked for again (see [`NO_REPLICA_PAUSE`]).
    no_replica_until: Mutex<Option<Instant>>,
    lookups: AtomicU64,
}

impl SentinelNodes {
    /// Nodes of the group `service` known to `sentinels`; nothing is dialled yet.
    pub(crate) fn new(
        sentinels: Vec<String>,
        service: String,
        node_info: SentinelNodeConnectionInfo,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<Self> {
        Ok(SentinelNodes {
            sentinel: tokio::sync::Mutex::new(Sentinel::build(sentinels)?),
            service,
            node_info,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout)),
            master: Mutex::new(None),
            replica: Mutex::new(None),
            no_replica_until: Mutex::new(None),
            lookups: AtomicU64::new(0),
        })
    }

    fn slot(&self, role: Role) -> &Mutex<Option<Found>> {
        match role {
            Role::Master => &self.master,
            Role::Replica => &self.replica,
        }
    }

    fn known(&self, role: Role) -> Option<Found> {
        self.slot(role)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends reads to the master for [`NO_REPLICA_PAUSE`]: no replica could be reached.
    fn pause_replica_lookups(&self) {
        *self
            .no_replica_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + NO_REPLICA_PAUSE);
    }

    /// Fails while a recent replica lookup found none (the caller reads from the master).
    fn check_replica_pause(&self, role: Role) -> RedisResult<()> {
        let until = *self
            .no_replica_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match until {
            Some(until) if role == Role::Replica && Instant::now() < until => {
                Err(RedisError::from((
                    redis::ErrorKind::NoValidReplicasFoundBySentinel,
                    "no replica answered a moment ago; reading from the master for now",
                )))
            }
            _ => Ok(()),
        }
    }

    /// The connection to the node in `role`, asking the sentinels if none is known.
    async fn connection(&self, role: Role) -> RedisResult<Found> {
        if let Some(found) = self.known(role) {
            return Ok(found);
        }
        self.check_replica_pause(role)?;
        let mut sentinel = self.sentinel.lock().await;
        // Another call may have looked it up (or found none) while this one waited.
        if let Some(found) = self.known(role) {
            return Ok(found);
        }
        self.check_replica_pause(role)?;
        let client = match role {
            Role::Master => {
                sentinel
                    .async_master_for(&self.service, Some(&self.node_info))
                    .await?
            }
            Role::Replica => sentinel
                .async_replica_rotate_for(&self.service, Some(&self.node_info))
                .await
                .inspect_err(|_| self.pause_replica_lookups())?,
        };
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .inspect_err(|_| {
                if role == Role::Replica {
                    self.pause_replica_lookups();
                }
            })?;
        let generation = self.lookups.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            service = %self.service,
            node = %client.get_connection_info().addr(),
            "redis sentinel: using this node as the {}",
            match role {
                Role::Master => "master",
                Role::Replica => "replica",
            }
        );
        *self.slot(role).lock().unwrap_or_else(|p| p.into_inner()) =
            Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Forgets the connection of lookup `generation`, if it is still the one in use.
    fn forget(&self, role: Role, generation: u64) {
        let mut slot = self.slot(role).lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }
}

/// Whether a failure says the node may have changed, so that the sentinels must be asked
/// again.
fn needs_lookup(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.code() == Some("READONLY")
}

/// Whether a failure shows that the node did not run the command (a former master refusing a
/// write, a refused connection), so that it may be sent again to the node the sentinels
/// name now.
fn not_run(e: &RedisError) -> bool {
    e.code() == Some("READONLY") || e.is_connection_refusal()
}

/// A handle on the master (or a replica) of a sentinel-watched group.
///
/// The first command pins the node's connection in this handle, so that the commands sent
/// on one handle (a write and the `WAIT` that follows it) reach the same server: a `WAIT`
/// sent to a newly promoted master would count replicas of that server, not of the write.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    nodes: Arc<SentinelNodes>,
    role: Role,
    pinned: Option<Found>,
    db: i64,
}

impl SentinelConn {
    /// Runs `send` on the pinned connection (pinning one first), forgetting the connection
    /// after a failure that calls for a new lookup, and sending once more when the node
    /// surely did not run the command.
    async fn run(&mut self, request: Request<'_>) -> RedisResult<Vec<Value>> {
        let mut retried = false;
        loop {
            let (generation, mut conn) = match &self.pinned {
                Some(found) => found.clone(),
                None => {
                    let found = self.nodes.connection(self.role).await?;
                    self.pinned = Some(found.clone());
                    found
                }
            };
            let result = match request {
                Request::One(cmd) => conn.req_packed_command(cmd).await.map(|v| vec![v]),
                Request::Many(pipeline, offset, count) => {
                    conn.req_packed_commands(pipeline, offset, count).await
                }
            };
            match &result {
                Err(e) if needs_lookup(e) => {
                    tracing::debug!(
                        service = %self.nodes.service,
                        "redis sentinel: asking the sentinels again after: {e}"
                    );
                    self.nodes.forget(self.role, generation);
                    self.pinned = None;
                    if !retried && not_run(e) {
                        retried = true;
                        continue;
                    }
                }
                _ => {}
            }
            return result;
        }
    }
}

/// What a [`SentinelConn`] sends: one command or part of a pipeline.
#[derive(Clone, Copy)]
enum Request<'a> {
    One(&'a Cmd),
    Many(&'a Pipeline, usize, usize),
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let mut values = self.run(Request::One(cmd)).await?;
            values.pop().ok_or_else(|| {
                RedisError::from((redis::ErrorKind::Client, "no reply to a command"))
            })
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move { self.run(Request::Many(pipeline, offset, count)).await }.boxed()
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

/// A cluster connection that lets at most [`CLUSTER_IN_FLIGHT`] commands in at once.
#[derive(Clone)]
pub(crate) struct GatedCluster {
    conn: ClusterConnection,
    gate: Arc<Semaphore>,
}

impl GatedCluster {
    /// Sends `cmd` where `routing` says (for example to one node by address).
    pub(crate) async fn route_command(
        &mut self,
        cmd: Cmd,
        routing: RoutingInfo,
    ) -> RedisResult<Value> {
        let _turn = self.gate.acquire().await;
        self.conn.route_command(cmd, routing).await
    }
}

impl ConnectionLike for GatedCluster {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let _turn = self.gate.acquire().await;
            self.conn.req_packed_command(cmd).await
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            let _turn = self.gate.acquire().await;
            self.conn.req_packed_commands(pipeline, offset, count).await
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

/// Where commands go.
pub(crate) enum Topology {
    /// One primary, optionally with replicas that serve reads in turn.
    Primary {
        primary: Node,
        replicas: Vec<Node>,
        next: AtomicUsize,
    },
    /// A Redis Cluster.
    Cluster(GatedCluster),
    /// The master the sentinels name, and a replica for reads when asked for.
    Sentinel {
        nodes: Arc<SentinelNodes>,
        read_from_replicas: bool,
        db: i64,
    },
    /// Independent servers, each holding the keys the ring gives it.
    Shards { shards: Vec<Node>, ring: Ring },
}

/// The connection to one node, made lazily.
fn manager(
    client: redis::Client,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> RedisResult<Node> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(RECONNECT_ATTEMPTS)
        .set_min_delay(MIN_RECONNECT_DELAY)
        .set_max_delay(MAX_RECONNECT_DELAY);
    ConnectionManager::new_lazy_with_config(client, config).map(Node::new)
}

impl Topology {
    /// Connections to a primary and its replicas, made lazily: nothing is dialled until the
    /// first command, so an application starts even while Redis is down.
    pub(crate) fn primary(
        primary: redis::Client,
        replicas: Vec<redis::Client>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> redis::RedisResult<Self> {
        let manager = |client| manager(client, connect_timeout, response_timeout);
        Ok(Topology::Primary {
            primary: manager(primary)?,
            replicas: replicas
                .into_iter()
                .map(manager)
                .collect::<Result<_, _>>()?,
            next: AtomicUsize::new(0),
        })
    }

    /// Connections to independent shards, made lazily; `names` place them on the ring.
    pub(crate) fn shards(
        shards: Vec<redis::Client>,
        names: &[String],
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> redis::RedisResult<Self> {
        Ok(Topology::Shards {
            shards: shards
                .into_iter()
                .map(|c| manager(c, connect_timeout, response_timeout))
                .collect::<Result<_, _>>()?,
            ring: Ring::new(names),
        })
    }

    /// A cluster connection that discovers the slots in the background.
    pub(crate) fn cluster(
        client: &redis::cluster::ClusterClient,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        let config = ClusterConfig::new()
            .set_connection_timeout(connect_timeout)
            .set_response_timeout(response_timeout);
        Topology::Cluster(GatedCluster {
            conn: client.get_pending_async_connection_with_config(config),
            gate: Arc::new(Semaphore::new(CLUSTER_IN_FLIGHT)),
        })
    }

    fn sentinel_conn(nodes: &Arc<SentinelNodes>, role: Role, db: i64) -> Conn {
        Conn::Sentinel(SentinelConn {
            nodes: nodes.clone(),
            role,
            pinned: None,
            db,
        })
    }

    /// The connection for writes to `key` (and anything that must see the latest data).
    pub(crate) fn writer_for(&self, key: &[u8]) -> Conn {
        match self {
            Topology::Shards { shards, ring } => Conn::Node(shards[ring.server_for(key)].clone()),
            _ => self.writer(),
        }
    }

    /// The connection for commands about no key in particular: the primary, the master, the
    /// cluster, or the first shard (callers that must reach every shard use
    /// [`nodes`](Self::nodes)).
    pub(crate) fn writer(&self) -> Conn {
        match self {
            Topology::Primary { primary, .. } => Conn::Node(primary.clone()),
            Topology::Cluster(c) => Conn::Cluster(c.clone()),
            Topology::Sentinel { nodes, db, .. } => Self::sentinel_conn(nodes, Role::Master, *db),
            Topology::Shards { shards, .. } => Conn::Node(shards[0].clone()),
        }
    }

    /// The connection for plain reads of `key`: the replicas in turn when there are any; and
    /// whether it is a replica.
    pub(crate) fn reader_for(&self, key: &[u8]) -> (Conn, bool) {
        match self {
            Topology::Primary {
                primary,
                replicas,
                next,
            } => {
                if replicas.is_empty() {
                    (Conn::Node(primary.clone()), false)
                } else {
                    let i = next.fetch_add(1, Ordering::Relaxed) % replicas.len();
                    (Conn::Node(replicas[i].clone()), true)
                }
            }
            Topology::Sentinel {
                nodes,
                read_from_replicas: true,
                db,
            } => (Self::sentinel_conn(nodes, Role::Replica, *db), true),
            _ => (self.writer_for(key), false),
        }
    }

    /// Every shard's connection, in configuration order (one connection, the writer's, for
    /// the other topologies).
    pub(crate) fn nodes(&self) -> Vec<Conn> {
        match self {
            Topology::Shards { shards, .. } => shards.iter().cloned().map(Conn::Node).collect(),
            _ => vec![self.writer()],
        }
    }

    /// The positions of `keys` grouped by shard, with each shard's connection; `None` when
    /// this is not a sharded topology.
    pub(crate) fn by_shard<K: AsRef<[u8]>>(&self, keys: &[K]) -> Option<Vec<(Conn, Vec<usize>)>> {
        let Topology::Shards { shards, ring } = self else {
            return None;
        };
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); shards.len()];
        for (i, key) in keys.iter().enumerate() {
            groups[ring.server_for(key.as_ref())].push(i);
        }
        Some(
            shards
                .iter()
                .zip(groups)
                .filter(|(_, g)| !g.is_empty())
                .map(|(s, g)| (Conn::Node(s.clone()), g))
                .collect(),
        )
    }

    pub(crate) fn replica_count(&self) -> usize {
        match self {
            Topology::Primary { replicas, .. } => replicas.len(),
            _ => 0,
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }

    pub(crate) fn is_sharded(&self) -> bool {
        matches!(self, Topology::Shards { .. })
    }

    /// Whether writes `WAIT` for replicas: a primary with replicas, or a sentinel's master.
    pub(crate) fn has_replication(&self) -> bool {
        matches!(self, Topology::Primary { .. } | Topology::Sentinel { .. })
    }

    pub(crate) fn is_sentinel(&self) -> bool {
        matches!(self, Topology::Sentinel { .. })
    }
}

/// Routing of a command to one cluster node by address (for `SCAN`, which is per node).
pub(crate) fn to_node(host: &str, port: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    })
}
