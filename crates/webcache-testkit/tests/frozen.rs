//! `Frozen::stop` returns only once the server can answer nothing: every thread stopped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use webcache_testkit::servers::memcached::MemcachedServer;
use webcache_testkit::servers::Frozen;

/// The scheduler states of every thread of `pid`, from /proc.
fn thread_states(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            let (_, rest) = stat.rsplit_once(')').unwrap();
            rest.split_whitespace().next().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn a_frozen_server_has_every_thread_stopped_and_answers_nothing() {
    // Several rounds: the race this guards against (a thread still running just after `kill`
    // returned) is not there every time.
    let server = MemcachedServer::start();
    let pid = server.pid();
    for _ in 0..50 {
        let mut connection = TcpStream::connect(server.address()).unwrap();
        let frozen = Frozen::stop(pid);
        let states = thread_states(pid);
        assert!(states.iter().all(|s| s == "T"), "{states:?}");
        // A request sent now is not answered while frozen.
        connection
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        connection.write_all(b"version\r\n").unwrap();
        let mut answer = [0u8; 64];
        assert!(
            connection.read(&mut answer).is_err(),
            "a frozen server answered"
        );
        drop(frozen);
        // Continued, it answers what was sent meanwhile.
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let n = connection.read(&mut answer).unwrap();
        assert!(answer[..n].starts_with(b"VERSION"), "{:?}", &answer[..n]);
    }
}
