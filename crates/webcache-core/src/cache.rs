//! [`Cache`]: the typed, Django-style API over one [`Backend`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{Backend, KeyRules, KeyStream};
use crate::breaker::Breaker;
use crate::entry::{self, Decoded};
use crate::error::{Error, Result};
use crate::key::{final_key, glob_escape, KeyFunction};
use crate::single_flight::SingleFlight;
use crate::throttle::LogThrottle;
use crate::timeout::{Expiry, Timeout, Ttl, DEFAULT_TIMEOUT};

mod counters;
mod guard;
mod lease;
mod metrics_export;
mod options;
mod outcome;
mod parity;
mod stale;
mod tags;

pub use counters::{CacheStats, HotKey, Metrics, OperationReads};
use counters::{Counters, Read};
pub use options::{
    CacheOptions, CacheOptionsBuilder, OnError, DEFAULT_COMPRESS_MIN_BYTES, DEGRADE_LOG_INTERVAL,
};
pub use outcome::Outcome;

/// What [`Cache::add_or_repair`] did.
enum Added {
    /// Our value is stored (the key was free, or held an unreadable entry).
    Stored,
    /// A readable entry holds the key: this one.
    Exists(Bytes),
    /// The backend failed and the cache degrades: nothing is known.
    Degraded,
}

struct Inner {
    backend: Arc<dyn Backend>,
    options: CacheOptions,
    key_rules: KeyRules,
    counters: Counters,
    flights: SingleFlight<Bytes>,
    degrade_log: LogThrottle,
    breaker: Option<Breaker>,
}

/// A cache: Django's low-level cache API, async, with typed values, over any [`Backend`].
///
/// `Cache` is cheap to clone (one `Arc`); clones share the backend, counters and single-flight
/// state. Values are any serde type (stored as JSON; integers as digits so `incr` is native);
/// [`set_bytes`](Cache::set_bytes)/[`get_bytes`](Cache::get_bytes) store raw bytes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> webcache::Result<()> {
/// use webcache::{Cache, Timeout};
///
/// let cache = Cache::locmem();
/// cache.set("greeting", "hello", 60).await?;
/// assert_eq!(cache.get::<String>("greeting").await?.as_deref(), Some("hello"));
///
/// assert!(cache.add("visits", &0, Timeout::Forever).await?);
/// assert_eq!(cache.incr("visits", 1).await?, 1);
///
/// let n: u32 = cache.get_or_set_with("answer", Timeout::Default, || async { 42 }).await?;
/// assert_eq!(n, 42);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
    version: i64,
    /// `prefix:version:` for the default key function, built once per handle so that a key
    /// costs one allocation on the hot path.
    head: Arc<str>,
    /// The tags this handle's writes carry (see [`Cache::tagged`]); `None` for most handles.
    tags: Option<Arc<tags::TagSet>>,
    /// Whether this handle's writes may be compressed (see [`Cache::uncompressed`]).
    compress: bool,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("alias", &self.inner.options.alias)
            .field("backend", &self.inner.backend)
            .field("key_prefix", &self.inner.options.key_prefix)
            .field("version", &self.version)
            .field("tags", &self.tags())
            .finish()
    }
}

impl Cache {
    /// A cache over `backend` with the given options.
    pub fn new(backend: Arc<dyn Backend>, options: CacheOptions) -> Self {
        let backend: Arc<dyn Backend> = match options.near_ttl {
            Some(ttl) if !ttl.is_zero() => Arc::new(crate::backends::NearCache::new(
                backend,
                ttl,
                options.near_max_entries.max(1),
            )),
            _ => backend,
        };
        let key_rules = backend.key_rules();
        let version = options.version;
        let needs_server = !matches!(backend.name(), "locmem" | "dummy");
        let breaker = (needs_server && options.breaker_failures > 0).then(|| {
            Breaker::new(
                backend.name(),
                options.breaker_failures,
                options.breaker_max_delay,
            )
        });
        Cache {
            inner: Arc::new(Inner {
                backend,
                options,
                key_rules,
                counters: Counters::default(),
                flights: SingleFlight::new(),
                degrade_log: LogThrottle::new(DEGRADE_LOG_INTERVAL),
                breaker,
            }),
            version,
            head: Arc::from(""),
            tags: None,
            compress: true,
        }
        .with_head()
    }

