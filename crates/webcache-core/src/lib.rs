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
mod entry;
mod error;
mod factory;
mod key;
mod ring;
mod single_flight;
mod throttle;
mod timeout;

// What an application needs; what a backend author needs is in `backend`.
pub use cache::{
    Cache, CacheOptions, CacheOptionsBuilder, CacheStats, HotKey, Metrics, OnError, OperationReads,
    Outcome, DEFAULT_COMPRESS_MIN_BYTES, DEGRADE_LOG_INTERVAL,
};
pub use entry::DEFAULT_MAX_ENTRY_SIZE;
pub use error::{BoxError, Error, Result};
pub use key::{glob_escape, InvalidKeyPolicy, KeyFunction};
pub use timeout::{Expiry, Lifetime, Timeout, Ttl, DEFAULT_TIMEOUT};

/// Re-exported: values cross the backend trait as [`Bytes`](bytes::Bytes).
pub use bytes;
