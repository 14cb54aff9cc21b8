//! Cache-backed sessions for axum apps, as Django's `cache` and `cached_db` session engines,
//! plugged into [tower-sessions](https://docs.rs/tower-sessions).
//!
//! Only a random session id travels in the browser's cookie; the session data lives in a
//! webcache alias under a readable key (`webcache.sessions.<id>`; the prefix is
//! [`CacheStore::with_key_prefix`]'s to change), expiring with the session.
//!
//! - [`CacheStore`] (`cache` engine): sessions in any cache alias (locmem, Redis, ...). Losing
//!   the cache loses the sessions, as in Django.
//! - [`CachedDbStore`] (`cached_db` engine): writes go to a durable store first (a cache alias
//!   over the SQL backend: SQLite or PostgreSQL) and then to the cache; reads come from the
//!   cache and fall back to the durable store, refilling the cache. Losing the cache loses no
//!   session.
//! - [`DjangoSessionStore`]: Django's own cache-session records (`sessionid` cookie,
//!   `django.contrib.sessions.cache<key>`), shared with a Django site; see [`django`].
//! - [`SessionConfig`] builds the session layer ([`SessionLayer`]: tower-sessions' manager) with
//!   safe cookie defaults (`HttpOnly` always, `SameSite=Lax`, `Secure` configurable), and tells
//!   any page cache which answers depend on the session (below).
//!
//! An app depends on `webcache` (feature `sessions`) and writes `webcache::sessions::...`;
//! tower-sessions comes re-exported ([`tower_sessions`]), so it needs no second dependency
//! kept at the same version.
//!
//! ```
//! use axum::{routing::get, Router};
//! use webcache::sessions::tower_sessions::Session;
//! use webcache::sessions::{CacheStore, SessionConfig};
//! use webcache::Cache;
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
//! ## With the page cache
//!
//! A page that reads the session (a cart, a greeting by name) must never be served to another
//! user, and the page cache cannot see that from the response alone (tower-sessions adds
//! neither `Vary: Cookie` nor `private`). So the layer of [`SessionConfig::layer`] marks each
//! request with a [`webcache::http::SessionMark`](webcache_http::SessionMark) and each answer
//! with headers:
//!
//! - the handler loaded the request's session from the store (any read of a session whose
//!   cookie the client sent), or changed it: the answer is **personal**: `Cache-Control:
//!   private` and `Vary: Cookie` are added (Django adds only `Vary: Cookie`), and a page cache
//!   inside the session layer passes it through unstored;
//! - the request carries no session cookie: the handler may have read an empty session (an
//!   empty cart), which must not be served to a client that has one: `Vary: Cookie` is added,
//!   so a cache keeps that answer only for requests with the same `Cookie` header;
//! - otherwise (a cookie was sent and the session never read) the answer does not depend on
//!   the session and stays shareable: `/public` is still a hit for everyone.
//!
//! Both orders are safe. With the page cache *outside* the session layer (`.layer(session)`
//! then `.layer(page_cache)`, axum's last `.layer` being the outermost), it sees `private`,
//! `Vary: Cookie` and `Set-Cookie` and stores nothing personal. With the page cache *inside*
//! (the other order, where it never sees the session's `Set-Cookie`), it reads the mark from
//! the request. The limits: a session read in a task the handler spawns is not seen (its
//! writes are), and a session read by another layer (not the handler) is not seen.
//!
//! ```
//! use axum::{routing::get, Router};
//! use webcache::http::CachePageLayer;
//! use webcache::sessions::tower_sessions::Session;
//! use webcache::sessions::{CacheStore, SessionConfig};
//! use webcache::Cache;
//!
//! async fn cart(session: Session) -> String {
//!     let items: Vec<String> = session.get("items").await.ok().flatten().unwrap_or_default();
//!     items.join(", ") // personal: `private`, never stored
//! }
//! async fn public() -> &'static str {
//!     "the same for everyone" // stored once, a hit for every client
//! }
//!
//! let app: Router = Router::new()
//!     .route("/cart", get(cart))
//!     .route("/public", get(public))
//!     .layer(SessionConfig::default().layer(CacheStore::new(Cache::locmem())))
//!     // The site-wide page cache, outermost (the other order is safe too).
//!     .layer(CachePageLayer::new(Cache::locmem()));
//! ```
//!
//! ## Expiry of sessions that are only read
//!
//! tower-sessions moves an `OnInactivity` expiry only when the session is written. Here a
//! session that is read but not changed is touched (saved with a new expiry, and a new cookie)
//! at most once per [`SessionConfig::touch_interval`] (one minute by default), so an active
//! visitor who only reads stays logged in and an idle one is logged out on time.
//!
//! ## Log out everywhere
//!
//! [`CacheStore::log_in`] (or [`CachedDbStore::log_in`]) ties a session to a user;
//! [`CacheStore::end_user_sessions`] ends every session of that user at once, in every process
//! that shares the cache. The design holds on every backend: each user has a *generation* (one
//! cache entry holding a random number); a session records the generation it was logged in
//! with, and a load refuses a session whose generation is no longer the user's. Ending the
//! sessions writes a new generation: one `set`, no atomic counter, no list of ids to keep in
//! step, no key scan. If the generation entry is lost (evicted, cache cleared), the user's
//! sessions end too: the safe side. The `cached_db` engine keeps generations in the database.
//!
//! ```
//! # async fn demo() {
//! use axum::{routing::post, Router};
//! use webcache::sessions::{tower_sessions::Session, CacheStore, SessionConfig};
//!
//! let store = CacheStore::new(webcache::Cache::locmem());
//! let login = {
//!     let store = store.clone();
//!     move |session: Session| async move {
//!         // ... after checking the password:
//!         store.log_in(&session, "user-42").await.is_ok().to_string()
//!     }
//! };
//! let everywhere = {
//!     let store = store.clone();
//!     move || async move { store.end_user_sessions("user-42").await.is_ok().to_string() }
//! };
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/logout-everywhere", post(everywhere))
//!     .layer(SessionConfig::default().layer(store));
//! # }
//! ```
//!
//! ## Security properties
//!
//! Each tested: ids come from tower-sessions' CSPRNG (128 bits); creating a session never
//! overwrites another one (`add`, retried on collision with a fresh random id, never one
//! derived from the colliding id); an id the client invents, or one that expired, is never
//! adopted (also when the backend still holds the expired record: the expiry is checked on
//! every load); `cycle_id` keeps the data and the old id stops working; a deleted session is
//! gone from cache and database; corrupt session data is an empty session and a warning, not
//! a 500; a page that read the session is never served to another client.
#![forbid(unsafe_code)]
// Library code answers every failure with an error, never a panic; tests may unwrap.
#![warn(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, Request, Response};
use time::OffsetDateTime;
use tower_layer::Layer;
use tower_service::Service;
use tower_sessions::cookie::SameSite;
use tower_sessions::service::SessionManagerLayer;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error as StoreError, Result as StoreResult};
use tower_sessions::{Expiry, Session, SessionStore};
use webcache_core::{Cache, Timeout};
use webcache_http::headers::{patch_cache_control, patch_vary_headers, CacheControlPatch};
use webcache_http::SessionMark;

