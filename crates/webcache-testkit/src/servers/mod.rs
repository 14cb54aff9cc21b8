//! Real servers for tests, started on free loopback ports and stopped when the test process
//! ends (even if it is killed): each server runs under a small shell watchdog that stops it
//! when the test process's end of a pipe closes.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
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

/// A fresh temporary directory for a server's files (removed when the server is dropped).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "webcache-test-{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("cannot create a temporary directory");
    dir
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

pub mod memcached;
pub mod postgres;
pub mod redis;
