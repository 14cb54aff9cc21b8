//! # webcache
//!
//! Django's cache framework for Rust web services: one typed, async cache API
//! ([`Cache`]), backends from an in-process store to Redis Cluster, a registry of named cache
//! aliases configured from a TOML file or cache URLs ([`Caches`]), HTTP page caching as tower
//! layers, and cache-backed sessions.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use webcache::{Caches, Timeout};
//!
//! let caches = Caches::from_urls([("default", "locmem://"), ("sessions", "locmem://sessions")]).await?;
//! let cache = caches.default_cache(); // the `default` alias (or else the first one)
//! cache.set("greeting", "hello", 60).await?;
//! assert_eq!(cache.get::<String>("greeting").await?.as_deref(), Some("hello"));
//! # Ok(()) }
//! ```
//!
//! Building [`Caches`] dials no server: each backend connects on first use. A runnable axum
//! app (a cached computation, a cached page, a session) is `examples/axum_app.rs`:
//! `cargo run -p webcache --features full --example axum_app`.
//!
//! Backends behind cargo features: `redis`, `memcached`, `sql` (SQLite, PostgreSQL), `file`;
//! `locmem` and `dummy` are always there. A backend from another crate is configured by URL once
//! its [`BackendFactory`](backend::BackendFactory) is registered with [`Caches::register`];
//! [`backend`] holds what a backend author needs. Feature `http` adds the page-cache layers
//! (`proxy` the caching reverse proxy, with hyper's HTTP client), `sessions` the
//! tower-sessions stores (`webcache::sessions`, tower-sessions re-exported in it), `axum` the
//! conversion of [`Error`] into an axum response (503 when the backend is down or slow, 500
//! otherwise, with a short text that never carries the key or value); `macros` (on by default) the [`cached`] attribute that
//! memoizes an async function; `minijinja` the `{% call cache(...) %}` template function of
//! [`fragment`]; `sqlx` the query cache; `full` enables everything.
#![forbid(unsafe_code)]
// Library code answers every failure with an error, never a panic; tests may unwrap.
#![warn(clippy::unwrap_used)]

#[cfg(feature = "macros")]
#[doc(hidden)]
#[path = "memo.rs"]
pub mod __private;
pub mod fragment;
mod registry;

pub use registry::{build_backend, Caches};
pub use webcache_core::*;
#[cfg(feature = "macros")]
pub use webcache_macros::cached;

/// The file-system backend.
#[cfg(feature = "file")]
pub use webcache_file as file;
/// HTTP page caching: [`http::CachePageLayer`], header helpers, conditional GET, the proxy.
#[cfg(feature = "http")]
pub use webcache_http as http;
/// The memcached backend.
#[cfg(feature = "memcached")]
pub use webcache_memcached as memcached;
/// The Redis backend, with its extras (locks, `delete_pattern`).
#[cfg(feature = "redis")]
pub use webcache_redis as redis;
/// Cache-backed sessions for tower-sessions.
#[cfg(feature = "sessions")]
pub use webcache_sessions as sessions;
/// The SQLite/PostgreSQL backend and `create_cache_table`.
#[cfg(feature = "sql")]
pub use webcache_sql as sql;
#[cfg(feature = "sqlx")]
pub use webcache_sqlx as sqlx;
