//! A query cache for [sqlx] on webcache: a read's rows are cached under a key built from the
//! SQL text and its bound parameters, tagged with the tables it reads; a write invalidates the
//! tables it writes, after it succeeds, in every process sharing the cache.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::SqlitePool) -> Result<(), webcache_sqlx::Error> {
//! use webcache_core::Cache;
//! use webcache_sqlx::QueryCache;
//!
//! #[derive(sqlx::FromRow, serde::Serialize, serde::Deserialize)]
//! struct Product { id: i64, name: String, price: i64 }
//!
//! let queries = QueryCache::new(Cache::locmem()).timeout(600);
//! // Cached, tagged `table:products`:
//! let cheap: Vec<Product> = queries
//!     .query_as("SELECT id, name, price FROM products WHERE price < ?")
//!     .bind(100)
//!     .fetch_all(&pool)
//!     .await?;
//! // Runs, then invalidates `table:products`: the next read queries the database.
//! queries
//!     .query("UPDATE products SET price = ? WHERE id = ?")
//!     .bind(12)
//!     .bind(42)
//!     .execute(&pool)
//!     .await?;
//! # let _ = cheap; Ok(()) }
//! ```
//!
//! See the README for what is seen and what is not (writes made outside, views, triggers).

mod tables;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, SqlSafeStr, SqlStr, Type};
use webcache_core::{Cache, Timeout};

pub use tables::{parse as parse_tables, Tables};

/// The sqlx this crate is built on (its database, pool and row types).
pub use sqlx;

/// The prefix of every key the query cache stores rows under.
const KEY_PREFIX: &str = "sqlx:";

/// The longest table name put in a tag as it is; longer or unusual names are hashed.
const MAX_PLAIN_NAME: usize = 100;

/// What can go wrong running a query through the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database refused or failed the query.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The cache failed while reading or storing rows.
    #[error(transparent)]
    Cache(#[from] webcache_core::Error),
    /// The SQL is not one the table parse understands, and the caller named no tables: it is
    /// not run, since what it reads could not be invalidated or what it writes could not
    /// invalidate anything.
    #[error("cannot tell which tables `{sql}` reads or writes ({why}): name them with `.reads([..])` (a read, cached) or `.writes([..])` (a write, invalidating them), or run it with sqlx directly (neither cached nor invalidating)")]
    UnknownTables {
        /// The SQL text.
        sql: String,
        /// What the parse could not vouch for.
        why: &'static str,
    },
    /// The write succeeded but the cache could not be told: rows cached from these tables
    /// may be served stale until they expire.
    #[error("the write succeeded but invalidating tables {tables:?} failed, so rows cached from them may be served stale until they expire; call `invalidate_tables` again once the cache is back: {source}")]
    Invalidation {
        /// The tables whose tags were not invalidated.
        tables: Vec<String>,
        /// Why.
        source: webcache_core::Error,
    },
    /// A table name given to `reads`, `writes` or `invalidate_tables` is empty once its schema
    /// and blanks are dropped (`""`, `" "`, `"public."`): it names no table, so rows read from
    /// it could not be invalidated and a write to it would invalidate nothing. Nothing was run.
    #[error("the table name `{name}` is empty once its schema and blanks are dropped, so it names no table; give the table's own name, such as `products` or `public.products`")]
    EmptyTableName {
        /// The name as given.
        name: String,
    },
}