pub mod django;
mod users;
pub use django::DjangoSessionStore;
/// tower-sessions itself (`Session`, `SessionStore`, `Expiry`, ...), at the version these
/// stores implement, so that an app needs no second dependency to keep in step.
pub use tower_sessions;
pub use users::{UserSessionError, USER_FIELD};

/// The default key prefix of session entries: `webcache.sessions.<id>`
/// ([`CacheStore::with_key_prefix`] changes it).
pub const KEY_PREFIX: &str = "webcache.sessions.";

/// The cache key of a session under the default [`KEY_PREFIX`].
pub fn session_key(id: &Id) -> String {
    format!("{KEY_PREFIX}{id}")
}

/// The keys a store writes: `<prefix><id>` for a session, `<prefix>user.<user>` for the
/// generation of a user's sessions (see [`CacheStore::end_user_sessions`]). A session id is
/// URL-safe base64, which has no `.`, so the two can never meet.
#[derive(Debug, Clone)]
struct Keys {
    prefix: Arc<str>,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            prefix: KEY_PREFIX.into(),
        }
    }
}

impl Keys {
    fn session(&self, id: &Id) -> String {
        format!("{}{id}", self.prefix)
    }

    fn user_generation(&self, user: &str) -> String {
        format!("{}user.{user}", self.prefix)
    }
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
async fn create_unique(cache: &Cache, keys: &Keys, record: &mut Record) -> StoreResult<()> {
    for _ in 0..16 {
        let key = keys.session(&record.id);
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
    keys: Keys,
}

impl CacheStore {
    /// Sessions in `cache` (for example the `sessions` alias of your `Caches`), under the
    /// default [`KEY_PREFIX`].
    pub fn new(cache: Cache) -> Self {
        CacheStore {
            cache,
            keys: Keys::default(),
        }
    }

    /// The same store with its entries under `prefix` (`<prefix><id>`) instead of
    /// [`KEY_PREFIX`]: for two apps sharing one cache, or a rename. The cache's own
    /// `key_prefix` and version still apply on top.
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: &str) -> Self {
        self.keys.prefix = prefix.into();
        self
    }

    /// The cache holding the sessions.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The cache key of the session `id` in this store (before the cache's own prefix).
    pub fn key_for(&self, id: &Id) -> String {
        self.keys.session(id)
    }

    fn generations(&self) -> users::Generations<'_> {
        users::Generations {
            cache: &self.cache,
            durable: None,
            keys: &self.keys,
        }
    }

