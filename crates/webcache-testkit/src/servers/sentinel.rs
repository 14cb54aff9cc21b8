//! Test fixture: Redis Sentinel. One master, one replica and three sentinels, real
//! `redis-server` processes on free loopback ports, for tests of a backend that finds its
//! master through the sentinels and follows a failover.
//!
//! The sentinels agree with a quorum of 2 and call a master down after
//! [`DOWN_AFTER`] without answers, so that a killed master is replaced within a few seconds.
//! A failover can also be asked for directly ([`failover`](RedisSentinels::failover), Redis's
//! `SENTINEL FAILOVER`): the replica is promoted and the old master becomes its replica, with
//! no server stopped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::redis::RedisServer;
use super::{free_port, scratch_dir, ServerProcess};

/// The name the sentinels know the master by.
pub const SERVICE: &str = "mymaster";
/// How long a master may stay silent before a sentinel calls it down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// How long startup and role changes may take on a busy machine before the fixture gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// One `redis-server --sentinel` process.
#[derive(Debug)]
pub struct SentinelProcess {
    port: u16,
    dir: PathBuf,
    process: ServerProcess,
}

impl SentinelProcess {
    /// The port the sentinel listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `redis-cli -p PORT args...` against this sentinel and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        // Stopped first: a running sentinel rewrites its configuration file into the folder.
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, its replica and three sentinels watching them.
#[derive(Debug)]
pub struct RedisSentinels {
    nodes: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
}

impl RedisSentinels {
    /// The group of this test process, started on first use and shared by its tests (they
    /// keep apart by key prefix). Tests that fail over start their own with
    /// [`start`](RedisSentinels::start).
    pub fn shared() -> &'static RedisSentinels {
        static SHARED: OnceLock<RedisSentinels> = OnceLock::new();
        SHARED.get_or_init(RedisSentinels::start)
    }

