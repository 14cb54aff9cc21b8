use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::lru::{Item, Lru};
use crate::backend::{Backend, BackendStats, KeyStream};
use crate::entry::{encode_integer, parse_integer};
use crate::error::{Error, Result};
use crate::key::glob_match;
use crate::timeout::{Expiry, Ttl};

/// The entry bound of a locmem cache that configures none (Django's `MAX_ENTRIES` is 300; a
/// page cache wants more).
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;

/// The byte bound of a locmem cache that configures none: 64 MiB of keys and values, so that the
/// embedded default of `webcache serve` and `webcache proxy` stays small on a small server
/// whatever sizes it is given (`max_bytes=0` lifts it).
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Django's default `CULL_FREQUENCY`: when the entry bound is reached, a third of the entries
/// (the least recently used) go.
pub const DEFAULT_CULL_FREQUENCY: u32 = 3;

/// Bytes counted per entry on top of its key and value, for `max_bytes`: the store's own
/// bookkeeping (slot, index entry, key and value headers, about 160 bytes on 64-bit targets), so
/// that many tiny entries cannot exceed the bound either.
const ENTRY_OVERHEAD: u64 = 160;

/// Bounds of a [`LocMemBackend`] cache: the defaults, changed with the setters of the same
/// names (`#[non_exhaustive]`, so a bound added later breaks no caller).
///
/// ```
/// use webcache::backends::LocMemConfig;
/// let config = LocMemConfig::default().max_entries(500).max_bytes(None);
/// assert_eq!((config.max_entries, config.max_bytes), (Some(500), None));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocMemConfig {
    /// At most this many entries (`None` or `Some(0)`: no entry bound).
    pub max_entries: Option<u64>,
    /// At most this many bytes of keys and values, plus 160 bytes per entry (`None` or
    /// `Some(0)`: no byte bound). A value that cannot fit on its own is refused with
    /// [`Error::ValueTooLarge`].
    pub max_bytes: Option<u64>,
    /// Django's `CULL_FREQUENCY`: when a new key meets a full store, the least recently used
    /// `1/cull_frequency` of the entries are evicted (at least one); `0` empties the store.
    pub cull_frequency: u32,
}

impl Default for LocMemConfig {
    fn default() -> Self {
        LocMemConfig {
            max_entries: Some(DEFAULT_MAX_ENTRIES),
            max_bytes: Some(DEFAULT_MAX_BYTES),
            cull_frequency: DEFAULT_CULL_FREQUENCY,
        }
    }
}

impl LocMemConfig {
    /// Sets `max_entries`: a number, or `None` for no entry bound.
    pub fn max_entries(mut self, entries: impl Into<Option<u64>>) -> Self {
        self.max_entries = entries.into();
        self
    }

    /// Sets `max_bytes`: a number, or `None` for no byte bound.
    pub fn max_bytes(mut self, bytes: impl Into<Option<u64>>) -> Self {
        self.max_bytes = bytes.into();
        self
    }

    /// Sets `cull_frequency`.
    pub fn cull_frequency(mut self, frequency: u32) -> Self {
        self.cull_frequency = frequency;
        self
    }
}

/// The in-process cache, the embedded default (`locmem://[name]`), as Django's `LocMemCache`:
/// a least-recently-used store. `get`, `set`, `add` and `incr` count as uses (`has_key`,
/// `ttl` and `touch` do not); a write that meets a full store evicts the least recently used
/// entries ([`LocMemConfig::cull_frequency`]) and is always kept. Both bounds hold right after
/// every write.
///
/// Caches built with the same name share their storage within the process (as Django's
/// `LOCATION`); different names are isolated. The bounds of a shared store are those of the
/// first cache that created it.
///
/// One lock guards a store, as in Django: every operation is exact and atomic, at the price of
/// serialising a store's callers (each holds it for well under a microsecond).
///
/// A store with no bound (`max_entries` and `max_bytes` both lifted) never evicts, so its reads
/// do not reorder it: a hit on a large store then skips two trips to memory.
#[derive(Clone)]
pub struct LocMemBackend {
    store: Arc<Store>,
    name: Option<String>,
}

impl std::fmt::Debug for LocMemBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocMemBackend")
            .field("name", &self.name)
            .finish()
    }
}

struct Store {
    max_entries: Option<usize>,
    max_bytes: Option<u64>,
    cull_frequency: usize,
    map: Mutex<Lru>,
}

type NamedStores = Mutex<HashMap<String, Weak<Store>>>;

fn named_stores() -> &'static NamedStores {
    static STORES: OnceLock<NamedStores> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// Items taken out of a store, dropped after its lock is released (freeing a large value is not
/// free).
type Dropped = Vec<Item>;

