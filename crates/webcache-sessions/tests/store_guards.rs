//! The two guards of the stores that no backend does for them: a record past its expiry is
//! never loaded, even when the backend still holds it (memcached rounds expiries up; a cache
//! TTL can outlive the session), and the id that replaces a colliding one is as unpredictable
//! as a fresh one. Each test fails if its guard is removed.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use serde_json::json;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::{Session, SessionStore};
use webcache_core::{Cache, Timeout};
use webcache_sessions::{session_key, CacheStore, CachedDbStore, SessionConfig};

fn record(id: Id, owner: &str, expiry_date: OffsetDateTime) -> Record {
    let mut record = Record {
        id,
        data: Default::default(),
        expiry_date,
    };
    record.data.insert("owner".into(), json!(owner));
    record
}

/// Writes `record` straight into `cache` for an hour, whatever its own expiry says: a backend
/// that still holds an expired session.
async fn plant(cache: &Cache, record: &Record) {
    cache
        .set(
            &session_key(&record.id),
            record,
            Timeout::After(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
}

fn an_hour_ago() -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::hours(1)
}

fn in_an_hour() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::hours(1)
}

async fn whoami(session: Session) -> String {
    let owner: Option<String> = session.get("owner").await.unwrap();
    session.insert("seen", true).await.unwrap();
    session.save().await.unwrap();
    format!(
        "{} {}",
        session.id().map(|id| id.to_string()).unwrap_or_default(),
        owner.unwrap_or_default()
    )
}

async fn serve<S: SessionStore + Clone>(store: S) -> String {
    let app = Router::new()
        .route("/whoami", get(whoami))
        .layer(SessionConfig::default().layer(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A client presenting the expired session's id is not given that session back.
async fn not_adopted_over_http<S: SessionStore + Clone>(store: S, expired: &Record) {
    let base = serve(store).await;
    let answer = reqwest::Client::new()
        .get(format!("{base}/whoami"))
        .header("cookie", format!("sessionid={}", expired.id))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (id, owner) = answer.split_once(' ').unwrap();
    assert_ne!(id, expired.id.to_string(), "an expired id was adopted");
    assert_eq!(owner, "", "an expired session's data was served");
}

#[tokio::test]
async fn the_cache_engine_never_loads_an_expired_record_its_backend_still_holds() {
    let cache = Cache::locmem();
    let store = CacheStore::new(cache.clone());
    let expired = record(Id::default(), "alice", an_hour_ago());
    plant(&cache, &expired).await;
    assert!(cache.has_key(&session_key(&expired.id)).await.unwrap());
    assert!(store.load(&expired.id).await.unwrap().is_none());
    not_adopted_over_http(store, &expired).await;
}

#[tokio::test]
async fn the_cached_db_engine_never_loads_an_expired_record_from_either_side() {
    // Expired in the cache, nothing in the database.
    let (cache, database) = (Cache::locmem(), Cache::locmem());
    let store = CachedDbStore::new(cache.clone(), database.clone());
    let expired = record(Id::default(), "alice", an_hour_ago());
    plant(&cache, &expired).await;
    assert!(store.load(&expired.id).await.unwrap().is_none());
    not_adopted_over_http(store, &expired).await;

    // Expired in the database (the cache lost it): not loaded, and not copied to the cache.
    let (cache, database) = (Cache::locmem(), Cache::locmem());
    let store = CachedDbStore::new(cache.clone(), database.clone());
    let expired = record(Id::default(), "alice", an_hour_ago());
    plant(&database, &expired).await;
    assert!(store.load(&expired.id).await.unwrap().is_none());
    assert!(!cache.has_key(&session_key(&expired.id)).await.unwrap());
    not_adopted_over_http(store, &expired).await;

    // Expired in the cache, live in the database (saved again since): the live one wins.
    let (cache, database) = (Cache::locmem(), Cache::locmem());
    let store = CachedDbStore::new(cache.clone(), database.clone());
    let id = Id::default();
    plant(&cache, &record(id, "stale", an_hour_ago())).await;
    plant(&database, &record(id, "alice", in_an_hour())).await;
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.data["owner"], json!("alice"));
}

/// Creates a session whose id collides with one already stored, in a store of its own.
async fn replacement_of<S: SessionStore>(store: &S, taken: Id) -> Id {
    let mut colliding = record(taken, "mallory", in_an_hour());
    store.create(&mut colliding).await.unwrap();
    assert_ne!(colliding.id, taken, "a colliding create keeps its id");
    assert_eq!(
        store.load(&taken).await.unwrap().unwrap().data["owner"],
        json!("alice"),
        "a colliding create overwrote the session it collided with"
    );
    colliding.id
}

#[tokio::test]
async fn the_id_replacing_a_colliding_one_is_unpredictable() {
    // The same taken id in two independent stores: a replacement computed from the old id
    // (old + 1, a hash, ...) would be the same in both; a fresh random one is not.
    let taken = Id::default();
    let mut replacements = Vec::new();
    for engine in ["cache", "cached_db"] {
        for _ in 0..2 {
            let cache = Cache::locmem();
            let existing = record(taken, "alice", in_an_hour());
            match engine {
                "cache" => {
                    let store = CacheStore::new(cache.clone());
                    plant(&cache, &existing).await;
                    replacements.push(replacement_of(&store, taken).await);
                }
                _ => {
                    let database = Cache::locmem();
                    let store = CachedDbStore::new(cache.clone(), database.clone());
                    plant(&database, &existing).await;
                    replacements.push(replacement_of(&store, taken).await);
                }
            }
        }
    }
    let mut distinct = replacements.clone();
    distinct.sort_by_key(|id| id.0);
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        replacements.len(),
        "replacement ids repeat: {replacements:?}"
    );
}