    /// Logs `session` in as `user`: a new session id (against session fixation, as Django's
    /// `login`), and the session tied to the user's current generation so that
    /// [`end_user_sessions`](Self::end_user_sessions) can end it. `user` is any stable
    /// identifier (a user id).
    pub async fn log_in(&self, session: &Session, user: &str) -> Result<(), UserSessionError> {
        users::log_in(&self.generations(), session, user).await
    }

    /// Ends every session logged in as `user` with [`log_in`](Self::log_in), in every process
    /// that shares this cache ("log out everywhere"); see [`users`](crate#log-out-everywhere).
    pub async fn end_user_sessions(&self, user: &str) -> Result<(), UserSessionError> {
        self.generations().end(user).await
    }
}

#[async_trait]
impl SessionStore for CacheStore {
    async fn create(&self, record: &mut Record) -> StoreResult<()> {
        create_unique(&self.cache, &self.keys, record).await
    }

    async fn save(&self, record: &Record) -> StoreResult<()> {
        self.cache
            .set(&self.keys.session(&record.id), record, timeout_for(record))
            .await
            .map_err(backend)
    }

    async fn load(&self, id: &Id) -> StoreResult<Option<Record>> {
        // A corrupt entry is a miss (and a warning) in `Cache::get`: the client gets a new,
        // empty session instead of an error page.
        let record: Option<Record> = self
            .cache
            .get(&self.keys.session(id))
            .await
            .map_err(backend)?;
        let Some(record) = record.filter(is_live) else {
            return Ok(None);
        };
        if self.generations().still_valid(&record).await? {
            Ok(Some(record))
        } else {
            let _ = self.delete(id).await;
            Ok(None)
        }
    }

    async fn delete(&self, id: &Id) -> StoreResult<()> {
        self.cache
            .delete(&self.keys.session(id))
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
    keys: Keys,
}

impl CachedDbStore {
    /// Sessions in `database`, cached in `cache`, under the default [`KEY_PREFIX`].
    pub fn new(cache: Cache, database: Cache) -> Self {
        CachedDbStore {
            cache,
            database,
            keys: Keys::default(),
        }
    }

    /// The same store with its entries under `prefix` (in the database and the cache), as
    /// [`CacheStore::with_key_prefix`].
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: &str) -> Self {
        self.keys.prefix = prefix.into();
        self
    }

    /// The key of the session `id` in this store (before the caches' own prefixes).
    pub fn key_for(&self, id: &Id) -> String {
        self.keys.session(id)
    }

    fn generations(&self) -> users::Generations<'_> {
        users::Generations {
            cache: &self.cache,
            durable: Some(&self.database),
            keys: &self.keys,
        }
    }

    /// Logs `session` in as `user`, as [`CacheStore::log_in`]; the user's generation is kept
    /// in the database (and cached), so losing the cache ends no session.
    pub async fn log_in(&self, session: &Session, user: &str) -> Result<(), UserSessionError> {
        users::log_in(&self.generations(), session, user).await
    }

    /// Ends every session of `user`, as [`CacheStore::end_user_sessions`].
    pub async fn end_user_sessions(&self, user: &str) -> Result<(), UserSessionError> {
        self.generations().end(user).await
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
            .set(&self.keys.session(&record.id), record, timeout_for(record))
            .await
        {
            tracing::warn!(
                alias = self.cache.alias(),
                "session cache write failed: {e}"
            );
            let _ = self.cache.delete(&self.keys.session(&record.id)).await;
        }
    }
}

#[async_trait]
impl SessionStore for CachedDbStore {
    async fn create(&self, record: &mut Record) -> StoreResult<()> {
        create_unique(&self.database, &self.keys, record).await?;
        self.refresh_cache(record).await;
        Ok(())
    }

