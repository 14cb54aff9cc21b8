//! Sessions over real HTTP: a cart flow, cookie flags, expiry and every security point, for
//! the `cache` engine and the `cached_db` engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tower_sessions::session::{Id, Record};
use tower_sessions::{Session, SessionStore};
use webcache_core::backends::{LocMem, LocMemConfig};
use webcache_core::{Cache, CacheOptions};
use webcache_sessions::{session_key, CacheStore, CachedDbStore, SessionConfig, SessionExpiry};

#[derive(serde::Deserialize)]
struct Add {
    add: Option<String>,
}

async fn cart(session: Session, Query(q): Query<Add>) -> Json<Value> {
    let mut items: Vec<String> = session.get("items").await.unwrap().unwrap_or_default();
    if let Some(item) = q.add {
        items.push(item);
        session.insert("items", &items).await.unwrap();
    }
    Json(json!({ "items": items }))
}

async fn whoami(session: Session) -> String {
    // Touch the session so it exists, then report its id.
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

async fn serve<S: SessionStore + Clone>(store: S, config: SessionConfig) -> SocketAddr {
    let app = Router::new()
        .route("/cart", get(cart))
        .route("/whoami", get(whoami))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(config.layer(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

fn private_cache() -> Cache {
    Cache::new(
        Arc::new(LocMem::private(LocMemConfig::default())),
        CacheOptions::default(),
    )
}

fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("sessionid="))
}

fn cookie_id(cookie: &str) -> Id {
    let value = cookie
        .trim_start_matches("sessionid=")
        .split(';')
        .next()
        .unwrap();
    value.parse().unwrap()
}

/// The engines under test: (name, store for the layer, cache, database if any).
enum Engine {
    Cache(CacheStore),
    CachedDb(CachedDbStore, Cache, Cache),
}

async fn cart_flow(engine: Engine) {
    let (addr, cache) = match &engine {
        Engine::Cache(store) => (
            serve(store.clone(), SessionConfig::default()).await,
            store.cache().clone(),
        ),
        Engine::CachedDb(store, cache, _) => (
            serve(store.clone(), SessionConfig::default()).await,
            cache.clone(),
        ),
    };
    let http = client();
    let mut id = None;
    for (i, item) in ["apple", "pear", "plum"].iter().enumerate() {
        let resp = http
            .get(format!("http://{addr}/cart?add={item}"))
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
    let body: Value = http
        .get(format!("http://{addr}/cart"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"items": ["apple", "pear", "plum"]}));
    // The data is in the cache under a readable key.
    let record: Record = cache
        .get(&session_key(&id))
        .await
        .unwrap()
        .expect("session in the cache");
    assert_eq!(record.data["items"], json!(["apple", "pear", "plum"]));
    if let Engine::CachedDb(store, cache, database) = &engine {
        // Losing the cache loses no session.
        cache.clear().await.unwrap();
        let body: Value = http
            .get(format!("http://{addr}/cart"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["items"].as_array().unwrap().len(), 3);
        assert!(
            cache.has_key(&session_key(&id)).await.unwrap(),
            "a database read refills the cache"
        );
        // Logout removes it from both.
        http.post(format!("http://{addr}/logout"))
            .send()
            .await
            .unwrap();
        assert!(!cache.has_key(&session_key(&id)).await.unwrap());
        assert!(!database.has_key(&session_key(&id)).await.unwrap());
        assert!(store.load(&id).await.unwrap().is_none());
    } else {
        http.post(format!("http://{addr}/logout"))
            .send()
            .await
            .unwrap();
        assert!(
            !cache.has_key(&session_key(&id)).await.unwrap(),
            "logout deletes the session"
        );
    }
    let body: Value = http
        .get(format!("http://{addr}/cart"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        0,
        "after logout the cart is empty"
    );
}

#[tokio::test]
async fn cart_flow_with_the_cache_engine() {
    cart_flow(Engine::Cache(CacheStore::new(private_cache()))).await;
}

#[tokio::test]
async fn cart_flow_with_the_cached_db_engine() {
    let (cache, database) = (private_cache(), private_cache());
    let store = CachedDbStore::new(cache.clone(), database.clone());
    cart_flow(Engine::CachedDb(store, cache, database)).await;
}

#[tokio::test]
async fn cookie_flags_follow_the_configuration() {
    let store = CacheStore::new(private_cache());
    let addr = serve(store.clone(), SessionConfig::default()).await;
    let resp = client()
        .get(format!("http://{addr}/whoami"))
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(&resp).unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(
        cookie.contains("Max-Age="),
        "inactivity expiry sets a max-age: {cookie}"
    );

    let config = SessionConfig {
        cookie_name: "sessionid".into(),
        secure: true,
        same_site: tower_sessions::cookie::SameSite::Strict,
        domain: Some("example.test".into()),
        expiry: SessionExpiry::OnBrowserClose,
        ..SessionConfig::default()
    };
    let addr = serve(store, config).await;
    let resp = client()
        .get(format!("http://{addr}/whoami"))
        .send()
        .await
        .unwrap();
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

#[tokio::test]
async fn an_invented_id_is_never_adopted() {
    let store = CacheStore::new(private_cache());
    let addr = serve(store.clone(), SessionConfig::default()).await;
    let invented = Id::default();
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/whoami"))
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
    // Garbage in the cookie is no problem either.
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/whoami"))
        .header("cookie", "sessionid=../../etc/passwd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_expired_session_is_not_adopted() {
    let store = CacheStore::new(private_cache());
    let config = SessionConfig {
        expiry: SessionExpiry::OnInactivity(Duration::from_secs(1)),
        ..SessionConfig::default()
    };
    let addr = serve(store.clone(), config).await;
    let http = client();
    let first: String = http
        .get(format!("http://{addr}/whoami"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first_id: Id = first.parse().unwrap();
    assert!(store
        .cache()
        .has_key(&session_key(&first_id))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        !store
            .cache()
            .has_key(&session_key(&first_id))
            .await
            .unwrap(),
        "the entry expires with the session"
    );
    let second = reqwest::Client::new()
        .get(format!("http://{addr}/whoami"))
        .header("cookie", format!("sessionid={first}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_ne!(first, second, "an expired id was adopted");
}

#[tokio::test]
async fn cycling_the_id_keeps_the_data_and_kills_the_old_id() {
    let store = CacheStore::new(private_cache());
    let addr = serve(store.clone(), SessionConfig::default()).await;
    let http = client();
    http.get(format!("http://{addr}/cart?add=book"))
        .send()
        .await
        .unwrap();
    let before: Id = http
        .get(format!("http://{addr}/whoami"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    let after: Id = http
        .post(format!("http://{addr}/login"))
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
    let body: Value = http
        .get(format!("http://{addr}/cart"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"items": ["book"]}), "data survives the new id");
}

#[tokio::test]
async fn creating_a_session_never_overwrites_another() {
    let store = CacheStore::new(private_cache());
    let now = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut existing = Record {
        id: Id::default(),
        data: Default::default(),
        expiry_date: now,
    };
    existing.data.insert("owner".into(), json!("alice"));
    store.create(&mut existing).await.unwrap();
    let mut colliding = Record {
        id: existing.id,
        data: Default::default(),
        expiry_date: now,
    };
    colliding.data.insert("owner".into(), json!("mallory"));
    store.create(&mut colliding).await.unwrap();
    assert_ne!(
        colliding.id, existing.id,
        "a colliding create gets a new id"
    );
    let kept = store.load(&existing.id).await.unwrap().unwrap();
    assert_eq!(kept.data["owner"], json!("alice"));
}

#[tokio::test]
async fn corrupt_session_data_is_an_empty_session() {
    let store = CacheStore::new(private_cache());
    let addr = serve(store.clone(), SessionConfig::default()).await;
    let http = client();
    let id: Id = http
        .get(format!("http://{addr}/whoami"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    let cache = store.cache();
    let key = cache.make_key(&session_key(&id)).unwrap();
    cache
        .backend()
        .set(
            &key,
            webcache_core::bytes::Bytes::from_static(b"\xF5\x01\x01\x00{not json"),
            webcache_core::Expiry::Never,
        )
        .await
        .unwrap();
    let resp = http
        .get(format!("http://{addr}/cart"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"items": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_of_one_session_never_corrupt_it() {
    let store = CacheStore::new(private_cache());
    let addr = serve(store.clone(), SessionConfig::default()).await;
    let http = client();
    let id: Id = http
        .get(format!("http://{addr}/whoami"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let http = http.clone();
            tokio::spawn(async move {
                http.get(format!("http://{addr}/cart?add=item{i}"))
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
    // Last complete write wins: the record is whole and holds a list of items we sent.
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
    for item in items {
        assert!(item.as_str().unwrap().starts_with("item"));
    }
}
