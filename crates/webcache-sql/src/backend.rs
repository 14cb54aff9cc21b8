//! [`SqlBackend`]: the [`Backend`] over a SQLite or PostgreSQL table.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sqlx::{AssertSqlSafe, Row};
use tokio::task::JoinHandle;
use webcache_core::backend::entry::parse_integer;
use webcache_core::backend::unix_ms;
use webcache_core::backend::{glob_match, Backend, BackendStats, KeyRules, KeyStream};
use webcache_core::{Error, Expiry, Result, Ttl};

use crate::config::{Database, Dialect, SqlConfig};
use crate::cull::cull_periodically;
use crate::keys::{glob_literal_prefix, padded, prefix_end};
use crate::pool::{open_pool, q, with_pool, Pool};
use crate::sql::{self, Statements};

/// Keys per `get_many`/`delete_many` statement, and rows per `set_many` statement: far below
/// SQLite's 32766 and PostgreSQL's 65535 bound parameters, and far above what one request asks.
const MAX_KEYS_PER_STATEMENT: usize = 8192;
/// Keys fetched per round trip by `scan`.
const SCAN_PAGE: i64 = 500;
/// The longest key (in bytes, after the prefix and version) a PostgreSQL cache takes: the
/// primary key's btree holds rows of at most 2704 bytes, and a 3000-byte key fails with "index
/// row size ... exceeds btree maximum". Longer keys are a usage error that says so (or are
/// hashed with `invalid_keys = "hash"`).
pub const POSTGRES_MAX_KEY_LEN: usize = 2000;

/// The keys PostgreSQL stores unchanged: at most [`POSTGRES_MAX_KEY_LEN`] bytes, no NUL (its
/// text type cannot hold one). Others are usage errors, or hashed with `invalid_keys = "hash"`.
const POSTGRES_KEY_RULES: KeyRules = KeyRules {
    max_len: Some(POSTGRES_MAX_KEY_LEN),
    no_whitespace_or_control: false,
    no_nul: true,
};

/// How often `incr` retries when the value changed between its update and its check.
const INCR_ATTEMPTS: usize = 16;

/// The database cache backend: one table with a text key, the entry bytes and an expiry in
/// Unix milliseconds, on SQLite or PostgreSQL.
///
/// - Expired rows are never returned: every read checks the expiry. They are deleted when read
///   (`get`, `get_many`), when overwritten, by a background task every `cull_interval`, and when
///   the table is full.
/// - With `max_entries`, a write that leaves more rows than the bound deletes expired rows and
///   then the rows that expire soonest: 1/`cull_frequency` of them, at least enough to get back
///   to the bound (never the row just written), so the bound holds after every write.
/// - `add`, `set_if_present` and `incr` are single statements (`INSERT .. ON CONFLICT .. DO
///   UPDATE .. WHERE` expired, `UPDATE .. WHERE` live, `UPDATE .. RETURNING`), atomic across
///   processes.
/// - Times come from this process's clock: processes sharing a table should keep their clocks
///   in sync (as with Django's database cache).
#[derive(Clone)]
pub struct SqlBackend {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) dialect: Dialect,
    pub(crate) table: String,
    pub(crate) display_url: String,
    pub(crate) sql: Statements,
    pub(crate) max_entries: Option<u64>,
    pub(crate) cull_frequency: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) culler: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SqlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlBackend")
            .field("url", &self.inner.display_url)
            .field("table", &self.inner.table)
            .field("max_entries", &self.inner.max_entries)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.culler.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// What a key's row holds.
enum Stored {
    Missing,
    /// A row that does not decode as webcache's (why, in words; already logged).
    Foreign(String),
    /// The value and the expiry.
    Row(Vec<u8>, Option<i64>),
}

/// Now, in Unix milliseconds (the unit of the `expires` column).
pub(crate) fn now_ms() -> i64 {
    column_ms(unix_ms::now())
}

