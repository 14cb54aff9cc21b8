//! The three ways to cache in an axum app, plus a session, on one cache alias.
//!
//! ```text
//! cargo run -p webcache --features full --example axum_app
//! curl -i http://127.0.0.1:3000/report      # low-level API: computed once per 60 s
//! curl -i http://127.0.0.1:3000/page        # page-cache layer: x-cache: MISS, then HIT
//! curl -c jar -b jar http://127.0.0.1:3000/visits
//! ```
//!
//! `WEBCACHE_URL=redis://127.0.0.1:6379/0` moves everything onto Redis without a code change.

use std::time::Duration;

use axum::extract::State;
use axum::handler::Handler;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::Router;
use webcache::http::cache_page;
use webcache::sessions::{CacheStore, SessionConfig};
use webcache::{Cache, Caches};

async fn slow_report() -> String {
    tokio::time::sleep(Duration::from_millis(500)).await;
    format!("report computed at {:?}\n", std::time::SystemTime::now())
}

/// The low-level API: one computation per key, even under concurrent misses. A cache error
/// is an answer of its own (feature `axum`: 503 when the backend is down, never the key).
async fn report(State(cache): State<Cache>) -> Result<String, webcache::Error> {
    cache.get_or_set_with("report", 60, slow_report).await
}

async fn page() -> String {
    slow_report().await
}

async fn visits(session: webcache::sessions::tower_sessions::Session) -> String {
    let n: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
    let _ = session.insert("visits", n).await;
    format!("{n} visits\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let caches = Caches::from_env_or("locmem://").await?;
    let cache = caches.default_cache().clone();
    let app = Router::new()
        .route("/report", get(report))
        .route("/page", get(page.layer(cache_page(cache.clone(), 60))))
        .route("/visits", get(visits))
        .layer(SessionConfig::default().layer(CacheStore::new(cache.clone())))
        .with_state(cache);
    // TCP_NODELAY: answers are not held back by Nagle's algorithm (see webcache-http's README).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await?;
    Ok(())
}
