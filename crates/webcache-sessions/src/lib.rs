//! Cache-backed sessions for axum apps, as Django's `cache` and `cached_db` session engines,
//! plugged into [tower-sessions](https://docs.rs/tower-sessions).
//!
//! Only a random session id travels in the browser's cookie; the session data lives in a
//! webcache alias under a readable key (`webcache.sessions.<id>`), expiring with the session.
//!
//! - [`CacheStore`] (`cache` engine): sessions in any cache alias (locmem, Redis, ...). Losing
//!   the cache loses the sessions, as in Django.
//! - [`CachedDbStore`] (`cached_db` engine): writes go to a durable store first (a cache alias
//!   over the SQL backend: SQLite or PostgreSQL) and then to the cache; reads come from the
//!   cache and fall back to the durable store, refilling the cache. Losing the cache loses no
//!   session.
//! - [`SessionConfig`] builds the tower-sessions layer with safe cookie defaults (`HttpOnly`
//!   always, `SameSite=Lax`, `Secure` configurable).
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_sessions::Session;
//! use webcache_core::Cache;
//! use webcache_sessions::{CacheStore, SessionConfig};
//!
//! async fn visits(session: Session) -> String {
//!     let n: u32 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
//!     let _ = session.insert("visits", n).await;
//!     format!("{n} visits")
//! }
//!
//! let store = CacheStore::new(Cache::locmem());
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionConfig::default().layer(store));
//! ```
//!
//! Security properties (each tested): ids come from tower-sessions' CSPRNG (128 bits);
//! creating a session never overwrites another one (`add`, retried on collision); an id the
//! client invents, or one that expired, is never adopted; `cycle_id` keeps the data and the old
//! id stops working; a deleted session is gone from cache and database; corrupt session data
//! is an empty session and a warning, not a 500.
#![forbid(unsafe_code)]
// Library code answers every failure with an error, never a panic; tests may unwrap.
#![warn(clippy::unwrap_used)]

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions::cookie::SameSite;
use tower_sessions::service::SessionManagerLayer;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error as StoreError, Result as StoreResult};
use tower_sessions::{Expiry, SessionStore};
use webcache_core::{Cache, Timeout};

/// The key prefix of session entries: `webcache.sessions.<id>`.
pub const KEY_PREFIX: &str = "webcache.sessions.";

/// The cache key of a session.
pub fn session_key(id: &Id) -> String {
    format!("{KEY_PREFIX}{id}")
}

