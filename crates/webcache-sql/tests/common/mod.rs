//! Fixtures shared by the test binaries: one SQLite file and one PostgreSQL cluster per binary,
//! each with the default cache table created once.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;
use webcache_core::backend::BackendFactory as _;

use tokio::sync::OnceCell;
use webcache_core::backend::Backend;
use webcache_core::config::{BackendSpec, CacheConfig};
use webcache_testkit::servers::postgres::Postgres;
use webcache_testkit::servers::{temp_dir, ServerProcess};

/// The spec of a cache URL.
pub fn spec(url: &str) -> BackendSpec {
    CacheConfig::from_url("default", url).unwrap().backend
}

/// Builds a backend from a URL, panicking with the error.
pub async fn backend(url: &str) -> Arc<dyn Backend> {
    webcache_sql::SqlFactory
        .build(&mut spec(url))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// A table name no other test uses.
pub fn unique_table(stem: &str) -> String {
    format!("{stem}_{:08x}", rand::random::<u32>())
}

/// The URL of this binary's SQLite file (`sqlite:///tmp/.../cache.db`), with the default table
/// created.
pub async fn sqlite_url() -> String {
    static FILE: OnceCell<PathBuf> = OnceCell::const_new();
    let path = FILE
        .get_or_init(|| async {
            let dir = temp_dir("sqlite");
            remove_at_exit(&dir);
            let path = dir.join("cache.db");
            let url = format!("sqlite://{}", path.display());
            webcache_sql::create_cache_table(&mut spec(&url))
                .await
                .unwrap();
            path
        })
        .await;
    format!("sqlite://{}", path.display())
}

/// The URL of this binary's PostgreSQL cluster, with the default table created.
pub async fn postgres_url() -> String {
    static READY: OnceCell<String> = OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let server = tokio::task::spawn_blocking(Postgres::shared).await.unwrap();
            let url = server.url();
            webcache_sql::create_cache_table(&mut spec(&url))
                .await
                .unwrap();
            url
        })
        .await
        .clone()
}

/// `base` with more query parameters.
pub fn with_query(base: &str, query: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

/// Removes `dir` when the test process ends, through the watchdog that stops test servers
/// (here it watches no server: its "stop command" is the removal).
fn remove_at_exit(dir: &std::path::Path) {
    static WATCHDOGS: std::sync::Mutex<Vec<ServerProcess>> = std::sync::Mutex::new(Vec::new());
    let stop = format!("rm -rf {}", dir.display());
    let watchdog = ServerProcess::spawn("true", &[], Some(&stop));
    WATCHDOGS.lock().unwrap().push(watchdog);
}