    /// A cache over `backend` with default options.
    pub fn with_backend(backend: impl Backend) -> Self {
        Self::new(Arc::new(backend), CacheOptions::default())
    }

    /// The embedded default: an in-process [`LocMemBackend`](crate::backends::LocMemBackend) cache with
    /// default bounds, private to this call.
    pub fn locmem() -> Self {
        Self::with_backend(crate::backends::LocMemBackend::private(
            crate::backends::LocMemConfig::default(),
        ))
    }

    /// The alias this cache is known by.
    pub fn alias(&self) -> &str {
        &self.inner.options.alias
    }

    /// The options this cache was built with.
    pub fn options(&self) -> &CacheOptions {
        &self.inner.options
    }

    /// The backend under this cache.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The backend as its concrete type, to reach its own extras (for example the Redis
    /// backend's locks); `None` when the cache uses another backend.
    pub fn backend_as<B: Backend>(&self) -> Option<&B> {
        // Through `dyn Backend`'s vtable: calling `as_any` on the `Arc` itself would give the
        // `Arc` as `Any`. Wrappers (the near tier, ...) are transparent: walk their `inner`.
        let mut backend: &dyn Backend = &*self.inner.backend;
        loop {
            if let Some(found) = backend.as_any().downcast_ref::<B>() {
                return Some(found);
            }
            backend = backend.inner()?;
        }
    }

    /// The version used by this handle.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// A handle on the same cache that reads and writes `version` (Django's `version=`
    /// argument). It shares everything else with `self`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> webcache::Result<()> {
    /// let cache = webcache::Cache::locmem();
    /// cache.with_version(2).set("k", "v2", 60).await?;
    /// assert_eq!(cache.get::<String>("k").await?, None);
    /// assert_eq!(cache.with_version(2).get::<String>("k").await?.as_deref(), Some("v2"));
    /// # Ok(()) }
    /// ```
    pub fn with_version(&self, version: i64) -> Cache {
        Cache {
            inner: self.inner.clone(),
            version,
            head: Arc::from(""),
            tags: self.tags.clone(),
            compress: self.compress,
        }
        .with_head()
    }

    /// A handle on the same cache whose writes are never compressed, whatever
    /// [`compress_min_bytes`](CacheOptions::compress_min_bytes) says, so that reading them
    /// back ([`get_bytes`](Cache::get_bytes)) hands out the stored bytes without a copy. For
    /// large values read far more often than written, where a copy per read costs more than
    /// the memory saved (the page cache stores its pages this way). Reads of entries written
    /// compressed still decompress them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> webcache::Result<()> {
    /// use webcache::Cache;
    ///
    /// let cache = Cache::locmem();
    /// let page = vec![b'x'; 100_000]; // over the 32 KiB compression threshold
    /// cache.uncompressed().set_bytes("page", &page, 60).await?;
    /// assert_eq!(cache.get_bytes("page").await?.as_deref(), Some(&page[..]));
    /// # Ok(()) }
    /// ```
    pub fn uncompressed(&self) -> Cache {
        let mut handle = self.clone();
        handle.compress = false;
        handle
    }

    fn with_head(mut self) -> Self {
        let o = &self.inner.options;
        self.head = KeyFunction::default_format(&o.key_prefix, self.version, "").into();
        self
    }

    /// The stored key for `key` under this handle's prefix and version, validated against the
    /// backend's rules.
    pub fn make_key(&self, key: &str) -> Result<String> {
        self.make_key_version(key, self.version)
    }

    fn make_key_version(&self, key: &str, version: i64) -> Result<String> {
        let o = &self.inner.options;
        if version == self.version
            && o.key_function.is_default()
            && self.inner.key_rules == KeyRules::ANY
            && !o.invalid_keys.rewrites(key)
        {
            // The common case: `prefix:version:` is ready and any key is storable.
            let mut full = String::with_capacity(self.head.len() + key.len());
            full.push_str(&self.head);
            full.push_str(key);
            return Ok(full);
        }
        final_key(
            &o.key_function,
            &o.key_prefix,
            version,
            key,
            &self.inner.key_rules,
            o.invalid_keys,
        )
    }

    // ----- reading -------------------------------------------------------------------------

