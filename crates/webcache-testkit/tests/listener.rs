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