/// The tag of a table's cached rows: `table:<name>`, the name lowercased and without its
/// schema (`"Public"."Products"` -> `table:products`). Names that are not plain (`[a-z0-9_$]`,
/// at most 100 bytes) are hashed so that every backend accepts the tag. Tag pages with it to
/// have them dropped with the rows ([`QueryCache::invalidate_tables`] and writes use it).
pub fn table_tag(table: &str) -> String {
    let name = tables::normalise(table);
    let plain = !name.is_empty()
        && name.len() <= MAX_PLAIN_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'$');
    if plain {
        format!("table:{name}")
    } else {
        format!("table:~{}", hex(&Sha256::digest(name.as_bytes())[..16]))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The query cache: a [`Cache`] and the timeout of the rows it stores. Cheap to clone.
#[derive(Clone)]
pub struct QueryCache {
    cache: Cache,
    timeout: Timeout,
}

impl QueryCache {
    /// A query cache storing rows in `cache`, for the cache's default timeout.
    pub fn new(cache: Cache) -> Self {
        QueryCache {
            cache,
            timeout: Timeout::Default,
        }
    }

    /// Rows are kept for `timeout` (expiry stays the safety net for writes made outside).
    pub fn timeout(mut self, timeout: impl Into<Timeout>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// The cache the rows are stored in.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// A query whose rows are mapped to `O` (as [`sqlx::query_as`]): a read is cached, a
    /// write invalidates the tables it writes.
    pub fn query_as<'q, DB, O>(&self, sql: impl SqlSafeStr) -> QueryAs<'q, DB, O>
    where
        DB: Database,
        O: for<'r> FromRow<'r, DB::Row>,
    {
        let sql = sql.into_sql_str();
        QueryAs {
            plan: Plan::new(self, &sql),
            inner: sqlx::query_as(sql),
        }
    }

    /// A statement run for its effect (as [`sqlx::query()`]): after it succeeds, the tables it
    /// writes are invalidated.
    pub fn query<'q, DB: Database>(&self, sql: impl SqlSafeStr) -> Query<'q, DB> {
        let sql = sql.into_sql_str();
        Query {
            plan: Plan::new(self, &sql),
            inner: sqlx::query(sql),
        }
    }

    /// Makes every row cached from any of `tables` a miss, in every process sharing the
    /// cache: for writes made outside the query cache (another program, a migration, raw
    /// SQL, a trigger's table).
    pub async fn invalidate_tables<I, S>(&self, tables: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tags = tables
            .into_iter()
            .map(|t| declared_table(t.as_ref()).map(|name| table_tag(&name)))
            .collect::<Result<Vec<String>, Error>>()?;
        if tags.is_empty() {
            return Ok(());
        }
        self.cache.invalidate_tags(tags).await?;
        Ok(())
    }

    /// Wraps a sqlx transaction: reads through it are not cached (they may see its
    /// uncommitted writes), and the tables its writes touch are invalidated when
    /// [`Transaction::commit`] succeeds, not before (a reader in between would cache rows
    /// about to change).
    pub fn transaction<'c, DB: Database>(
        &self,
        tx: sqlx::Transaction<'c, DB>,
    ) -> Transaction<'c, DB> {
        Transaction {
            inner: tx,
            cache: self.clone(),
            writes: BTreeSet::new(),
        }
    }

    /// Invalidates `tables`, reporting a failure as one that left stale rows.
    async fn after_write(&self, tables: BTreeSet<String>) -> Result<(), Error> {
        if tables.is_empty() {
            return Ok(());
        }
        tracing::debug!(?tables, "invalidating tables after a write");
        self.invalidate_tables(&tables).await.map_err(|e| match e {
            Error::Cache(source) => Error::Invalidation {
                tables: tables.iter().cloned().collect(),
                source,
            },
            other => other,
        })
    }
}

/// A table name a caller gave (`reads`, `writes`, `invalidate_tables`), normalised as the
/// parse's names are; refused when nothing is left of it.
fn declared_table(name: &str) -> Result<String, Error> {
    let table = tables::normalise(name);
    if table.is_empty() {
        return Err(Error::EmptyTableName {
            name: name.to_owned(),
        });
    }
    Ok(table)
}

/// What a statement does, decided before it runs.
enum Action {
    /// Cache its rows, tagged with these tables.
    Cache(BTreeSet<String>),
    /// Run it, then invalidate these tables.
    Write(BTreeSet<String>),
    /// Run it as it is (reads no table, a locking read, or parameters that cannot be hashed).
    Run,
}

