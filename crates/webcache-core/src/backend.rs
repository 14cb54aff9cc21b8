//! For backend authors: the backend trait (bytes in, bytes out, with expiry) and what a backend
//! crate needs besides it. Applications need none of this; they use [`Cache`](crate::Cache).
//!
//! A backend stores opaque byte values under final string keys (prefix and version are already
//! applied by [`Cache`](crate::Cache)). Everything typed, every default and every timeout rule
//! lives above this trait, so a new backend is one small module. Most methods have a default
//! built on the required ones; a backend overrides them where its server has a native (faster or
//! atomic) command.
//!
//! Here, each in one place:
//! - [`Backend`], with [`KeyRules`], [`BackendStats`], [`KeyStream`] and [`AsAny`];
//! - [`BackendFactory`] and [`Scheme`]: how a backend is built from a cache URL (it receives a
//!   [`BackendSpec`](crate::config::BackendSpec)) and registered with the `webcache` crate;
//! - the stored [`entry`] format (integers as ASCII digits, tags, fresh-until);
//! - helpers backends share so that a rule has one home: [`unix_ms`] (expiry deadlines),
//!   [`glob_match`] (the pattern rules of `scan`), [`Ring`] (consistent hashing over servers),
//!   [`NodeBreakers`] (a circuit breaker per server, for a backend over several),
//!   [`FirstFailure`] (work over several servers that goes on past a failing one);
//! - for the sibling crates of this repository (public only for them; their shape may change):
//!   [`SingleFlight`] and its [`Joined`], [`Leader`], [`Follower`], [`Followed`], and
//!   [`LogThrottle`].

use std::fmt;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::timeout::{Expiry, Ttl};

pub use crate::breaker::{node_failure, FirstFailure, NodeBreakers, NodeFailure};
pub use crate::factory::{BackendFactory, Scheme};
pub use crate::key::glob_match;
pub use crate::ring::Ring;
pub use crate::single_flight::{Followed, Follower, Joined, Leader, SingleFlight};
pub use crate::throttle::LogThrottle;
/// Re-exported so backends implement [`Backend`] with the same macro version.
pub use async_trait::async_trait;

/// The stored entry format: how [`Cache`](crate::Cache) frames values (a header with the
/// codec, compression, tags and fresh-until time; integers as bare ASCII digits, so that
/// servers can `INCR` them). A backend never needs to look inside a value except to store an
/// integer in the server's native form ([`parse_integer`](entry::parse_integer),
/// [`encode_integer`](entry::encode_integer)).
pub mod entry {
    pub use crate::entry::*;
}

pub(crate) mod invalidations;
pub use invalidations::{offer_invalidations, InvalidationFeed, Invalidations};

/// A stream of stored keys, as returned by [`Backend::scan`].
pub type KeyStream = BoxStream<'static, Result<String>>;

