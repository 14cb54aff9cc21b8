//! The conformance suite against one `redis-server` started by this test binary.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use webcache_core::backend::Backend;
use webcache_testkit::servers::redis::RedisServer;
use webcache_testkit::{conformance_suite, Harness};

struct SingleNode;

#[async_trait::async_trait]
impl Harness for SingleNode {
    async fn backend(&self) -> Arc<dyn Backend> {
        // Built through the URL, as an application's configuration would.
        let url = RedisServer::shared().url(0);
        Arc::new(common::backend(&url).await)
    }
}

conformance_suite!(SingleNode; skip: {
    eviction_keeps_the_bound: "Redis evicts by memory (maxmemory), it has no entry bound",
});
