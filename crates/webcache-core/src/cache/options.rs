//! The settings of one cache, independent of its backend, and what it does when its backend fails.

use std::time::Duration;

use crate::breaker::{DEFAULT_BREAKER_FAILURES, DEFAULT_BREAKER_MAX_DELAY};
use crate::entry::DEFAULT_MAX_ENTRY_SIZE;
use crate::key::{InvalidKeyPolicy, KeyFunction};
use crate::timeout::{Timeout, DEFAULT_TIMEOUT};

/// What a cache does when its backend fails (is down, times out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Return the error to the caller (the default for the low-level API).
    #[default]
    Raise,
    /// Keep the application answering: reads become misses, writes become no-ops, and the
    /// failure is logged at most once per [`DEGRADE_LOG_INTERVAL`]. The cache resumes by itself
    /// when the backend answers again. Mistakes in the request (a bad key, `incr` on a missing
    /// key) are still returned as errors.
    Degrade,
}

/// How often a degraded cache logs its backend's failures.
pub const DEGRADE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Values at or above this many bytes are compressed unless configured otherwise.
pub const DEFAULT_COMPRESS_MIN_BYTES: usize = 32 * 1024;

/// The settings of one cache, independent of its backend.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// The alias this cache is known by (`default`, `sessions`, ...), for logs and metrics.
    pub alias: String,
    /// Prepended to every key (`prefix:version:key`).
    pub key_prefix: String,
    /// The version used when a call does not give one (1).
    pub version: i64,
    /// The timeout used by calls that pass [`Timeout::Default`] (300 s).
    pub default_timeout: Timeout,
    /// Builds stored keys.
    pub key_function: KeyFunction,
    /// What to do with keys the backend cannot store.
    pub invalid_keys: InvalidKeyPolicy,
    /// Compress values of at least this many bytes (`None`: never).
    pub compress_min_bytes: Option<usize>,
    /// The serializer of typed values (JSON); see [`Serializer`](crate::codec::Serializer).
    pub serializer: crate::codec::Serializer,
    /// The compressor of values of at least `compress_min_bytes` bytes (LZ4).
    pub compressor: crate::codec::Compressor,
    /// The zstd level, with `compressor` zstd ([`DEFAULT_ZSTD_LEVEL`](crate::codec::DEFAULT_ZSTD_LEVEL)).
    pub zstd_level: i32,
    /// The largest value, in bytes once decoded (decompressed), that this cache writes or
    /// reads ([`DEFAULT_MAX_ENTRY_SIZE`]: 64 MiB). A stored entry over it is a miss plus a
    /// warning, refused from its header before anything is decompressed; writing a value over
    /// it is [`Error::ValueTooLarge`](crate::Error::ValueTooLarge).
    pub max_entry_size: usize,
    /// Raise or degrade on backend failure.
    pub on_error: OnError,
    /// Bound every backend call by this duration (`None`: the backend's own timeouts only).
    pub operation_timeout: Option<Duration>,
    /// Keep process-local copies of read entries this long (`None`: off); see
    /// [`NearCache`](crate::backends::NearCache) for what that trades.
    pub near_ttl: Option<Duration>,
    /// At most this many process-local copies.
    pub near_max_entries: u64,
    /// Connection failures in a row after which calls fail at once while the backend is down
    /// (the circuit breaker, see [`breaker`](crate::breaker); `0`: off). Backends that need no
    /// server (locmem, dummy) have none.
    pub breaker_failures: u32,
    /// The longest wait between trial calls while the breaker is open: the cache is back at
    /// most this long after the server returns.
    pub breaker_max_delay: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            alias: "default".to_owned(),
            key_prefix: String::new(),
            version: 1,
            default_timeout: Timeout::After(DEFAULT_TIMEOUT),
            key_function: KeyFunction::default(),
            invalid_keys: InvalidKeyPolicy::Reject,
            compress_min_bytes: Some(DEFAULT_COMPRESS_MIN_BYTES),
            serializer: crate::codec::Serializer::Json,
            compressor: crate::codec::Compressor::Lz4,
            zstd_level: crate::codec::DEFAULT_ZSTD_LEVEL,
            max_entry_size: DEFAULT_MAX_ENTRY_SIZE,
            on_error: OnError::Raise,
            operation_timeout: None,
            near_ttl: None,
            near_max_entries: crate::backends::DEFAULT_NEAR_MAX_ENTRIES,
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_max_delay: DEFAULT_BREAKER_MAX_DELAY,
        }
    }
}
