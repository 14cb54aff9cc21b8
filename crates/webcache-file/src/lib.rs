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

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use webcache_core::config::{BackendSpec, ConfigError};
use webcache_core::entry::{encode_integer, parse_integer};
use webcache_core::{glob_match, Backend, BackendStats, Error, Expiry, KeyStream, Result, Ttl};

const BACKEND: &str = "file";
/// Suffix of entry files: `clear` and culling touch nothing else.
const SUFFIX: &str = ".wcache";
/// Suffix of files being written.
const TMP_SUFFIX: &str = ".wctmp";
const MAGIC: [u8; 4] = *b"WCF\x01";
/// Magic, expiry (u64), key length (u32), value length (u64).
const HEADER_LEN: usize = 4 + 8 + 4 + 8;
/// A key length above this in a header means the file is garbage.
const MAX_KEY_LEN: usize = 1 << 20;
const LOCK_STRIPES: usize = 64;
/// Temporary files older than this belong to a writer that died; culling removes them.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// The entry bound of a file cache that configures none.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// Culling removes `1/DEFAULT_CULL_FREQUENCY` of the entries, as Django's default.
pub const DEFAULT_CULL_FREQUENCY: u64 = 3;

/// Options of a `file://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// The file-system backend; see the [crate documentation](crate).
#[derive(Debug, Clone)]
pub struct FileCache {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_entries: Option<u64>,
    cull_frequency: u64,
    count: Mutex<Count>,
}

/// What this process knows about the number of entries.
#[derive(Debug, Default)]
struct Count {
    /// Entries found by the last listing.
    listed: u64,
    /// Entries this process created since.
    created: u64,
}

/// Builds the backend a cache URL describes: `file:///var/tmp/webcache?max_entries=10000`.
pub async fn from_spec(spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
    Ok(Arc::new(FileCache::from_spec(spec)?))
}

impl FileCache {
    /// Opens (and creates, `0700`) the cache directory of `config`.
    pub fn open(config: &FileConfig) -> io::Result<Self> {
        if !config.dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&config.dir)?;
        }
        if !config.dir.is_dir() {
            return Err(io::Error::other("it exists and is not a directory"));
        }
        Ok(FileCache {
            shared: Arc::new(Shared {
                dir: config.dir.clone(),
                max_entries: config.max_entries,
                cull_frequency: config.cull_frequency,
                count: Mutex::new(Count {
                    // Unknown until listed: make the first write list the directory.
                    listed: config.max_entries.unwrap_or(0),
                    created: 0,
                }),
            }),
        })
    }

    /// Parses a `file://` spec (see [`from_spec`]) and opens the directory.
    pub fn from_spec(spec: &mut BackendSpec) -> Result<Self, ConfigError> {
        let max_entries: Option<u64> =
            spec.take("max_entries", "a whole number of entries (0 for no bound)")?;
        let cull_frequency: Option<u64> = spec.take(
            "cull_frequency",
            "a whole number N: culling removes 1/N of the entries (0 removes all)",
        )?;
        spec.finish(&["max_entries", "cull_frequency"])?;
        let location = spec.location.clone();
        if !location.starts_with('/') {
            return Err(spec.error(
                "url",
                format!("`{location}` is not an absolute directory; write file:///absolute/path (three slashes), for example file:///var/tmp/webcache"),
            ));
        }
        let config = FileConfig {
            dir: PathBuf::from(location),
            max_entries: match max_entries {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(DEFAULT_MAX_ENTRIES),
            },
            cull_frequency: cull_frequency.unwrap_or(DEFAULT_CULL_FREQUENCY),
        };
        FileCache::open(&config).map_err(|e| {
            spec.error(
                "url",
                format!("cannot use `{}` as the cache directory: {e}; choose a directory this process may create and write", config.dir.display()),
            )
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The file that holds `key` (whether or not it exists).
    pub fn path_for(&self, key: &str) -> PathBuf {
        self.shared.path_for(key)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || work(&shared))
            .await
            .map_err(|e| Error::backend(BACKEND, "a file cache task failed", e))?
    }
}

/// A decoded entry file.
struct Entry {
    expires_ms: u64,
    /// The whole file; the value is its tail.
    raw: Bytes,
    value_at: usize,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.expires_ms == 0 || self.expires_ms > now
    }

    fn value(&self) -> Bytes {
        self.raw.slice(self.value_at..)
    }
}