    /// Starts a master, a replica in sync with it, and three sentinels, and waits until every
    /// sentinel sees the replica and the two other sentinels (what a failover needs).
    pub fn start() -> RedisSentinels {
        let master = RedisServer::start();
        let replica = RedisServer::start_replica_of(master.port());
        for node in [&master, &replica] {
            // A node turned into a replica after a failover syncs at once, rather than after
            // Redis's default 5 s wait for more replicas to share a diskless transfer.
            let answer = node.cli(&["config", "set", "repl-diskless-sync-delay", "0"]);
            assert_eq!(answer.trim(), "OK", "CONFIG SET answered {answer:?}");
        }
        let sentinels: Vec<SentinelProcess> =
            (0..3).map(|_| start_sentinel(master.port())).collect();
        let group = RedisSentinels {
            nodes: vec![master, replica],
            sentinels,
        };
        for sentinel in &group.sentinels {
            wait_until(
                || {
                    let info = sentinel.cli(&["sentinel", "master", SERVICE]);
                    field(&info, "num-slaves") == Some("1")
                        && field(&info, "num-other-sentinels") == Some("2")
                },
                &format!(
                    "sentinel on port {} to see the replica and the other sentinels",
                    sentinel.port
                ),
            );
        }
        group
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster/DB`, plus `query`
    /// (`?name=value&...`, or empty).
    pub fn url(&self, db: u32, query: &str) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!(
            "redis+sentinel://{}/{SERVICE}/{db}{query}",
            sentinels.join(",")
        )
    }

    /// The sentinels.
    pub fn sentinels(&self) -> &[SentinelProcess] {
        &self.sentinels
    }

    /// The two data nodes, in the order they were started (the first was the master then).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The port of the master, as the first sentinel that answers names it.
    pub fn master_port(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|s| {
                let answer = s.cli(&["sentinel", "get-master-addr-by-name", SERVICE]);
                answer.lines().nth(1)?.trim().parse().ok()
            })
            .expect("no sentinel names the master")
    }

    /// The data node that is the master now.
    pub fn master(&self) -> &RedisServer {
        let port = self.master_port();
        self.node_on(port)
    }

    /// The data node that is not the master now.
    pub fn replica(&self) -> &RedisServer {
        let port = self.master_port();
        self.nodes
            .iter()
            .find(|n| n.port() != port)
            .expect("two data nodes")
    }

    fn node_on(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("the sentinels name port {port}, not one of the nodes"))
    }

    /// Asks a sentinel for a failover now (`SENTINEL FAILOVER mymaster`, no agreement needed)
    /// and returns the old master's port at once, without waiting for the switch (see
    /// [`wait_for_master_other_than`](RedisSentinels::wait_for_master_other_than)).
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        let answer = self.sentinels[0].cli(&["sentinel", "failover", SERVICE]);
        assert_eq!(answer.trim(), "OK", "SENTINEL FAILOVER answered {answer:?}");
        old
    }

    /// Waits until the sentinels name a master other than `old_port` and that node says it is
    /// a master; returns its port.
    pub fn wait_for_master_other_than(&self, old_port: u16) -> u16 {
        let mut new_port = old_port;
        wait_until(
            || {
                new_port = self.master_port();
                new_port != old_port
                    && self
                        .node_on(new_port)
                        .cli(&["role"])
                        .lines()
                        .next()
                        .is_some_and(|l| l.trim() == "master")
            },
            &format!("the sentinels to promote a master other than port {old_port}"),
        );
        new_port
    }

    /// Waits until the node on `port` replicates the current master with its link up (after a
    /// failover, the old master is turned into a replica of the new one).
    pub fn wait_for_replica_on(&self, port: u16) {
        let node = self.node_on(port);
        wait_until(
            || {
                node.cli(&["info", "replication"])
                    .contains("master_link_status:up")
            },
            &format!("the node on port {port} to replicate the new master"),
        );
    }
}

fn start_sentinel(master_port: u16) -> SentinelProcess {
    // A port can be taken between `free_port` and the sentinel's bind (by a test binary
    // running alongside, say): then the sentinel exits, and another port is tried.
    for _ in 0..5 {
        if let Some(sentinel) = try_start_sentinel(free_port(), master_port) {
            return sentinel;
        }
    }
    panic!("redis-server --sentinel did not start on a free loopback port (tried 5 times)");
}

/// A sentinel on `port`; `None` when it is not the one listening there.
fn try_start_sentinel(port: u16, master_port: u16) -> Option<SentinelProcess> {
    let dir = scratch_dir(&format!("sentinel-{port}"));
    // A sentinel rewrites its configuration file as it learns, so it gets one of its own.
    let config = dir.join("sentinel.conf");
    let text = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         protected-mode no\n\
         dir {dir}\n\
         logfile {log}\n\
         sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {SERVICE} {down}\n\
         sentinel failover-timeout {SERVICE} 10000\n\
         sentinel parallel-syncs {SERVICE} 1\n",
        dir = dir.display(),
        log = dir.join("sentinel.log").display(),
        down = DOWN_AFTER.as_millis(),
    );
    std::fs::write(&config, text)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
    let config_arg = config.to_string_lossy().into_owned();
    let process = ServerProcess::spawn("redis-server", &[&config_arg, "--sentinel"], None);
    process
        .wait_for_listener(port, PATIENCE)
        .then_some(SentinelProcess { port, dir, process })
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value after `name` in `redis-cli`'s one-item-a-line output of a field list.
fn field<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = answer.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line == name {
            return lines.next();
        }
    }
    None
}

fn wait_until(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A port another listener took before the sentinel could bind it: the sentinel exits,
    /// and that listener does not pass for it (the fixture then tries another port).
    #[test]
    fn a_port_another_listener_holds_is_no_started_sentinel() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let master = RedisServer::start();
        assert!(try_start_sentinel(port, master.port()).is_none());
    }
}