    async fn save(&self, record: &Record) -> StoreResult<()> {
        self.database
            .set(&self.keys.session(&record.id), record, timeout_for(record))
            .await
            .map_err(backend)?;
        self.refresh_cache(record).await;
        Ok(())
    }

    async fn load(&self, id: &Id) -> StoreResult<Option<Record>> {
        let key = self.keys.session(id);
        let cached = match self.cache.get::<Record>(&key).await {
            Ok(Some(record)) if is_live(&record) => Some(record),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(alias = self.cache.alias(), "session cache read failed: {e}");
                None
            }
        };
        let record = match cached {
            Some(record) => record,
            None => {
                let record: Option<Record> = self.database.get(&key).await.map_err(backend)?;
                let Some(record) = record.filter(is_live) else {
                    return Ok(None);
                };
                self.refresh_cache(&record).await;
                record
            }
        };
        if self.generations().still_valid(&record).await? {
            Ok(Some(record))
        } else {
            let _ = self.delete(id).await;
            Ok(None)
        }
    }

    async fn delete(&self, id: &Id) -> StoreResult<()> {
        let key = self.keys.session(id);
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

/// Cookie and expiry settings of the session layer: the defaults, changed with the setters of
/// the same names (`#[non_exhaustive]`, so a setting added later breaks no caller).
///
/// ```
/// use webcache_sessions::{SessionConfig, SessionExpiry};
/// let config = SessionConfig::default()
///     .secure(true)
///     .domain("example.com")
///     .expiry(SessionExpiry::OnBrowserClose);
/// assert_eq!(config.domain.as_deref(), Some("example.com"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// With [`SessionExpiry::OnInactivity`], how often a session that is only read (never
    /// changed) has its expiry moved: tower-sessions moves it only on writes, so a visitor who
    /// only reads would be logged out after the inactivity period however active. A read
    /// touches the session (one store write, and a fresh cookie) when its last touch is at
    /// least this old, or half the inactivity period if that is shorter; one minute by default.
    /// `Duration::ZERO` touches on every read (Django's `SESSION_SAVE_EVERY_REQUEST`).
    pub touch_interval: Duration,
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
            touch_interval: Duration::from_secs(60),
        }
    }
}

impl SessionConfig {
    /// Sets `cookie_name`.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// Sets `expiry`.
    pub fn expiry(mut self, expiry: SessionExpiry) -> Self {
        self.expiry = expiry;
        self
    }

    /// Sets `secure`.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Sets `same_site`.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Sets `domain`: the cookie's `Domain` (without one, the cookie is the request host's).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Sets `path`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets `touch_interval`: how often a session that is only read gets a new expiry.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = interval;
        self
    }

    /// The session layer for `store` with these settings: tower-sessions' manager, with the
    /// marks that keep a page cache from sharing a personal answer (see the
    /// [crate docs](crate#with-the-page-cache)). `HttpOnly` is always set: scripts never need
    /// the session id.
    pub fn layer<S: SessionStore + Clone>(&self, store: S) -> SessionLayer<S> {
        let to_time = |d: Duration| time::Duration::try_from(d).unwrap_or(time::Duration::days(14));
        let expiry = match self.expiry {
            SessionExpiry::OnBrowserClose => Expiry::OnSessionEnd,
            SessionExpiry::OnInactivity(d) => Expiry::OnInactivity(to_time(d)),
            SessionExpiry::AtDateTime(at) => Expiry::AtDateTime(at),
        };
        let mut layer = SessionManagerLayer::new(TrackedStore(store))
            .with_name(self.cookie_name.clone())
            .with_expiry(expiry)
            .with_secure(self.secure)
            .with_same_site(self.same_site)
            .with_http_only(true)
            .with_path(self.path.clone());
        if let Some(domain) = &self.domain {
            layer = layer.with_domain(domain.clone());
        }
        SessionLayer {
            manager: layer,
            touch_interval: self.touch_interval,
        }
    }
}

/// What the store tells the service around the handler about the request being handled.
#[derive(Debug, Clone, Default)]
struct Handling {
    /// Set when the request's session is loaded or deleted: the answer is personal.
    mark: SessionMark,
    /// The expiry date of the record as it was loaded: how long ago it was last touched.
    loaded_expiry: Arc<Mutex<Option<OffsetDateTime>>>,
}

tokio::task_local! {
    /// The request whose handler is running (set around the handler by [`MarkSession`]), so
    /// that the store can tell it its session was loaded.
    static HANDLING: Handling;
}