/// How long to keep a record: until its expiry date.
fn timeout_for(record: &Record) -> Timeout {
    // An already-expired record gives a negative number: `Timeout` reads it as "do not keep".
    Timeout::from((record.expiry_date - OffsetDateTime::now_utc()).as_seconds_f64())
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(backend)`
fn backend(e: webcache_core::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Stores a record under its id only if no other session has that id, choosing new ids on
/// collision. The store's id generator is a CSPRNG, so a retry is astronomically rare; the
/// bound only protects against a broken generator.
async fn create_unique(cache: &Cache, record: &mut Record) -> StoreResult<()> {
    for _ in 0..16 {
        let key = session_key(&record.id);
        if cache
            .add(&key, record, timeout_for(record))
            .await
            .map_err(backend)?
        {
            return Ok(());
        }
        if !cache.has_key(&key).await.map_err(backend)? {
            // `add` refused although nothing is stored: a cache in degrade mode whose backend
            // is down. The request is served; the session is simply not kept.
            tracing::warn!(
                alias = cache.alias(),
                "session not stored: the cache is unavailable"
            );
            return Ok(());
        }
        record.id = Id::default();
    }
    Err(StoreError::Backend(
        "could not find an unused session id after 16 tries".into(),
    ))
}

fn is_live(record: &Record) -> bool {
    record.expiry_date > OffsetDateTime::now_utc()
}

/// The `cache` engine: session records in a webcache alias.
#[derive(Debug, Clone)]
pub struct CacheStore {
    cache: Cache,
}

impl CacheStore {
    /// Sessions in `cache` (for example the `sessions` alias of your `Caches`).
    pub fn new(cache: Cache) -> Self {
        CacheStore { cache }
    }

    /// The cache holding the sessions.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

#[async_trait]
impl SessionStore for CacheStore {
    async fn create(&self, record: &mut Record) -> StoreResult<()> {
        create_unique(&self.cache, record).await
    }

    async fn save(&self, record: &Record) -> StoreResult<()> {
        self.cache
            .set(&session_key(&record.id), record, timeout_for(record))
            .await
            .map_err(backend)
    }

    async fn load(&self, id: &Id) -> StoreResult<Option<Record>> {
        // A corrupt entry is a miss (and a warning) in `Cache::get`: the client gets a new,
        // empty session instead of an error page.
        let record: Option<Record> = self.cache.get(&session_key(id)).await.map_err(backend)?;
        Ok(record.filter(is_live))
    }

    async fn delete(&self, id: &Id) -> StoreResult<()> {
        self.cache
            .delete(&session_key(id))
            .await
            .map(drop)
            .map_err(backend)
    }
}

/// The `cached_db` engine: a durable store (the database) with a cache in front.
///
/// `database` is a cache alias over a durable backend, normally the SQL backend
/// (`sqlite:///var/lib/app/sessions.db`, `postgres://...`): every write goes there first, then
/// to `cache`; reads try `cache` and fall back to `database`, refilling the cache.
#[derive(Debug, Clone)]
pub struct CachedDbStore {
    cache: Cache,
    database: Cache,
}

impl CachedDbStore {
    /// Sessions in `database`, cached in `cache`.
    pub fn new(cache: Cache, database: Cache) -> Self {
        CachedDbStore { cache, database }
    }

    /// The cache in front.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The durable store behind.
    pub fn database(&self) -> &Cache {
        &self.database
    }

    /// Writes to the cache are best-effort: the database already has the record, so a cache
    /// failure only costs a later database read.
    async fn refresh_cache(&self, record: &Record) {
        if let Err(e) = self
            .cache
            .set(&session_key(&record.id), record, timeout_for(record))
            .await
        {
            tracing::warn!(
                alias = self.cache.alias(),
                "session cache write failed: {e}"
            );
            let _ = self.cache.delete(&session_key(&record.id)).await;
        }
    }
}

#[async_trait]
impl SessionStore for CachedDbStore {
    async fn create(&self, record: &mut Record) -> StoreResult<()> {
        create_unique(&self.database, record).await?;
        self.refresh_cache(record).await;
        Ok(())
    }

    async fn save(&self, record: &Record) -> StoreResult<()> {
        self.database
            .set(&session_key(&record.id), record, timeout_for(record))
            .await
            .map_err(backend)?;
        self.refresh_cache(record).await;
        Ok(())
    }

    async fn load(&self, id: &Id) -> StoreResult<Option<Record>> {
        let key = session_key(id);
        match self.cache.get::<Record>(&key).await {
            Ok(Some(record)) if is_live(&record) => return Ok(Some(record)),
            Ok(_) => {}
            Err(e) => tracing::warn!(alias = self.cache.alias(), "session cache read failed: {e}"),
        }
        let record: Option<Record> = self.database.get(&key).await.map_err(backend)?;
        let record = record.filter(is_live);
        if let Some(record) = &record {
            self.refresh_cache(record).await;
        }
        Ok(record)
    }

    async fn delete(&self, id: &Id) -> StoreResult<()> {
        let key = session_key(id);
        self.database.delete(&key).await.map_err(backend)?;
        self.cache.delete(&key).await.map(drop).map_err(backend)
    }
}

/// When a session expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionExpiry {
    /// When the browser closes (a session cookie); the server keeps the data two weeks at most.
    OnBrowserClose,
    /// After this long without a request (the default: two weeks, as Django).
    OnInactivity(Duration),
    /// At a fixed date and time, whatever the activity.
    AtDateTime(OffsetDateTime),
}

/// Cookie and expiry settings of the session layer.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The cookie's name (`sessionid`, as Django).
    pub cookie_name: String,
    /// When sessions expire.
    pub expiry: SessionExpiry,
    /// Send the cookie over HTTPS only. Off by default so the demo works on plain HTTP; turn it
    /// on in production.
    pub secure: bool,
    /// The cookie's `SameSite` (Lax by default).
    pub same_site: SameSite,
    /// The cookie's `Domain`, if any.
    pub domain: Option<String>,
    /// The cookie's `Path` (`/`).
    pub path: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie_name: "sessionid".to_owned(),
            expiry: SessionExpiry::OnInactivity(Duration::from_secs(14 * 24 * 3600)),
            secure: false,
            same_site: SameSite::Lax,
            domain: None,
            path: "/".to_owned(),
        }
    }
}

impl SessionConfig {
    /// The tower-sessions layer for `store` with these settings. `HttpOnly` is always set:
    /// scripts never need the session id.
    pub fn layer<S: SessionStore + Clone>(&self, store: S) -> SessionManagerLayer<S> {
        let to_time = |d: Duration| time::Duration::try_from(d).unwrap_or(time::Duration::days(14));
        let expiry = match self.expiry {
            SessionExpiry::OnBrowserClose => Expiry::OnSessionEnd,
            SessionExpiry::OnInactivity(d) => Expiry::OnInactivity(to_time(d)),
            SessionExpiry::AtDateTime(at) => Expiry::AtDateTime(at),
        };
        let mut layer = SessionManagerLayer::new(store)
            .with_name(self.cookie_name.clone())
            .with_expiry(expiry)
            .with_secure(self.secure)
            .with_same_site(self.same_site)
            .with_http_only(true)
            .with_path(self.path.clone());
        if let Some(domain) = &self.domain {
            layer = layer.with_domain(domain.clone());
        }
        layer
    }
}
