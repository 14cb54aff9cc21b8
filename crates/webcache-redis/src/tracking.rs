//! Reports of changed keys for a near tier (`near_ttl`): Redis client-side caching.
//!
//! # The choice: `CLIENT TRACKING ... BCAST` on a connection of its own
//!
//! Every node that serves reads (the primary and its replicas, or each cluster node that serves
//! reads) gets one extra RESP3 connection, named `webcache-tracking`, on which this process
//! runs `CLIENT TRACKING on BCAST`. Redis then pushes an `invalidate` message on it for every
//! key changed on that node, by any client: webcache processes, but also scripts, `redis-cli`
//! and other programs, expiry and eviction. A `FLUSHDB`/`FLUSHALL` pushes a null, which drops
//! every copy. That is why tracking was chosen over a pub/sub channel that webcache writers
//! would publish to: a channel sees only the writers that publish (and every write would pay
//! for a publish), tracking sees every change made on the server itself.
//!
//! Broadcast mode rather than the default mode (where Redis remembers the keys each connection
//! read): the default mode must run on the very connection that reads, whose reconnections the
//! connection manager hides (a silent reconnect would lose the tracking, and changes would go
//! unreported without anyone noticing), and replica or cluster reads go over other
//! connections still. Broadcast reports changes to all keys, including those this process
//! never read (dropping a copy that does not exist costs a hash lookup); Redis's tracking is not
//! per database, so changes in other databases of the server are reported too.
//!
//! # When the reports are not connected
//!
//! The near tier is told [`connected`](InvalidationFeed::connected) once every node's tracking
//! connection answers, and [`disconnected`](InvalidationFeed::disconnected) as soon as one of
//! them breaks, fails a heartbeat `PING` (every [`HEARTBEAT`], answered within the
//! `response_timeout`) or, on a cluster, the set of nodes changes (a failover, a new master).
//! Then every connection is made again; until that succeeds the near tier serves no copies,
//! and when it does, it drops them all. So a copy is never served for longer than
//! [`HEARTBEAT`] + `response_timeout` after the reports stopped, even when the network drops
//! packets silently.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Notify};
use webcache_core::backend::{InvalidationFeed, Invalidations};

use crate::config::{RedisConfig, Target};
use crate::RedisBackend;

/// How often every tracking connection is checked with a `PING`.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);
/// On a cluster, how many heartbeats between two checks of the node list.
const TOPOLOGY_EVERY: u32 = 10;
/// The name of the tracking connections in `CLIENT LIST`.
pub(crate) const CONNECTION_NAME: &str = "webcache-tracking";
/// Waits between attempts to connect again after a failure.
const MIN_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);

/// The tracking of one [`RedisBackend`](crate::RedisBackend): started by the first near tier
/// that subscribes, stopped when none is left.
pub(crate) struct Tracking {
    shared: Arc<Shared>,
}

struct Shared {
    config: RedisConfig,
    /// The runtime the backend was built in, where the tracking runs.
    runtime: Option<tokio::runtime::Handle>,
    state: Mutex<State>,
    /// Wakes the tracking task when a feed subscribed.
    arrived: Notify,
}

#[derive(Default)]
struct State {
    /// Feeds that subscribed since the task last looked.
    new: Vec<InvalidationFeed>,
    running: bool,
}

impl Tracking {
    /// Tracking for the nodes `config` describes (nothing is dialled until a subscription).
    pub(crate) fn new(config: &RedisConfig) -> Self {
        Tracking {
            shared: Arc::new(Shared {
                config: config.clone(),
                runtime: tokio::runtime::Handle::try_current().ok(),
                state: Mutex::new(State::default()),
                arrived: Notify::new(),
            }),
        }
    }

    /// Reports changes to `feed` from now on; `false` when this backend cannot (a target
    /// without tracking, or no runtime to run it in).
    pub(crate) fn subscribe(&self, feed: InvalidationFeed) -> bool {
        // The runtime of the caller, where the cache is used, or else the backend's.
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.shared.runtime.clone());
        let Some(runtime) = runtime else {
            tracing::warn!(
                "redis: the near tier cannot be told of changes (the backend was built outside a Tokio runtime); copies live up to near_ttl"
            );
            return false;
        };
        if nodes_to_track(&self.shared.config).is_none() {
            return false;
        }
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.new.push(feed);
        if !state.running {
            state.running = true;
            runtime.spawn(run(self.shared.clone()));
        }
        drop(state);
        self.shared.arrived.notify_one();
        true
    }
}

