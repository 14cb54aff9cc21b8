//! The demo's catalogue: the tutorial's question ("what if the data in the database is
//! updated?") answered with tags instead of expiry alone.
//!
//! `GET /products` reads the products through the query cache (rows cached, tagged
//! `table:products`) and its page is cached by the page layer with the same tag.
//! `POST /products/{id}?price=N` updates the row through the query cache, which invalidates
//! `table:products`: the cached rows and the cached page are gone at once, in every process
//! sharing the cache, and the next `GET /products` is a MISS showing the new price, then HITs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use webcache::http::cache_page;
use webcache::sqlx::sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use webcache::sqlx::sqlx::{self, Sqlite};
use webcache::sqlx::{table_tag, QueryCache};
use webcache::Cache;

/// How long rows and the page are kept: long, since a write through the query cache drops
/// them at once; the expiry only bounds writes made outside it.
const TTL: Duration = Duration::from_secs(600);

/// The rows a fresh catalogue starts with.
const SAMPLE: &[(i64, &str, i64)] = &[
    (1, "teapot", 12),
    (2, "kettle", 30),
    (3, "cup", 4),
    (4, "saucer", 3),
];

#[derive(Clone)]
struct Catalogue {
    pool: SqlitePool,
    queries: QueryCache,
}

/// Where the catalogue lives: a file, or memory when no private directory was at hand.
pub(super) enum Location {
    /// A SQLite file (`--db PATH`, or `catalogue.db` in the private runtime directory).
    File(PathBuf),
    /// An in-memory database: the runtime directory is missing, not private or a symlink,
    /// and nothing is ever written there (the token file's rule).
    Memory(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{} (SQLite)", path.display()),
            Location::Memory(why) => write!(f, "in memory ({why}; pass --db PATH to keep it)"),
        }
    }
}

/// The catalogue of `--db`, else `catalogue.db` in the runtime directory `serve` uses when
/// that directory is the user's own and private (created so when missing), else memory.
pub(super) fn location(db: Option<&Path>) -> Location {
    if let Some(db) = db {
        return Location::File(db.to_owned());
    }
    let Some(dir) = crate::token_file::dir() else {
        return Location::Memory("neither XDG_RUNTIME_DIR nor HOME is set".to_owned());
    };
    // The token file's rule: a directory of this user's only (made so when missing).
    match crate::token_file::private_dir(&dir, true) {
        Ok(()) => Location::File(dir.join("catalogue.db")),
        Err(why) => Location::Memory(why),
    }
}

/// The catalogue's routes over `location` (created with sample rows when it has no table
/// yet), its rows and pages cached in `cache`.
pub(super) async fn routes(cache: &Cache, location: &Location) -> anyhow::Result<Router> {
    let pool = match location {
        Location::File(db) => {
            if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("cannot create {}; choose another --db", dir.display())
                })?;
            }
            let options = SqliteConnectOptions::new()
                .filename(db)
                .create_if_missing(true)
                // Two `serve` processes may share the file: wait for each other's writes.
                .busy_timeout(Duration::from_secs(10));
            SqlitePool::connect_with(options).await.with_context(|| {
                format!(
                    "cannot open the catalogue database {}; choose another --db",
                    db.display()
                )
            })?
        }
        // One connection kept for the life of the process: the database lives in it.
        Location::Memory(_) => SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(SqliteConnectOptions::new().in_memory(true))
            .await
            .context("cannot open an in-memory SQLite database")?,
    };
    seed(&pool)
        .await
        .with_context(|| format!("cannot create the products table in {location}"))?;
    let catalogue = Catalogue {
        pool,
        queries: QueryCache::new(cache.clone()).timeout(TTL),
    };
    Ok(Router::new()
        .route(
            "/products",
            get(products).layer(cache_page(cache.clone(), TTL).tagged_pages()),
        )
        .route("/products/{id}", post(set_price))
        .with_state(catalogue))
}

/// Creates the table and its sample rows unless they exist (another process may be doing
/// the same: both statements are idempotent).
async fn seed(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    for (id, name, price) in SAMPLE {
        sqlx::query("INSERT OR IGNORE INTO products (id, name, price) VALUES (?, ?, ?)")
            .bind(id)
            .bind(name)
            .bind(price)
            .execute(pool)
            .await?;
    }
    Ok(())
}

fn failed(what: &str, e: &webcache::sqlx::Error) -> Response {
    tracing::warn!("{what}: {e}");
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}\n")).into_response()
}

/// The product list, as text; tagged `table:products` for the page layer.
async fn products(State(c): State<Catalogue>) -> Response {
    let rows: Vec<(i64, String, i64)> = match c
        .queries
        .query_as::<Sqlite, _>("SELECT id, name, price FROM products ORDER BY id")
        .fetch_all(&c.pool)
        .await
    {
        Ok(rows) => rows,
        Err(e) => return failed("cannot read the products", &e),
    };
    let mut body = String::from("products\n");
    for (id, name, price) in rows {
        let _ = writeln!(body, "{id:>4}  {name:<12} {price:>6} EUR");
    }
    ([("cache-tag", table_tag("products"))], body).into_response()
}

#[derive(Deserialize)]
struct PriceQuery {
    price: Option<String>,
}

/// Sets a product's price through the query cache, which invalidates `table:products` (the
/// rows and the page) once the update succeeded.
async fn set_price(
    State(c): State<Catalogue>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PriceQuery>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a product id; use a number, e.g. /products/1\n"),
        )
            .into_response();
    };
    let Some(price) = q.price.as_deref().and_then(|p| p.parse::<i64>().ok()) else {
        return (
            StatusCode::BAD_REQUEST,
            "give the new price as a whole number: POST /products/1?price=15\n",
        )
            .into_response();
    };
    let done = c
        .queries
        .query::<Sqlite>("UPDATE products SET price = ? WHERE id = ?")
        .bind(price)
        .bind(id)
        .execute(&c.pool)
        .await;
    match done {
        Ok(r) if r.rows_affected() == 0 => {
            (StatusCode::NOT_FOUND, format!("no product {id}\n")).into_response()
        }
        Ok(_) => format!("product {id} now costs {price} EUR; table:products invalidated\n")
            .into_response(),
        // Updated, but the cache could not be told: say so rather than "failed".
        Err(e @ webcache::sqlx::Error::Invalidation { .. }) => {
            failed(&format!("product {id} now costs {price} EUR, but"), &e)
        }
        Err(e) => failed("cannot update the product", &e),
    }
}
