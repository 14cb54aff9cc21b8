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
///
/// Built with [`CacheOptions::builder`] (or [`Default`]), as moka builds its caches: options go
/// in through the builder's setters, which take what the cache API takes (a timeout as `60`, a
/// [`Duration`] or [`Timeout::Forever`]; names as `&str` or `String`), and are read back from
/// the fields. A running [`Cache`](crate::Cache) hands them out by shared reference only
/// ([`Cache::options`](crate::Cache::options)), so they cannot change under it. The struct is
/// `#[non_exhaustive]`: an option added later breaks no caller, which a struct literal with
/// `..Default::default()` would not promise.
///
/// ```
/// use std::time::Duration;
/// use webcache::{CacheOptions, OnError, Timeout};
///
/// let options = CacheOptions::builder()
///     .alias("pages")
///     .key_prefix("shop")
///     .version(2)
///     .default_timeout(60)
///     .on_error(OnError::Degrade)
///     .operation_timeout(Duration::from_millis(250))
///     .build();
/// assert_eq!(options.default_timeout, Timeout::from(60));
/// assert_eq!(options.operation_timeout, Some(Duration::from_millis(250)));
///
/// // A variant of options already built (say, a cache's own) changes only what it names.
/// let forever = options.to_builder().default_timeout(Timeout::Forever).build();
/// assert_eq!((forever.alias.as_str(), forever.default_timeout), ("pages", Timeout::Forever));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
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

impl CacheOptions {
    /// A builder starting from the defaults.
    pub fn builder() -> CacheOptionsBuilder {
        CacheOptionsBuilder::default()
    }

    /// A builder starting from these options, to derive a variant of them.
    pub fn to_builder(&self) -> CacheOptionsBuilder {
        CacheOptionsBuilder {
            options: self.clone(),
        }
    }
}

/// Builds [`CacheOptions`]; each setter sets the field of the same name (see its docs there)
/// and leaves the others as they were.
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct CacheOptionsBuilder {
    options: CacheOptions,
}

impl CacheOptionsBuilder {
    /// The options built.
    pub fn build(self) -> CacheOptions {
        self.options
    }

    /// [`CacheOptions::alias`].
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.options.alias = alias.into();
        self
    }

    /// [`CacheOptions::key_prefix`].
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.key_prefix = prefix.into();
        self
    }

    /// [`CacheOptions::version`].
    pub fn version(mut self, version: i64) -> Self {
        self.options.version = version;
        self
    }

    /// [`CacheOptions::default_timeout`]: seconds, a [`Duration`] or a [`Timeout`], as `set`
    /// takes them.
    pub fn default_timeout(mut self, timeout: impl Into<Timeout>) -> Self {
        self.options.default_timeout = timeout.into();
        self
    }

    /// [`CacheOptions::key_function`].
    pub fn key_function(mut self, key_function: KeyFunction) -> Self {
        self.options.key_function = key_function;
        self
    }

    /// [`CacheOptions::invalid_keys`].
    pub fn invalid_keys(mut self, policy: InvalidKeyPolicy) -> Self {
        self.options.invalid_keys = policy;
        self
    }

    /// [`CacheOptions::compress_min_bytes`]: a number of bytes, or `None` to never compress.
    pub fn compress_min_bytes(mut self, bytes: impl Into<Option<usize>>) -> Self {
        self.options.compress_min_bytes = bytes.into();
        self
    }

    /// [`CacheOptions::serializer`].
    pub fn serializer(mut self, serializer: crate::codec::Serializer) -> Self {
        self.options.serializer = serializer;
        self
    }

    /// [`CacheOptions::compressor`].
    pub fn compressor(mut self, compressor: crate::codec::Compressor) -> Self {
        self.options.compressor = compressor;
        self
    }

    /// [`CacheOptions::zstd_level`].
    pub fn zstd_level(mut self, level: i32) -> Self {
        self.options.zstd_level = level;
        self
    }

    /// [`CacheOptions::max_entry_size`].
    pub fn max_entry_size(mut self, bytes: usize) -> Self {
        self.options.max_entry_size = bytes;
        self
    }

    /// [`CacheOptions::on_error`].
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.options.on_error = on_error;
        self
    }

    /// [`CacheOptions::operation_timeout`]: a [`Duration`], or `None` for the backend's own
    /// timeouts only.
    pub fn operation_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.options.operation_timeout = timeout.into();
        self
    }

    /// [`CacheOptions::near_ttl`]: a [`Duration`], or `None` for no near tier.
    pub fn near_ttl(mut self, ttl: impl Into<Option<Duration>>) -> Self {
        self.options.near_ttl = ttl.into();
        self
    }

    /// [`CacheOptions::near_max_entries`].
    pub fn near_max_entries(mut self, entries: u64) -> Self {
        self.options.near_max_entries = entries;
        self
    }

    /// [`CacheOptions::breaker_failures`] (`0`: no circuit breaker).
    pub fn breaker_failures(mut self, failures: u32) -> Self {
        self.options.breaker_failures = failures;
        self
    }

    /// [`CacheOptions::breaker_max_delay`].
    pub fn breaker_max_delay(mut self, delay: Duration) -> Self {
        self.options.breaker_max_delay = delay;
        self
    }
}