/// What reading an entry file found.
enum Found {
    Missing,
    /// Unreadable (truncated, garbage, another key's file): a miss, already logged.
    Corrupt,
    Entry(Entry),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn deadline_ms(expiry: Expiry) -> u64 {
    match expiry {
        Expiry::Never => 0,
        Expiry::After(d) => {
            let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 > 0);
            now_ms()
                .saturating_add(u64::try_from(ms).unwrap_or(u64::MAX))
                .max(1)
        }
    }
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::backend(BACKEND, format!("cannot {what} {}", path.display()), e)
}

/// Parses the fixed header: `(expiry, key length, value length)`.
fn parse_header(head: &[u8]) -> std::result::Result<(u64, usize, u64), String> {
    if head.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than the header", head.len()));
    }
    if head[..4] != MAGIC {
        return Err("it does not start with the webcache file magic".into());
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let expires = u64_at(4);
    let key_len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize;
    let value_len = u64_at(16);
    if key_len > MAX_KEY_LEN {
        return Err(format!("it claims a key of {key_len} bytes"));
    }
    Ok((expires, key_len, value_len))
}

fn encode(key: &str, value: &[u8], expires_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + key.len() + value.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    out
}

/// Holds a stripe's advisory lock until dropped (closing the file releases it).
struct StripeLock(#[allow(dead_code)] File);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn hash(key: &str) -> [u8; 32] {
        Sha256::digest(key.as_bytes()).into()
    }

    fn path_for(&self, key: &str) -> PathBuf {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hash = Self::hash(key);
        let mut name = String::with_capacity(64 + SUFFIX.len());
        for b in hash {
            name.push(char::from(HEX[usize::from(b >> 4)]));
            name.push(char::from(HEX[usize::from(b & 15)]));
        }
        name.push_str(SUFFIX);
        self.dir.join(name)
    }

    /// Takes the advisory lock that serialises writers of `key`, in this and other processes.
    fn lock_key(&self, key: &str) -> Result<StripeLock> {
        let stripe = usize::from(Self::hash(key)[0]) % LOCK_STRIPES;
        let path = self.dir.join(format!(".lock-{stripe:02x}"));
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
        };
        let file = self
            .recreating_dir(open)
            .map_err(|e| io_error("open the lock file", &path, e))?;
        // Through the trait, not std's newer inherent `File::lock`, to keep the MSRV.
        fs4::FileExt::lock(&file).map_err(|e| io_error("lock", &path, e))?;
        Ok(StripeLock(file))
    }

    /// Runs `create`, and once more after recreating the directory if it has disappeared
    /// (someone cleaned `/var/tmp`): a cache directory is disposable, as in Django.
    fn recreating_dir<T>(&self, create: impl Fn() -> io::Result<T>) -> io::Result<T> {
        match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(dir = %self.dir.display(), "the cache directory disappeared; recreating it");
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)?;
                create()
            }
            other => other,
        }
    }

    /// Reads the entry of `key`.
    fn read(&self, key: &str, path: &Path) -> Result<Found> {
        let raw = match fs::read(path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(e) => return Err(io_error("read", path, e)),
        };
        let checked = parse_header(&raw).and_then(|(expires_ms, key_len, value_len)| {
            let expected = HEADER_LEN as u64 + key_len as u64 + value_len;
            if raw.len() as u64 != expected {
                return Err(format!(
                    "{} bytes where the header promises {expected} (truncated?)",
                    raw.len()
                ));
            }
            Ok((expires_ms, key_len))
        });
        match checked {
            Ok((expires_ms, key_len)) => {
                if &raw[HEADER_LEN..HEADER_LEN + key_len] != key.as_bytes() {
                    warn_corrupt(path, "it holds another key");
                    return Ok(Found::Corrupt);
                }
                Ok(Found::Entry(Entry {
                    expires_ms,
                    raw: Bytes::from(raw),
                    value_at: HEADER_LEN + key_len,
                }))
            }
            Err(why) => {
                warn_corrupt(path, &why);
                Ok(Found::Corrupt)
            }
        }
    }

    /// Reads only the header and key of an entry file (for listing).
    fn read_head(path: &Path) -> std::result::Result<(u64, Vec<u8>), String> {
        let mut file = File::open(path).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head)
            .map_err(|_| "shorter than the header".to_owned())?;
        let (expires, key_len, value_len) = parse_header(&head)?;
        if len != HEADER_LEN as u64 + key_len as u64 + value_len {
            return Err("its length does not match its header (truncated?)".into());
        }
        let mut key = vec![0u8; key_len];
        file.read_exact(&mut key).map_err(|e| e.to_string())?;
        Ok((expires, key))
    }

    /// The live entry of `key`, deleting it if it has expired.
    fn live(&self, key: &str) -> Result<Option<Entry>> {
        let path = self.path_for(key);
        match self.read(key, &path)? {
            Found::Entry(entry) if entry.live(now_ms()) => Ok(Some(entry)),
            Found::Entry(_) => {
                self.remove_if_expired(key, &path)?;
                Ok(None)
            }
            Found::Missing | Found::Corrupt => Ok(None),
        }
    }

    /// Deletes an expired entry under its lock, checking again that no writer replaced it.
    fn remove_if_expired(&self, key: &str, path: &Path) -> Result<()> {
        let _lock = self.lock_key(key)?;
        if let Found::Entry(entry) = self.read(key, path)? {
            if !entry.live(now_ms()) {
                remove_quietly(path)?;
            }
        }
        Ok(())
    }

    /// Writes an entry through a temporary file and a rename. Call with the key's lock held.
    fn write(&self, key: &str, value: &[u8], expires_ms: u64, path: &Path) -> Result<()> {
        let existed = path.exists();
        if !existed {
            self.make_room()?;
        }
        let tmp = self
            .dir
            .join(format!(".{:016x}{TMP_SUFFIX}", rand::random::<u64>()));
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
        };
        let result = self
            .recreating_dir(create)
            .and_then(|mut file| file.write_all(&encode(key, value, expires_ms)))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("write", path, e));
        }
        if !existed {
            lock(&self.count).created += 1;
        }
        Ok(())
    }

    /// Culls before a new entry is created if the directory may be full.
    fn make_room(&self) -> Result<()> {
        let Some(max) = self.max_entries else {
            return Ok(());
        };
        let mut count = lock(&self.count);
        if count.listed + count.created < max {
            return Ok(());
        }
        // The estimate says full; only a listing can tell (other processes write too).
        let files = self.entry_files()?;
        let mut remaining = files.len() as u64;
        if remaining >= max {
            remaining = self.cull(files, max)?;
        }
        *count = Count {
            listed: remaining,
            created: 0,
        };
        Ok(())
    }

    /// Removes expired and unreadable entries, then (if still full) a share of the others, as
    /// Django does. Returns how many entries remain.
    fn cull(&self, files: Vec<PathBuf>, max: u64) -> Result<u64> {
        let now = now_ms();
        let mut kept = Vec::with_capacity(files.len());
        for path in files {
            match Self::read_head(&path) {
                Ok((expires, _)) if expires == 0 || expires > now => kept.push(path),
                _ => remove_quietly(&path)?,
            }
        }
        let total = kept.len() as u64;
        if total < max {
            return Ok(total);
        }
        // cull_frequency 0 empties the directory; otherwise remove at least enough to make room
        // for the entry being written.
        let doomed = total
            .checked_div(self.cull_frequency)
            .map_or(total, |share| share.max(total + 1 - max));
        // Which entries go is random, as in Django: the file system knows nothing of recency.
        for _ in 0..doomed {
            let at = rand::random_range(0..kept.len());
            remove_quietly(&kept.swap_remove(at))?;
        }
        tracing::debug!(dir = %self.dir.display(), removed = doomed, "file cache culled");
        Ok(kept.len() as u64)
    }

    /// Every entry file, removing temporary files left by writers that died.
    fn entry_files(&self) -> Result<Vec<PathBuf>> {
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            // Gone: no entries; the next write creates it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list", &self.dir, e)),
        };
        let mut files = Vec::new();
        for dirent in listing {
            let dirent = dirent.map_err(|e| io_error("list", &self.dir, e))?;
            let name = dirent.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(SUFFIX) {
                files.push(dirent.path());
            } else if name.ends_with(TMP_SUFFIX) {
                let stale = dirent
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP);
                if stale {
                    remove_quietly(&dirent.path())?;
                }
            }
        }
        Ok(files)
    }

    /// Keys (and expiries) of every readable entry.
    fn listed_keys(&self) -> Result<Vec<(PathBuf, u64, String)>> {
        let mut keys = Vec::new();
        for path in self.entry_files()? {
            match Self::read_head(&path) {
                Ok((expires, key)) => {
                    if let Ok(key) = String::from_utf8(key) {
                        keys.push((path, expires, key));
                    }
                }
                // Gone since the listing: not an error.
                Err(_) if !path.exists() => {}
                Err(why) => warn_corrupt(&path, &why),
            }
        }
        Ok(keys)
    }

    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.live(key)?.map(|e| e.value()))
    }

    fn set(&self, key: &str, value: &[u8], expiry: Expiry) -> Result<()> {
        let path = self.path_for(key);
        let _lock = self.lock_key(key)?;
        self.write(key, value, deadline_ms(expiry), &path)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let path = self.path_for(key);
        let _lock = self.lock_key(key)?;
        let was_live = matches!(self.read(key, &path)?, Found::Entry(e) if e.live(now_ms()));
        remove_quietly(&path)?;
        Ok(was_live)
    }
}

