//! The shared conformance suite, unchanged, against the file backend.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use webcache_core::backend::Backend;
use webcache_file::{FileBackend, FileConfig};
use webcache_testkit::{conformance_suite, Harness};

mod common;
use common::Scratch;

/// One directory for the whole run, as an application's cache directory would be: cases keep
/// apart by key prefix.
/// (Statics are never dropped: the next run sweeps it away.)
fn shared_dir() -> &'static PathBuf {
    static DIR: OnceLock<Scratch> = OnceLock::new();
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| DIR.get_or_init(|| Scratch::new("conformance")).cache_dir())
}

struct FileHarness;

#[async_trait::async_trait]
impl Harness for FileHarness {
    async fn backend(&self) -> Arc<dyn Backend> {
        let mut config = FileConfig::new(shared_dir());
        config.max_entries = None;
        Arc::new(FileBackend::open(&config).unwrap())
    }

    async fn bounded_backend(&self, max_entries: u64) -> Option<Arc<dyn Backend>> {
        // Leaked on purpose: the backend outlives this call; the next run sweeps it away.
        let scratch = Box::leak(Box::new(Scratch::new("bounded")));
        let mut config = FileConfig::new(scratch.cache_dir());
        config.max_entries = Some(max_entries);
        Some(Arc::new(FileBackend::open(&config).unwrap()))
    }
}

conformance_suite!(FileHarness);
