//! A server fixture is started only when the server itself listens on its port, not when
//! something else does.

use std::net::TcpListener;

use webcache_testkit::servers::memcached::MemcachedServer;

#[test]
#[should_panic(expected = "did not start on port")]
fn a_port_another_listener_holds_is_no_started_memcached() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // memcached cannot bind it and exits; the listener above must not pass for it.
    let _server = MemcachedServer::start_on(port, &[]);
}

#[test]
fn a_started_memcached_answers_on_its_port() {
    let server = MemcachedServer::start();
    assert!(server.pid() > 0, "its stats name its process");
}

/// A server that exits before it ever listens (here: an argument it refuses) is known to have
/// failed as soon as it exits, not after the whole wait (it was 10 s per attempt).
#[test]
fn a_server_that_exits_without_listening_is_given_up_on_at_once() {
    use std::time::{Duration, Instant};
    use webcache_testkit::servers::{free_port, ServerProcess};

    let port = free_port();
    let mut process = ServerProcess::spawn("memcached", &["--no-such-option"], None);
    let started = Instant::now();
    assert!(!process.wait_for_listener(port, Duration::from_secs(60)));
    // Bounded by the wait for a watchdog to start its server (5 s), not by the 60 s above.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up after {:?}",
        started.elapsed()
    );
    process.stop();
}

/// A server started through a program that forks it (`runuser` starts PostgreSQL as its own
/// child) is found listening: the watchdog's grandchild holds the socket.
#[test]
fn a_server_below_the_watchdogs_child_is_found_listening() {
    use std::time::Duration;
    use webcache_testkit::servers::{free_port, ServerProcess};

    let port = free_port().to_string();
    // `sh` runs memcached as its child and waits for it: memcached is the watchdog's
    // grandchild. Stopping `sh` stops memcached too.
    let mut process = ServerProcess::spawn(
        "sh",
        &[
            "-c",
            "memcached -u nobody -l 127.0.0.1 -p \"$1\" -U 0 & server=$!; \
             trap 'kill $server; wait $server; exit 0' TERM; wait $server",
            "sh",
            &port,
        ],
        None,
    );
    assert!(process.wait_for_listener(port.parse().unwrap(), Duration::from_secs(60)));
    process.stop();
}

/// A refused port refuses connections and cannot be taken by a server while it is held.
#[test]
fn a_refused_port_refuses_and_stays_untaken() {
    use std::net::TcpStream;
    use webcache_testkit::servers::RefusedPort;

    let refused = RefusedPort::new();
    let err = TcpStream::connect(("127.0.0.1", refused.port())).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        TcpListener::bind(("127.0.0.1", refused.port())).is_err(),
        "another listener took the held port"
    );
}