/// The state shared by [`Query`] and [`QueryAs`]: what the parse found, what the caller
/// added, and the hash of the SQL and the parameters bound so far.
struct Plan {
    cache: QueryCache,
    sql: String,
    hash: Sha256,
    unhashable: Option<String>,
    reads: Option<BTreeSet<String>>,
    writes: Option<BTreeSet<String>>,
    /// The first name given to `reads` or `writes` that names no table: the statement is then
    /// refused, not run.
    bad_name: Option<String>,
}

impl Plan {
    fn new(cache: &QueryCache, sql: &SqlStr) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"webcache-sqlx/1\0");
        hash.update((sql.as_str().len() as u64).to_le_bytes());
        hash.update(sql.as_str().as_bytes());
        Plan {
            cache: cache.clone(),
            sql: sql.as_str().to_owned(),
            hash,
            unhashable: None,
            reads: None,
            writes: None,
            bad_name: None,
        }
    }

    fn bind<T: Serialize>(&mut self, value: &T) {
        match rmp_serde::to_vec(value) {
            Ok(bytes) => {
                self.hash.update((bytes.len() as u64).to_le_bytes());
                self.hash.update(&bytes);
            }
            Err(e) => self.unhashable = Some(e.to_string()),
        }
    }

    /// Adds the tables a caller declared to `set` (the plan's `reads` or `writes`); the first
    /// name that names no table goes to `bad_name`, and the statement is then refused.
    fn add(
        set: &mut Option<BTreeSet<String>>,
        bad_name: &mut Option<String>,
        names: impl IntoIterator<Item = impl AsRef<str>>,
    ) {
        let set = set.get_or_insert_with(BTreeSet::new);
        for name in names {
            match declared_table(name.as_ref()) {
                Ok(table) => {
                    set.insert(table);
                }
                Err(_) => {
                    bad_name.get_or_insert_with(|| name.as_ref().to_owned());
                }
            }
        }
    }

    /// What to do with the statement; `what` tells the cache key's variants apart.
    fn action(&self) -> Result<Action, Error> {
        if let Some(name) = &self.bad_name {
            return Err(Error::EmptyTableName { name: name.clone() });
        }
        let (mut reads, mut writes, locking) = match tables::parse(&self.sql) {
            Tables::Known {
                reads,
                writes,
                locking,
            } => (reads, writes, locking),
            Tables::Unsure(why) => {
                if self.reads.is_none() && self.writes.is_none() {
                    return Err(Error::UnknownTables {
                        sql: self.sql.clone(),
                        why,
                    });
                }
                (BTreeSet::new(), BTreeSet::new(), false)
            }
        };
        reads.extend(self.reads.iter().flatten().cloned());
        writes.extend(self.writes.iter().flatten().cloned());
        Ok(if !writes.is_empty() {
            Action::Write(writes)
        } else if locking || reads.is_empty() {
            Action::Run
        } else if let Some(why) = &self.unhashable {
            tracing::debug!(sql = %self.sql, %why, "a parameter cannot be serialized: not cached");
            Action::Run
        } else {
            Action::Cache(reads)
        })
    }

    /// The cache key of the rows, for output type `O` read with `method`.
    fn key<DB: Database, O>(&self, method: &str) -> String {
        let mut hash = self.hash.clone();
        for part in [DB::NAME, std::any::type_name::<O>(), method] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        format!("{KEY_PREFIX}{}", hex(&hash.finalize()))
    }

    /// Runs `run` as `action` says: cached under `key`, or run then invalidating.
    async fn execute<T, F, Fut>(self, method: &str, key: String, run: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        match self.action()? {
            Action::Cache(reads) => {
                let tags: Vec<String> = reads.iter().map(|t| table_tag(t)).collect();
                self.cache
                    .cache
                    .tagged(tags)
                    .try_get_or_set_with(&key, self.cache.timeout, || async {
                        run().await.map_err(Error::Database)
                    })
                    .await
            }
            Action::Write(writes) => {
                let out = run().await?;
                self.cache.after_write(writes).await?;
                Ok(out)
            }
            Action::Run => {
                tracing::trace!(sql = %self.sql, method, "not cached");
                Ok(run().await?)
            }
        }
    }
}

