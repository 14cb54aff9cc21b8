//! The conformance suite against the in-process backend.

use std::sync::Arc;

use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_testkit::{conformance_suite, Harness};

struct LocMemHarness;

#[async_trait::async_trait]
impl Harness for LocMemHarness {
    async fn backend(&self) -> Arc<dyn Backend> {
        // One shared store, as an application's `locmem://` would be: cases keep apart by prefix.
        Arc::new(LocMemBackend::named("conformance", LocMemConfig::default()))
    }

    async fn bounded_backend(&self, max_entries: u64) -> Option<Arc<dyn Backend>> {
        Some(Arc::new(LocMemBackend::private(
            LocMemConfig::default()
                .max_entries(max_entries)
                .max_bytes(None),
        )))
    }
}

conformance_suite!(LocMemHarness);
