//! Real servers for tests, started on free loopback ports and stopped when the test process
//! ends (even if it is killed): each server runs under a small shell watchdog that stops it
//! when the test process's end of a pipe closes. Their scratch folders go the same way (see
//! [`scratch_dir`]): fixtures kept in statics are never dropped, so nothing in the test
//! process itself could remove them.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a watchdog may take to start its server: a watchdog without a child past this has
/// lost it.
const CHILD_STARTS_WITHIN: Duration = Duration::from_secs(5);

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// A loopback port that refuses connections for as long as it is kept: a socket is bound to
/// it and never listens, so a connection is reset, and no server can bind the port meanwhile.
/// For tests of a server that is down from the start: a port from [`free_port`] is released
/// at once, and a server of a test running alongside could take it and answer.
#[derive(Debug)]
pub struct RefusedPort {
    /// Bound, never listening: it holds the port.
    _socket: socket2::Socket,
    port: u16,
}

impl RefusedPort {
    /// Binds a port the kernel chooses on 127.0.0.1.
    pub fn new() -> RefusedPort {
        use socket2::{Domain, Socket, Type};
        let socket =
            Socket::new(Domain::IPV4, Type::STREAM, None).expect("cannot create a TCP socket");
        let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        socket
            .bind(&any_port.into())
            .expect("cannot bind a loopback port");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .map(|address| address.port())
            .expect("a bound socket has a port");
        RefusedPort {
            _socket: socket,
            port,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for RefusedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A free port `p` at most 55535 whose cluster-bus port `p + 10000` is free too (for Redis
/// Cluster nodes).
pub fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let p: u16 = 20000 + rand::random::<u16>() % 35000;
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

/// Waits until something accepts connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether `program` is on the PATH (tests say so clearly when a server is not installed).
pub fn installed(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A fresh directory `webcache-test-NAME-PID-RANDOM` under the system's temporary directory.
/// Its creator removes it; most tests want [`scratch_dir`], which is removed when the test
/// process ends.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "webcache-test-{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("cannot create a temporary directory");
    dir
}

/// A fresh [`temp_dir`] that is removed when the test process ends (see [`remove_at_exit`]).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    remove_at_exit(&dir);
    dir
}

/// Removes `dir` (and everything in it) once the test process has ended, however it ends:
/// normally (statics are never dropped), by a panic, or killed.
///
/// One watchdog per test process collects the folders on a pipe; when the pipe closes (the
/// process is gone) it removes them, retrying for a few seconds because servers stopping at
/// the same moment may still write into their folders. It ignores the interrupt of a Ctrl-C
/// (sent to the whole process group) so that it outlives the tests it cleans up after. Not for
/// a folder whose server must find it to stop (PostgreSQL's data directory: its own watchdog
/// removes it after stopping it).
pub fn remove_at_exit(dir: &Path) {
    /// The remover and the write end of its pipe; kept, never waited for: it is meant to
    /// outlive this process.
    static REMOVER: Mutex<Option<(Child, ChildStdin)>> = Mutex::new(None);
    let mut remover = REMOVER.lock().unwrap_or_else(|p| p.into_inner());
    if remover.is_none() {
        let script = r#"trap '' INT TERM HUP
while IFS= read -r dir; do set -- "$@" "$dir"; done
tries=0
while [ "$tries" -lt 100 ]; do
    left=0
    for dir do
        rm -rf -- "$dir" 2>/dev/null
        if [ -e "$dir" ]; then left=1; fi
    done
    if [ "$left" -eq 0 ]; then exit 0; fi
    tries=$((tries + 1))
    sleep 0.1
done
"#;
        // The remover outlives this process on purpose: it is never waited for.
        #[allow(clippy::zombie_processes)]
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the scratch folder remover: {e}"));
        let stdin = child.stdin.take().expect("the remover's stdin is piped");
        *remover = Some((child, stdin));
    }
    let line = dir
        .to_str()
        .filter(|text| !text.contains('\n'))
        .unwrap_or_else(|| panic!("{} is not a one-line UTF-8 path", dir.display()));
    let (_, stdin) = remover.as_mut().expect("the remover was just started");
    writeln!(stdin, "{line}")
        .and_then(|()| stdin.flush())
        .unwrap_or_else(|e| panic!("cannot register {line} for removal: {e}"));
}

/// A server process under a watchdog.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Child,
    lifeline: Option<ChildStdin>,
}

impl ServerProcess {
    /// Starts `program args...` under the watchdog. `stop_command`, if given, is a shell
    /// command run to stop the server instead of killing it (for example `pg_ctl stop`).
    pub fn spawn(program: &str, args: &[&str], stop_command: Option<&str>) -> ServerProcess {
        assert!(
            installed(program),
            "`{program}` is not installed; run ./scripts/test, which installs the test servers"
        );
        let stop = stop_command.unwrap_or("kill $child 2>/dev/null");
        let script = format!(
            r#""$@" & child=$!
trap '{stop}; wait $child; exit 0' TERM INT
read _ignored
{stop}
wait $child
"#
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut child = child;
        let lifeline = child.stdin.take();
        ServerProcess {
            name: program.to_owned(),
            child,
            lifeline,
        }
    }

    /// Waits until the server (the watchdog's child, or a process it started: `runuser`
    /// starts PostgreSQL as its own child) listens on `127.0.0.1:port`; `false` when it exits
    /// first (a port taken meanwhile: it could not bind) or not `within`.
    ///
    /// A connection to the port is not enough: another test's listener on a port taken
    /// between `free_port` and the server's bind would pass for the server.
    pub fn wait_for_listener(&self, port: u16, within: Duration) -> bool {
        let started = Instant::now();
        let mut seen_child = false;
        while started.elapsed() < within {
            let children = children_of(self.child.id());
            // The server exited (the port was not its to take, or it could not start): no
            // need to wait out `within`. Before the watchdog has started it, wait a little.
            if children.is_empty()
                && (seen_child
                    || has_exited_child(self.child.id())
                    || started.elapsed() > CHILD_STARTS_WITHIN)
            {
                return false;
            }
            seen_child |= !children.is_empty();
            if let Some(inode) = listening_inode(port) {
                if descendants_of(&children)
                    .iter()
                    .any(|&pid| holds_socket(pid, inode))
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut lifeline) = self.lifeline.take() {
            let _ = lifeline.write_all(b"stop\n");
            drop(lifeline);
            let _ = self.child.wait();
        }
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server process stopped with SIGSTOP (connections are accepted, nothing answers: a hung
/// server), continued with SIGCONT when dropped, also when the test fails.
#[derive(Debug)]
pub struct Frozen {
    pid: u32,
}

impl Frozen {
    /// Freezes the process `pid` (see `RedisServer::pid`, `MemcachedServer::pid`), and returns
    /// once every thread of it has stopped.
    ///
    /// `kill` returns when the signal is queued, not when it is delivered: a thread of the
    /// server may still answer a request sent just after (seen in CI: one request of a burst
    /// answered by a "frozen" memcached). Tests that freeze a server then send requests expect
    /// none to be answered, so this waits (boundedly) until the kernel reports each thread
    /// stopped.
    pub fn stop(pid: u32) -> Frozen {
        signal("-STOP", pid);
        let frozen = Frozen { pid };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "process {pid} did not stop within 30 s of SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        frozen
    }
}

/// The inode of the socket listening on `127.0.0.1:port` (`/proc/net/tcp`), if any.
fn listening_inode(port: u16) -> Option<u64> {
    const LISTEN: &str = "0A";
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&LISTEN))
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
}

/// The live processes whose parent is `pid` (an exited server stays a zombie until the watchdog
/// reaps it at stop: not counted).
fn children_of(pid: u32) -> Vec<u32> {
    children_where(pid, |state| state != "Z")
}

/// `pids` and every live process below them.
fn descendants_of(pids: &[u32]) -> Vec<u32> {
    let mut all = pids.to_vec();
    let mut next = 0;
    while next < all.len() {
        for pid in children_of(all[next]) {
            if !all.contains(&pid) {
                all.push(pid);
            }
        }
        next += 1;
    }
    all
}

/// Whether a child of `pid` has exited and awaits its reaping (a zombie).
fn has_exited_child(pid: u32) -> bool {
    !children_where(pid, |state| state == "Z").is_empty()
}

/// The processes whose parent is `pid` and whose state (`/proc/PID/stat`) passes `state_is`.
fn children_where(pid: u32, state_is: impl Fn(&str) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            stat_fields(Path::new(&format!("/proc/{child}/stat"))).is_some_and(
                |fields| match fields.as_slice() {
                    [state, parent, ..] => state_is(state) && parent.parse() == Ok(pid),
                    _ => false,
                },
            )
        })
        .collect()
}

/// Whether process `pid` has the socket `inode` open.
fn holds_socket(pid: u32, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
        })
    })
}

/// Whether the kernel reports every thread of `pid` as stopped (state `T`). A process that is
/// gone counts as stopped: nothing of it can answer.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        stat_fields(&task.path().join("stat"))
            .and_then(|fields| fields.into_iter().next())
            .is_none_or(|state| state == "T" || state == "t")
    })
}

/// The fields of a `/proc/.../stat` file from the state on (state, parent, ...): those after
/// the command name, which is in parentheses and may hold spaces. `None` when it cannot be
/// read (the process is gone).
fn stat_fields(path: &Path) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", self.pid);
    }
}

fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
    assert!(status.success(), "kill {signal} {pid} failed");
}

pub mod memcached;
pub mod postgres;
pub mod redis;
pub mod sentinel;