/// The session layer built by [`SessionConfig::layer`]: tower-sessions' `SessionManagerLayer`
/// around [`MarkSession`], which tells a page cache which answers depend on the session.
#[derive(Debug, Clone)]
pub struct SessionLayer<S: SessionStore> {
    manager: SessionManagerLayer<TrackedStore<S>>,
    touch_interval: Duration,
}

impl<Inner, S: SessionStore + Clone> Layer<Inner> for SessionLayer<S> {
    type Service = <SessionManagerLayer<TrackedStore<S>> as Layer<MarkSession<Inner>>>::Service;

    fn layer(&self, inner: Inner) -> Self::Service {
        self.manager.layer(MarkSession {
            inner,
            touch_interval: self.touch_interval,
        })
    }
}

/// A store as the session layer uses it: the same store, except that loading a session while
/// a handler runs marks that request's answer personal.
#[derive(Debug, Clone)]
pub struct TrackedStore<S>(S);

#[async_trait]
impl<S: SessionStore> SessionStore for TrackedStore<S> {
    async fn create(&self, record: &mut Record) -> StoreResult<()> {
        self.0.create(record).await
    }

    async fn save(&self, record: &Record) -> StoreResult<()> {
        self.0.save(record).await
    }

    async fn load(&self, id: &Id) -> StoreResult<Option<Record>> {
        // Outside a handler (the manager's own calls after the answer) there is no mark.
        let _ = HANDLING.try_with(|h| h.mark.set_personal());
        let record = self.0.load(id).await?;
        if let Some(record) = &record {
            let _ = HANDLING.try_with(|h| {
                *h.loaded_expiry
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(record.expiry_date);
            });
        }
        Ok(record)
    }

    async fn delete(&self, id: &Id) -> StoreResult<()> {
        let _ = HANDLING.try_with(|h| h.mark.set_personal());
        self.0.delete(id).await
    }
}

/// The service between the session manager and the handler: puts a [`SessionMark`] in the
/// request, sets it from what the handler did with the session, and marks the answer
/// (`Vary: Cookie`, and `Cache-Control: private` when personal).
#[derive(Debug, Clone)]
pub struct MarkSession<S> {
    inner: S,
    touch_interval: Duration,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MarkSession<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready is the one to call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mark = req
            .extensions()
            .get::<SessionMark>()
            .cloned()
            .unwrap_or_default();
        req.extensions_mut().insert(mark.clone());
        let session = req.extensions().get::<Session>().cloned();
        // No (valid) session cookie: the handler sees an empty session without the store
        // being asked, so a read cannot be seen; the answer is kept apart from clients with a
        // cookie.
        if session.as_ref().is_none_or(|s| s.id().is_none()) {
            mark.set_varies_on_cookie();
        }
        let handling = Handling {
            mark: mark.clone(),
            loaded_expiry: Arc::default(),
        };
        let loaded_expiry = handling.loaded_expiry.clone();
        let call = HANDLING.scope(handling, inner.call(req));
        let touch_interval = self.touch_interval;
        Box::pin(async move {
            let mut response = call.await?;
            if let Some(session) = session {
                if session.is_modified() {
                    mark.set_personal();
                } else {
                    let loaded = *loaded_expiry.lock().unwrap_or_else(PoisonError::into_inner);
                    touch_if_due(&session, loaded, touch_interval);
                }
            }
            mark_response(&mark, response.headers_mut());
            Ok(response)
        })
    }
}

/// Moves the expiry of a session that was read but not changed when its last touch is due:
/// marking it modified (without changing its data) makes the manager save it with a fresh
/// expiry date and send a fresh cookie, whose `Max-Age` would otherwise run out too.
fn touch_if_due(session: &Session, loaded_expiry: Option<OffsetDateTime>, interval: Duration) {
    let (Some(Expiry::OnInactivity(inactivity)), Some(expires)) = (session.expiry(), loaded_expiry)
    else {
        return;
    };
    let interval = time::Duration::try_from(interval)
        .unwrap_or(time::Duration::MAX)
        .min(inactivity / 2);
    let last_touch = expires - inactivity;
    if OffsetDateTime::now_utc() - last_touch >= interval {
        session.set_expiry(session.expiry());
    }
}

/// What a mark means on the answer, for caches that only see headers (a page cache outside
/// the session layer, a CDN, the browser's shared proxies).
fn mark_response(mark: &SessionMark, headers: &mut HeaderMap) {
    if mark.varies_on_cookie() {
        patch_vary_headers(headers, &["Cookie"]);
    }
    if mark.is_personal() {
        patch_cache_control(headers, &CacheControlPatch::new().private());
    }
}
