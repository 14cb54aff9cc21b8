//! What a `sqlite:` or `postgres:` cache URL says: database, table, bounds and pool.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use webcache_core::config::{BackendSpec, ConfigError};

/// The table name used when the URL gives none (Django's examples use `my_cache_table`).
pub const DEFAULT_TABLE: &str = "webcache_cache";
/// Django's default `CULL_FREQUENCY`: when full, a third of the entries go.
pub const DEFAULT_CULL_FREQUENCY: u32 = 3;
/// How often expired rows are deleted in the background when the URL says nothing.
pub const DEFAULT_CULL_INTERVAL: Duration = Duration::from_secs(60);
/// How long to wait for a connection (and, on SQLite, for a lock) when the URL says nothing.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest accepted table name: PostgreSQL truncates identifiers at 63 bytes, and the
/// index name adds a suffix to the table's.
pub const MAX_TABLE_NAME_LEN: usize = 48;

/// Every option a database cache URL accepts (besides the common ones).
pub(crate) const OPTIONS: &[&str] = &[
    "table",
    "max_entries",
    "cull_frequency",
    "cull_interval",
    "pool_size",
    "connect_timeout",
    "create_table",
];

/// The SQL dialect of a database, the only place where SQLite and PostgreSQL differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite, embedded (a file, or memory).
    Sqlite,
    /// PostgreSQL, over the network.
    Postgres,
}

