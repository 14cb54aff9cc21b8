//! The directory of entry files: paths, stripe locks, reads, atomic writes, culling and listing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use webcache_core::{Error, Expiry, Result};

use crate::format::{deadline_ms, encode, live_at, now_ms, parse_header, Entry, HEADER_LEN};
use crate::secure::{
    open_entry, open_lock, prepare_dir, verify_dir, DirIdentity, Opened, MAX_ENTRY_BYTES,
};
use crate::BACKEND;

/// Suffix of entry files: `clear` and culling touch nothing else.
const SUFFIX: &str = ".wcache";
/// Suffix of files being written.
const TMP_SUFFIX: &str = ".wctmp";
const LOCK_STRIPES: usize = 64;
/// Temporary files older than this belong to a writer that died; culling removes them.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// The cache directory and what this process knows of it.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) max_entries: Option<u64>,
    pub(crate) cull_frequency: u64,
    pub(crate) count: Mutex<Count>,
    /// The directory last checked to be private (`None`: there was none).
    pub(crate) checked: Mutex<Option<DirIdentity>>,
}

/// What this process knows about the number of entries.
#[derive(Debug, Default)]
pub(crate) struct Count {
    /// Entries found by the last listing.
    pub(crate) listed: u64,
    /// Entries this process created since.
    pub(crate) created: u64,
}

/// What reading an entry file found.
pub(crate) enum Found {
    Missing,
    /// Unreadable (truncated, garbage, another key's file): a miss, already logged.
    Corrupt,
    Entry(Entry),
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::backend(BACKEND, format!("cannot {what} {}", path.display()), e)
}

/// Holds a stripe's advisory lock until dropped (closing the file releases it).
pub(crate) struct StripeLock(#[allow(dead_code)] File);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    fn hash(key: &str) -> [u8; 32] {
        Sha256::digest(key.as_bytes()).into()
    }

    pub(crate) fn path_for(&self, key: &str) -> PathBuf {
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

    /// Checks, before an operation, that the directory is still the private one checked before
    /// (one `stat`), and checks it again when it was replaced: a directory removed and created
    /// again by another user must not be trusted.
    pub(crate) fn verify_dir(&self) -> Result<()> {
        let mut checked = lock(&self.checked);
        *checked = verify_dir(&self.dir, *checked).map_err(|e| {
            Error::backend(
                BACKEND,
                format!("cannot use `{}` as the cache directory", self.dir.display()),
                e,
            )
        })?;
        Ok(())
    }

    /// Takes the advisory lock that serialises writers of `key`, in this and other processes.
    pub(crate) fn lock_key(&self, key: &str) -> Result<StripeLock> {
        let stripe = usize::from(Self::hash(key)[0]) % LOCK_STRIPES;
        let path = self.dir.join(format!(".lock-{stripe:02x}"));
        let file = self
            .recreating_dir(|| open_lock(&path))
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
                // Checked again: someone else may have created it in the meantime.
                *lock(&self.checked) = Some(prepare_dir(&self.dir)?);
                create()
            }
            other => other,
        }
    }

    /// Reads the entry of `key`.
    pub(crate) fn read(&self, key: &str, path: &Path) -> Result<Found> {
        let (file, len) = match open_entry(path) {
            Ok(Opened::File(file, len)) => (file, len),
            Ok(Opened::Missing) => return Ok(Found::Missing),
            Ok(Opened::Refused(why)) => {
                warn_corrupt(path, &why);
                return Ok(Found::Corrupt);
            }
            Err(e) => return Err(io_error("read", path, e)),
        };
        // At most the length the file had when opened (itself at most the entry size limit).
        let mut raw = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(len)
            .read_to_end(&mut raw)
            .map_err(|e| io_error("read", path, e))?;
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
    pub(crate) fn read_head(path: &Path) -> std::result::Result<(u64, Vec<u8>), String> {
        let (mut file, len) = match open_entry(path).map_err(|e| e.to_string())? {
            Opened::File(file, len) => (file, len),
            Opened::Missing => return Err("it is gone".to_owned()),
            Opened::Refused(why) => return Err(why),
        };
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
    pub(crate) fn live(&self, key: &str) -> Result<Option<Entry>> {
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
    pub(crate) fn write(
        &self,
        key: &str,
        value: &[u8],
        expires_ms: u64,
        path: &Path,
    ) -> Result<()> {
        let size = HEADER_LEN + key.len() + value.len();
        if size as u64 > MAX_ENTRY_BYTES {
            // Never write what no reader would read; as documented for the error, the older
            // value goes.
            remove_quietly(path)?;
            return Err(Error::ValueTooLarge {
                key: key.to_owned(),
                size,
                limit: usize::try_from(MAX_ENTRY_BYTES).unwrap_or(usize::MAX),
            });
        }
        // Whatever is at the path (even a planted link) is replaced by the rename, not followed.
        let existed = fs::symlink_metadata(path).is_ok();
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
                Ok((expires, _)) if live_at(expires, now) => kept.push(path),
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
    pub(crate) fn entry_files(&self) -> Result<Vec<PathBuf>> {
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
    pub(crate) fn listed_keys(&self) -> Result<Vec<(PathBuf, u64, String)>> {
        let mut keys = Vec::new();
        for path in self.entry_files()? {
            match Self::read_head(&path) {
                Ok((expires, key)) => {
                    if let Ok(key) = String::from_utf8(key) {
                        keys.push((path, expires, key));
                    }
                }
                // Gone since the listing: not an error.
                Err(_) if fs::symlink_metadata(&path).is_err() => {}
                Err(why) => warn_corrupt(&path, &why),
            }
        }
        Ok(keys)
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.live(key)?.map(|e| e.value()))
    }

    pub(crate) fn set(&self, key: &str, value: &[u8], expiry: Expiry) -> Result<()> {
        let path = self.path_for(key);
        let _lock = self.lock_key(key)?;
        self.write(key, value, deadline_ms(expiry), &path)
    }

    pub(crate) fn delete(&self, key: &str) -> Result<bool> {
        let path = self.path_for(key);
        let _lock = self.lock_key(key)?;
        let was_live = matches!(self.read(key, &path)?, Found::Entry(e) if e.live(now_ms()));
        remove_quietly(&path)?;
        Ok(was_live)
    }
}

pub(crate) fn remove_quietly(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", path, e)),
    }
}

fn warn_corrupt(path: &Path, why: &str) {
    tracing::warn!(file = %path.display(), "unreadable file cache entry treated as a miss: {why}");
}