impl Invalidations for RedisBackend {
    fn subscribe(&self, feed: InvalidationFeed) -> bool {
        self.tracking().subscribe(feed)
    }
}

/// Where the tracking connections go.
enum Nodes {
    /// These URLs (a primary and its replicas).
    Fixed(Vec<String>),
    /// The nodes of a cluster, found with `CLUSTER NODES` through these seeds.
    Cluster {
        seeds: Vec<String>,
        with_replicas: bool,
    },
}

fn nodes_to_track(config: &RedisConfig) -> Option<Nodes> {
    if let Target::Primary {
        primary, replicas, ..
    } = &config.target
    {
        let mut urls = vec![primary.clone()];
        urls.extend(replicas.iter().cloned());
        return Some(Nodes::Fixed(urls));
    }
    if let Target::Cluster {
        nodes,
        read_from_replicas,
    } = &config.target
    {
        return Some(Nodes::Cluster {
            seeds: nodes.clone(),
            with_replicas: *read_from_replicas,
        });
    }
    None
}

/// The feeds a tracking task reports to. If the task ends without stopping on its own (its
/// runtime shut down), they are told the reports stopped, and the next subscription starts a
/// new task.
struct Subscribers {
    shared: Arc<Shared>,
    feeds: Vec<InvalidationFeed>,
    stopped: bool,
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for feed in &self.feeds {
            feed.disconnected();
        }
        if !self.stopped {
            self.shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .running = false;
        }
    }
}

/// The tracking task: connects, reports, reconnects, until no feed is left.
async fn run(shared: Arc<Shared>) {
    let mut subscribers = Subscribers {
        shared: shared.clone(),
        feeds: Vec::new(),
        stopped: false,
    };
    let feeds = &mut subscribers.feeds;
    let mut retry = MIN_RETRY;
    let mut failures = 0u32;
    loop {
        adopt(&shared, feeds, false).await;
        if stop_if_alone(&shared, feeds) {
            subscribers.stopped = true;
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let session = match connect(&shared.config, &tx).await {
            Ok(session) => session,
            Err(message) => {
                if failures == 0 {
                    tracing::warn!(
                        url = %shared.config.label,
                        "redis: cannot start the near tier's change reports ({message}); copies are not served until they start"
                    );
                } else {
                    tracing::debug!(url = %shared.config.label, "redis tracking: {message}");
                }
                failures += 1;
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(url = %shared.config.label, "redis: the near tier's change reports are connected again");
        }
        failures = 0;
        retry = MIN_RETRY;
        for feed in feeds.iter() {
            feed.connected().await;
        }
        let why = watch(&shared, feeds, session, &mut rx).await;
        for feed in feeds.iter() {
            feed.disconnected();
        }
        match why {
            None => {
                subscribers.stopped = true;
                return;
            }
            Some(why) => tracing::warn!(
                url = %shared.config.label,
                "redis: the near tier's change reports stopped ({why}); copies are not served until they are back"
            ),
        }
    }
}

/// Takes the feeds that subscribed, telling them whether reports flow now.
async fn adopt(shared: &Shared, feeds: &mut Vec<InvalidationFeed>, connected: bool) {
    let new = std::mem::take(&mut shared.state.lock().unwrap_or_else(|p| p.into_inner()).new);
    for feed in new {
        if connected {
            feed.connected().await;
        }
        feeds.push(feed);
    }
}

/// Forgets closed feeds; when none is left (and none arrived), marks the task stopped and
/// says so.
fn stop_if_alone(shared: &Shared, feeds: &mut Vec<InvalidationFeed>) -> bool {
    feeds.retain(|f| !f.is_closed());
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    if feeds.is_empty() && state.new.is_empty() {
        state.running = false;
        return true;
    }
    false
}

/// The tracking connections of one round, and the cluster nodes they were made to.
struct Session {
    connections: Vec<MultiplexedConnection>,
    /// On a cluster: the nodes tracked, and whether replicas are among them.
    cluster_nodes: Option<(BTreeSet<(String, u16)>, bool)>,
}

/// Reports changes until the connections fail (`Some(why)`) or no feed is left (`None`).
async fn watch(
    shared: &Shared,
    feeds: &mut Vec<InvalidationFeed>,
    mut session: Session,
    rx: &mut mpsc::UnboundedReceiver<PushInfo>,
) -> Option<String> {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let mut beats = 0u32;
    loop {
        tokio::select! {
            push = rx.recv() => {
                let Some(push) = push else {
                    return Some("the connection closed".to_owned());
                };
                match push.kind {
                    PushKind::Invalidate => match read_invalidation(&push.data) {
                        Changed::Keys(keys) => {
                            for feed in feeds.iter() {
                                feed.keys_changed(&keys).await;
                            }
                        }
                        Changed::All => {
                            for feed in feeds.iter() {
                                feed.all_changed().await;
                            }
                        }
                    },
                    PushKind::Disconnection => return Some("the connection closed".to_owned()),
                    _ => {}
                }
            }
            _ = heartbeat.tick() => {
                if stop_if_alone(shared, feeds) {
                    return None;
                }
                if let Err(why) = ping_all(&shared.config, &mut session.connections).await {
                    return Some(why);
                }
                beats += 1;
                if beats.is_multiple_of(TOPOLOGY_EVERY) {
                    if let Some((nodes, with_replicas)) = &session.cluster_nodes {
                        match nodes_now(&shared.config, &mut session.connections, *with_replicas).await {
                            Ok(now) if now == *nodes => {}
                            Ok(_) => return Some("the cluster's nodes changed".to_owned()),
                            Err(why) => return Some(why),
                        }
                    }
                }
            }
            _ = shared.arrived.notified() => adopt(shared, feeds, true).await,
        }
    }
}

async fn ping_all(
    config: &RedisConfig,
    connections: &mut [MultiplexedConnection],
) -> Result<(), String> {
    for connection in connections {
        let ping = redis::cmd("PING");
        match tokio::time::timeout(
            config.response_timeout,
            ping.query_async::<String>(connection),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("PING failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "PING unanswered within {:?}",
                    config.response_timeout
                ))
            }
        }
    }
    Ok(())
}