/// A cache backend: the storage under a [`Cache`](crate::Cache).
///
/// Keys are the *final* keys (`prefix:version:key`). Values are encoded entries (see
/// [`entry`]); a backend never looks inside them, except that an entry holding an
/// integer is stored as its ASCII decimal digits so that [`incr`](Backend::incr) can use the
/// server's native command.
///
/// Every backend passes the conformance suite in `webcache-testkit`.
#[async_trait]
pub trait Backend: AsAny + Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and errors: `locmem`, `redis`, `memcached`, ...
    fn name(&self) -> &'static str;

    /// Which keys this backend can store as they are. [`Cache`](crate::Cache) checks keys
    /// against these rules and rejects (or hashes, if configured) keys that break them.
    fn key_rules(&self) -> KeyRules {
        KeyRules::ANY
    }

    /// The backend this one wraps, for a wrapper that adds behaviour in front of another
    /// backend (the near tier): [`Cache::backend_as`](crate::Cache::backend_as) looks through
    /// it, so a backend's extras stay reachable whatever wraps it. `None` (the default) for a
    /// backend that stores by itself.
    fn inner(&self) -> Option<&dyn Backend> {
        None
    }

    /// The per-node circuit breakers of a backend that spreads its keys over several servers
    /// and runs each call about one server through them ([`NodeBreakers`]); `None` (the
    /// default) for a backend that is one server. The cache's own breaker then leaves to them
    /// the failures it cannot place (its own operation timeout) while some node is up.
    fn node_breakers(&self) -> Option<&NodeBreakers> {
        None
    }

    /// The value under `key`, or `None` when missing or expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// The answer [`get`](Backend::get) would give, when this backend has it in this process
    /// and can give it without waiting: `Some(None)` for a miss, `Some(Some(value))` for a
    /// hit. `None` (the default) means the answer needs I/O, and the cache calls `get`.
    ///
    /// An in-process read then costs no future, no timer and no allocation: the cache skips
    /// the operation timeout and the circuit breaker, which guard calls that can hang or fail
    /// (it still times the read and runs it in the `cache` span). A backend that answers here
    /// must answer as `get` would (expiry, recency), and only what it can answer at once: the
    /// near tier gives its trusted local copies here and leaves its misses to `get`.
    fn get_ready(&self, key: &str) -> Option<Option<Bytes>> {
        let _ = key;
        None
    }

    /// Stores `value` under `key`, replacing any older value.
    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()>;

    /// Stores `value` only if `key` is absent (or expired). Returns whether it stored it.
    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool>;

    /// Replaces the value under `key` with `value` and `expiry` only if `key` holds a live
    /// value (an expired one counts as absent); returns whether it stored it. Atomic, like
    /// [`add`](Backend::add): a `delete` that lands at the same time is never undone, so a key
    /// is never brought back once it is gone (Redis `SET XX`, memcached `replace`, SQL
    /// `UPDATE ... WHERE` live). There is no default: a read followed by a write is not atomic.
    async fn set_if_present(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool>;

    /// Removes `key`. Returns whether something was removed.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Gives `key` a new expiry. Returns `false` when the key is missing.
    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool>;

    /// Atomically adds `delta` to the integer under `key`, keeping its expiry, and returns the
    /// new value. Fails with [`Error::KeyNotFound`](crate::Error::KeyNotFound) when the key is
    /// missing and [`Error::NotAnInteger`](crate::Error::NotAnInteger) when the value is not the
    /// ASCII decimal form of an `i64`.
    async fn incr(&self, key: &str, delta: i64) -> Result<i64>;

    /// The remaining lifetime of `key`.
    async fn ttl(&self, key: &str) -> Result<Ttl>;

    /// Removes every key that starts with `prefix`, or every key of this backend when `prefix`
    /// is `None`. Removing only the cache's own prefix lets several caches share one server.
    async fn clear(&self, prefix: Option<&str>) -> Result<()>;

    /// The stored keys that match the glob `pattern` (`*`, `?`, `[abc]`, `\` escapes, as in
    /// Redis). The order is unspecified. Backends whose protocol cannot list keys return
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    fn scan(&self, pattern: &str) -> KeyStream;

    /// Entry count, size and backend-specific figures, where the backend can tell.
    async fn stats(&self) -> Result<BackendStats>;

    /// Several values at once; the result has one slot per key, in order.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }

    /// Several values at once, all with the same expiry.
    async fn set_many(&self, entries: Vec<(String, Bytes)>, expiry: Expiry) -> Result<()> {
        for (key, value) in entries {
            self.set(&key, value, expiry).await?;
        }
        Ok(())
    }

    /// Removes several keys; returns how many were removed.
    async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        let mut removed = 0;
        for key in keys {
            removed += u64::from(self.delete(key).await?);
        }
        Ok(removed)
    }

    /// The value under `key`, read for inspection (`has_key`, `ttl`, which must see an entry's
    /// header to tell whether its tags were invalidated): like [`get`](Backend::get), but a
    /// backend that keeps a recency order does not count it as a use (Django's `has_key` is
    /// not one). The default is `get`.
    async fn peek(&self, key: &str) -> Result<Option<Bytes>> {
        self.get(key).await
    }

    /// Whether `key` is present and not expired.
    async fn has_key(&self, key: &str) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    /// Releases connections and background tasks. The default does nothing.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Reaching a backend's own extras (a Redis lock, `delete_pattern`) from the `dyn Backend` of a
/// [`Cache`](crate::Cache): implemented for every type, so backends need not write it.
///
/// ```
/// use webcache::backends::{DummyBackend, LocMemBackend};
/// use webcache::Cache;
/// let cache = Cache::locmem();
/// assert!(cache.backend_as::<LocMemBackend>().is_some());
/// assert!(cache.backend_as::<DummyBackend>().is_none());
/// ```
pub trait AsAny {
    /// `self` as [`Any`](std::any::Any).
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Which keys a backend can store unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRules {
    /// The longest final key, in bytes.
    pub max_len: Option<usize>,
    /// Whether spaces and control characters are refused.
    pub no_whitespace_or_control: bool,
    /// Whether the NUL character (`\0`) is refused (PostgreSQL text cannot hold it). Implied
    /// by `no_whitespace_or_control`.
    pub no_nul: bool,
}

impl KeyRules {
    /// Any non-empty string is a valid key (locmem, Redis, databases, files).
    pub const ANY: KeyRules = KeyRules {
        max_len: None,
        no_whitespace_or_control: false,
        no_nul: false,
    };
    /// Memcached's text protocol: at most 250 bytes, no spaces or control characters.
    pub const MEMCACHED: KeyRules = KeyRules {
        max_len: Some(250),
        no_whitespace_or_control: true,
        no_nul: true,
    };

