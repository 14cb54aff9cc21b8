//! What a `file://` URL says: the directory and the entry bound.

use std::path::PathBuf;

/// The entry bound of a file cache that configures none.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// Culling removes `1/DEFAULT_CULL_FREQUENCY` of the entries, as Django's default.
pub const DEFAULT_CULL_FREQUENCY: u64 = 3;

/// Options of a `file://` URL: [`FileConfig::new`], changed with the setters of the same names
/// (`#[non_exhaustive]`, so an option added later breaks no caller).
///
/// ```
/// use webcache_file::FileConfig;
/// let config = FileConfig::new("/var/cache/app").max_entries(None).cull_frequency(0);
/// assert_eq!((config.max_entries, config.cull_frequency), (None, 0));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileConfig {
    /// The cache directory (created `0700` if missing).
    pub dir: PathBuf,
    /// At most this many entries (`None`: unbounded).
    pub max_entries: Option<u64>,
    /// When full, remove `1/cull_frequency` of the entries (`0`: remove them all).
    pub cull_frequency: u64,
}

impl FileConfig {
    /// The configuration for `dir` with default bounds.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileConfig {
            dir: dir.into(),
            max_entries: Some(DEFAULT_MAX_ENTRIES),
            cull_frequency: DEFAULT_CULL_FREQUENCY,
        }
    }

    /// Sets `max_entries`: a number, or `None` for no bound.
    pub fn max_entries(mut self, entries: impl Into<Option<u64>>) -> Self {
        self.max_entries = entries.into();
        self
    }

    /// Sets `cull_frequency`.
    pub fn cull_frequency(mut self, frequency: u64) -> Self {
        self.cull_frequency = frequency;
        self
    }
}