/// The cluster's nodes to track now, asked over the first tracking connection.
async fn nodes_now(
    config: &RedisConfig,
    connections: &mut [MultiplexedConnection],
    with_replicas: bool,
) -> Result<BTreeSet<(String, u16)>, String> {
    let connection = connections
        .first_mut()
        .ok_or_else(|| "no tracking connection".to_owned())?;
    let mut asked = redis::cmd("CLUSTER");
    asked.arg("NODES");
    match tokio::time::timeout(
        config.response_timeout,
        asked.query_async::<String>(connection),
    )
    .await
    {
        Ok(Ok(text)) => Ok(crate::cluster_nodes::read_nodes(&text, with_replicas)),
        Ok(Err(e)) => Err(format!("CLUSTER NODES failed: {e}")),
        Err(_) => Err("CLUSTER NODES unanswered".to_owned()),
    }
}

/// Makes one tracking connection per node; every push goes to `tx`.
async fn connect(
    config: &RedisConfig,
    tx: &mpsc::UnboundedSender<PushInfo>,
) -> Result<Session, String> {
    let (infos, cluster_nodes) = match nodes_to_track(config) {
        None => return Err("this target has no tracking".to_owned()),
        Some(Nodes::Fixed(urls)) => {
            let infos = urls
                .iter()
                .map(|url| client(config, url).map(|c| c.get_connection_info().clone()))
                .collect::<Result<Vec<_>, _>>()?;
            (infos, None)
        }
        Some(Nodes::Cluster {
            seeds,
            with_replicas,
        }) => {
            let (seed, nodes) = cluster_nodes(config, &seeds, with_replicas).await?;
            let infos = nodes
                .iter()
                .map(|(host, port)| {
                    let addr = match seed.addr() {
                        ConnectionAddr::TcpTls {
                            insecure,
                            tls_params,
                            ..
                        } => ConnectionAddr::TcpTls {
                            host: host.clone(),
                            port: *port,
                            insecure: *insecure,
                            tls_params: tls_params.clone(),
                        },
                        _ => ConnectionAddr::Tcp(host.clone(), *port),
                    };
                    seed.clone().set_addr(addr)
                })
                .collect();
            (infos, Some((nodes, with_replicas)))
        }
    };
    let mut connections = Vec::with_capacity(infos.len());
    for info in infos {
        let address = info.addr().to_string();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| format!("{address}: {e}"))?;
        let sender = tx.clone();
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_push_sender(move |push: PushInfo| sender.send(push));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&connection_config)
            .await
            .map_err(|e| format!("{address}: {e}"))?;
        let mut setup = redis::pipe();
        setup
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg(CONNECTION_NAME)
            .ignore()
            .cmd("CLIENT")
            .arg("TRACKING")
            .arg("on")
            .arg("BCAST")
            .ignore();
        tokio::time::timeout(
            config.response_timeout,
            setup.query_async::<()>(&mut connection),
        )
        .await
        .map_err(|_| format!("{address}: CLIENT TRACKING unanswered"))?
        .map_err(|e| format!("{address}: CLIENT TRACKING failed: {e}"))?;
        connections.push(connection);
    }
    Ok(Session {
        connections,
        cluster_nodes,
    })
}