impl Store {
    fn new(config: LocMemConfig) -> Self {
        let max_entries = config
            .max_entries
            .filter(|n| *n > 0)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let max_bytes = config.max_bytes.filter(|n| *n > 0);
        // A store with no bound never evicts: the order of its reads is never asked for.
        let reads_count = max_entries.is_some() || max_bytes.is_some();
        Store {
            max_entries,
            max_bytes,
            cull_frequency: usize::try_from(config.cull_frequency).unwrap_or(usize::MAX),
            map: Mutex::new(Lru::new(reads_count)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // Nothing panics while the lock is held; if something did, the map is still consistent
        // between operations, so keep serving.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `item` as the most recently used entry, evicting what the bounds require.
    fn put(&self, map: &mut Lru, key: &str, item: Item, dropped: &mut Dropped) -> Result<()> {
        let weight = key.len() as u64 + item.value.len() as u64 + ENTRY_OVERHEAD;
        if let Some(max) = self.max_bytes {
            if weight > max {
                dropped.extend(map.remove(key));
                let limit = max.saturating_sub(key.len() as u64 + ENTRY_OVERHEAD);
                return Err(Error::ValueTooLarge {
                    key: key.to_owned(),
                    size: item.value.len(),
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                });
            }
        }
        if let Some(max) = self.max_entries {
            if map.len() >= max && map.peek(key).is_none() {
                self.cull(map, dropped);
            }
        }
        dropped.extend(map.insert(key, item, weight));
        if let Some(max) = self.max_bytes {
            // The new entry is the most recent and fits on its own, so this stops before it.
            while map.weight() > max {
                match map.pop_lru() {
                    Some((_, old)) => dropped.push(old),
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Django's `_cull`: drop the least recently used `1/cull_frequency` of the entries (at
    /// least one, so the bound holds for any frequency), or all of them for frequency 0.
    fn cull(&self, map: &mut Lru, dropped: &mut Dropped) {
        if self.cull_frequency == 0 {
            dropped.extend(map.take_all());
            return;
        }
        let count = (map.len() / self.cull_frequency).max(1);
        for _ in 0..count {
            match map.pop_lru() {
                Some((_, old)) => dropped.push(old),
                None => break,
            }
        }
    }
}

impl LocMemBackend {
    /// The store called `name`, shared with every other `LocMemBackend` of that name in this process
    /// (created with `config` if it does not exist yet).
    pub fn named(name: &str, config: LocMemConfig) -> Self {
        let mut stores = named_stores().lock().unwrap_or_else(|p| p.into_inner());
        stores.retain(|_, weak| weak.strong_count() > 0);
        let store = match stores.get(name).and_then(Weak::upgrade) {
            Some(store) => store,
            None => {
                let store = Arc::new(Store::new(config));
                stores.insert(name.to_owned(), Arc::downgrade(&store));
                store
            }
        };
        LocMemBackend {
            store,
            name: Some(name.to_owned()),
        }
    }

    /// A store shared with nobody.
    pub fn private(config: LocMemConfig) -> Self {
        LocMemBackend {
            store: Arc::new(Store::new(config)),
            name: None,
        }
    }

    /// Runs `f` on the map under the lock, then drops what it took out.
    fn with_map<R>(&self, f: impl FnOnce(&Store, &mut Lru, &mut Dropped) -> R) -> R {
        let mut dropped = Dropped::new();
        let result = f(&self.store, &mut self.store.lock(), &mut dropped);
        drop(dropped);
        result
    }

    /// `get`, without the async wrapper (locmem never waits).
    pub(crate) fn get_now(&self, key: &str) -> Option<Bytes> {
        self.with_map(|_, map, dropped| {
            let item = map.get(key)?;
            if item.expires_at.is_none_or(|t| t > Instant::now()) {
                return Some(item.value.clone());
            }
            dropped.extend(map.remove(key));
            None
        })
    }

    /// The live item under `key` without counting a use; an expired one is removed.
    fn peek_live(&self, key: &str) -> Option<Item> {
        self.with_map(|_, map, dropped| match map.peek(key) {
            Some(item) if item.live(Instant::now()) => Some(item.clone()),
            Some(_) => {
                dropped.extend(map.remove(key));
                None
            }
            None => None,
        })
    }
}

fn deadline(expiry: Expiry) -> Option<Instant> {
    // A deadline too far to represent is the same as never.
    expiry
        .duration()
        .and_then(|d| Instant::now().checked_add(d))
}

#[async_trait]
impl Backend for LocMemBackend {
    fn name(&self) -> &'static str {
        "locmem"
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_now(key))
    }

    fn get_ready(&self, key: &str) -> Option<Option<Bytes>> {
        Some(self.get_now(key))
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        let item = Item {
            value,
            expires_at: deadline(expiry),
        };
        self.with_map(|store, map, dropped| store.put(map, key, item, dropped))
    }

    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        let item = Item {
            value,
            expires_at: deadline(expiry),
        };
        self.with_map(|store, map, dropped| {
            if map.peek(key).is_some_and(|i| i.live(Instant::now())) {
                return Ok(false);
            }
            store.put(map, key, item, dropped).map(|()| true)
        })
    }

    async fn set_if_present(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        let item = Item {
            value,
            expires_at: deadline(expiry),
        };
        self.with_map(|store, map, dropped| {
            if !map.peek(key).is_some_and(|i| i.live(Instant::now())) {
                return Ok(false);
            }
            store.put(map, key, item, dropped).map(|()| true)
        })
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let removed = self.with_map(|_, map, _| map.remove(key));
        Ok(removed.is_some_and(|i| i.live(Instant::now())))
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        let expires_at = deadline(expiry);
        Ok(self.with_map(|_, map, _| match map.peek(key) {
            Some(item) if item.live(Instant::now()) => {
                item.expires_at = expires_at;
                true
            }
            _ => false,
        }))
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let key_error = |make: fn(String) -> Error| make(key.to_owned());
        self.with_map(|store, map, dropped| {
            let Some(item) = map.get(key).filter(|i| i.live(Instant::now())) else {
                return Err(key_error(|key| Error::KeyNotFound { key }));
            };
            let n = parse_integer(&item.value)
                .ok_or_else(|| key_error(|key| Error::NotAnInteger { key }))?;
            let m = n
                .checked_add(delta)
                .ok_or_else(|| key_error(|key| Error::Overflow { key }))?;
            let item = Item {
                value: encode_integer(m),
                expires_at: item.expires_at,
            };
            store.put(map, key, item, dropped).map(|()| m)
        })
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        Ok(match self.peek_live(key) {
            None => Ttl::Missing,
            Some(Item {
                expires_at: None, ..
            }) => Ttl::Forever,
            Some(Item {
                expires_at: Some(t),
                ..
            }) => Ttl::Remaining(t.saturating_duration_since(Instant::now())),
        })
    }

    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        self.with_map(|_, map, dropped| match prefix {
            None => dropped.extend(map.take_all()),
            Some(prefix) => {
                let doomed: Vec<String> = map
                    .iter()
                    .filter(|(key, _)| key.starts_with(prefix))
                    .map(|(key, _)| key.to_owned())
                    .collect();
                dropped.extend(doomed.iter().filter_map(|key| map.remove(key)));
            }
        });
        Ok(())
    }

    fn scan(&self, pattern: &str) -> KeyStream {
        let now = Instant::now();
        // Match outside the lock: a long pattern over many keys must not stall the store.
        let live: Vec<String> = self.with_map(|_, map, _| {
            map.iter()
                .filter(|(_, item)| item.live(now))
                .map(|(key, _)| key.to_owned())
                .collect()
        });
        let keys: Vec<Result<String>> = live
            .into_iter()
            .filter(|key| glob_match(pattern, key))
            .map(Ok)
            .collect();
        Box::pin(futures::stream::iter(keys))
    }

    async fn stats(&self) -> Result<BackendStats> {
        let now = Instant::now();
        let (entries, bytes) = self.with_map(|_, map, _| {
            map.iter()
                .filter(|(_, item)| item.live(now))
                .fold((0u64, 0u64), |(n, b), (key, item)| {
                    (n + 1, b + key.len() as u64 + item.value.len() as u64)
                })
        });
        Ok(BackendStats {
            entries: Some(entries),
            bytes: Some(bytes),
            extra: vec![(
                "name".to_owned(),
                match self.name.as_deref() {
                    None => "(private)".to_owned(),
                    Some("") => "(default)".to_owned(),
                    Some(name) => name.to_owned(),
                },
            )],
        })
    }

    async fn has_key(&self, key: &str) -> Result<bool> {
        Ok(self.peek_live(key).is_some())
    }

    async fn peek(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.peek_live(key).map(|item| item.value))
    }
}

/// The options a `locmem://` URL accepts besides the common ones.
pub(crate) const OPTIONS: &[&str] = &["max_entries", "max_bytes", "cull_frequency"];

impl LocMemBackend {
    /// Builds the store a `locmem://[name]?max_entries=N&max_bytes=N&cull_frequency=N` URL
    /// describes. A bound not given is [`DEFAULT_MAX_ENTRIES`] / [`DEFAULT_MAX_BYTES`]; `0`
    /// lifts it. `cull_frequency` is Django's `CULL_FREQUENCY` (default
    /// [`DEFAULT_CULL_FREQUENCY`]).
    pub fn from_spec(
        spec: &mut crate::config::BackendSpec,
    ) -> Result<Self, crate::config::ConfigError> {
        let max_entries: Option<u64> = spec.take("max_entries", "a whole number of entries")?;
        let max_bytes: Option<u64> = spec.take("max_bytes", "a whole number of bytes")?;
        let cull_frequency: Option<u32> = spec.take(
            "cull_frequency",
            "a whole number N (evict 1/N of the entries when full; 0 empties the store)",
        )?;
        spec.finish(OPTIONS)?;
        if spec.location.contains('/') {
            return Err(spec.error(
                "url",
                format!(
                    "`{}` is not a locmem name; use `locmem://NAME` with no path",
                    spec.location
                ),
            ));
        }
        let config = LocMemConfig::default()
            .max_entries(max_entries.unwrap_or(DEFAULT_MAX_ENTRIES))
            .max_bytes(max_bytes.unwrap_or(DEFAULT_MAX_BYTES))
            .cull_frequency(cull_frequency.unwrap_or(DEFAULT_CULL_FREQUENCY));
        Ok(LocMemBackend::named(&spec.location, config))
    }
}