    /// The value under `key`, or `None` when it is missing, expired, or unreadable (a corrupt
    /// or foreign entry, or one of another type: logged as a warning). A stored `null` read as
    /// `Option<T>` is `Some(None)`: a hit.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.read_counted(Read::Get, key).await
    }

    /// The value under `key`, or `default` when there is none.
    pub async fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.get(key).await?.unwrap_or(default))
    }

    /// Raw bytes stored with [`set_bytes`](Cache::set_bytes), or `None`.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>> {
        let full = self.make_key(key)?;
        let raw = self.backend_get(&full).await?;
        Ok(self.bytes_read(key, raw))
    }

    /// What a read of raw bytes gives the caller (counted as a hit or a miss).
    fn bytes_read(&self, key: &str, raw: Option<Bytes>) -> Option<Bytes> {
        self.count(
            Read::GetBytes,
            key,
            raw.and_then(|raw| self.decode_bytes(key, &raw)),
        )
    }

    /// [`get_bytes`](Cache::get_bytes) answered without waiting, when the backend has the
    /// answer in this process ([`Backend::get_ready`]: locmem, the near tier's trusted copies).
    /// `None` when the answer needs I/O: then call `get_bytes`. A caller on a hot path (the
    /// page cache's hit) uses it to answer without a future.
    ///
    /// A tagged entry whose tag versions are not at hand is read again by `get_bytes`.
    pub fn get_bytes_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        let full = match self.make_key(key) {
            Ok(full) => full,
            Err(e) => return Some(Err(e)),
        };
        let backend = &self.inner.backend;
        let raw = match metrics_export::observe_ready(self, "get", || backend.get_ready(&full))? {
            Some(raw) if entry::has_tags(&raw) => match self.tags_current_now(&raw)? {
                Ok(current) => current.then_some(raw),
                Err(e) => return Some(Err(e)),
            },
            other => other,
        };
        Some(Ok(self.bytes_read(key, raw)))
    }

    /// The stored entry under `key` as the backend holds it (header included), for inspection;
    /// see [`entry::decode`].
    pub async fn get_raw(&self, key: &str) -> Result<Option<Bytes>> {
        let full = self.make_key(key)?;
        self.backend_get(&full).await
    }

    /// The values of those `keys` that are present, by key.
    pub async fn get_many<T, K>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<HashMap<String, T>>
    where
        T: DeserializeOwned,
        K: AsRef<str>,
    {
        let user_keys: Vec<String> = keys.into_iter().map(|k| k.as_ref().to_owned()).collect();
        let full_keys = user_keys
            .iter()
            .map(|k| self.make_key(k))
            .collect::<Result<Vec<_>>>()?;
        if full_keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut values = self
            .guard("get_many", self.inner.backend.get_many(&full_keys), || {
                vec![None; full_keys.len()]
            })
            .await?;
        self.retain_current(&mut values).await?;
        let mut found = HashMap::with_capacity(values.len());
        for (key, raw) in user_keys.into_iter().zip(values) {
            let value = raw.and_then(|raw| self.decode_typed(&key, &raw));
            if let Some(value) = self.count(Read::GetMany, &key, value) {
                found.insert(key, value);
            }
        }
        Ok(found)
    }

    /// Whether `key` is present (not expired, and not invalidated by a tag). The entry is
    /// read: only it tells its tags.
    pub async fn has_key(&self, key: &str) -> Result<bool> {
        let full = self.make_key(key)?;
        let found = self.backend_peek(&full).await?.map(|_| ());
        Ok(self.count(Read::HasKey, key, found).is_some())
    }

    /// The remaining lifetime of `key`: [`Ttl::Remaining`], [`Ttl::Forever`] or
    /// [`Ttl::Missing`]. For a value kept with a stale window this is how long the backend
    /// keeps it, window included; [`lifetime`](Cache::lifetime) tells the fresh part apart.
    /// An entry invalidated by a tag is [`Ttl::Missing`] (the entry is read to tell).
    pub async fn ttl(&self, key: &str) -> Result<Ttl> {
        let full = self.make_key(key)?;
        let ttl = self
            .guard("ttl", self.inner.backend.ttl(&full), || Ttl::Missing)
            .await?;
        if ttl == Ttl::Missing || self.backend_peek(&full).await?.is_some() {
            return Ok(ttl);
        }
        Ok(Ttl::Missing)
    }

    // ----- writing -------------------------------------------------------------------------

    /// Stores `value` under `key` for `timeout` (a zero timeout stores nothing and removes any
    /// older value).
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        timeout: impl Into<Timeout>,
    ) -> Result<()> {
        let full = self.make_key(key)?;
        let Some(tags) = self.stamp_or_skip(key).await? else {
            return Ok(());
        };
        let encoded = self.encode(key, value, &tags);
        self.store(key, &full, encoded, timeout.into()).await
    }

    /// Stores raw bytes under `key` (read them back with [`get_bytes`](Cache::get_bytes)).
    pub async fn set_bytes(
        &self,
        key: &str,
        value: &[u8],
        timeout: impl Into<Timeout>,
    ) -> Result<()> {
        let full = self.make_key(key)?;
        let Some(tags) = self.stamp_or_skip(key).await? else {
            return Ok(());
        };
        let encoded = self.encode_bytes(key, value, &tags);
        self.store(key, &full, encoded, timeout.into()).await
    }

    async fn store(
        &self,
        key: &str,
        full: &str,
        encoded: Result<Bytes>,
        timeout: Timeout,
    ) -> Result<()> {
        let encoded = match encoded {
            // As a backend that refuses a value too large: no stale value stays behind.
            Err(e @ Error::ValueTooLarge { .. }) => {
                self.backend_delete(full).await?;
                return Err(e);
            }
            other => other?,
        };
        match self.expiry(timeout) {
            None => self.backend_delete(full).await.map(drop),
            Some(expiry) => self
                .guard("set", self.inner.backend.set(full, encoded, expiry), || ())
                .await
                .map_err(|e| e.with_user_key(key)),
        }
    }

    /// Stores `value` only if `key` is absent or expired; returns whether it stored it. With a
    /// zero timeout nothing is stored and the result says whether it would have been.
    ///
    /// An entry that cannot be read (corrupt, foreign, or of an older format) counts as absent:
    /// it is overwritten, so it cannot block `add` until it expires. That repair is a read and a
    /// `set` after the failed `add`, not atomic: two callers repairing the same entry at the
    /// same moment may both be told they stored it.
    pub async fn add<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        timeout: impl Into<Timeout>,
    ) -> Result<bool> {
        let full = self.make_key(key)?;
        let Some(tags) = self.stamp_or_skip(key).await? else {
            return Ok(false);
        };
        let encoded = self.encode(key, value, &tags)?;
        self.add_encoded(key, &full, encoded, timeout.into()).await
    }

    /// [`add`](Cache::add) for raw bytes.
    pub async fn add_bytes(
        &self,
        key: &str,
        value: &[u8],
        timeout: impl Into<Timeout>,
    ) -> Result<bool> {
        let full = self.make_key(key)?;
        let Some(tags) = self.stamp_or_skip(key).await? else {
            return Ok(false);
        };
        let encoded = self.encode_bytes(key, value, &tags)?;
        self.add_encoded(key, &full, encoded, timeout.into()).await
    }

    async fn add_encoded(
        &self,
        key: &str,
        full: &str,
        encoded: Bytes,
        timeout: Timeout,
    ) -> Result<bool> {
        match self.expiry(timeout) {
            None => Ok(!self
                .guard("has_key", self.inner.backend.has_key(full), || false)
                .await?),
            Some(expiry) => Ok(matches!(
                self.add_or_repair(key, full, encoded, expiry, |raw| self.decode(raw).is_ok())
                    .await?,
                Added::Stored
            )),
        }
    }

    /// `add`, and when the key is taken by an entry that `readable` refuses, `set` over it (a
    /// corrupt, foreign or old-format entry must not make every later `add` fail, and with it
    /// every `get_or_set`, until it expires).
    async fn add_or_repair(
        &self,
        key: &str,
        full: &str,
        encoded: Bytes,
        expiry: Expiry,
        readable: impl Fn(&Bytes) -> bool,
    ) -> Result<Added> {
        let backend = &self.inner.backend;
        // `None` is a degraded failure: nothing is known, so nothing more is tried.
        let added = self
            .guard(
                "add",
                async { backend.add(full, encoded.clone(), expiry).await.map(Some) },
                || None,
            )
            .await
            .map_err(|e| e.with_user_key(key))?;
        match added {
            Some(true) => return Ok(Added::Stored),
            None => return Ok(Added::Degraded),
            Some(false) => {}
        }
        let existing = self
            .guard("get", async { backend.get(full).await.map(Some) }, || None)
            .await?;
        let Some(existing) = existing else {
            return Ok(Added::Degraded);
        };
        if let Some(raw) = existing {
            if !readable(&raw) {
                tracing::warn!(alias = %self.alias(), key, "overwriting an unreadable cache entry that blocked add");
            } else if self.tags_current(&raw).await? {
                return Ok(Added::Exists(raw));
            }
            // An entry whose tags were invalidated is a miss: ours replaces it.
        }
        self.guard("set", backend.set(full, encoded, expiry), || ())
            .await
            .map_err(|e| e.with_user_key(key))?;
        Ok(Added::Stored)
    }

    /// Stores several values with one timeout.
    pub async fn set_many<T, K>(
        &self,
        entries: impl IntoIterator<Item = (K, T)>,
        timeout: impl Into<Timeout>,
    ) -> Result<()>
    where
        T: Serialize,
        K: AsRef<str>,
    {
        let mut encoded = Vec::new();
        let Some(tags) = self.stamp_or_skip("(set_many)").await? else {
            return Ok(());
        };
        for (key, value) in entries {
            let key = key.as_ref();
            let full = self.make_key(key)?;
            let value = self.encode(key, &value, &tags);
            if let Err(Error::ValueTooLarge { .. }) = value {
                // Nothing is stored; the key's older value goes, as with `set`.
                return self.store(key, &full, value, Timeout::Default).await;
            }
            encoded.push((full, value?));
        }
        if encoded.is_empty() {
            return Ok(());
        }
        match self.expiry(timeout.into()) {
            None => {
                let keys: Vec<String> = encoded.into_iter().map(|(k, _)| k).collect();
                self.guard("delete_many", self.inner.backend.delete_many(&keys), || 0)
                    .await
                    .map(drop)
            }
            Some(expiry) => {
                self.guard(
                    "set_many",
                    self.inner.backend.set_many(encoded, expiry),
                    || (),
                )
                .await
            }
        }
    }

    /// The value under `key`; on a miss, stores `value` (unless another caller stored one
    /// first, whose value is then returned).
    pub async fn get_or_set<T>(&self, key: &str, value: T, timeout: impl Into<Timeout>) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send,
    {
        self.try_get_or_set_with(key, timeout, || async { Ok::<T, Error>(value) })
            .await
    }

    /// The value under `key`; on a miss, computes it with `compute` and stores it.
    ///
    /// Concurrent calls for the same missing key in this process run `compute` once; the others
    /// wait for its value. When another process stored a value meanwhile, that value wins and
    /// is returned. [`get_or_set_with_outcome`](Cache::get_or_set_with_outcome) also says
    /// which of these happened.
    pub async fn get_or_set_with<T, F, Fut>(
        &self,
        key: &str,
        timeout: impl Into<Timeout>,
        compute: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let (value, _) = self.get_or_set_with_outcome(key, timeout, compute).await?;
        Ok(value)
    }

    /// [`get_or_set_with`](Cache::get_or_set_with) that also says what it did: the value came
    /// from the cache ([`Outcome::Hit`]), this call computed it ([`Outcome::Computed`]), or it
    /// waited for a concurrent caller's computation ([`Outcome::Waited`]). See [`Outcome`].
    pub async fn get_or_set_with_outcome<T, F, Fut>(
        &self,
        key: &str,
        timeout: impl Into<Timeout>,
        compute: F,
    ) -> Result<(T, Outcome)>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.try_get_or_set_with_outcome(key, timeout, || async { Ok::<T, Error>(compute().await) })
            .await
    }

    /// [`get_or_set_with`](Cache::get_or_set_with) for a computation that can fail: its error
    /// is returned and nothing is stored.
    pub async fn try_get_or_set_with<T, E, F, Fut>(
        &self,
        key: &str,
        timeout: impl Into<Timeout>,
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (value, _) = self
            .try_get_or_set_with_outcome(key, timeout, compute)
            .await?;
        Ok(value)
    }

    /// [`try_get_or_set_with`](Cache::try_get_or_set_with) that also says what it did (see
    /// [`Outcome`]): the one home of the `get_or_set` rules, which the other forms call.
    pub async fn try_get_or_set_with_outcome<T, E, F, Fut>(
        &self,
        key: &str,
        timeout: impl Into<Timeout>,
        compute: F,
    ) -> Result<(T, Outcome), E>
    where
        T: Serialize + DeserializeOwned + Send,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(value) = self.read_counted::<T>(Read::GetOrSet, key).await? {
            return Ok((value, Outcome::Hit));
        }
        let full = self.make_key(key)?;
        let expiry = self.expiry(timeout.into());
        self.compute_and_add(key, &full, expiry, None, compute)
            .await
    }

    /// The miss path of the `get_or_set` family: one computation per key in this process, its
    /// value stored with `add` (so a value another writer stored meanwhile wins) for `expiry`
    /// (`None`: do not keep), fresh for `fresh_for` of it when it has a stale window. Says
    /// whether this caller computed ([`Outcome::Computed`]) or waited for another's value
    /// ([`Outcome::Waited`]).
    async fn compute_and_add<T, E, F, Fut>(
        &self,
        key: &str,
        full: &str,
        expiry: Option<Expiry>,
        fresh_for: Option<Duration>,
        compute: F,
    ) -> Result<(T, Outcome), E>
    where
        T: Serialize + DeserializeOwned + Send,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (bytes, ran_here) = self
            .inner
            .flights
            .run(full, || async {
                // Tags are pinned before the value is computed from the data they name.
                let writer = self.handle_for_compute().await?;
                let value: T = compute().await?;
                let tags = match &writer {
                    Some(writer) => writer.stamp_or_skip(key).await?,
                    None => None,
                };
                let encoded = self
                    .encode_entry(key, &value, fresh_for, tags.as_deref().unwrap_or_default())
                    .map_err(E::from)?;
                let (Some(expiry), Some(_)) = (expiry, tags) else {
                    // Not kept, or not to be stored: the value is returned all the same.
                    return Ok::<Bytes, E>(encoded);
                };
                // Someone else may have stored a value between our miss and our add: theirs
                // wins, as long as it reads as the requested type; one that does not (corrupt,
                // foreign, another type or an old format) is what made us miss, so ours
                // replaces it.
                let added = self
                    .add_or_repair(key, full, encoded.clone(), expiry, |w| {
                        self.decode_typed::<T>(key, w).is_some()
                    })
                    .await
                    .map_err(E::from)?;
                Ok(match added {
                    Added::Exists(winner) => winner,
                    Added::Stored | Added::Degraded => encoded,
                })
            })
            .await?;
        let value = self.decode_typed(key, &bytes).ok_or_else(|| {
            E::from(Error::backend_msg(
                "cache",
                format!("get_or_set for `{key}` produced a value that does not read back as the requested type"),
            ))
        })?;
        let outcome = if ran_here {
            Outcome::Computed
        } else {
            Outcome::Waited
        };
        Ok((value, outcome))
    }

    /// Removes `key`; returns whether it was there.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let full = self.make_key(key)?;
        self.backend_delete(&full).await
    }

    /// Removes several keys; returns how many were there.
    pub async fn delete_many<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64> {
        let full = keys
            .into_iter()
            .map(|k| self.make_key(k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        if full.is_empty() {
            return Ok(0);
        }
        self.guard("delete_many", self.inner.backend.delete_many(&full), || 0)
            .await
    }

    /// Gives `key` a new timeout; returns `false` when the key is missing. A zero timeout
    /// expires the key now.
    pub async fn touch(&self, key: &str, timeout: impl Into<Timeout>) -> Result<bool> {
        let full = self.make_key(key)?;
        match self.expiry(timeout.into()) {
            None => self.backend_delete(&full).await,
            Some(expiry) => {
                self.guard("touch", self.inner.backend.touch(&full, expiry), || false)
                    .await
            }
        }
    }

    /// Atomically adds `delta` to the integer under `key` and returns the new value, keeping
    /// the key's expiry. A missing key or a non-integer value is an error.
    pub async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let full = self.make_key(key)?;
        self.guard_strict("incr", self.inner.backend.incr(&full, delta))
            .await
            .map_err(|e| e.with_user_key(key))
    }

    /// Atomically subtracts `delta`; see [`incr`](Cache::incr).
    pub async fn decr(&self, key: &str, delta: i64) -> Result<i64> {
        let negated = delta.checked_neg().ok_or_else(|| Error::Overflow {
            key: key.to_owned(),
        })?;
        self.incr(key, negated).await
    }

    /// Moves `key` from this handle's version to version + `delta`, keeping its remaining
    /// timeout; returns the new version. A missing key is an error.
    pub async fn incr_version(&self, key: &str, delta: i64) -> Result<i64> {
        let new_version = self
            .version
            .checked_add(delta)
            .ok_or_else(|| Error::Overflow {
                key: key.to_owned(),
            })?;
        let old = self.make_key(key)?;
        let new = self.make_key_version(key, new_version)?;
        let missing = || Error::KeyNotFound {
            key: key.to_owned(),
        };
        let ttl = self
            .guard_strict("ttl", self.inner.backend.ttl(&old))
            .await?;
        let raw = self
            .guard_strict("get", self.inner.backend.get(&old))
            .await?
            .ok_or_else(missing)?;
        let expiry = match ttl {
            Ttl::Missing => return Err(missing()),
            Ttl::Forever => Expiry::Never,
            Ttl::Remaining(d) if d.is_zero() => return Err(missing()),
            Ttl::Remaining(d) => Expiry::After(d),
        };
        self.guard_strict("set", self.inner.backend.set(&new, raw, expiry))
            .await?;
        self.guard_strict("delete", self.inner.backend.delete(&old))
            .await?;
        Ok(new_version)
    }

    /// Moves `key` to version − `delta`; see [`incr_version`](Cache::incr_version).
    pub async fn decr_version(&self, key: &str, delta: i64) -> Result<i64> {
        let negated = delta.checked_neg().ok_or_else(|| Error::Overflow {
            key: key.to_owned(),
        })?;
        self.incr_version(key, negated).await
    }

    /// Removes every key of this cache: all keys under its prefix (every version) when it uses
    /// the default key function, otherwise everything in the backend.
    pub async fn clear(&self) -> Result<()> {
        let prefix = self.clear_prefix();
        self.guard("clear", self.inner.backend.clear(prefix.as_deref()), || ())
            .await
    }

    fn clear_prefix(&self) -> Option<String> {
        let o = &self.inner.options;
        o.key_function
            .is_default()
            .then(|| format!("{}:", o.key_prefix))
    }

    /// The caller-side keys of this handle's version that match the glob `pattern`, streamed.
    /// Needs the default key function.
    ///
    /// The listing is a backend call like the others: while the circuit breaker says the
    /// backend is down it fails at once, its outcome counts towards the breaker, and with an
    /// `operation_timeout` each key (the first one too) must arrive within that time of the
    /// one before, or the stream ends with [`Error::Timeout`]. The bound is per key, not for
    /// the whole listing, so a long listing from a live server is never cut off while a hung
    /// server fails within the timeout. A failed listing is an error even in degrade mode: an
    /// empty list would be a wrong answer, not a miss.
    #[doc(alias = "iter_keys")]
    pub fn keys(&self, pattern: &str) -> KeyStream {
        let o = &self.inner.options;
        if !o.key_function.is_default() {
            return futures::stream::once(async {
                Err(Error::Unsupported {
                    backend: "cache",
                    operation: "keys",
                    why: "a custom key function hides which stored keys belong to the cache; use `Cache::scan` for the stored keys",
                })
            })
            .boxed();
        }
        let head = KeyFunction::default_format(&o.key_prefix, self.version, "");
        let full_pattern = format!("{}{}", glob_escape(&head), pattern);
        self.guard_stream("keys", self.inner.backend.scan(&full_pattern))
            .map(move |r| r.map(|k| k.strip_prefix(head.as_str()).unwrap_or(&k).to_owned()))
            .boxed()
    }

    /// The stored keys (prefix and version included) that match the glob `pattern`, streamed:
    /// the backend's [`scan`](Backend::scan) with the timeout and circuit breaker of
    /// [`keys`](Self::keys). For tools that work on stored keys (listing them raw, clearing a
    /// prefix); calling the backend's `scan` directly would wait on a hung server for ever.
    pub fn scan(&self, pattern: &str) -> KeyStream {
        self.guard_stream("scan", self.inner.backend.scan(pattern))
    }

    /// Releases the backend's connections.
    pub async fn close(&self) -> Result<()> {
        self.inner.backend.close().await
    }

    // ----- internals -----------------------------------------------------------------------

    /// The backend expiry for a timeout, or `None` for "do not keep".
    fn expiry(&self, timeout: Timeout) -> Option<Expiry> {
        match timeout.resolve(self.inner.options.default_timeout) {
            Timeout::Forever => Some(Expiry::Never),
            Timeout::After(d) if d.is_zero() => None,
            Timeout::After(d) => Some(Expiry::After(d)),
            Timeout::Default => Some(Expiry::After(DEFAULT_TIMEOUT)),
        }
    }

    fn encode<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        tags: &[(String, u64)],
    ) -> Result<Bytes> {
        let meta = entry::Meta {
            fresh_until: None,
            tags,
        };
        self.encode_meta(key, value, meta)
    }

    /// Encodes a serde value with header extras, within the size limit.
    fn encode_meta<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        meta: entry::Meta<'_>,
    ) -> Result<Bytes> {
        let encoded = entry::encode_value(value, &self.encoding(), meta).map_err(|source| {
            Error::Serialize {
                key: key.to_owned(),
                source,
            }
        })?;
        self.within_limit(key, encoded)
    }

    fn encode_bytes(&self, key: &str, value: &[u8], tags: &[(String, u64)]) -> Result<Bytes> {
        let meta = entry::Meta {
            fresh_until: None,
            tags,
        };
        let encoded = entry::encode_bytes_as(value, &self.encoding(), meta);
        self.within_limit(key, encoded)
    }

    /// How this cache writes values.
    fn encoding(&self) -> crate::codec::Encoding {
        let o = &self.inner.options;
        crate::codec::Encoding {
            serializer: o.serializer,
            compressor: o.compressor,
            zstd_level: o.zstd_level,
            compress_min_bytes: o.compress_min_bytes.filter(|_| self.compress),
        }
    }

    /// Refuses to write what no reader of this cache would read back.
    fn within_limit(&self, key: &str, encoded: Bytes) -> Result<Bytes> {
        let limit = self.inner.options.max_entry_size;
        match entry::decoded_size(&encoded) {
            Ok(Some(size)) if size > limit => Err(Error::ValueTooLarge {
                key: key.to_owned(),
                size,
                limit,
            }),
            _ => Ok(encoded),
        }
    }

    /// Decodes with this cache's size limit.
    fn decode(&self, raw: &Bytes) -> Result<Decoded, entry::CorruptEntry> {
        let o = &self.inner.options;
        entry::decode_for(raw, o.max_entry_size, o.serializer)
    }

    fn decode_typed<T: DeserializeOwned>(&self, key: &str, raw: &Bytes) -> Option<T> {
        let result = match self.decode(raw) {
            Ok(decoded) => crate::codec::deserialize(decoded),
            Err(e) => Err(e.to_string()),
        };
        result.map_err(|why| self.warn_unreadable(key, &why)).ok()
    }

    fn decode_bytes(&self, key: &str, raw: &Bytes) -> Option<Bytes> {
        match self.decode(raw) {
            Ok(Decoded::Bytes(b)) => Some(b),
            Ok(_) => {
                self.warn_unreadable(key, "it holds a typed value; read it with get");
                None
            }
            Err(e) => {
                self.warn_unreadable(key, &e.to_string());
                None
            }
        }
    }

    fn warn_unreadable(&self, key: &str, why: &str) {
        tracing::warn!(alias = %self.alias(), key, "cache entry is unreadable and treated as a miss: {why}");
    }

    /// The stored entry under `full`, unless a tag it carries was invalidated.
    ///
    /// An in-process backend answers at once ([`Backend::get_ready`]): no future, timer or
    /// breaker for a read that cannot hang.
    async fn backend_get(&self, full: &str) -> Result<Option<Bytes>> {
        let backend = &self.inner.backend;
        let ready = metrics_export::observe_ready(self, "get", || backend.get_ready(full));
        let raw = match ready {
            Some(answer) => answer,
            None => self.guard("get", backend.get(full), || None).await?,
        };
        match raw {
            Some(raw) if entry::has_tags(&raw) => Ok(self.tags_current(&raw).await?.then_some(raw)),
            other => Ok(other),
        }
    }

    /// [`backend_get`](Self::backend_get) for inspection: the backend's [`Backend::peek`], which
    /// is not a use of the entry.
    async fn backend_peek(&self, full: &str) -> Result<Option<Bytes>> {
        let raw = self
            .guard("peek", self.inner.backend.peek(full), || None)
            .await?;
        match raw {
            Some(raw) if entry::has_tags(&raw) => Ok(self.tags_current(&raw).await?.then_some(raw)),
            other => Ok(other),
        }
    }

    async fn backend_delete(&self, full: &str) -> Result<bool> {
        self.guard("delete", self.inner.backend.delete(full), || false)
            .await
    }
}