    /// Why `key` breaks these rules, or `None` if it is fine.
    pub fn violation(&self, key: &str) -> Option<String> {
        if let Some(max) = self.max_len {
            if key.len() > max {
                return Some(format!(
                    "it is {} bytes long after the prefix and version are applied; this backend accepts at most {max}",
                    key.len()
                ));
            }
        }
        if self.no_whitespace_or_control {
            if let Some(c) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
                return Some(format!(
                    "it contains {c:?}; this backend refuses spaces and control characters"
                ));
            }
        }
        if self.no_nul && key.contains('\0') {
            return Some(
                "it contains a NUL character (\\0), which this backend cannot store".to_owned(),
            );
        }
        None
    }
}

/// What a backend can tell about itself for `webcache stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    /// Number of entries (possibly approximate), where known.
    pub entries: Option<u64>,
    /// Bytes used by entries (keys and values), where known.
    pub bytes: Option<u64>,
    /// Further figures in the backend's own words (`used_memory`, `curr_items`, ...).
    pub extra: Vec<(String, String)>,
}

/// Expiry deadlines as Unix milliseconds, for backends that store an absolute deadline (the SQL
/// `expires` column, the file format's header): one rule for rounding, saturation and
/// liveness, so that every such backend expires an entry at the same moment.
pub mod unix_ms {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use crate::timeout::Expiry;

    /// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
    pub fn now() -> u64 {
        of(SystemTime::now())
    }

    /// `time` in milliseconds since the Unix epoch (0 before it, saturating after `u64`).
    pub fn of(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The time `ms` milliseconds after the Unix epoch (a far-future time the platform can
    /// represent if that one is beyond its clock): the inverse of [`of`] for stored timestamps.
    pub fn time(ms: u64) -> SystemTime {
        let mut after = Duration::from_millis(ms);
        loop {
            match UNIX_EPOCH.checked_add(after) {
                Some(time) => return time,
                None => after /= 2,
            }
        }
    }

    /// The deadline of an entry written at `now` with `expiry` (`None`: never). Rounded up to
    /// the next millisecond, so that a short but non-zero expiry is never already past; a
    /// deadline beyond `u64` milliseconds is the largest one.
    pub fn deadline(expiry: Expiry, now: u64) -> Option<u64> {
        expiry.duration().map(|d| now.saturating_add(ceil(d)))
    }

    /// `d` in whole milliseconds, rounded up (so a short but non-zero lifetime is never 0) and
    /// saturating at `u64::MAX`: the one rounding rule for lifetimes sent or stored in
    /// milliseconds (Redis `PX`, stored deadlines).
    pub fn ceil(d: Duration) -> u64 {
        u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    /// Now, in whole seconds since the Unix epoch (0 if the clock is before it), for protocols
    /// that count in seconds (memcached's absolute expiry times).
    pub fn now_secs() -> i64 {
        i64::try_from(now() / 1000).unwrap_or(i64::MAX)
    }

    /// Whether an entry with `deadline` (`None`: never) is still live at `now`: the deadline
    /// itself is already past.
    pub fn is_live(deadline: Option<u64>, now: u64) -> bool {
        deadline.is_none_or(|at| at > now)
    }

    /// The lifetime left at `now` before `deadline` (zero once it has passed).
    pub fn remaining(deadline: u64, now: u64) -> Duration {
        Duration::from_millis(deadline.saturating_sub(now))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn deadlines_round_up_and_saturate() {
            let after = |d| Expiry::After(d);
            assert_eq!(deadline(Expiry::Never, 5), None);
            assert_eq!(deadline(after(Duration::from_millis(300)), 5), Some(305));
            assert_eq!(deadline(after(Duration::from_nanos(1)), 5), Some(6));
            assert_eq!(deadline(after(Duration::from_micros(1500)), 5), Some(7));
            assert_eq!(deadline(after(Duration::MAX), 5), Some(u64::MAX));
            assert!(is_live(None, u64::MAX));
            assert!(is_live(Some(6), 5));
            assert!(!is_live(Some(5), 5));
            assert_eq!(remaining(305, 5), Duration::from_millis(300));
            assert_eq!(ceil(Duration::from_micros(1500)), 2);
            assert_eq!(ceil(Duration::ZERO), 0);
            assert_eq!(ceil(Duration::MAX), u64::MAX);
            assert!(now_secs() > 1_700_000_000);
            assert_eq!(remaining(5, 305), Duration::ZERO);
            assert!(now() > 1_700_000_000_000);
            let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
            assert_eq!(of(t), 1_700_000_000_123);
            assert_eq!(time(1_700_000_000_123), t);
            assert_eq!(of(UNIX_EPOCH - Duration::from_secs(1)), 0);
            assert!(time(u64::MAX) > t);
        }
    }
}