/// A client for `url` with the backend's TLS settings.
fn client(config: &RedisConfig, url: &str) -> Result<redis::Client, String> {
    match &config.tls_root_cert {
        Some(root) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.clone()),
            },
        ),
        None => redis::Client::open(url),
    }
    .map_err(|e| format!("{}: {e}", config.label))
}

/// The nodes of the cluster to track, asked of the first seed that answers, and that seed's
/// connection settings (the template for the nodes' own).
async fn cluster_nodes(
    config: &RedisConfig,
    seeds: &[String],
    with_replicas: bool,
) -> Result<(redis::ConnectionInfo, BTreeSet<(String, u16)>), String> {
    let mut last = String::from("no seed node");
    for seed in seeds {
        let asked = async {
            let client = client(config, seed)?;
            let mut connection = client
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(config.connect_timeout))
                        .set_response_timeout(Some(config.response_timeout)),
                )
                .await
                .map_err(|e| e.to_string())?;
            let text: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((client.get_connection_info().clone(), text))
        };
        match tokio::time::timeout(config.connect_timeout + config.response_timeout, asked).await {
            Ok(Ok((info, text))) => {
                let nodes = crate::cluster_nodes::read_nodes(&text, with_replicas);
                if nodes.is_empty() {
                    last = "CLUSTER NODES lists no node serving reads".to_owned();
                    continue;
                }
                return Ok((info, nodes));
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = "CLUSTER NODES unanswered".to_owned(),
        }
    }
    Err(format!("cannot list the cluster's nodes: {last}"))
}

/// What an `invalidate` push says changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Changed<'a> {
    /// These keys (keys that are not UTF-8 cannot be a near tier's, and are left out).
    Keys(Vec<&'a str>),
    /// Anything: a flush, or a message that does not read as a list of keys (never trusted
    /// to mean less).
    All,
}

/// Reads the data of an `invalidate` push: a list of keys, or a null after a flush.
pub(crate) fn read_invalidation(data: &[Value]) -> Changed<'_> {
    match data {
        [Value::Array(keys)] => {
            let mut changed = Vec::with_capacity(keys.len());
            for key in keys {
                match key {
                    Value::BulkString(bytes) => {
                        if let Ok(key) = std::str::from_utf8(bytes) {
                            changed.push(key);
                        }
                    }
                    Value::SimpleString(key) => changed.push(key),
                    _ => return Changed::All,
                }
            }
            Changed::Keys(changed)
        }
        _ => Changed::All,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<Vec<u8>>().prop_map(Value::BulkString),
            ".{0,12}".prop_map(Value::SimpleString),
            any::<i64>().prop_map(Value::Int),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(inner, 0..6).prop_map(Value::Set),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever a server pushes as `invalidate`, reading it never panics, and a list of
        /// keys is reported only when every element is a string: each reported key is one of
        /// them, and a key that is not UTF-8 is the only thing ever left out.
        #[test]
        fn any_invalidate_push_is_read_without_panic(data in prop::collection::vec(value(), 0..3)) {
            match read_invalidation(&data) {
                Changed::All => {}
                Changed::Keys(keys) => {
                    let [Value::Array(items)] = data.as_slice() else {
                        panic!("keys reported from {data:?}");
                    };
                    let utf8 = items.iter().filter(|v| match v {
                        Value::BulkString(b) => std::str::from_utf8(b).is_ok(),
                        Value::SimpleString(_) => true,
                        _ => panic!("keys reported from a list holding {v:?}"),
                    }).count();
                    prop_assert_eq!(keys.len(), utf8);
                }
            }
        }

    }

    #[test]
    fn reads_keys_and_flushes() {
        let data = [Value::Array(vec![
            Value::BulkString(b"a:1:k".to_vec()),
            Value::BulkString(vec![0xff, 0xfe]),
        ])];
        assert_eq!(read_invalidation(&data), Changed::Keys(vec!["a:1:k"]));
        assert_eq!(read_invalidation(&[Value::Nil]), Changed::All);
        assert_eq!(read_invalidation(&[Value::Int(3)]), Changed::All);
        assert_eq!(read_invalidation(&[]), Changed::All);
    }
}