/// A query mapping rows to `O`, built by [`QueryCache::query_as`]: bind its parameters, then
/// fetch. `O` must be serde-serializable, since its rows are what the cache stores.
#[must_use = "a query does nothing until it is fetched"]
pub struct QueryAs<'q, DB: Database, O> {
    plan: Plan,
    inner: sqlx::query::QueryAs<'q, DB, O, <DB as Database>::Arguments>,
}

impl<'q, DB: Database, O> QueryAs<'q, DB, O> {
    /// Binds the next parameter (as [`sqlx::query::QueryAs::bind`]); its serialized form goes
    /// into the cache key.
    pub fn bind<T>(mut self, value: T) -> Self
    where
        T: 'q + Encode<'q, DB> + Type<DB> + Serialize,
    {
        self.plan.bind(&value);
        self.inner = self.inner.bind(value);
        self
    }

    /// Tables the query reads besides those in its SQL (a view's base tables, tables a
    /// function reads); required when the SQL is beyond the parse. `reads([] as [&str; 0])`
    /// declares a query reading no table: it runs, not cached.
    pub fn reads<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, tables: I) -> Self {
        Plan::add(&mut self.plan.reads, &mut self.plan.bad_name, tables);
        self
    }

    /// Tables the statement writes besides those in its SQL (a trigger's tables, a cascade);
    /// the statement is then run, not cached, and they are invalidated after it succeeds.
    pub fn writes<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, tables: I) -> Self {
        Plan::add(&mut self.plan.writes, &mut self.plan.bad_name, tables);
        self
    }
}

impl<'q, DB, O> QueryAs<'q, DB, O>
where
    DB: Database,
    <DB as Database>::Arguments: 'q + IntoArguments<DB>,
    O: Send + Unpin + for<'r> FromRow<'r, DB::Row> + Serialize + DeserializeOwned,
{
    /// Every row: from the cache, or from the database (then stored).
    pub async fn fetch_all<'e, 'c: 'e, E>(self, executor: E) -> Result<Vec<O>, Error>
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>,
        DB: 'e,
        O: 'e,
    {
        let key = self.plan.key::<DB, Vec<O>>("all");
        let inner = self.inner;
        self.plan
            .execute("fetch_all", key, || inner.fetch_all(executor))
            .await
    }

    /// The first row, if any: from the cache, or from the database (then stored, an
    /// absent row too).
    pub async fn fetch_optional<'e, 'c: 'e, E>(self, executor: E) -> Result<Option<O>, Error>
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>,
        DB: 'e,
        O: 'e,
    {
        let key = self.plan.key::<DB, Option<O>>("optional");
        let inner = self.inner;
        self.plan
            .execute("fetch_optional", key, || inner.fetch_optional(executor))
            .await
    }

    /// The first row, or [`sqlx::Error::RowNotFound`] (an absent row is cached as such).
    pub async fn fetch_one<'e, 'c: 'e, E>(self, executor: E) -> Result<O, Error>
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>,
        DB: 'e,
        O: 'e,
    {
        self.fetch_optional(executor)
            .await?
            .ok_or(Error::Database(sqlx::Error::RowNotFound))
    }
}

/// A statement run for its effect, built by [`QueryCache::query`].
#[must_use = "a statement does nothing until it is executed"]
pub struct Query<'q, DB: Database> {
    plan: Plan,
    inner: sqlx::query::Query<'q, DB, <DB as Database>::Arguments>,
}

impl<'q, DB: Database> Query<'q, DB> {
    /// Binds the next parameter (as [`sqlx::query::Query::bind`]).
    pub fn bind<T>(mut self, value: T) -> Self
    where
        T: 'q + Encode<'q, DB> + Type<DB>,
    {
        self.inner = self.inner.bind(value);
        self
    }

