//! The shared conformance suite, unchanged, against the file backend.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use webcache_core::Backend;
use webcache_file::{FileCache, FileConfig};
use webcache_testkit::servers::temp_dir;
use webcache_testkit::{conformance_suite, Harness};

/// One directory for the whole run, as an application's cache directory would be: cases keep
/// apart by key prefix.
fn shared_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| temp_dir("file-conformance").join("cache"))
}

struct FileHarness;

#[async_trait::async_trait]
impl Harness for FileHarness {
    async fn backend(&self) -> Arc<dyn Backend> {
        let mut config = FileConfig::new(shared_dir());
        config.max_entries = None;
        Arc::new(FileCache::open(&config).unwrap())
    }

    async fn bounded_backend(&self, max_entries: u64) -> Option<Arc<dyn Backend>> {
        let mut config = FileConfig::new(temp_dir("file-bounded").join("cache"));
        config.max_entries = Some(max_entries);
        Some(Arc::new(FileCache::open(&config).unwrap()))
    }
}

conformance_suite!(FileHarness);
