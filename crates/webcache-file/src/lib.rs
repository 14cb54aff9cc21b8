//! The file-system backend of webcache: `file:///var/tmp/webcache`.
//!
//! One file per key in one directory, for applications that want a cache shared by several
//! processes on one machine without running a server.
//!
//! * **File names** are the SHA-256 of the key in hex plus `.wcache`: no part of a key ever
//!   reaches the file system, so `../../etc/passwd` is just another key.
//! * **File format**: `WCF\x01`, the absolute expiry in unix milliseconds (`0`: never), the key
//!   length, the value length, the key, the value. The key and expiry in the header let `keys`,
//!   `ttl` and prefix-scoped `clear` work without an index; the lengths make a truncated file
//!   detectable. A truncated, garbage or foreign file is a miss plus a warning, never a panic.
//! * **Writes** go to a temporary file in the same directory, then `rename` over the entry, so a
//!   reader sees the old entry or the new one, never half of one. Files are created `0600` and
//!   the directory `0700`.
//! * **A private directory**: whoever can write to the directory can forge entries (pages,
//!   sessions), so the backend refuses (with the command that fixes it) a directory owned by
//!   another user, one its group or others may write to, and one inside a world-writable parent
//!   without the sticky bit. The check runs at open and again whenever the directory was
//!   replaced (one `stat` per operation). Entries and lock files are never opened through a
//!   symbolic link (a planted link is replaced by the next write, never followed); only regular
//!   files are read (a FIFO or a device is a miss plus a warning, never a hang), and only up to
//!   the largest entry, 512 MiB: a larger value is refused with `ValueTooLarge`.
//! * **Atomicity across processes**: every write (`set`, `add`, `incr`, `touch`, `delete`)
//!   holds an advisory `flock` on one of 64 lock files (`.lock-NN`, chosen by the key's hash)
//!   while it reads and replaces the entry, so `add` and `incr` are atomic between any number of
//!   processes (and independent clients) sharing the directory. Reads take no lock: the rename
//!   makes them safe.
//! * **Expiry and culling**: an expired file is deleted when it is read, and by culling. With
//!   `max_entries` (default 10,000; `0` for no bound), a write that would exceed the bound first
//!   removes expired files and then, as Django does, `1/cull_frequency` of the entries
//!   (default 3; `cull_frequency=0` empties the directory). The entry count is tracked in
//!   memory and re-read from the directory when it may have reached the bound, so the bound is
//!   exact for one process and approximate when several processes write at once.
//! * **A removed directory** is created again by the next write.
//! * **`stats`** counts entry files, including expired ones not removed yet.
//! * **`clear`** removes only this backend's `.wcache` files (and of those, only the ones whose
//!   key has the given prefix), never anything else that lives in the directory.
//!
//! File work runs on tokio's blocking thread pool. The backend is for Unix (file modes and
//! `flock`).
#![forbid(unsafe_code)]
// Library code answers every failure with an error, never a panic; tests may unwrap.
#![warn(clippy::unwrap_used)]

mod backend;
mod config;
mod format;
mod secure;
mod store;

use std::sync::Arc;

use webcache_core::backend::async_trait;
use webcache_core::backend::{Backend, BackendFactory, Scheme};
use webcache_core::config::{BackendSpec, ConfigError};

pub use backend::FileBackend;
pub use config::{FileConfig, DEFAULT_CULL_FREQUENCY, DEFAULT_MAX_ENTRIES};

/// The backend's name in errors and logs.
const BACKEND: &str = "file";

/// The options a `file://` URL accepts besides the common ones.
const OPTIONS: &[&str] = &["max_entries", "cull_frequency"];

/// Builds the backend a cache URL describes: `file:///var/tmp/webcache?max_entries=10000`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileFactory;

#[async_trait]
impl BackendFactory for FileFactory {
    fn schemes(&self) -> &[Scheme] {
        &[Scheme {
            name: "file",
            usage: "file:///var/tmp/webcache",
        }]
    }

    fn options(&self) -> &[&str] {
        OPTIONS
    }

    async fn build(&self, spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
        Ok(Arc::new(FileBackend::from_spec(spec)?))
    }
}
