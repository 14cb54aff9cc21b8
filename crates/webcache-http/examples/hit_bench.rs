//! Hit throughput of the page-cache layer: the same 5 KB page served (a) through
//! `CachePageLayer` over locmem and (b) by the bare handler, on two ports, for
//! `../shared/bench/http-hit.py`:
//!
//! ```text
//! cargo run --release -p webcache-http --example hit_bench -- [LAYER_PORT] [PLAIN_PORT]
//! python3 ../shared/bench/http-hit.py layer=http://127.0.0.1:LAYER_PORT/ plain=http://127.0.0.1:PLAIN_PORT/
//! ```
//!
//! Ports default to free ones; the URLs are printed once the servers listen. A third server,
//! `static`, answers a pre-rendered copy of the page with no work at all: the ceiling of the
//! HTTP stack on this machine, against which the layer's own cost shows.
//!
//! With `HIT_BENCH_METRICS=1` the process installs the Prometheus recorder first (as `webcache
//! serve` does), so two copies of this binary, one with and one without, measure what metrics
//! cost a hit (issue 15's bound) with nothing else different.
#![allow(clippy::print_stdout)] // the URLs to benchmark are the program's output

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use webcache_core::Cache;
use webcache_http::cache_page;

/// Renders the page: a 5 KB HTML document, as the demo's template would.
fn render(visits: u64) -> Html<String> {
    let mut page = String::with_capacity(5200);
    page.push_str(
        "<!doctype html><html><head><title>Hello</title></head><body><h1>Hello from webcache</h1>",
    );
    page.push_str(&format!("<p>rendered for visit {visits}</p><ul>"));
    let mut i = 0;
    while page.len() < 5 * 1024 - 30 {
        page.push_str(&format!("<li>item {i}: lorem ipsum dolor sit amet</li>"));
        i += 1;
    }
    page.push_str("</ul></body></html>");
    Html(page)
}

fn app() -> Router {
    let visits = Arc::new(AtomicU64::new(0));
    Router::new().route(
        "/",
        get(move || {
            let n = visits.fetch_add(1, Ordering::Relaxed);
            async move { render(n) }
        }),
    )
}

fn port_arg(n: usize) -> Result<u16, String> {
    match std::env::args().nth(n) {
        None => Ok(0),
        Some(p) => p
            .parse()
            .map_err(|_| format!("argument {n} must be a port number, got `{p}`")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("HIT_BENCH_METRICS").is_some_and(|v| v == "1") {
        webcache_http::metrics::PrometheusMetrics::install()?;
    }
    let layered = app().layer(cache_page(Cache::locmem(), 3600));
    let plain = app();
    let l1 = tokio::net::TcpListener::bind(("127.0.0.1", port_arg(1)?)).await?;
    let l2 = tokio::net::TcpListener::bind(("127.0.0.1", port_arg(2)?)).await?;
    let l3 = tokio::net::TcpListener::bind(("127.0.0.1", port_arg(3)?)).await?;
    let page = Bytes::from(render(0).0);
    let fixed = Router::new().route(
        "/",
        get(move || {
            let page = page.clone();
            async move { ([("content-type", "text/html; charset=utf-8")], page) }
        }),
    );
    println!(
        "layer=http://{}/ plain=http://{}/ static=http://{}/",
        l1.local_addr()?,
        l2.local_addr()?,
        l3.local_addr()?
    );
    let a = tokio::spawn(async move { axum::serve(l1, layered).await });
    let b = tokio::spawn(async move { axum::serve(l2, plain).await });
    let c = tokio::spawn(async move { axum::serve(l3, fixed).await });
    let (a, b, c) = tokio::try_join!(a, b, c)?;
    a?;
    b?;
    c?;
    Ok(())
}