fn remove_quietly(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", path, e)),
    }
}

fn warn_corrupt(path: &Path, why: &str) {
    tracing::warn!(file = %path.display(), "unreadable file cache entry treated as a miss: {why}");
}

#[async_trait]
impl Backend for FileCache {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = key.to_owned();
        self.blocking(move |s| s.get(&key)).await
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        let key = key.to_owned();
        self.blocking(move |s| s.set(&key, &value, expiry)).await
    }

    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        let key = key.to_owned();
        self.blocking(move |s| {
            let path = s.path_for(&key);
            let _lock = s.lock_key(&key)?;
            if matches!(s.read(&key, &path)?, Found::Entry(e) if e.live(now_ms())) {
                return Ok(false);
            }
            s.write(&key, &value, deadline_ms(expiry), &path)?;
            Ok(true)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.blocking(move |s| s.delete(&key)).await
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        let key = key.to_owned();
        self.blocking(move |s| {
            let path = s.path_for(&key);
            let _lock = s.lock_key(&key)?;
            match s.read(&key, &path)? {
                Found::Entry(e) if e.live(now_ms()) => {
                    s.write(&key, &e.value(), deadline_ms(expiry), &path)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let key = key.to_owned();
        self.blocking(move |s| {
            let path = s.path_for(&key);
            let _lock = s.lock_key(&key)?;
            let entry = match s.read(&key, &path)? {
                Found::Entry(e) if e.live(now_ms()) => e,
                _ => return Err(Error::KeyNotFound { key }),
            };
            let current = parse_integer(&entry.value())
                .ok_or_else(|| Error::NotAnInteger { key: key.clone() })?;
            let next = current
                .checked_add(delta)
                .ok_or_else(|| Error::Overflow { key: key.clone() })?;
            s.write(&key, &encode_integer(next), entry.expires_ms, &path)?;
            Ok(next)
        })
        .await
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        let key = key.to_owned();
        self.blocking(move |s| {
            Ok(match s.live(&key)? {
                None => Ttl::Missing,
                Some(e) if e.expires_ms == 0 => Ttl::Forever,
                Some(e) => {
                    Ttl::Remaining(Duration::from_millis(e.expires_ms.saturating_sub(now_ms())))
                }
            })
        })
        .await
    }

    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        let prefix = prefix.map(str::to_owned);
        self.blocking(move |s| {
            match &prefix {
                None => {
                    for path in s.entry_files()? {
                        remove_quietly(&path)?;
                    }
                }
                Some(prefix) => {
                    for (path, _, key) in s.listed_keys()? {
                        if key.starts_with(prefix.as_str()) {
                            remove_quietly(&path)?;
                        }
                    }
                }
            }
            Ok(())
        })
        .await
    }

    fn scan(&self, pattern: &str) -> KeyStream {
        let this = self.clone();
        let pattern = pattern.to_owned();
        futures::stream::once(async move {
            let found = this
                .blocking(move |s| {
                    let now = now_ms();
                    Ok(s.listed_keys()?
                        .into_iter()
                        .filter(|(_, expires, key)| {
                            (*expires == 0 || *expires > now) && glob_match(&pattern, key)
                        })
                        .map(|(_, _, key)| key)
                        .collect::<Vec<_>>())
                })
                .await;
            match found {
                Ok(keys) => keys.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        })
        .flat_map(futures::stream::iter)
        .boxed()
    }

    async fn stats(&self) -> Result<BackendStats> {
        self.blocking(|s| {
            let files = s.entry_files()?;
            let bytes = files
                .iter()
                .filter_map(|p| p.metadata().ok())
                .map(|m| m.len())
                .sum();
            let mode = fs::metadata(&s.dir)
                .map(|m| format!("{:o}", m.permissions().mode() & 0o777))
                .unwrap_or_default();
            Ok(BackendStats {
                entries: Some(files.len() as u64),
                bytes: Some(bytes),
                extra: vec![
                    ("dir".to_owned(), s.dir.display().to_string()),
                    ("dir_mode".to_owned(), mode),
                    (
                        "max_entries".to_owned(),
                        s.max_entries
                            .map_or_else(|| "none".to_owned(), |n| n.to_string()),
                    ),
                ],
            })
        })
        .await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        let keys = keys.to_vec();
        self.blocking(move |s| keys.iter().map(|k| s.get(k)).collect())
            .await
    }

    async fn set_many(&self, entries: Vec<(String, Bytes)>, expiry: Expiry) -> Result<()> {
        self.blocking(move |s| {
            for (key, value) in &entries {
                s.set(key, value, expiry)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        let keys = keys.to_vec();
        self.blocking(move |s| {
            let mut removed = 0;
            for key in &keys {
                removed += u64::from(s.delete(key)?);
            }
            Ok(removed)
        })
        .await
    }

    async fn has_key(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.blocking(move |s| {
            let path = s.path_for(&key);
            Ok(match Shared::read_head(&path) {
                Ok((expires, stored)) => {
                    stored == key.as_bytes() && (expires == 0 || expires > now_ms())
                }
                Err(_) => false,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_reject_garbage() {
        let raw = encode("k", b"value", 42);
        let (expires, key_len, value_len) = parse_header(&raw).unwrap();
        assert_eq!((expires, key_len, value_len), (42, 1, 5));
        assert!(parse_header(&raw[..10]).is_err());
        assert!(parse_header(b"not a cache file at all, certainly").is_err());
        let mut huge_key = raw.clone();
        huge_key[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_header(&huge_key).is_err());
    }

    #[test]
    fn deadlines_round_up_to_the_millisecond() {
        assert_eq!(deadline_ms(Expiry::Never), 0);
        let before = now_ms();
        let d = deadline_ms(Expiry::After(Duration::from_micros(1500)));
        assert!(d >= before + 2 && d <= now_ms() + 2, "{d} vs {before}");
    }
}