/// Unix milliseconds as the `expires` column holds them (`i64`, saturating).
fn column_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The `expires` column's value as Unix milliseconds (a negative one is long past).
fn from_column_ms(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// The `expires` value of an entry written at `now` (core's rule: rounded up, saturating).
fn expires_at(expiry: Expiry, now: i64) -> Option<i64> {
    unix_ms::deadline(expiry, from_column_ms(now)).map(column_ms)
}

fn is_live(expires: Option<i64>, now: i64) -> bool {
    unix_ms::is_live(expires.map(from_column_ms), from_column_ms(now))
}

impl SqlBackend {
    /// Opens the database, makes sure the table is there (creating it when
    /// [`create_table`](SqlConfig::create_table) is set or the database is in memory) and starts
    /// the background cull.
    ///
    /// A missing table is an error that names [`create_cache_table`](crate::create_cache_table).
    pub async fn connect(config: SqlConfig) -> Result<Self> {
        let dialect = config.dialect();
        let pool = open_pool(&config).await?;
        let inner = Arc::new(Inner {
            pool,
            dialect,
            sql: Statements::new(dialect, &config.table),
            table: config.table.clone(),
            display_url: config.display_url.clone(),
            max_entries: config.max_entries,
            cull_frequency: config.cull_frequency,
            connect_timeout: config.connect_timeout,
            culler: Mutex::new(None),
        });
        if config.create_table || matches!(config.database, Database::SqliteMemory) {
            inner.create_table().await?;
        }
        inner.check_columns(false).await?;
        if let Some(every) = config.cull_interval {
            let task = tokio::spawn(cull_periodically(Arc::downgrade(&inner), every));
            *inner.culler.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        tracing::debug!(url = %inner.display_url, table = %inner.table, "database cache ready");
        Ok(SqlBackend { inner })
    }

    /// Creates the table and its expiry index if they are missing (see
    /// [`create_cache_table`](crate::create_cache_table)).
    pub async fn create_table(&self) -> Result<()> {
        self.inner.create_table().await
    }

    /// Deletes every expired row now; returns how many went. The background task does this
    /// every `cull_interval`.
    pub async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }

    /// The dialect of the database.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// The cache table.
    pub fn table(&self) -> &str {
        &self.inner.table
    }
}

/// What SQLite says when the database file is not a sound database: `SQLITE_CORRUPT` (11) and
/// `SQLITE_NOTADB` (26), extended codes included.
fn corrupt_sqlite_file(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    let code: i64 = db.code()?.parse().ok()?;
    matches!(code & 0xff, 11 | 26).then(|| db.message().to_owned())
}

impl Inner {
    /// Refuses a key PostgreSQL text cannot hold (a NUL) also when the backend is used
    /// without a [`Cache`](webcache_core::Cache), which checks [`POSTGRES_KEY_RULES`] first.
    /// The length is left to the server here: rows written directly may be longer.
    fn check_key(&self, key: &str) -> Result<()> {
        let nul = KeyRules {
            no_nul: true,
            ..KeyRules::ANY
        };
        match nul.violation(key) {
            Some(reason) if self.dialect == Dialect::Postgres => {
                let shown: String = key.chars().take(80).collect();
                Err(Error::InvalidKey {
                    key: shown.escape_debug().to_string(),
                    reason: format!("{reason}; remove it from the key"),
                })
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.dialect.name()
    }

    /// What to say when the table is missing.
    pub(crate) fn missing_table(&self) -> String {
        format!(
            "the cache table `{}` does not exist in {}; create it with `webcache createcachetable` \
             (or `webcache_sql::create_cache_table`), or add `create_table=true` to the cache URL",
            self.table, self.display_url
        )
    }

    /// A driver error as a webcache error; a missing table says how to create it.
    pub(crate) fn error(&self, doing: &str, e: sqlx::Error) -> Error {
        if let sqlx::Error::PoolTimedOut = e {
            return Error::Timeout {
                backend: self.name(),
                after: self.connect_timeout,
            };
        }
        let missing_table = match &e {
            sqlx::Error::Database(db) => {
                db.code().as_deref() == Some("42P01") || db.message().contains("no such table")
            }
            _ => false,
        };
        if missing_table {
            return Error::backend(self.name(), format!("{doing}: {}", self.missing_table()), e);
        }
        if let Some(damage) = corrupt_sqlite_file(&e) {
            return Error::backend(
                self.name(),
                format!(
                    "{doing} failed: the SQLite database {} is damaged ({damage}); stop the \
                     processes that use it and delete the file (the cache starts again empty), \
                     or point the cache at another file",
                    self.display_url
                ),
                e,
            );
        }
        // The driver's error is the source: error reporters (the CLI, `tracing` fields) print
        // it after this message.
        Error::backend(self.name(), format!("{doing} failed"), e)
    }

    async fn create_table(&self) -> Result<()> {
        // `CREATE TABLE IF NOT EXISTS` would leave a foreign table in place (and its index
        // statement fail on it): say what the table is instead.
        self.check_columns(true).await?;
        let (begin, lock) = sql::ddl_transaction(self.dialect, &self.table);
        let statements = sql::create_table(self.dialect, &self.table);
        let run = async {
            with_pool!(&self.pool, p => {
                let mut tx = p.begin_with(begin).await?;
                for statement in lock.into_iter().chain(statements) {
                    sqlx::query(AssertSqlSafe(statement)).execute(&mut *tx).await?;
                }
                tx.commit().await
            })
        };
        run.await
            .map_err(|e| self.error("creating the cache table", e))
    }

    /// Value and expiry of `key`, live or not.
    async fn row(&self, key: &str) -> Result<Stored> {
        let sql = q(&self.sql.get);
        let row: Option<std::result::Result<RawRow, sqlx::Error>> = with_pool!(&self.pool, p => {
            sqlx::query(sql).bind(key).fetch_optional(p).await.map(|row| {
                row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            })
        })
        .map_err(|e| self.error("get", e))?;
        Ok(match row {
            None => Stored::Missing,
            Some(Ok((value, expires))) => Stored::Row(value, expires),
            Some(Err(e)) => Stored::Foreign(self.foreign_row(key, &e)),
        })
    }

    /// Logs a row that does not decode as ours (SQLite keeps any type in any column: a row
    /// written by another program under the cache's prefix) and says what it is.
    fn foreign_row(&self, key: &str, e: &sqlx::Error) -> String {
        let why = match e {
            sqlx::Error::ColumnDecode { index, source } => format!("column {index}: {source}"),
            other => other.to_string(),
        };
        tracing::warn!(table = %self.table, key, "a row not written by webcache is treated as a miss: {why}");
        why
    }

    /// The expiry of `key`: `None` when missing (or not a row of ours, logged), `Some(None)`
    /// when it never expires.
    async fn expires(&self, key: &str) -> Result<Option<Option<i64>>> {
        let sql = q(&self.sql.expires);
        let found = with_pool!(&self.pool, p => sqlx::query(sql).bind(key).fetch_optional(p).await.map(|row| row.map(|row| row.try_get(0))))
            .map_err(|e| self.error("reading an expiry", e))?;
        Ok(match found {
            None => None,
            Some(Ok(expires)) => Some(expires),
            Some(Err(e)) => {
                self.foreign_row(key, &e);
                None
            }
        })
    }

    /// Removes `key` if it is expired (and was not rewritten meanwhile). Only tidies up: a
    /// failure is logged.
    async fn delete_if_expired(&self, key: &str, now: i64) {
        let sql = q(&self.sql.delete_if_expired);
        let done = with_pool!(&self.pool, p => sqlx::query(sql).bind(key).bind(now).execute(p).await.map(drop));
        if let Err(e) = done {
            tracing::warn!(table = %self.table, error = &e as &dyn std::error::Error, "deleting an expired row failed");
        }
    }

    async fn get_many_chunk(
        &self,
        keys: &[String],
        now: i64,
        found: &mut HashMap<String, Bytes>,
    ) -> Result<()> {
        let keys = padded(keys);
        let sql = AssertSqlSafe(self.sql.get_many(keys.len()));
        type Decoded =
            std::result::Result<(String, Vec<u8>, Option<i64>), (Option<String>, sqlx::Error)>;
        let rows: Vec<Decoded> = with_pool!(&self.pool, p => {
            let mut query = sqlx::query(sql);
            for key in &keys {
                query = query.bind(*key);
            }
            query.fetch_all(p).await.map(|rows| {
                rows.iter()
                    .map(|row| {
                        let decoded = (|| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))();
                        decoded.map_err(|e| (row.try_get(0).ok(), e))
                    })
                    .collect()
            })
        })
        .map_err(|e| self.error("get_many", e))?;
        let rows = rows.into_iter().filter_map(|row| match row {
            Ok(row) => Some(row),
            Err((key, e)) => {
                self.foreign_row(key.as_deref().unwrap_or("?"), &e);
                None
            }
        });
        let mut expired = Vec::new();
        for (key, value, expires) in rows {
            if is_live(expires, now) {
                found.insert(key, Bytes::from(value));
            } else {
                expired.push(key);
            }
        }
        if !expired.is_empty() {
            let sql = AssertSqlSafe(self.sql.delete_many_if_expired(expired.len()));
            let done = with_pool!(&self.pool, p => {
                let mut query = sqlx::query(sql).bind(now);
                for key in &expired {
                    query = query.bind(key.as_str());
                }
                query.execute(p).await.map(drop)
            });
            if let Err(e) = done {
                tracing::warn!(table = %self.table, error = &e as &dyn std::error::Error, "deleting expired rows failed");
            }
        }
        Ok(())
    }

    /// One page of live keys in `[from, end)` (after `from` when `after`), in key order.
    async fn scan_page(&self, from: &str, after: bool, end: Option<&str>) -> Result<Vec<String>> {
        let sql = AssertSqlSafe(self.sql.scan_page(!after, end.is_some()));
        with_pool!(&self.pool, p => {
            let mut query = sqlx::query_scalar(sql).bind(from).bind(now_ms()).bind(SCAN_PAGE);
            if let Some(end) = end {
                query = query.bind(end);
            }
            query.fetch_all(p).await
        })
        .map_err(|e| self.error("scan", e))
    }
}

#[async_trait]
impl Backend for SqlBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn key_rules(&self) -> KeyRules {
        match self.inner.dialect {
            Dialect::Sqlite => KeyRules::ANY,
            Dialect::Postgres => POSTGRES_KEY_RULES,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.check_key(key)?;
        let now = now_ms();
        match self.inner.row(key).await? {
            Stored::Row(value, expires) if is_live(expires, now) => Ok(Some(Bytes::from(value))),
            Stored::Row(..) => {
                self.inner.delete_if_expired(key, now).await;
                Ok(None)
            }
            Stored::Missing | Stored::Foreign(_) => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        self.inner.check_key(key)?;
        let inner = &self.inner;
        let sql = q(&inner.sql.set);
        inner.make_room(key, 1).await;
        let expires = expires_at(expiry, now_ms());
        with_pool!(&inner.pool, p => sqlx::query(sql).bind(key).bind(value.as_ref()).bind(expires).execute(p).await.map(drop))
            .map_err(|e| inner.error("set", e))
    }

    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.inner.check_key(key)?;
        let inner = &self.inner;
        let sql = q(&inner.sql.add);
        inner.make_room(key, 1).await;
        let now = now_ms();
        let expires = expires_at(expiry, now);
        with_pool!(&inner.pool, p => sqlx::query(sql).bind(key).bind(value.as_ref()).bind(expires).bind(now).execute(p).await.map(|r| r.rows_affected() > 0))
            .map_err(|e| inner.error("add", e))
    }

    async fn set_if_present(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.inner.check_key(key)?;
        let inner = &self.inner;
        let sql = q(&inner.sql.set_if_present);
        let now = now_ms();
        let expires = expires_at(expiry, now);
        with_pool!(&inner.pool, p => sqlx::query(sql).bind(key).bind(value.as_ref()).bind(expires).bind(now).execute(p).await.map(|r| r.rows_affected() > 0))
            .map_err(|e| inner.error("set_if_present", e))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.check_key(key)?;
        let inner = &self.inner;
        let sql = q(&inner.sql.delete);
        // A removed row that is not ours (an expiry of another type) read as a miss: not live.
        let removed: Option<Option<Option<i64>>> = with_pool!(&inner.pool, p => {
            sqlx::query(sql).bind(key).fetch_optional(p).await.map(|row| row.map(|row| row.try_get(0).ok()))
        })
        .map_err(|e| inner.error("delete", e))?;
        Ok(removed
            .flatten()
            .is_some_and(|expires| is_live(expires, now_ms())))
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.inner.check_key(key)?;
        let inner = &self.inner;
        let sql = q(&inner.sql.touch);
        let now = now_ms();
        with_pool!(&inner.pool, p => sqlx::query(sql).bind(key).bind(expires_at(expiry, now)).bind(now).execute(p).await.map(|r| r.rows_affected() > 0))
            .map_err(|e| inner.error("touch", e))
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.inner.check_key(key)?;
        let inner = &self.inner;
        // The stored integer must be in this range for the sum to fit an i64.
        let (low, high) = if delta >= 0 {
            (i64::MIN, i64::MAX - delta)
        } else {
            (i64::MIN - delta, i64::MAX)
        };
        for _ in 0..INCR_ATTEMPTS {
            let now = now_ms();
            let sql = q(&inner.sql.incr);
            let updated: Option<Vec<u8>> = with_pool!(&inner.pool, p => sqlx::query_scalar(sql).bind(key).bind(delta).bind(now).bind(low).bind(high).fetch_optional(p).await)
                .map_err(|e| inner.error("incr", e))?;
            if let Some(value) = updated {
                return parse_integer(&value).ok_or_else(|| {
                    Error::backend_msg(
                        inner.name(),
                        format!("incr wrote {value:?}, which is not an integer"),
                    )
                });
            }
            // Nothing matched: say why. If the value now looks incrementable, it was written
            // between the two statements: try again.
            let current = inner.row(key).await?;
            match current {
                Stored::Foreign(why) => {
                    return Err(Error::backend_msg(
                        inner.name(),
                        format!(
                            "cannot increment `{key}`: its row in the table `{}` was not written \
                             by webcache ({why}); delete the key, and keep other programs' rows \
                             out of the cache table",
                            inner.table
                        ),
                    ))
                }
                Stored::Row(value, expires) if is_live(expires, now_ms()) => {
                    match parse_integer(&value) {
                        None => {
                            return Err(Error::NotAnInteger {
                                key: key.to_owned(),
                            })
                        }
                        Some(n) if n.checked_add(delta).is_none() => {
                            return Err(Error::Overflow {
                                key: key.to_owned(),
                            })
                        }
                        Some(_) => continue,
                    }
                }
                _ => {
                    return Err(Error::KeyNotFound {
                        key: key.to_owned(),
                    })
                }
            }
        }
        Err(Error::backend_msg(
            inner.name(),
            format!(
                "incr of `{key}` gave up: the value kept changing under {INCR_ATTEMPTS} attempts"
            ),
        ))
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        self.inner.check_key(key)?;
        let now = now_ms();
        Ok(match self.inner.expires(key).await? {
            None => Ttl::Missing,
            Some(None) => Ttl::Forever,
            Some(Some(at)) if is_live(Some(at), now) => {
                Ttl::Remaining(unix_ms::remaining(from_column_ms(at), from_column_ms(now)))
            }
            Some(Some(_)) => Ttl::Missing,
        })
    }

    async fn has_key(&self, key: &str) -> Result<bool> {
        self.inner.check_key(key)?;
        Ok(self
            .inner
            .expires(key)
            .await?
            .is_some_and(|expires| is_live(expires, now_ms())))
    }

    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        let inner = &self.inner;
        if prefix.is_some_and(|p| inner.check_key(p).is_err()) {
            // No stored key can start with it (and the database would refuse it as a bound value).
            return Ok(());
        }
        let end = prefix.and_then(prefix_end);
        let done = match (prefix.filter(|p| !p.is_empty()), end) {
            (None, _) => {
                let sql = q(&inner.sql.clear_all);
                with_pool!(&inner.pool, p => sqlx::query(sql).execute(p).await.map(drop))
            }
            (Some(from), None) => {
                let sql = q(&inner.sql.clear_from);
                with_pool!(&inner.pool, p => sqlx::query(sql).bind(from).execute(p).await.map(drop))
            }
            (Some(from), Some(end)) => {
                let sql = q(&inner.sql.clear_range);
                with_pool!(&inner.pool, p => sqlx::query(sql).bind(from).bind(end.as_str()).execute(p).await.map(drop))
            }
        };
        done.map_err(|e| inner.error("clear", e))
    }

    fn scan(&self, pattern: &str) -> KeyStream {
        struct Page {
            inner: Arc<Inner>,
            pattern: String,
            end: Option<String>,
            from: String,
            after: bool,
        }
        let prefix = glob_literal_prefix(pattern);
        if self.inner.check_key(&prefix).is_err() {
            // No stored key can match (and the database would refuse it as a bound value).
            return futures::stream::empty().boxed();
        }
        let start = Page {
            inner: self.inner.clone(),
            pattern: pattern.to_owned(),
            end: if prefix.is_empty() {
                None
            } else {
                prefix_end(&prefix)
            },
            from: prefix,
            after: false,
        };
        // Keyset pagination: each round trip fetches the next page after the last key seen,
        // so a large table is streamed, never loaded whole.
        futures::stream::unfold(Some(start), |page| async move {
            let mut page = page?;
            match page
                .inner
                .scan_page(&page.from, page.after, page.end.as_deref())
                .await
            {
                Err(e) => Some((vec![Err(e)], None)),
                Ok(keys) => {
                    let full = keys.len() as i64 == SCAN_PAGE;
                    let matching: Vec<Result<String>> = keys
                        .iter()
                        .filter(|k| glob_match(&page.pattern, k))
                        .cloned()
                        .map(Ok)
                        .collect();
                    let next = match keys.last() {
                        Some(last) if full => {
                            page.from.clone_from(last);
                            page.after = true;
                            Some(page)
                        }
                        _ => None,
                    };
                    Some((matching, next))
                }
            }
        })
        .flat_map(futures::stream::iter)
        .boxed()
    }

    async fn stats(&self) -> Result<BackendStats> {
        let inner = &self.inner;
        let sql = q(&inner.sql.stats);
        let (rows, live, bytes): (i64, i64, i64) =
            with_pool!(&inner.pool, p => sqlx::query_as(sql).bind(now_ms()).fetch_one(p).await)
                .map_err(|e| inner.error("stats", e))?;
        let mut extra = vec![
            ("table".to_owned(), inner.table.clone()),
            ("rows".to_owned(), rows.to_string()),
            ("expired_rows".to_owned(), (rows - live).to_string()),
        ];
        if let Some(max) = inner.max_entries {
            extra.push(("max_entries".to_owned(), max.to_string()));
            extra.push((
                "cull_frequency".to_owned(),
                inner.cull_frequency.to_string(),
            ));
        }
        Ok(BackendStats {
            entries: u64::try_from(live).ok(),
            bytes: u64::try_from(bytes).ok(),
            extra,
        })
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        for key in keys.iter() {
            self.inner.check_key(key)?;
        }
        let now = now_ms();
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_KEYS_PER_STATEMENT) {
            self.inner.get_many_chunk(chunk, now, &mut found).await?;
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn set_many(&self, entries: Vec<(String, Bytes)>, expiry: Expiry) -> Result<()> {
        for (key, _) in &entries {
            self.inner.check_key(key)?;
        }
        let inner = &self.inner;
        // One upsert cannot touch a row twice (PostgreSQL refuses): the last value of a
        // repeated key wins, as with successive sets.
        let mut seen = HashSet::with_capacity(entries.len());
        let mut unique: Vec<(String, Bytes)> = entries
            .into_iter()
            .rev()
            .filter(|(key, _)| seen.insert(key.clone()))
            .collect();
        unique.reverse();
        let expires = expires_at(expiry, now_ms());
        for chunk in unique.chunks(MAX_KEYS_PER_STATEMENT) {
            let sql = AssertSqlSafe(inner.sql.set_many(chunk.len()));
            with_pool!(&inner.pool, p => {
                let mut query = sqlx::query(sql).bind(expires);
                for (key, value) in chunk {
                    query = query.bind(key.as_str()).bind(value.as_ref());
                }
                query.execute(p).await.map(drop)
            })
            .map_err(|e| inner.error("set_many", e))?;
        }
        // After the batch (culling before it could not make room among its own rows): the
        // table ends within `max_entries + 1` rows, as after Django's one `set` per key.
        if let Some((last, _)) = unique.last() {
            inner.make_room(last, 0).await;
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        for key in keys.iter() {
            self.inner.check_key(key)?;
        }
        let inner = &self.inner;
        let now = now_ms();
        let mut removed = 0;
        for chunk in keys.chunks(MAX_KEYS_PER_STATEMENT) {
            let keys = padded(chunk);
            let sql = AssertSqlSafe(inner.sql.delete_many(keys.len()));
            // As in `delete`: a removed row that is not ours was not live.
            let expiries: Vec<Option<Option<i64>>> = with_pool!(&inner.pool, p => {
                let mut query = sqlx::query(sql);
                for key in &keys {
                    query = query.bind(*key);
                }
                query.fetch_all(p).await.map(|rows| rows.iter().map(|row| row.try_get(0).ok()).collect())
            })
            .map_err(|e| inner.error("delete_many", e))?;
            removed += expiries
                .into_iter()
                .flatten()
                .filter(|e| is_live(*e, now))
                .count() as u64;
        }
        Ok(removed)
    }

    async fn close(&self) -> Result<()> {
        if let Some(task) = self
            .inner
            .culler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        with_pool!(&self.inner.pool, p => p.close().await);
        Ok(())
    }
}

/// A row as read: the value and the expiry (unix milliseconds, `None` for never).
type RawRow = (Vec<u8>, Option<i64>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rounds_up_and_saturates() {
        assert_eq!(expires_at(Expiry::Never, 5), None);
        assert_eq!(
            expires_at(Expiry::After(Duration::from_nanos(1)), 5),
            Some(6)
        );
        assert_eq!(
            expires_at(Expiry::After(Duration::from_millis(300)), 5),
            Some(305)
        );
        assert_eq!(expires_at(Expiry::After(Duration::MAX), 5), Some(i64::MAX));
        assert!(is_live(None, 10) && is_live(Some(11), 10) && !is_live(Some(10), 10));
    }
}
