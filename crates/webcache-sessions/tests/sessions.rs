//! Sessions over real HTTP: a cart flow, cookie flags, expiry and every security point, for
//! the `cache` engine on locmem and Redis and the `cached_db` engine over SQLite and PostgreSQL,
//! all real (the tests start redis-server and PostgreSQL on free loopback ports).

mod common;
use common::cart;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::Result as StoreResult;
use tower_sessions::{Session, SessionStore};
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::{Cache, CacheOptions};
use webcache_sessions::{session_key, CacheStore, CachedDbStore, SessionConfig, SessionExpiry};
use webcache_testkit::servers::{postgres::Postgres, redis::RedisServer, scratch_dir};

// ----- the app under test ------------------------------------------------------------------

async fn whoami(session: Session) -> String {
    session.insert("seen", true).await.unwrap();
    session.save().await.unwrap();
    session.id().map(|id| id.to_string()).unwrap_or_default()
}

async fn login(session: Session) -> String {
    session.cycle_id().await.unwrap();
    session.save().await.unwrap();
    session.id().map(|id| id.to_string()).unwrap_or_default()
}

async fn logout(session: Session) {
    session.flush().await.unwrap();
}

async fn serve(store: Store, config: SessionConfig) -> String {
    let app = Router::new()
        .route("/cart", get(cart))
        .route("/whoami", get(whoami))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(config.layer(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("sessionid="))
}

fn cookie_id(cookie: &str) -> Id {
    cookie
        .trim_start_matches("sessionid=")
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn text(http: &reqwest::Client, url: String) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

async fn json_of(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

// ----- the engines -------------------------------------------------------------------------

/// Either engine, so that one test body runs against every backend.
#[derive(Debug, Clone)]
enum Store {
    Cache(CacheStore),
    CachedDb(CachedDbStore),
}

impl Store {
    fn cache(&self) -> &Cache {
        match self {
            Store::Cache(s) => s.cache(),
            Store::CachedDb(s) => s.cache(),
        }
    }

    fn database(&self) -> Option<&Cache> {
        match self {
            Store::Cache(_) => None,
            Store::CachedDb(s) => Some(s.database()),
        }
    }

    fn with_key_prefix(self, prefix: &str) -> Store {
        match self {
            Store::Cache(s) => Store::Cache(s.with_key_prefix(prefix)),
            Store::CachedDb(s) => Store::CachedDb(s.with_key_prefix(prefix)),
        }
    }

    fn key_for(&self, id: &Id) -> String {
        match self {
            Store::Cache(s) => s.key_for(id),
            Store::CachedDb(s) => s.key_for(id),
        }
    }

    async fn log_in(&self, session: &Session, user: &str) {
        match self {
            Store::Cache(s) => s.log_in(session, user).await.unwrap(),
            Store::CachedDb(s) => s.log_in(session, user).await.unwrap(),
        }
    }

    async fn end_user_sessions(&self, user: &str) {
        match self {
            Store::Cache(s) => s.end_user_sessions(user).await.unwrap(),
            Store::CachedDb(s) => s.end_user_sessions(user).await.unwrap(),
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for Store {
    async fn create(&self, record: &mut Record) -> StoreResult<()> {
        match self {
            Store::Cache(s) => s.create(record).await,
            Store::CachedDb(s) => s.create(record).await,
        }
    }
    async fn save(&self, record: &Record) -> StoreResult<()> {
        match self {
            Store::Cache(s) => s.save(record).await,
            Store::CachedDb(s) => s.save(record).await,
        }
    }
    async fn load(&self, id: &Id) -> StoreResult<Option<Record>> {
        match self {
            Store::Cache(s) => s.load(id).await,
            Store::CachedDb(s) => s.load(id).await,
        }
    }
    async fn delete(&self, id: &Id) -> StoreResult<()> {
        match self {
            Store::Cache(s) => s.delete(id).await,
            Store::CachedDb(s) => s.delete(id).await,
        }
    }
}

fn unique_options() -> CacheOptions {
    CacheOptions::builder()
        .key_prefix(format!("s{:08x}", rand_u32()))
        .build()
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish() as u32
}

fn locmem() -> Cache {
    Cache::new(
        Arc::new(LocMemBackend::private(LocMemConfig::default())),
        unique_options(),
    )
}

async fn cache_from(url: &str) -> Cache {
    let mut config = webcache_core::config::CacheConfig::from_url("sessions", url).unwrap();
    let backend = webcache::build_backend(&mut config.backend).await.unwrap();
    Cache::new(backend, unique_options())
}

async fn redis() -> Cache {
    cache_from(&RedisServer::shared().url(0)).await
}

async fn sqlite() -> Cache {
    let dir = scratch_dir("sessions-sqlite");
    cache_from(&format!(
        "sqlite://{}/sessions.db?create_table=true",
        dir.display()
    ))
    .await
}

async fn postgres() -> Cache {
    cache_from(&format!(
        "{}?table=sessions&create_table=true",
        Postgres::shared().url()
    ))
    .await
}

async fn store(kind: &str) -> Store {
    match kind {
        "locmem" => Store::Cache(CacheStore::new(locmem())),
        "redis" => Store::Cache(CacheStore::new(redis().await)),
        "cached_db_sqlite" => Store::CachedDb(CachedDbStore::new(locmem(), sqlite().await)),
        "cached_db_postgres" => {
            Store::CachedDb(CachedDbStore::new(redis().await, postgres().await))
        }
        other => panic!("unknown engine {other}"),
    }
}

// ----- the cases, each run against every engine ---------------------------------------------

async fn cart_flow(store: Store) {
    let base = serve(store.clone(), SessionConfig::default()).await;
    let http = client();
    let mut id = None;
    for (i, item) in ["apple", "pear", "plum"].iter().enumerate() {
        let resp = http
            .get(format!("{base}/cart?add={item}"))
            .send()
            .await
            .unwrap();
        if let Some(cookie) = session_cookie(&resp) {
            assert!(
                !cookie.contains("apple") && !cookie.contains("pear"),
                "the cookie carries only the id: {cookie}"
            );
            id = Some(cookie_id(&cookie));
        }
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["items"].as_array().unwrap().len(), i + 1);
    }
    let id = id.expect("a session cookie was set");
    assert_eq!(
        json_of(&http, format!("{base}/cart")).await,
        json!({"items": ["apple", "pear", "plum"]})
    );
    let cache = store.cache();
    let record: Record = cache
        .get(&session_key(&id))
        .await
        .unwrap()
        .expect("session in the cache");
    assert_eq!(record.data["items"], json!(["apple", "pear", "plum"]));
    if let Some(database) = store.database() {
        // Losing the cache loses no session, and a database read refills the cache.
        cache.clear().await.unwrap();
        assert_eq!(
            json_of(&http, format!("{base}/cart")).await["items"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert!(cache.has_key(&session_key(&id)).await.unwrap());
        assert!(database.has_key(&session_key(&id)).await.unwrap());
    }
    // Logout deletes the session everywhere.
    http.post(format!("{base}/logout")).send().await.unwrap();
    assert!(!cache.has_key(&session_key(&id)).await.unwrap());
    if let Some(database) = store.database() {
        assert!(!database.has_key(&session_key(&id)).await.unwrap());
    }
    assert!(store.load(&id).await.unwrap().is_none());
    assert_eq!(
        json_of(&http, format!("{base}/cart")).await,
        json!({"items": []})
    );
}

async fn cookie_flags(store: Store) {
    let base = serve(store.clone(), SessionConfig::default()).await;
    let resp = client().get(format!("{base}/whoami")).send().await.unwrap();
    let cookie = session_cookie(&resp).unwrap();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    let config = SessionConfig::default()
        .secure(true)
        .same_site(tower_sessions::cookie::SameSite::Strict)
        .domain("example.test")
        .expiry(SessionExpiry::OnBrowserClose);
    let base = serve(store, config).await;
    let resp = client().get(format!("{base}/whoami")).send().await.unwrap();
    let cookie = session_cookie(&resp).unwrap();
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Domain=example.test",
    ] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "a browser-session cookie: {cookie}"
    );
}

async fn invented_id_is_never_adopted(store: Store) {
    let base = serve(store.clone(), SessionConfig::default()).await;
    let invented = Id::default();
    let resp = reqwest::Client::new()
        .get(format!("{base}/whoami"))
        .header("cookie", format!("sessionid={invented}"))
        .send()
        .await
        .unwrap();
    let issued = cookie_id(&session_cookie(&resp).unwrap());
    assert_ne!(issued, invented);
    assert_eq!(resp.text().await.unwrap(), issued.to_string());
    assert!(!store
        .cache()
        .has_key(&session_key(&invented))
        .await
        .unwrap());
    if let Some(database) = store.database() {
        assert!(!database.has_key(&session_key(&invented)).await.unwrap());
    }
    let resp = reqwest::Client::new()
        .get(format!("{base}/whoami"))
        .header("cookie", "sessionid=../../etc/passwd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn expired_session_is_not_adopted(store: Store) {
    let config =
        SessionConfig::default().expiry(SessionExpiry::OnInactivity(Duration::from_secs(1)));
    let base = serve(store.clone(), config).await;
    let first = text(&client(), format!("{base}/whoami")).await;
    let first_id: Id = first.parse().unwrap();
    assert!(store
        .cache()
        .has_key(&session_key(&first_id))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        !store
            .cache()
            .has_key(&session_key(&first_id))
            .await
            .unwrap(),
        "the entry expires with the session"
    );
    if let Some(database) = store.database() {
        assert!(
            !database.has_key(&session_key(&first_id)).await.unwrap(),
            "the row expires too"
        );
    }
    let second = reqwest::Client::new()
        .get(format!("{base}/whoami"))
        .header("cookie", format!("sessionid={first}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_ne!(first, second, "an expired id was adopted");
}

async fn cycling_the_id_keeps_data_and_kills_the_old_id(store: Store) {
    let base = serve(store.clone(), SessionConfig::default()).await;
    let http = client();
    http.get(format!("{base}/cart?add=book"))
        .send()
        .await
        .unwrap();
    let before: Id = text(&http, format!("{base}/whoami")).await.parse().unwrap();
    let after: Id = http
        .post(format!("{base}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(before, after);
    assert!(
        store.load(&before).await.unwrap().is_none(),
        "the old id stops working"
    );
    assert_eq!(
        json_of(&http, format!("{base}/cart")).await,
        json!({"items": ["book"]})
    );
}

async fn create_never_overwrites(store: Store) {
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut existing = Record {
        id: Id::default(),
        data: Default::default(),
        expiry_date: later,
    };
    existing.data.insert("owner".into(), json!("alice"));
    store.create(&mut existing).await.unwrap();
    let mut colliding = Record {
        id: existing.id,
        data: Default::default(),
        expiry_date: later,
    };
    colliding.data.insert("owner".into(), json!("mallory"));
    store.create(&mut colliding).await.unwrap();
    assert_ne!(
        colliding.id, existing.id,
        "a colliding create gets a new id"
    );
    assert_eq!(
        store.load(&existing.id).await.unwrap().unwrap().data["owner"],
        json!("alice")
    );
    assert_eq!(
        store.load(&colliding.id).await.unwrap().unwrap().data["owner"],
        json!("mallory")
    );
}

async fn corrupt_data_is_an_empty_session(store: Store) {
    let base = serve(store.clone(), SessionConfig::default()).await;
    let http = client();
    let id: Id = text(&http, format!("{base}/whoami")).await.parse().unwrap();
    let garbage = webcache_core::bytes::Bytes::from_static(b"\xF5\x01\x01\x00{not json");
    for cache in std::iter::once(store.cache()).chain(store.database()) {
        let key = cache.make_key(&session_key(&id)).unwrap();
        cache
            .backend()
            .set(&key, garbage.clone(), webcache_core::Expiry::Never)
            .await
            .unwrap();
    }
    let resp = http.get(format!("{base}/cart")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "corrupt session data is not a 500");
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"items": []}));
}

async fn concurrent_requests_never_corrupt(store: Store) {
    let base = serve(store.clone(), SessionConfig::default()).await;
    let http = client();
    let id: Id = text(&http, format!("{base}/whoami")).await.parse().unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                http.get(format!("{base}/cart?add=item{i}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Last complete write wins: the record is whole and holds items we sent; loads racing
    // saves never returned garbage (every request above answered 200 with a list).
    let record = store
        .load(&id)
        .await
        .unwrap()
        .expect("the session survives");
    let items = record.data["items"]
        .as_array()
        .expect("items is a list")
        .clone();
    assert!(!items.is_empty());
    assert!(items
        .iter()
        .all(|i| i.as_str().unwrap().starts_with("item")));
}

/// The app of the user cases: `/cart`, `/whoami`, `POST /login-as/USER` (through
/// `log_in`) and `POST /end/USER` (`end_user_sessions`), served by two "processes" (two
/// layers over two store values sharing the cache) to show that one process's logout ends the
/// other's sessions.
async fn serve_users(store: Store, config: SessionConfig) -> String {
    use axum::extract::Path;
    let login_store = store.clone();
    let end_store = store.clone();
    let app = Router::new()
        .route("/cart", get(cart))
        .route("/whoami", get(whoami))
        .route(
            "/login-as/{user}",
            post(move |session: Session, Path(user): Path<String>| {
                let store = login_store.clone();
                async move { store.log_in(&session, &user).await }
            }),
        )
        .route(
            "/end/{user}",
            post(move |Path(user): Path<String>| {
                let store = end_store.clone();
                async move { store.end_user_sessions(&user).await }
            }),
        )
        .layer(config.layer(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn log_out_everywhere_ends_every_session_of_one_user(store: Store) {
    let one = serve_users(store.clone(), SessionConfig::default()).await;
    let two = serve_users(store.clone(), SessionConfig::default()).await;
    // Alice on a laptop (process one) and a phone (process two); Bob on process one.
    let (laptop, phone, bob) = (client(), client(), client());
    for (http, base, user) in [
        (&laptop, &one, "alice"),
        (&phone, &two, "alice"),
        (&bob, &one, "bob"),
    ] {
        http.get(format!("{base}/cart?add=tea"))
            .send()
            .await
            .unwrap();
        let resp = http
            .post(format!("{base}/login-as/{user}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let laptop_id: Id = text(&laptop, format!("{one}/whoami"))
        .await
        .parse()
        .unwrap();
    let phone_id: Id = text(&phone, format!("{two}/whoami")).await.parse().unwrap();
    let bob_id: Id = text(&bob, format!("{one}/whoami")).await.parse().unwrap();
    assert_eq!(
        json_of(&phone, format!("{two}/cart")).await,
        json!({"items": ["tea"]})
    );

    // The phone (process two) logs Alice out everywhere.
    let resp = phone.post(format!("{two}/end/alice")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for (http, base, id) in [(&laptop, &one, laptop_id), (&phone, &two, phone_id)] {
        assert_eq!(
            json_of(http, format!("{base}/cart")).await,
            json!({"items": []}),
            "an ended session is an empty one"
        );
        assert!(
            store.load(&id).await.unwrap().is_none(),
            "and is gone from the store"
        );
    }
    // Bob is untouched.
    assert_eq!(
        json_of(&bob, format!("{one}/cart")).await,
        json!({"items": ["tea"]})
    );
    assert!(store.load(&bob_id).await.unwrap().is_some());
    // Alice can log in again, and that new session lives.
    laptop
        .post(format!("{one}/login-as/alice"))
        .send()
        .await
        .unwrap();
    laptop
        .get(format!("{one}/cart?add=jam"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(&laptop, format!("{two}/cart")).await,
        json!({"items": ["jam"]})
    );
}

async fn a_session_that_is_only_read_stays_alive(store: Store) {
    let config = SessionConfig::default()
        .expiry(SessionExpiry::OnInactivity(Duration::from_secs(4)))
        .touch_interval(Duration::from_millis(500));
    let base = serve(store.clone(), config).await;
    let (reader, idle) = (client(), client());
    reader
        .get(format!("{base}/cart?add=pen"))
        .send()
        .await
        .unwrap();
    idle.get(format!("{base}/cart?add=ink"))
        .send()
        .await
        .unwrap();
    let reader_id: Id = text(&reader, format!("{base}/whoami"))
        .await
        .parse()
        .unwrap();
    let idle_id: Id = text(&idle, format!("{base}/whoami")).await.parse().unwrap();
    // Eight seconds of reads only (twice the inactivity expiry), one every 400 ms.
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < until {
        assert_eq!(
            json_of(&reader, format!("{base}/cart")).await,
            json!({"items": ["pen"]}),
            "a session read regularly stays alive"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(store.load(&reader_id).await.unwrap().is_some());
    assert!(
        store.load(&idle_id).await.unwrap().is_none(),
        "a session nobody read expired"
    );
}

async fn a_read_touches_at_most_once_per_interval(store: Store) {
    // The default interval (a minute): reads right after the write do not write again.
    let base = serve(store.clone(), SessionConfig::default()).await;
    let http = client();
    http.get(format!("{base}/cart?add=cup"))
        .send()
        .await
        .unwrap();
    for _ in 0..3 {
        let resp = http.get(format!("{base}/cart")).send().await.unwrap();
        assert_eq!(
            session_cookie(&resp),
            None,
            "an untouched read sends no cookie"
        );
    }
    // `touch_interval: 0`: every read touches (a fresh cookie each time).
    let config = SessionConfig::default().touch_interval(Duration::ZERO);
    let base = serve(store, config).await;
    let http = client();
    http.get(format!("{base}/cart?add=cup"))
        .send()
        .await
        .unwrap();
    let resp = http.get(format!("{base}/cart")).send().await.unwrap();
    assert!(
        session_cookie(&resp).is_some(),
        "a touched read renews the cookie"
    );
}

async fn the_key_prefix_is_configurable(store: Store) {
    let store = store.with_key_prefix("shop.sessions:");
    let base = serve(store.clone(), SessionConfig::default()).await;
    let http = client();
    http.get(format!("{base}/cart?add=hat"))
        .send()
        .await
        .unwrap();
    let id: Id = text(&http, format!("{base}/whoami")).await.parse().unwrap();
    assert_eq!(store.key_for(&id), format!("shop.sessions:{id}"));
    let reference = store.database().unwrap_or(store.cache());
    assert!(reference
        .has_key(&format!("shop.sessions:{id}"))
        .await
        .unwrap());
    assert!(!reference.has_key(&session_key(&id)).await.unwrap());
    assert_eq!(
        json_of(&http, format!("{base}/cart")).await,
        json!({"items": ["hat"]})
    );
}

macro_rules! engines {
    ($($engine:ident),*) => {
        $(
            mod $engine {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cart_flow() { super::cart_flow(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cookie_flags() { super::cookie_flags(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn invented_id_is_never_adopted() { super::invented_id_is_never_adopted(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn expired_session_is_not_adopted() { super::expired_session_is_not_adopted(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cycling_the_id_keeps_data_and_kills_the_old_id() { super::cycling_the_id_keeps_data_and_kills_the_old_id(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn create_never_overwrites() { super::create_never_overwrites(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn corrupt_data_is_an_empty_session() { super::corrupt_data_is_an_empty_session(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn concurrent_requests_never_corrupt() { super::concurrent_requests_never_corrupt(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn log_out_everywhere_ends_every_session_of_one_user() { super::log_out_everywhere_ends_every_session_of_one_user(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_session_that_is_only_read_stays_alive() { super::a_session_that_is_only_read_stays_alive(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_read_touches_at_most_once_per_interval() { super::a_read_touches_at_most_once_per_interval(store(stringify!($engine)).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn the_key_prefix_is_configurable() { super::the_key_prefix_is_configurable(store(stringify!($engine)).await).await }
            }
        )*
    };
}

engines!(locmem, redis, cached_db_sqlite, cached_db_postgres);

#[tokio::test]
async fn a_cache_that_is_down_serves_requests_without_keeping_sessions() {
    let mut config = webcache_core::config::CacheConfig::from_url(
        "sessions",
        "redis://127.0.0.1:1/0?on_error=degrade&connect_timeout=0.2",
    )
    .unwrap();
    let backend = webcache::build_backend(&mut config.backend).await.unwrap();
    let store = Store::Cache(CacheStore::new(Cache::new(backend, config.options)));
    let base = serve(store, SessionConfig::default()).await;
    let http = client();
    for _ in 0..2 {
        let resp = http
            .get(format!("{base}/cart?add=apple"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "a cache outage is not a 500");
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"items": ["apple"]})
        );
    }
}
