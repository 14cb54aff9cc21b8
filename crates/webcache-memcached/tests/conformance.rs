//! The shared conformance suite, unchanged, against one real memcached and against two.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use webcache_core::backend::Backend;
use webcache_memcached::{MemcachedBackend, MemcachedConfig};
use webcache_testkit::servers::memcached::MemcachedServer;
use webcache_testkit::{conformance_suite, Capabilities, Harness};

/// Servers live as long as the test process (the watchdog stops them when it exits); each
/// case builds its own client, because connections belong to the case's runtime.
fn servers(n: usize) -> &'static [MemcachedServer] {
    static ONE: OnceLock<Vec<MemcachedServer>> = OnceLock::new();
    static TWO: OnceLock<Vec<MemcachedServer>> = OnceLock::new();
    match n {
        1 => ONE.get_or_init(|| MemcachedServer::start_many(1)),
        _ => TWO.get_or_init(|| MemcachedServer::start_many(2)),
    }
}

struct MemcachedHarness {
    servers: usize,
}

#[async_trait::async_trait]
impl Harness for MemcachedHarness {
    async fn backend(&self) -> Arc<dyn Backend> {
        let config =
            MemcachedConfig::new(servers(self.servers).iter().map(MemcachedServer::address));
        Arc::new(MemcachedBackend::new(&config))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Memcached keeps whole seconds, and its clock ticks once a second. A one-second
            // timeout is sent as two (rounded up, plus a spare second: never early), and the
            // clock's tick is not aligned with the second, so the entry lives up to about
            // three seconds: 1.1 s + 2 s.
            subsecond_expiry: false,
            keys: true,
            expiry_slack: Duration::from_secs(2),
        }
    }
}

mod one_server {
    use super::*;
    conformance_suite!(MemcachedHarness { servers: 1 }; skip: {
        fractional_timeout: "memcached keeps whole seconds",
        eviction_keeps_the_bound: "memcached evicts by memory, it has no entry bound",
    });
}

mod two_servers {
    use super::*;
    conformance_suite!(MemcachedHarness { servers: 2 }; skip: {
        fractional_timeout: "memcached keeps whole seconds",
        eviction_keeps_the_bound: "memcached evicts by memory, it has no entry bound",
    });
}