impl Dialect {
    /// The backend name used in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// Which database to open.
#[derive(Debug, Clone)]
pub enum Database {
    /// An SQLite database file (created if missing; its directory must exist).
    SqliteFile(PathBuf),
    /// A private in-memory SQLite database, alive as long as the cache is.
    SqliteMemory,
    /// A PostgreSQL server.
    Postgres(Box<PgConnectOptions>),
}

impl Database {
    /// The dialect this database speaks.
    pub fn dialect(&self) -> Dialect {
        match self {
            Database::SqliteFile(_) | Database::SqliteMemory => Dialect::Sqlite,
            Database::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// A parsed database cache configuration: built from a URL ([`SqlConfig::from_spec`]), then
/// adjusted through the fields (`#[non_exhaustive]`, so an option added later breaks no
/// caller).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqlConfig {
    /// The database.
    pub database: Database,
    /// The URL, password hidden, for messages.
    pub display_url: String,
    /// The cache table (letters, digits and underscores).
    pub table: String,
    /// At most this many rows; `None` for no bound (the default: a table on disk is not
    /// memory, and counting rows on every write costs a query).
    pub max_entries: Option<u64>,
    /// When the table is full, delete 1/N of its rows, soonest expiry first; 0 empties the
    /// table (Django's `CULL_FREQUENCY`).
    pub cull_frequency: u32,
    /// How often expired rows are deleted in the background; `None` turns it off (expired
    /// rows are still never returned, and are deleted when read or overwritten).
    pub cull_interval: Option<Duration>,
    /// The most connections the pool opens (1 for an in-memory SQLite database).
    pub pool_size: u32,
    /// How long to wait for a connection, and on SQLite for a lock held by another writer.
    pub connect_timeout: Duration,
    /// Create the table at startup if it is missing, instead of failing (always done for an
    /// in-memory SQLite database, which starts empty).
    pub create_table: bool,
}

impl SqlConfig {
    /// Parses a `sqlite:` / `postgres:` / `postgresql:` spec and fails on unknown options.
    ///
    /// ```
    /// use webcache_core::config::CacheConfig;
    /// use webcache_sql::SqlConfig;
    /// let mut spec = CacheConfig::from_url("default", "sqlite:///tmp/c.db?table=pages&max_entries=1000")
    ///     .unwrap()
    ///     .backend;
    /// let config = SqlConfig::from_spec(&mut spec).unwrap();
    /// assert_eq!(config.table, "pages");
    /// assert_eq!(config.max_entries, Some(1000));
    /// ```
    pub fn from_spec(spec: &mut BackendSpec) -> Result<Self, ConfigError> {
        let table = spec
            .take_str("table")
            .unwrap_or_else(|| DEFAULT_TABLE.to_owned());
        if let Err(why) = validate_table(&table) {
            return Err(spec.error("table", why));
        }
        let max_entries: Option<u64> =
            spec.take("max_entries", "a whole number of rows (0 = no bound)")?;
        let cull_frequency: Option<u32> = spec.take(
            "cull_frequency",
            "a whole number N: when full, 1/N of the rows are deleted (0 = all)",
        )?;
        let cull_interval = spec.take_seconds("cull_interval")?;
        let pool_size: Option<u32> =
            spec.take("pool_size", "a number of connections, 1 or more")?;
        if pool_size == Some(0) {
            return Err(spec.error(
                "pool_size",
                "0 connections cannot serve requests; use 1 or more",
            ));
        }
        let connect_timeout = spec.take_seconds("connect_timeout")?;
        if connect_timeout == Some(Duration::ZERO) {
            return Err(spec.error(
                "connect_timeout",
                "0 seconds would fail every request; use a positive number of seconds",
            ));
        }
        let create_table: Option<bool> = spec.take("create_table", "true or false")?;
        spec.finish(OPTIONS)?;

        let database = parse_database(spec)?;
        let default_pool = match database {
            Database::SqliteFile(_) => 4,
            Database::SqliteMemory => 1,
            Database::Postgres(_) => 10,
        };
        Ok(SqlConfig {
            display_url: spec.redacted_url(),
            pool_size: match database {
                // One connection keeps the in-memory database alive and whole: a second
                // connection would only contend for SQLite's single writer lock.
                Database::SqliteMemory => 1,
                _ => pool_size.unwrap_or(default_pool),
            },
            database,
            table,
            max_entries: max_entries.filter(|n| *n > 0),
            cull_frequency: cull_frequency.unwrap_or(DEFAULT_CULL_FREQUENCY),
            cull_interval: match cull_interval {
                None => Some(DEFAULT_CULL_INTERVAL),
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
            },
            connect_timeout: connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            create_table: create_table.unwrap_or(false),
        })
    }

    /// The dialect of the configured database.
    pub fn dialect(&self) -> Dialect {
        self.database.dialect()
    }
}

/// Checks a table name: 1 to [`MAX_TABLE_NAME_LEN`] ASCII letters, digits and underscores, not
/// starting with a digit. Names are spliced into SQL (identifiers cannot be bound as
/// parameters), so nothing else is accepted.
pub fn validate_table(table: &str) -> Result<(), String> {
    let fix = "use 1 to 48 ASCII letters, digits and underscores, not starting with a digit, such as `webcache_cache`";
    if table.is_empty() {
        return Err(format!("the table name is empty; {fix}"));
    }
    if table.len() > MAX_TABLE_NAME_LEN {
        return Err(format!("`{table}` is {} bytes long; {fix}", table.len()));
    }
    if let Some(c) = table
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!("`{table}` contains {c:?}; {fix}"));
    }
    if table.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("`{table}` starts with a digit; {fix}"));
    }
    Ok(())
}

