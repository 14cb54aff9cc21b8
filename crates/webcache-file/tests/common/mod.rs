//! Scratch directories for the file backend's tests, removed when dropped; directories left by
//! earlier test processes that have ended (a crash, a killed run) are removed on first use.

use std::path::{Path, PathBuf};
use std::sync::Once;

use webcache_testkit::servers::temp_dir;

/// Every scratch directory name starts with this, after testkit's `webcache-test-`.
const TAG: &str = "file-";

/// A directory under the system temporary directory; the cache lives in its `cache` child.
pub(crate) struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// A fresh scratch directory called after `name`.
    pub(crate) fn new(name: &str) -> Scratch {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_ended_runs);
        Scratch {
            root: temp_dir(&format!("{TAG}{name}")),
        }
    }

    /// The scratch directory itself.
    #[allow(dead_code)] // Not every test file needs it.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where the cache directory goes (not created).
    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Removes `webcache-test-file-*-PID-RAND` directories whose process is gone.
fn sweep_ended_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("webcache-test-{TAG}")) else {
            continue;
        };
        let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
