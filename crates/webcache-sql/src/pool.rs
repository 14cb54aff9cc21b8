//! The connection pool of either database, and how it is opened.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::AssertSqlSafe;
use webcache_core::{Error, Result};

use crate::config::{Database, SqlConfig};

/// A connection pool of either database: the one place that names both drivers.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the pool of whichever database this is. The body is the same
/// source for both databases; only the driver types differ.
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use with_pool;

/// A SQL string that may be given to sqlx: table names are validated to letters, digits and
/// underscores before they reach any statement, and every value is a bound parameter.
pub(crate) fn q(text: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(text.clone())
}

/// Opens the connection pool a configuration describes (and checks that it can connect).
pub(crate) async fn open_pool(config: &SqlConfig) -> Result<Pool> {
    let name = config.dialect().name();
    let timeout = config.connect_timeout;
    let failed = |e: sqlx::Error| match e {
        sqlx::Error::PoolTimedOut => Error::Timeout {
            backend: name,
            after: timeout,
        },
        e => Error::backend(
            name,
            format!("cannot open the database at {}", config.display_url),
            e,
        ),
    };
    match &config.database {
        Database::SqliteFile(path) => {
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .busy_timeout(timeout)
                // Safe with WAL (a crash can lose the last commits, never corrupt the file):
                // the right trade for a cache.
                .synchronous(SqliteSynchronous::Normal);
            let pool = SqlitePoolOptions::new()
                .max_connections(config.pool_size)
                .acquire_timeout(timeout)
                .connect_with(options)
                .await
                .map_err(failed)?;
            use_wal(&pool, &config.display_url).await;
            Ok(Pool::Sqlite(pool))
        }
        Database::SqliteMemory => {
            // `sqlite::memory:` gets a database of its own, named and shared by the pool's
            // connections; the pool keeps its one connection for good, so the data lives as
            // long as the cache.
            let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(failed)?;
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(timeout)
                .connect_with(options)
                .await
                .map_err(failed)?;
            Ok(Pool::Sqlite(pool))
        }
        Database::Postgres(options) => {
            let pool = PgPoolOptions::new()
                .max_connections(config.pool_size)
                .acquire_timeout(timeout)
                .connect_with(options.as_ref().clone())
                .await
                .map_err(failed)?;
            Ok(Pool::Postgres(pool))
        }
    }
}

/// Switches an SQLite file to write-ahead logging, where readers never wait for the writer.
/// The mode is stored in the file, so this is a no-op after the first time; when it cannot be
/// switched (another process holds it open right now) the cache works as well, only slower.
async fn use_wal(pool: &SqlitePool, url: &str) {
    let mode: std::result::Result<String, sqlx::Error> =
        sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(pool)
            .await;
    match mode {
        Ok(mode) if mode.eq_ignore_ascii_case("wal") => {}
        Ok(mode) => {
            tracing::info!(%url, %mode, "the SQLite cache database stays in its journal mode")
        }
        Err(e) => {
            tracing::warn!(%url, error = &e as &dyn std::error::Error, "cannot switch the SQLite cache database to WAL mode")
        }
    }
}
