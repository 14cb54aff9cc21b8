use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::ops::compute::Op;
use moka::sync::Cache as Moka;

use crate::backend::{Backend, BackendStats, KeyStream};
use crate::entry::{encode_integer, parse_integer};
use crate::error::{Error, Result};
use crate::key::glob_match;
use crate::timeout::{Expiry, Ttl};

/// The entry bound of a locmem cache that configures none.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;

/// Bytes counted per entry on top of its key and value, for `max_bytes`.
const ENTRY_OVERHEAD: u64 = 64;

/// Bounds of a [`LocMem`] cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocMemConfig {
    /// At most this many entries.
    pub max_entries: Option<u64>,
    /// At most this many bytes of keys and values (plus a small per-entry overhead).
    pub max_bytes: Option<u64>,
}

impl Default for LocMemConfig {
    fn default() -> Self {
        LocMemConfig {
            max_entries: Some(DEFAULT_MAX_ENTRIES),
            max_bytes: None,
        }
    }
}

#[derive(Clone)]
struct Stored {
    value: Bytes,
    expires_at: Option<Instant>,
}

impl Stored {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

struct PerEntryExpiry;

impl moka::Expiry<String, Stored> for PerEntryExpiry {
    fn expire_after_create(&self, _: &String, v: &Stored, now: Instant) -> Option<Duration> {
        v.expires_at.map(|t| t.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Stored,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        v.expires_at.map(|t| t.saturating_duration_since(now))
    }
}

/// The in-process cache, the embedded default (`locmem://[name]`), built on
/// [moka](https://docs.rs/moka): TinyLFU admission with LRU eviction, bounded by entries and/or
/// bytes, with a per-entry expiry.
///
/// Caches built with the same name share their storage within the process (as Django's
/// `LOCATION`); different names are isolated. The bounds of a shared store are those of the
/// first cache that created it.
#[derive(Clone)]
pub struct LocMem {
    store: Arc<Moka<String, Stored>>,
    name: Option<String>,
}

impl std::fmt::Debug for LocMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocMem").field("name", &self.name).finish()
    }
}

type Store = Moka<String, Stored>;
type NamedStores = Mutex<HashMap<String, Weak<Store>>>;

fn named_stores() -> &'static NamedStores {
    static STORES: OnceLock<NamedStores> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

impl LocMem {
    /// The store called `name`, shared with every other `LocMem` of that name in this process
    /// (created with `config` if it does not exist yet).
    pub fn named(name: &str, config: LocMemConfig) -> Self {
        let mut stores = named_stores().lock().unwrap_or_else(|p| p.into_inner());
        stores.retain(|_, weak| weak.strong_count() > 0);
        let store = match stores.get(name).and_then(Weak::upgrade) {
            Some(store) => store,
            None => {
                let store = Arc::new(build(config));
                stores.insert(name.to_owned(), Arc::downgrade(&store));
                store
            }
        };
        LocMem {
            store,
            name: Some(name.to_owned()),
        }
    }

    /// A store shared with nobody.
    pub fn private(config: LocMemConfig) -> Self {
        LocMem {
            store: Arc::new(build(config)),
            name: None,
        }
    }

    fn live(&self, key: &str) -> Option<Stored> {
        self.store
            .get(key)
            .filter(|stored| stored.live(Instant::now()))
    }
}

fn build(config: LocMemConfig) -> Moka<String, Stored> {
    let builder = Moka::builder().expire_after(PerEntryExpiry);
    // One capacity serves both bounds: with bytes as the weight, an entry weighs at least
    // max_bytes / max_entries, so neither the byte nor the entry bound can be exceeded.
    match (config.max_entries, config.max_bytes) {
        (None, None) => builder.build(),
        (Some(entries), None) => builder.max_capacity(entries).build(),
        (entries, Some(bytes)) => {
            let floor = entries.map_or(1, |n| (bytes / n.max(1)).max(1));
            builder
                .max_capacity(bytes)
                .weigher(move |k: &String, v: &Stored| {
                    let size = k.len() as u64 + v.value.len() as u64 + ENTRY_OVERHEAD;
                    u32::try_from(size.max(floor)).unwrap_or(u32::MAX)
                })
                .build()
        }
    }
}

fn deadline(expiry: Expiry) -> Option<Instant> {
    // A deadline too far to represent is the same as never.
    expiry
        .duration()
        .and_then(|d| Instant::now().checked_add(d))
}

