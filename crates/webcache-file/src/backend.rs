//! [`FileBackend`]: the [`Backend`] over a [`Store`] directory, running file work on tokio's
//! blocking pool.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use webcache_core::backend::entry::{encode_integer, parse_integer};
use webcache_core::backend::unix_ms;
use webcache_core::backend::{glob_match, Backend, BackendStats, KeyStream};
use webcache_core::config::{BackendSpec, ConfigError};
use webcache_core::{Error, Expiry, Result, Ttl};

use crate::config::{FileConfig, DEFAULT_CULL_FREQUENCY, DEFAULT_MAX_ENTRIES};
use crate::format::{deadline_ms, live_at, now_ms};
use crate::secure::prepare_dir;
use crate::store::{remove_quietly, Count, Found, Store};
use crate::BACKEND;

/// The file-system backend; see the [crate documentation](crate).
#[derive(Debug, Clone)]
pub struct FileBackend {
    store: Arc<Store>,
}

impl FileBackend {
    /// Opens (and creates, `0700`) the cache directory of `config`, refusing one that other
    /// users could write to (see the [crate documentation](crate)).
    pub fn open(config: &FileConfig) -> io::Result<Self> {
        let checked = prepare_dir(&config.dir)?;
        Ok(FileBackend {
            store: Arc::new(Store {
                dir: config.dir.clone(),
                max_entries: config.max_entries,
                cull_frequency: config.cull_frequency,
                count: Mutex::new(Count {
                    // Unknown until listed: make the first write list the directory.
                    listed: config.max_entries.unwrap_or(0),
                    created: 0,
                }),
                checked: Mutex::new(Some(checked)),
            }),
        })
    }

    /// Parses a `file://` spec (see [`FileFactory`](crate::FileFactory)) and opens the directory.
    pub fn from_spec(spec: &mut BackendSpec) -> Result<Self, ConfigError> {
        let max_entries: Option<u64> =
            spec.take("max_entries", "a whole number of entries (0 for no bound)")?;
        let cull_frequency: Option<u64> = spec.take(
            "cull_frequency",
            "a whole number N: culling removes 1/N of the entries (0 removes all)",
        )?;
        spec.finish(crate::OPTIONS)?;
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
        FileBackend::open(&config).map_err(|e| {
            spec.error(
                "url",
                format!(
                    "cannot use `{}` as the cache directory: {e}",
                    config.dir.display()
                ),
            )
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// The file that holds `key` (whether or not it exists).
    pub fn path_for(&self, key: &str) -> PathBuf {
        self.store.path_for(key)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            store.verify_dir()?;
            work(&store)
        })
        .await
        .map_err(|e| Error::backend(BACKEND, "a file cache task failed", e))?
    }
}

#[async_trait]
impl Backend for FileBackend {
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

    async fn set_if_present(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        let key = key.to_owned();
        self.blocking(move |s| {
            let path = s.path_for(&key);
            // The key's lock, as `delete` takes it: a delete cannot land between the check and
            // the rename, so it is never undone.
            let _lock = s.lock_key(&key)?;
            if !matches!(s.read(&key, &path)?, Found::Entry(e) if e.live(now_ms())) {
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
                Some(e) => match e.deadline() {
                    None => Ttl::Forever,
                    Some(at) => Ttl::Remaining(unix_ms::remaining(at, now_ms())),
                },
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
                            live_at(*expires, now) && glob_match(&pattern, key)
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
                .filter_map(|p| p.symlink_metadata().ok())
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
            Ok(match Store::read_head(&path) {
                Ok((expires, stored)) => stored == key.as_bytes() && live_at(expires, now_ms()),
                Err(_) => false,
            })
        })
        .await
    }
}
