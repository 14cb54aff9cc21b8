//! The servers of `scripts/bench-scale`: many distinct pages of a chosen size, for measuring
//! how the page cache behaves as the work grows (working sets, page sizes, connections,
//! memory per page), side by side with Varnish and nginx in front of the same origin.
//!
//! ```text
//! cargo run --release -p webcache-http --example scale_bench -- ROLE=PORT [ROLE=PORT ...]
//! ```
//!
//! Every role serves `GET /p/<size>/<n>`: an HTML page of exactly `<size>` bytes (at most
//! 4 MiB), the same bytes for every `<n>` and every role, with `Cache-Control: max-age` of a
//! year, so each `<n>` is one more page to cache. The roles:
//!
//! - `layer`: the handler behind `CachePageLayer` over locmem, without bounds (no entry or
//!   byte limit, so a million pages stay cached), other settings as a user gets them, added
//!   with `Router::layer` (after routing).
//! - `site`: the same layer around the router instead (before routing; the crate README's
//!   fourth placement).
//! - `origin`: the same handler without a cache, for Varnish and nginx to sit in front of.
//! - `static`: the page's bytes answered from memory on the same axum stack: the ceiling. Every
//!   `<n>` has a buffer of its own, made on first use, up to [`STATIC_BUFFER_BYTES`] per size
//!   (8 GiB: 1.6 million pages of 5 KB, 8,192 of 1 MB; past it pages share), so that at a
//!   large working set the ceiling reads as much memory, as far from the CPU, as a cache of
//!   those distinct pages must. One buffer for every `<n>` stayed in the CPU cache: at 100
//!   pages of 1 MB it served 1.6x what 100 distinct buffers allow. 65,536 buffers for a
//!   million pages (sessions 8 to 12) read a sixteenth of the memory: that ceiling served
//!   1.22x what a million distinct buffers allow (BENCHMARKS.md, session 13).
//! - `redis`, `redis-site`: as `layer` and `site`, over Redis without a near tier (the URL
//!   comes from `SCALE_BENCH_REDIS`, default `redis://127.0.0.1:6379/0`).
//!
//! `GET /_calls` on any role answers how many times the handler has run in this process
//! (origin and layers together): it does not move while every request is a cache hit.
#![allow(clippy::print_stdout)] // the listening addresses are the program's output

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::Router;
use bytes::Bytes;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::Cache;
use webcache_http::CachePageLayer;
use webcache_redis::RedisBackend;

/// The largest page served: above 1 MB with room, small enough that a typo cannot exhaust memory.
const MAX_PAGE: usize = 4 << 20;
/// A year: every page stays fresh for the whole benchmark in every cache.
const CACHE_CONTROL: &str = "max-age=31536000";

/// How many bytes of distinct buffers the static role keeps per size: a buffer per page for
/// every working set the benchmark uses, and a bound a typo cannot push past the machine.
const STATIC_BUFFER_BYTES: u64 = 8 << 30;

/// The page bodies, rendered once per size and shared by the handler of every role (a hit of
/// any target then sends the same bytes), and the static role's buffers: the same bytes, a
/// buffer per page (see [`STATIC_BUFFER_BYTES`]).
#[derive(Default)]
struct Pages {
    by_size: Mutex<HashMap<usize, Bytes>>,
    static_buffers: Mutex<HashMap<(usize, u64), Bytes>>,
}

impl Pages {
    fn get(&self, size: usize) -> Bytes {
        let mut pages = self.by_size.lock().unwrap_or_else(|p| p.into_inner());
        pages.entry(size).or_insert_with(|| render(size)).clone()
    }

    /// Page `n`'s own buffer for the static role: a copy of the rendered page.
    fn static_buffer(&self, size: usize, n: u64) -> Bytes {
        let buffers = (STATIC_BUFFER_BYTES / size.max(1) as u64).max(1);
        let key = (size, n % buffers);
        if let Some(buffer) = self
            .static_buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return buffer.clone();
        }
        let buffer = Bytes::copy_from_slice(&self.get(size));
        let mut buffers = self
            .static_buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        buffers.entry(key).or_insert(buffer).clone()
    }
}

