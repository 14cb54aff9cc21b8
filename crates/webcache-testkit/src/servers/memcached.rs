//! Test fixture: real memcached servers on free loopback ports.

use std::time::Duration;

use super::{free_port, ServerProcess};

/// A `memcached` process on `127.0.0.1`, stopped when dropped (or when the test process ends).
#[derive(Debug)]
pub struct MemcachedServer {
    process: ServerProcess,
    port: u16,
}

impl MemcachedServer {
    /// Starts a memcached with default settings (64 MB, 1 MB item size limit).
    pub fn start() -> MemcachedServer {
        Self::start_with(&[])
    }

    /// Starts a memcached with extra arguments, for example `["-I", "512k"]` for a smaller
    /// item size limit.
    pub fn start_with(extra_args: &[&str]) -> MemcachedServer {
        // A port can be taken between `free_port` and the server's bind; try a few.
        for _ in 0..5 {
            if let Some(server) = Self::try_start(free_port(), extra_args) {
                return server;
            }
        }
        panic!("memcached did not start on a free loopback port (tried 5 times)");
    }

    /// Starts a memcached on `port` (for example to bring back a server a test stopped).
    pub fn start_on(port: u16, extra_args: &[&str]) -> MemcachedServer {
        Self::try_start(port, extra_args)
            .unwrap_or_else(|| panic!("memcached did not start on port {port}"))
    }

    fn try_start(port: u16, extra_args: &[&str]) -> Option<MemcachedServer> {
        let port_arg = port.to_string();
        // `-u nobody` because memcached refuses to run as root without a user to switch to.
        let mut args = vec![
            "-u",
            "nobody",
            "-l",
            "127.0.0.1",
            "-p",
            &port_arg,
            "-U",
            "0",
        ];
        args.extend_from_slice(extra_args);
        let mut process = ServerProcess::spawn("memcached", &args, None);
        if process.wait_for_listener(port, Duration::from_secs(10)) {
            Some(MemcachedServer { process, port })
        } else {
            process.stop();
            None
        }
    }

    /// Starts `n` independent servers with default settings.
    pub fn start_many(n: usize) -> Vec<MemcachedServer> {
        (0..n).map(|_| Self::start()).collect()
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (from `stats`; the fixture's own child is a watchdog shell),
    /// for [`Frozen`](super::Frozen).
    pub fn pid(&self) -> u32 {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("cannot reach memcached on {}: {e}", self.port));
        stream
            .write_all(b"stats\r\n")
            .expect("memcached takes the stats command");
        BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| l.trim() != "END")
            .find_map(|l| l.trim().strip_prefix("STAT pid ")?.parse().ok())
            .expect("memcached's stats give its pid")
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A `memcached://` URL for this server.
    pub fn url(&self) -> String {
        format!("memcached://{}", self.address())
    }

    /// A `memcached://` URL naming several servers.
    pub fn url_of(servers: &[MemcachedServer]) -> String {
        let addresses: Vec<String> = servers.iter().map(MemcachedServer::address).collect();
        format!("memcached://{}", addresses.join(","))
    }

    /// Stops the server now (to test how clients cope with a dead server).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
