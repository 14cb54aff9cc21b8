//! Test fixture: a throwaway PostgreSQL cluster on a free loopback port.
//!
//! The cluster lives in a fresh directory under the system's temporary directory, listens on
//! 127.0.0.1 only, trusts every local connection (it is for tests, nothing else can reach it),
//! and is stopped with `pg_ctl stop -m fast` and removed when the test process ends. PostgreSQL
//! refuses to run as root, so when the tests run as root `initdb` and the server run as the
//! `postgres` user through `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, temp_dir, ServerProcess};

/// A running PostgreSQL cluster.
#[derive(Debug)]
pub struct Postgres {
    process: ServerProcess,
    port: u16,
    dir: PathBuf,
}

impl Postgres {
    /// The cluster of this test process, started on first use (initdb takes a couple of
    /// seconds, so every test of a binary shares one cluster; they keep apart by key prefix or
    /// table name).
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    /// Starts a new cluster. Panics with a message that says what to install when PostgreSQL
    /// is missing.
    pub fn start() -> Postgres {
        // A port can be taken between `free_port` and the server's bind (by a test binary
        // running alongside, say): then the server exits, its cluster is removed, and a new
        // one is tried on another port.
        for _ in 0..5 {
            if let Some(postgres) = Self::try_start(free_port()) {
                return postgres;
            }
        }
        panic!("PostgreSQL did not start on a free loopback port (tried 5 times)");
    }

    /// A new cluster on `port`; `None` when its server is not the one listening there.
    fn try_start(port: u16) -> Option<Postgres> {
        let bin = bin_dir();
        let as_root = running_as_root();
        let dir = temp_dir("postgres");
        let data = dir.join("data");
        if as_root {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&dir));
        }
        run(command(as_root, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]));

        let (port_text, data_text, dir_text) =
            (port.to_string(), path_text(&data), path_text(&dir));
        let postgres = path_text(&bin.join("postgres"));
        let pg_ctl = path_text(&bin.join("pg_ctl"));
        // The watchdog runs the stop command in a shell (inside single quotes): the paths come
        // from `temp_dir` and hold no quotes or spaces.
        let user_prefix = if as_root {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let stop = format!(
            "{user_prefix}{pg_ctl} stop -m fast -D {data_text} >/dev/null; rm -rf {dir_text}"
        );
        let log_dir = format!("log_directory={dir_text}");
        let server_args = [
            "-D",
            &data_text,
            "-p",
            &port_text,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            &format!("unix_socket_directories={dir_text}"),
            // Durability is pointless for a throwaway test cluster and costs seconds.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
            // The server's log (statements that tests make fail on purpose, shutdown notices)
            // would bury the test output: it goes to a file in the cluster's directory, and
            // only what happens before the log collector starts reaches the terminal.
            "-c",
            "logging_collector=on",
            "-c",
            &log_dir,
            "-c",
            "log_filename=postgres.log",
        ];
        let process = if as_root {
            let mut args = vec!["-u", "postgres", "--", postgres.as_str()];
            args.extend_from_slice(&server_args);
            ServerProcess::spawn("runuser", &args, Some(&stop))
        } else {
            ServerProcess::spawn(&postgres, &server_args, Some(&stop))
        };
        // Dropped when it did not listen: its watchdog stops it and removes the cluster.
        if !process.wait_for_listener(port, Duration::from_secs(30)) {
            return None;
        }
        wait_until_ready(&bin, port);
        Some(Postgres { process, port, dir })
    }

    /// The URL of the `postgres` database as the `postgres` superuser:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port the cluster listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the cluster's data and socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the cluster and removes its directory.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// The `bin` directory of the newest PostgreSQL installed under `/usr/lib/postgresql`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); run ./scripts/test, which installs the test servers"
        )
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// `program` as the `postgres` user when running as root, as ourselves otherwise.
fn command(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path_text(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not valid UTF-8", path.display()))
        .to_owned()
}

/// Accepting TCP connections comes before accepting queries (recovery runs first): wait for
/// `pg_isready` to say so.
fn wait_until_ready(bin: &Path, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL on 127.0.0.1:{port} did not accept queries within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A port another listener took before PostgreSQL could bind it: the server exits, and
    /// that listener does not pass for it (the fixture then tries another port).
    #[test]
    fn a_port_another_listener_holds_is_no_started_postgres() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let started = Instant::now();
        assert!(Postgres::try_start(port).is_none());
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up after {:?}",
            started.elapsed()
        );
    }
}