/// An HTML document of exactly `size` bytes, text that compresses as real pages do.
fn render(size: usize) -> Bytes {
    let mut page = String::with_capacity(size + 64);
    page.push_str("<!doctype html><html><head><title>Page</title></head><body><ul>");
    let mut i = 0;
    while page.len() < size {
        page.push_str(&format!(
            "<li>item {i}: lorem ipsum dolor sit amet, consectetur</li>\n"
        ));
        i += 1;
    }
    let end = "</ul></body></html>";
    page.truncate(size.saturating_sub(end.len()));
    page.push_str(&end[..end.len().min(size)]);
    Bytes::from(page)
}

/// What the handler answers for `/p/<size>/<n>`: the page, or 404 for a size out of range.
fn page_response(body: impl FnOnce() -> Bytes, size: usize) -> Response {
    if size == 0 || size > MAX_PAGE {
        return (StatusCode::NOT_FOUND, "size out of range\n").into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_CONTROL),
            ),
        ],
        body(),
    )
        .into_response()
}

/// The routes of one role and `/_calls`: the page, from the handler the origin and the layers
/// share (`counted`: each call counted, one rendered buffer per size) or as the static answer
/// (not counted, a buffer per page).
fn routes(pages: Arc<Pages>, calls: Arc<AtomicU64>, counted: bool) -> Router {
    let counter = calls.clone();
    Router::new()
        .route(
            "/p/{size}/{n}",
            get(move |Path((size, n)): Path<(usize, u64)>| {
                let pages = pages.clone();
                let counter = counter.clone();
                async move {
                    if counted {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    if counted {
                        page_response(|| pages.get(size), size)
                    } else {
                        page_response(|| pages.static_buffer(size, n), size)
                    }
                }
            }),
        )
        .route(
            "/_calls",
            get(move || {
                let n = calls.load(Ordering::Relaxed);
                // Never stored by the layer in front of it: the count must be live.
                async move { ([(header::CACHE_CONTROL, "no-store")], format!("{n}\n")) }
            }),
        )
}

/// A locmem store without bounds: every page of the largest working set stays cached.
fn locmem() -> Cache {
    Cache::with_backend(LocMemBackend::private(
        LocMemConfig::default().max_entries(None).max_bytes(None),
    ))
}

/// The page layer as a user builds it, with the store and body bounds lifted so the largest
/// working set and page size stay cached.
fn layer(cache: Cache) -> CachePageLayer {
    CachePageLayer::new(cache).max_body(MAX_PAGE)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pages = Arc::new(Pages::default());
    let calls = Arc::new(AtomicU64::new(0));
    let mut servers = tokio::task::JoinSet::new();
    let mut addresses = Vec::new();
    for arg in std::env::args().skip(1) {
        let (role, port) = arg
            .split_once('=')
            .ok_or_else(|| format!("arguments are ROLE=PORT, got `{arg}`"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{arg}`: the port must be a number"))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        addresses.push(format!("{role}=http://{}", listener.local_addr()?));
        // TCP_NODELAY on every connection, as nginx and Varnish set it (the crate README's
        // "Serving: turn Nagle off").
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let counted = routes(pages.clone(), calls.clone(), true);
        let redis = || -> Result<Cache, Box<dyn std::error::Error>> {
            let url = std::env::var("SCALE_BENCH_REDIS")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
            Ok(Cache::with_backend(RedisBackend::from_url(&url)?))
        };
        let app = match role {
            "layer" => counted.layer(layer(locmem())),
            "redis" => counted.layer(layer(redis()?)),
            "site" | "redis-site" => {
                let cache = if role == "site" { locmem() } else { redis()? };
                // The layer around the whole router, axum's way to run a middleware before
                // routing (the crate README's fourth placement): a hit is answered without any.
                let site = tower::ServiceBuilder::new()
                    .map_response(IntoResponse::into_response)
                    .layer(layer(cache))
                    .service(counted);
                let site = axum::ServiceExt::<axum::extract::Request>::into_make_service(site);
                servers.spawn(async move { axum::serve(listener, site).await });
                continue;
            }
            "origin" => counted,
            "static" => routes(pages.clone(), calls.clone(), false),
            other => return Err(format!("unknown role `{other}`").into()),
        };
        servers.spawn(async move { axum::serve(listener, app).await });
    }
    if addresses.is_empty() {
        return Err(
            "give at least one ROLE=PORT (layer, site, origin, static, redis, redis-site)".into(),
        );
    }
    println!("{}", addresses.join(" "));
    while let Some(done) = servers.join_next().await {
        done??;
    }
    Ok(())
}