fn parse_database(spec: &BackendSpec) -> Result<Database, ConfigError> {
    match spec.scheme.as_str() {
        "sqlite" => {
            let location = spec.location.trim();
            match location {
                ":memory:" | "memory:" => Ok(Database::SqliteMemory),
                "" | "/" => Err(spec.error(
                    "url",
                    "no database file; use `sqlite:///path/to/cache.db` (absolute), `sqlite://cache.db` (relative) or `sqlite::memory:`",
                )),
                path => Ok(Database::SqliteFile(PathBuf::from(path))),
            }
        }
        "postgres" | "postgresql" => {
            if spec.location.is_empty() {
                return Err(spec.error(
                    "url",
                    "no server; use `postgres://user:password@host:5432/database`",
                ));
            }
            PgConnectOptions::from_str(&format!("postgres://{}", spec.location))
                .map(|options| Database::Postgres(Box::new(options)))
                .map_err(|e| {
                    spec.error(
                        "url",
                        format!(
                            "`{}` is not a PostgreSQL URL ({e}); use `postgres://user:password@host:5432/database`",
                            spec.redacted_url()
                        ),
                    )
                })
        }
        other => Err(spec.error(
            "url",
            format!("the database backend does not handle `{other}:` URLs; use sqlite:, postgres: or postgresql:"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webcache_core::config::CacheConfig;

    fn parse(url: &str) -> Result<SqlConfig, ConfigError> {
        SqlConfig::from_spec(&mut CacheConfig::from_url("default", url).unwrap().backend)
    }

    #[test]
    fn sqlite_urls() {
        let c = parse("sqlite:///var/tmp/cache.db").unwrap();
        assert!(
            matches!(c.database, Database::SqliteFile(ref p) if p == &PathBuf::from("/var/tmp/cache.db"))
        );
        assert_eq!(c.table, DEFAULT_TABLE);
        assert_eq!(c.max_entries, None);
        assert_eq!(c.cull_frequency, 3);
        let c = parse("sqlite://relative.db?max_entries=0&cull_interval=0").unwrap();
        assert!(
            matches!(c.database, Database::SqliteFile(ref p) if p == &PathBuf::from("relative.db"))
        );
        assert_eq!(c.max_entries, None);
        assert_eq!(c.cull_interval, None);
        let c = parse("sqlite::memory:?pool_size=8&create_table=true").unwrap();
        assert!(matches!(c.database, Database::SqliteMemory));
        assert_eq!(c.pool_size, 1, "an in-memory database keeps one connection");
        assert_eq!(c.dialect(), Dialect::Sqlite);
        let err = parse("sqlite://").unwrap_err().to_string();
        assert!(err.contains("sqlite::memory:"), "{err}");
    }

    #[test]
    fn postgres_urls() {
        for scheme in ["postgres", "postgresql"] {
            let c = parse(&format!(
                "{scheme}://u:secret@db.example:6543/app?table=pages&pool_size=3&connect_timeout=0.5"
            ))
            .unwrap();
            let Database::Postgres(ref options) = c.database else {
                panic!("{c:?}");
            };
            assert_eq!(options.get_host(), "db.example");
            assert_eq!(options.get_port(), 6543);
            assert_eq!(options.get_database(), Some("app"));
            assert_eq!(c.table, "pages");
            assert_eq!(c.pool_size, 3);
            assert_eq!(c.connect_timeout, Duration::from_millis(500));
            assert!(!c.display_url.contains("secret"), "{}", c.display_url);
        }
    }

    #[test]
    fn bad_options_say_what_to_change() {
        for (url, needle) in [
            (
                "sqlite:///x.db?table=bad-name",
                "`table`: `bad-name` contains '-'",
            ),
            ("sqlite:///x.db?table=", "the table name is empty"),
            ("sqlite:///x.db?table=1st", "starts with a digit"),
            ("sqlite:///x.db?table=x;drop%20table%20y", "contains ';'"),
            (
                "sqlite:///x.db?max_entries=-1",
                "`max_entries`: `-1` is not valid",
            ),
            ("sqlite:///x.db?pool_size=0", "use 1 or more"),
            ("sqlite:///x.db?create_table=yes", "true or false"),
            (
                "sqlite:///x.db?tabel=x",
                "unknown option for the `sqlite` backend; accepted options: table, max_entries",
            ),
            ("postgres://", "no server"),
        ] {
            let err = parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        let long = "t".repeat(MAX_TABLE_NAME_LEN + 1);
        assert!(validate_table(&long).is_err());
        assert!(validate_table(&long[1..]).is_ok());
        assert!(validate_table("Cache_2").is_ok());
    }
}
