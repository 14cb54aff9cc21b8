#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// Library code answers every failure with an error, never a panic; tests may unwrap.
#![warn(clippy::unwrap_used)]

pub mod backend;
pub mod backends;
pub mod breaker;
mod cache;
pub mod codec;
pub mod config;
pub mod entry;
mod error;
mod key;
mod single_flight;
mod throttle;
mod timeout;

pub use backend::{AsAny, Backend, BackendStats, KeyRules, KeyStream};
pub use cache::{
    Cache, CacheOptions, CacheStats, Metrics, OnError, DEFAULT_COMPRESS_MIN_BYTES,
    DEGRADE_LOG_INTERVAL,
};
pub use config::{BackendSpec, CacheConfig, CachesConfig, ConfigError};
pub use entry::DEFAULT_MAX_ENTRY_SIZE;
pub use error::{BoxError, Error, Result};
pub use key::{glob_escape, glob_match, InvalidKeyPolicy, KeyFunction};
pub use single_flight::{Followed, Follower, Joined, Leader, SingleFlight};
pub use throttle::LogThrottle;
pub use timeout::{Expiry, Lifetime, Timeout, Ttl, DEFAULT_TIMEOUT};

/// Re-exported so backends implement [`Backend`] with the same macro version.
pub use async_trait::async_trait;
/// Re-exported: values cross the backend trait as [`Bytes`](bytes::Bytes).
pub use bytes;