#[async_trait]
impl Backend for LocMem {
    fn name(&self) -> &'static str {
        "locmem"
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.live(key).map(|s| s.value))
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        self.store.insert(
            key.to_owned(),
            Stored {
                value,
                expires_at: deadline(expiry),
            },
        );
        Ok(())
    }

    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        let mut added = false;
        let now = Instant::now();
        self.store
            .entry(key.to_owned())
            .and_compute_with(|current| match current {
                Some(entry) if entry.value().live(now) => Op::Nop,
                _ => {
                    added = true;
                    Op::Put(Stored {
                        value,
                        expires_at: deadline(expiry),
                    })
                }
            });
        Ok(added)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self
            .store
            .remove(key)
            .is_some_and(|s| s.live(Instant::now())))
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        let mut touched = false;
        let now = Instant::now();
        self.store
            .entry(key.to_owned())
            .and_compute_with(|current| match current {
                Some(entry) if entry.value().live(now) => {
                    touched = true;
                    Op::Put(Stored {
                        value: entry.into_value().value,
                        expires_at: deadline(expiry),
                    })
                }
                _ => Op::Nop,
            });
        Ok(touched)
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let not_found = || Error::KeyNotFound {
            key: key.to_owned(),
        };
        let mut result = Err(not_found());
        let now = Instant::now();
        self.store
            .entry(key.to_owned())
            .and_compute_with(|current| {
                let Some(stored) = current.map(|e| e.into_value()).filter(|s| s.live(now)) else {
                    return Op::Nop;
                };
                let Some(n) = parse_integer(&stored.value) else {
                    result = Err(Error::NotAnInteger {
                        key: key.to_owned(),
                    });
                    return Op::Nop;
                };
                match n.checked_add(delta) {
                    None => {
                        result = Err(Error::Overflow {
                            key: key.to_owned(),
                        });
                        Op::Nop
                    }
                    Some(m) => {
                        result = Ok(m);
                        Op::Put(Stored {
                            value: encode_integer(m),
                            expires_at: stored.expires_at,
                        })
                    }
                }
            });
        result
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        Ok(match self.live(key) {
            None => Ttl::Missing,
            Some(Stored {
                expires_at: None, ..
            }) => Ttl::Forever,
            Some(Stored {
                expires_at: Some(t),
                ..
            }) => Ttl::Remaining(t.saturating_duration_since(Instant::now())),
        })
    }

    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        match prefix {
            None => self.store.invalidate_all(),
            Some(prefix) => {
                for (key, _) in self.store.iter() {
                    if key.starts_with(prefix) {
                        self.store.invalidate(key.as_str());
                    }
                }
            }
        }
        Ok(())
    }

    fn scan(&self, pattern: &str) -> KeyStream {
        let now = Instant::now();
        let keys: Vec<Result<String>> = self
            .store
            .iter()
            .filter(|(key, stored)| stored.live(now) && glob_match(pattern, key))
            .map(|(key, _)| Ok(key.as_ref().clone()))
            .collect();
        Box::pin(futures::stream::iter(keys))
    }

    async fn stats(&self) -> Result<BackendStats> {
        // Eviction is applied in batches; settle it so the figures honour the bounds.
        self.store.run_pending_tasks();
        let now = Instant::now();
        let (mut entries, mut bytes) = (0u64, 0u64);
        for (key, stored) in self.store.iter() {
            if stored.live(now) {
                entries += 1;
                bytes += key.len() as u64 + stored.value.len() as u64;
            }
        }
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
        Ok(self.live(key).is_some())
    }
}

impl LocMem {
    /// Builds the store a `locmem://[name]?max_entries=N&max_bytes=N` URL describes. Without
    /// options the bound is [`DEFAULT_MAX_ENTRIES`]; `max_entries=0` means no entry bound.
    pub fn from_spec(
        spec: &mut crate::config::BackendSpec,
    ) -> Result<Self, crate::config::ConfigError> {
        let max_entries: Option<u64> = spec.take("max_entries", "a whole number of entries")?;
        let max_bytes: Option<u64> = spec.take("max_bytes", "a whole number of bytes")?;
        spec.finish(&["max_entries", "max_bytes"])?;
        if spec.location.contains('/') {
            return Err(spec.error(
                "url",
                format!(
                    "`{}` is not a locmem name; use `locmem://NAME` with no path",
                    spec.location
                ),
            ));
        }
        let config = LocMemConfig {
            max_entries: match (max_entries, max_bytes) {
                (Some(0), _) => None,
                (None, Some(_)) => None,
                (None, None) => Some(DEFAULT_MAX_ENTRIES),
                (n, _) => n,
            },
            max_bytes: max_bytes.filter(|b| *b > 0),
        };
        Ok(LocMem::named(&spec.location, config))
    }
}
