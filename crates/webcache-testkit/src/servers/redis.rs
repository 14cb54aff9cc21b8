//! Test fixtures: real `redis-server` processes on free loopback ports: one server, a primary
//! with a replica, and a Redis Cluster (3 masters, optionally with replicas that can take over
//! from a master that is killed).
//!
//! Every server keeps nothing on disk (`--save ""`, no AOF), listens on 127.0.0.1 only, writes
//! its log into its own [`scratch_dir`], and stops when the test process ends (its folder is
//! removed then, or when the fixture is dropped). A single
//! server can be [`kill`](RedisServer::kill)ed and [`restart`](RedisServer::restart)ed on the
//! same port, for tests of a cache that outlives a Redis outage.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{free_cluster_port, free_port, scratch_dir, ServerProcess};

const STARTUP: Duration = Duration::from_secs(15);

/// One `redis-server` process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    tls: bool,
    /// The Unix socket it listens on besides its port ([`RedisServer::start_unix`]).
    socket: Option<PathBuf>,
    process: Mutex<Option<ServerProcess>>,
}

impl RedisServer {
    /// The server of this test process, started on first use and shared by its tests (they
    /// keep apart by key prefix).
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(RedisServer::start)
    }

    /// Starts a new server on a free port. Panics with a message that says what to install
    /// when `redis-server` is missing.
    pub fn start() -> RedisServer {
        Self::start_with(free_port, &|_| Vec::new())
    }

    /// Starts a new server listening on a Unix socket (only its owner may connect: mode 700)
    /// besides a free port; [`unix_url`](Self::unix_url) names the socket.
    pub fn start_unix() -> RedisServer {
        let socket = scratch_dir("redis-socket").join("redis.sock");
        let path = socket.to_string_lossy().into_owned();
        let mut server = Self::start_with(free_port, &|_| {
            vec![
                "--unixsocket".into(),
                path.clone(),
                "--unixsocketperm".into(),
                "700".into(),
            ]
        });
        server.socket = Some(socket);
        server
    }

    /// `redis+unix:///PATH?db=DB` for a server started with [`start_unix`](Self::start_unix).
    pub fn unix_url(&self, db: u32) -> String {
        let socket = self
            .socket
            .as_ref()
            .expect("a server started with start_unix");
        format!("redis+unix://{}?db={db}", socket.display())
    }

    /// Starts a replica of the server on `primary_port` and waits until it is in sync.
    pub fn start_replica_of(primary_port: u16) -> RedisServer {
        let replica = Self::start_with(free_port, &|_| {
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary_port.to_string(),
            ]
        });
        replica.wait_for_info("replication", "master_link_status:up");
        replica
    }

    /// Starts a server that speaks only TLS on its port, with a fresh self-signed certificate
    /// for 127.0.0.1 (made with `openssl`; its file is [`ca_file`](RedisServer::ca_file)).
    pub fn start_tls() -> RedisServer {
        let port = free_port();
        let dir = scratch_dir(&format!("redis-tls-{port}"));
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run openssl to make a test certificate: {e}"));
        assert!(status.success(), "openssl req failed: {status}");
        let (cert, key) = (
            cert.to_string_lossy().into_owned(),
            key.to_string_lossy().into_owned(),
        );
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &cert,
            "--tls-auth-clients",
            "no",
        ];
        let server = RedisServer {
            port,
            dir,
            extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
            tls: true,
            socket: None,
            process: Mutex::new(None),
        };
        server.restart();
        server
    }

    /// Starts a server on a port from `choose_port`, with `extra_args(port)`.
    fn start_with(
        choose_port: fn() -> u16,
        extra_args: &dyn Fn(u16) -> Vec<String>,
    ) -> RedisServer {
        // A port can be taken between `choose_port` and the server's bind (by a test binary
        // running alongside, say): then the server exits, and another port is tried.
        for _ in 0..5 {
            let port = choose_port();
            let server = RedisServer {
                port,
                dir: scratch_dir(&format!("redis-{port}")),
                extra_args: extra_args(port),
                tls: false,
                socket: None,
                process: Mutex::new(None),
            };
            if server.launch() {
                server.wait_for_ping();
                return server;
            }
        }
        panic!("redis-server did not start on a free loopback port (tried 5 times)");
    }

    /// The certificate a TLS server presents (self-signed: it is its own authority).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The server's scratch folder (its log, a TLS server's certificate, a cluster node's
    /// `nodes.conf`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/DB` (`rediss://` for a TLS server).
    pub fn url(&self, db: u32) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/{db}", self.port)
    }

    /// The server's process id (from `INFO server`; the fixture's own child is a watchdog
    /// shell), for [`Frozen`](super::Frozen).
    pub fn pid(&self) -> u32 {
        self.cli(&["info", "server"])
            .lines()
            .find_map(|l| l.trim().strip_prefix("process_id:")?.parse().ok())
            .expect("INFO server gives the process id")
    }

    /// Stops the server (its data is gone: nothing is persisted). Idempotent.
    pub fn kill(&self) {
        let mut process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut running) = process.take() {
            running.stop();
        }
    }

    /// Starts the server again on the same port (stopping it first if it runs), and waits
    /// until it answers.
    pub fn restart(&self) {
        assert!(
            self.launch(),
            "redis-server did not listen on port {} within {STARTUP:?}; see {}",
            self.port,
            self.dir.join("redis.log").display()
        );
        self.wait_for_ping();
    }

    /// Waits until the server (listening, maybe still loading) answers `PING`.
    fn wait_for_ping(&self) {
        self.wait_until(|| self.cli(&["ping"]).trim() == "PONG", "answer PING");
    }

    /// Stops the server if it runs, starts it on its port, and says whether it is the one
    /// listening there (`false`: it exited, the port being someone else's).
    fn launch(&self) -> bool {
        self.kill();
        let port = self.port.to_string();
        let dir = self.dir.to_string_lossy().into_owned();
        let log = self.dir.join("redis.log").to_string_lossy().into_owned();
        let mut args: Vec<&str> = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--logfile",
            &log,
            "--protected-mode",
            "no",
        ];
        args.extend(self.extra_args.iter().map(String::as_str));
        let process = ServerProcess::spawn("redis-server", &args, None);
        let listening = process.wait_for_listener(self.port, STARTUP);
        *self.process.lock().unwrap_or_else(|p| p.into_inner()) = Some(process);
        listening
    }

    /// Runs `redis-cli -p PORT args...` and returns its output (for checks independent of the
    /// client under test, such as `-n 2 ttl KEY`).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.arg("-p").arg(self.port.to_string());
        if self.tls {
            command.arg("--tls").arg("--cacert").arg(self.ca_file());
        }
        let output = command
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The `ROLE` of the server as `redis-cli` prints it: `master` or `slave` on the first
    /// line (then, for a replica, its master's host and port); empty if it does not answer.
    pub fn role(&self) -> String {
        self.cli(&["role"])
    }

    fn wait_for_info(&self, section: &str, needle: &str) {
        self.wait_until(
            || self.cli(&["info", section]).contains(needle),
            &format!("report `{needle}` in INFO {section}"),
        );
    }

    fn wait_until(&self, mut ready: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + STARTUP;
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not {what} within {STARTUP:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary with one replica in sync.
#[derive(Debug)]
pub struct RedisReplicaPair {
    /// The primary, which takes the writes.
    pub primary: RedisServer,
    /// The replica, which serves reads.
    pub replica: RedisServer,
}

impl RedisReplicaPair {
    /// The pair of this test process, started on first use.
    pub fn shared() -> &'static RedisReplicaPair {
        static SHARED: OnceLock<RedisReplicaPair> = OnceLock::new();
        SHARED.get_or_init(RedisReplicaPair::start)
    }

    /// Starts a primary and a replica of it, and waits until the replica is in sync.
    pub fn start() -> RedisReplicaPair {
        let primary = RedisServer::start();
        let replica = RedisServer::start_replica_of(primary.port());
        RedisReplicaPair { primary, replica }
    }

    /// `redis://primary/DB?replicas=redis://replica/DB`, plus `extra` query options
    /// (`&name=value...`).
    pub fn url(&self, db: u32, extra: &str) -> String {
        format!(
            "{}?replicas={}{extra}",
            self.primary.url(db),
            self.replica.url(db)
        )
    }
}

/// A Redis Cluster: masters, and replicas if asked for.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// How long a cluster with replicas waits before it declares a silent node failed
/// (`cluster-node-timeout`): short, so that a replica takes over from a killed master within
/// a few seconds, but long enough that a busy machine does not fail nodes by itself.
const FAILOVER_NODE_TIMEOUT_MS: u32 = 2000;

impl RedisCluster {
    /// The 3-master cluster of this test process, started on first use.
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(|| RedisCluster::start(3))
    }

    /// Starts `masters` cluster nodes (ports at most 55535 with their bus port free), joins
    /// them with `redis-cli --cluster create`, and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        Self::create(masters, 0, 5000)
    }

    /// Starts `masters` masters with `replicas` replicas each, and waits until the cluster is
    /// ok and every replica is in sync with its master. Nodes declare a silent node failed
    /// after 2 s, so when a master is [`kill`](RedisServer::kill)ed one of its replicas is
    /// promoted a few seconds later.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> RedisCluster {
        let cluster = Self::create(masters, replicas, FAILOVER_NODE_TIMEOUT_MS);
        for node in &cluster.nodes {
            if node.role().starts_with("slave") {
                node.wait_for_info("replication", "master_link_status:up");
            }
        }
        cluster
    }

    fn create(masters: usize, replicas: usize, node_timeout_ms: u32) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(free_cluster_port, &|port| {
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        format!("nodes-{port}.conf"),
                        "--cluster-node-timeout".into(),
                        node_timeout_ms.to_string(),
                    ]
                })
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster create: {e}"));
        assert!(
            status.success(),
            "redis-cli --cluster create {addresses:?} failed: {status}"
        );
        for node in &nodes {
            node.wait_until(
                || node.cli(&["cluster", "info"]).contains("cluster_state:ok"),
                "report cluster_state:ok",
            );
        }
        RedisCluster { nodes }
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes that are masters now (by `ROLE`; a killed node is none).
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|n| n.role().starts_with("master"))
            .collect()
    }

    /// The nodes that replicate `master` now (by `ROLE`).
    pub fn replicas_of(&self, master: &RedisServer) -> Vec<&RedisServer> {
        let port = master.port().to_string();
        self.nodes
            .iter()
            .filter(|n| {
                let role = n.role();
                let mut lines = role.lines().map(str::trim);
                lines.next() == Some("slave") && lines.nth(1) == Some(port.as_str())
            })
            .collect()
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}
