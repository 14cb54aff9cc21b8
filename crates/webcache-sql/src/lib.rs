//! The database backend of webcache: a cache table in SQLite or PostgreSQL, through one code
//! path on [sqlx](https://docs.rs/sqlx) (Django's `DatabaseCache`).
//!
//! ```text
//! sqlite:///var/lib/app/cache.db?table=webcache_cache     a file (created if missing)
//! sqlite://relative/cache.db                              relative to the working directory
//! sqlite::memory:                                         private, lives as long as the cache
//! postgres://user:password@host:5432/app?table=pages      (postgresql:// too)
//! ```
//!
//! Options (query parameters or TOML fields):
//!
//! | option | default | meaning |
//! | --- | --- | --- |
//! | `table` | `webcache_cache` | the cache table: ASCII letters, digits, `_` |
//! | `max_entries` | `0` (no bound) | at most this many rows after every write |
//! | `cull_frequency` | `3` | when full, delete 1/N of the rows, soonest expiry first (0 = all) |
//! | `cull_interval` | `60` | seconds between background deletions of expired rows (0 = off) |
//! | `pool_size` | 4 (SQLite), 10 (PostgreSQL) | connections; an in-memory database keeps one |
//! | `connect_timeout` | `5` | seconds to wait for a connection (and for SQLite's write lock) |
//! | `create_table` | `false` | create the table at startup when it is missing |
//!
//! # The table
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "webcache_cache" (
//!     cache_key TEXT NOT NULL PRIMARY KEY,     -- TEXT COLLATE "C" on PostgreSQL
//!     value BLOB NOT NULL,                     -- BYTEA on PostgreSQL
//!     expires INTEGER                          -- Unix time in milliseconds, NULL = never
//! );
//! CREATE INDEX IF NOT EXISTS "webcache_cache_expires_idx" ON "webcache_cache" (expires);
//! ```
//!
//! As with Django's `createcachetable`, the table is created by an explicit step, not
//! silently by the first request: run [`create_cache_table`] (the `webcache createcachetable`
//! command) once per database, or [`create_cache_table_sql`] to see the SQL and run it
//! yourself. A cache whose table is missing fails to start with an error that says so. Two
//! shortcuts: `create_table=true` creates it at startup, and `sqlite::memory:` always does (an
//! in-memory database starts empty).
//!
//! The backend's own operations ([`SqlBackend::delete_expired`], [`SqlBackend::create_table`])
//! are reachable from a cache with `cache.backend_as::<webcache_sql::SqlBackend>()`.
//!
//! An SQLite file is switched to write-ahead logging (WAL) when the cache opens it, so readers
//! never wait for a writer; processes on one machine can share the file.
#![forbid(unsafe_code)]
// Library code answers every failure with an error, never a panic; tests may unwrap.
#![warn(clippy::unwrap_used)]

mod backend;
mod config;
mod cull;
mod keys;
mod pool;
mod schema;
mod sql;

use config::OPTIONS;

use std::sync::Arc;

use webcache_core::backend::async_trait;
use webcache_core::backend::{Backend, BackendFactory, Scheme};
use webcache_core::config::{BackendSpec, ConfigError};

pub use backend::{SqlBackend, POSTGRES_MAX_KEY_LEN};
pub use config::{
    validate_table, Database, Dialect, SqlConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CULL_FREQUENCY,
    DEFAULT_CULL_INTERVAL, DEFAULT_TABLE, MAX_TABLE_NAME_LEN,
};

/// Builds the backend a `sqlite:`, `postgres:` or `postgresql:` cache URL describes:
/// connects, checks that the cache table exists and starts the background cull.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqlFactory;

#[async_trait]
impl BackendFactory for SqlFactory {
    fn schemes(&self) -> &[Scheme] {
        &[
            Scheme {
                name: "sqlite",
                usage: "sqlite:///path/to/cache.db?table=webcache_cache",
            },
            Scheme {
                name: "postgres",
                usage: "postgres://user:pass@host/db?table=webcache_cache",
            },
            Scheme {
                name: "postgresql",
                usage: "postgresql://user:pass@host/db?table=webcache_cache",
            },
        ]
    }

    fn options(&self) -> &[&str] {
        OPTIONS
    }

    async fn build(&self, spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
        let config = SqlConfig::from_spec(spec)?;
        let cache = SqlBackend::connect(config)
            .await
            .map_err(|source| connect_error(spec, source))?;
        Ok(Arc::new(cache))
    }
}

/// Creates the cache table (and its expiry index) that a cache URL names, if missing: the
/// `createcachetable` of Django. Idempotent, and safe when several processes run it at once.
/// Returns the statements it ran, which [`create_cache_table_sql`] prints without running.
pub async fn create_cache_table(spec: &mut BackendSpec) -> Result<Vec<String>, ConfigError> {
    let mut config = SqlConfig::from_spec(spec)?;
    config.create_table = true;
    config.cull_interval = None;
    let statements = sql::create_table(config.dialect(), &config.table);
    let cache = SqlBackend::connect(config)
        .await
        .map_err(|source| connect_error(spec, source))?;
    let closed = webcache_core::backend::Backend::close(&cache).await;
    closed.map_err(|source| connect_error(spec, source))?;
    Ok(statements)
}

/// The SQL [`create_cache_table`] would run for a cache URL, without connecting (a dry run).
///
/// ```
/// use webcache_core::config::CacheConfig;
/// let mut spec = CacheConfig::from_url("default", "postgres://db/app?table=pages").unwrap().backend;
/// let sql = webcache_sql::create_cache_table_sql(&mut spec).unwrap();
/// assert!(sql[0].starts_with("CREATE TABLE IF NOT EXISTS \"pages\""));
/// assert!(sql[0].contains("BYTEA"));
/// ```
pub fn create_cache_table_sql(spec: &mut BackendSpec) -> Result<Vec<String>, ConfigError> {
    let config = SqlConfig::from_spec(spec)?;
    Ok(sql::create_table(config.dialect(), &config.table))
}

fn connect_error(spec: &BackendSpec, source: webcache_core::Error) -> ConfigError {
    ConfigError::Connect {
        alias: spec.alias.clone(),
        url: spec.redacted_url(),
        source,
    }
}
