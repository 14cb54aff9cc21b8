//! The connections under a [`RedisBackend`](crate::RedisBackend): one auto-reconnecting
//! multiplexed connection per node (a primary and its replicas), or one cluster connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::Semaphore;

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
    /// A single node (a primary or a replica).
    Node(ConnectionManager),
    /// Redis Cluster: commands are routed by slot; `MOVED`/`ASK` are followed by the client.
    Cluster(GatedCluster),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where commands go.
pub(crate) enum Topology {
    /// One primary, optionally with replicas that serve reads in turn.
    Primary {
        primary: ConnectionManager,
        replicas: Vec<ConnectionManager>,
        next: AtomicUsize,
    },
    /// A Redis Cluster.
    Cluster(GatedCluster),
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
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(RECONNECT_ATTEMPTS)
            .set_min_delay(MIN_RECONNECT_DELAY)
            .set_max_delay(MAX_RECONNECT_DELAY);
        let manager =
            |client: redis::Client| ConnectionManager::new_lazy_with_config(client, config.clone());
        Ok(Topology::Primary {
            primary: manager(primary)?,
            replicas: replicas
                .into_iter()
                .map(manager)
                .collect::<Result<_, _>>()?,
            next: AtomicUsize::new(0),
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

    /// The connection for writes (and anything that must see the latest data).
    pub(crate) fn writer(&self) -> Conn {
        match self {
            Topology::Primary { primary, .. } => Conn::Node(primary.clone()),
            Topology::Cluster(c) => Conn::Cluster(c.clone()),
        }
    }

    /// The connection for plain reads: the replicas in turn when there are any.
    pub(crate) fn reader(&self) -> (Conn, bool) {
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
            Topology::Cluster(c) => (Conn::Cluster(c.clone()), false),
        }
    }

    pub(crate) fn replica_count(&self) -> usize {
        match self {
            Topology::Primary { replicas, .. } => replicas.len(),
            Topology::Cluster(_) => 0,
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }
}

/// Routing of a command to one cluster node by address (for `SCAN`, which is per node).
pub(crate) fn to_node(host: &str, port: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    })
}

/// The `host:port` of every master that serves slots, from `CLUSTER NODES` output.
pub(crate) fn masters_from_cluster_nodes(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _id = fields.next()?;
            let address = fields.next()?;
            let flags = fields.next()?;
            let is_master = flags.split(',').any(|f| f == "master");
            let failing = flags
                .split(',')
                .any(|f| f == "fail" || f == "handshake" || f == "noaddr");
            // A master without slots (fields 9 and later) holds no keys.
            let has_slots = line.split_whitespace().nth(8).is_some();
            if !is_master || failing || !has_slots {
                return None;
            }
            let host_port = address.split(['@', ',']).next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever a server sends as `CLUSTER NODES`, reading it never panics, and every
        /// master it yields is a `host:port` written on a line flagged `master` with slots.
        #[test]
        fn cluster_nodes_output_is_read_without_panic(
            text in "(([0-9a-f]{2} )?[0-9.:@\\[\\],a-z]{0,24} (master|myself,master|slave|master,fail)? ?[-0-9 a-z]{0,30}\n){0,6}",
            noise in any::<Vec<u8>>(),
        ) {
            for (host, port) in masters_from_cluster_nodes(&text) {
                let address = format!("{host}:{port}");
                prop_assert!(
                    // IPv6 hosts come without their brackets.
                    text.lines().any(|l| l.contains("master") && l.replace(['[', ']'], "").contains(&address)),
                    "{} not on a master line of {:?}", address, text
                );
            }
            let _ = masters_from_cluster_nodes(&String::from_utf8_lossy(&noise));
        }
    }

    #[test]
    fn parses_masters_from_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003,host.example master - 0 1426238318243 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
aaaa 127.0.0.1:30009@40009 master,fail - 0 0 1 connected 1-2
bbbb 127.0.0.1:30010@40010 master - 0 0 1 connected
";
        assert_eq!(
            masters_from_cluster_nodes(text),
            vec![
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30003),
                ("127.0.0.1".to_owned(), 30001)
            ]
        );
    }
}