    /// Tables the statement writes besides those in its SQL (a trigger's tables, a
    /// cascade); required when the SQL is beyond the parse. `writes([] as [&str; 0])`
    /// declares a statement that writes no cached table.
    pub fn writes<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, tables: I) -> Self {
        Plan::add(&mut self.plan.writes, &mut self.plan.bad_name, tables);
        self
    }
}

impl<'q, DB> Query<'q, DB>
where
    DB: Database,
    <DB as Database>::Arguments: 'q + IntoArguments<DB>,
{
    /// Runs the statement; once it succeeded, the tables it writes are invalidated.
    pub async fn execute<'e, 'c: 'e, E>(self, executor: E) -> Result<DB::QueryResult, Error>
    where
        'q: 'e,
        E: 'e + Executor<'c, Database = DB>,
    {
        let writes = self.plan.write_set()?;
        let result = self.inner.execute(executor).await?;
        self.plan.cache.after_write(writes).await?;
        Ok(result)
    }
}

impl Plan {
    /// The tables a statement run for its effect writes (none for a read).
    fn write_set(&self) -> Result<BTreeSet<String>, Error> {
        Ok(match self.action()? {
            Action::Write(writes) => writes,
            Action::Cache(_) | Action::Run => BTreeSet::new(),
        })
    }
}

/// A sqlx transaction whose writes invalidate their tables when it commits, made by
/// [`QueryCache::transaction`]. Dropped or rolled back, it invalidates nothing (nothing
/// changed). Dereferences to the sqlx transaction for plain sqlx use (whose writes it does
/// not see: name them with [`writes`](Transaction::writes)).
pub struct Transaction<'c, DB: Database> {
    inner: sqlx::Transaction<'c, DB>,
    cache: QueryCache,
    writes: BTreeSet<String>,
}

impl<'c, DB: Database> Transaction<'c, DB> {
    /// Runs `query` in the transaction; the tables it writes are invalidated at commit.
    pub async fn execute<'q>(&mut self, query: Query<'q, DB>) -> Result<DB::QueryResult, Error>
    where
        <DB as Database>::Arguments: 'q + IntoArguments<DB>,
        for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    {
        let writes = query.plan.write_set()?;
        let result = query.inner.execute(&mut *self.inner).await?;
        self.writes.extend(writes);
        Ok(result)
    }

    /// Every row of `query`, read in the transaction and never cached (it may see the
    /// transaction's own writes); the tables it writes are invalidated at commit.
    pub async fn fetch_all<'q, O>(&mut self, query: QueryAs<'q, DB, O>) -> Result<Vec<O>, Error>
    where
        <DB as Database>::Arguments: 'q + IntoArguments<DB>,
        for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
        O: Send + Unpin + for<'r> FromRow<'r, DB::Row>,
    {
        let writes = query.plan.write_set()?;
        let rows = query.inner.fetch_all(&mut *self.inner).await?;
        self.writes.extend(writes);
        Ok(rows)
    }

    /// Tables written in the transaction outside the query cache (through the sqlx
    /// transaction itself): invalidated at commit. A name that names no table
    /// ([`Error::EmptyTableName`]) is refused, and then none of `names` is added.
    pub fn writes<I: IntoIterator<Item = S>, S: AsRef<str>>(
        &mut self,
        names: I,
    ) -> Result<(), Error> {
        let names = names
            .into_iter()
            .map(|t| declared_table(t.as_ref()))
            .collect::<Result<Vec<String>, Error>>()?;
        self.writes.extend(names);
        Ok(())
    }

    /// Commits, then invalidates every table written in the transaction.
    pub async fn commit(self) -> Result<(), Error> {
        self.inner.commit().await?;
        self.cache.after_write(self.writes).await
    }

    /// Rolls back: nothing changed, nothing is invalidated.
    pub async fn rollback(self) -> Result<(), Error> {
        self.inner.rollback().await?;
        Ok(())
    }
}

impl<'c, DB: Database> std::ops::Deref for Transaction<'c, DB> {
    type Target = sqlx::Transaction<'c, DB>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<DB: Database> std::ops::DerefMut for Transaction<'_, DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}
