//! The demo's catalogue end to end: two real `webcache serve` processes on one SQLite file and
//! one real Redis see each other's writes at once (the tutorial's "what if the data in the
//! database is updated?"), and a page is a HIT again right after.
//!
//! Run twice: on the shared Redis alone (a write is seen by the very next request of the other
//! process), and with a near tier in each process (`near_ttl=60`), which Redis's client
//! tracking keeps current: the other process sees the write as soon as Redis reports it (goal
//! 100 ms, measured in BENCHMARKS.md; the test allows 5 s on a busy machine).

use std::time::Duration;

use common::Running;
use webcache_testkit::servers::redis::RedisServer;
use webcache_testkit::servers::temp_dir;

mod common;

/// A `webcache serve` process on `cache` and the SQLite file `db`, once its banner has named
/// the database.
fn serve(cache: &str, db: &std::path::Path, runtime: &std::path::Path) -> Running {
    let db_arg = db.to_str().expect("a UTF-8 temporary path");
    // The banner says where it listens, then which database it uses (on its `catalogue:` line).
    let serve = Running::start_with(
        &["serve", "--cache", cache, "--db", db_arg],
        Some(runtime),
        |line| line.starts_with("catalogue:"),
    );
    assert!(
        serve.banner.contains(&db.display().to_string()),
        "the banner does not name the database: {}",
        serve.banner
    );
    serve
}

/// `GET /products`: the `x-cache` state and the line of product `name`.
async fn products(client: &reqwest::Client, serve: &Running, name: &str) -> (String, String) {
    let response = client
        .get(format!("{}/products", serve.base))
        .send()
        .await
        .expect("GET /products");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("cache-tag").is_none(),
        "the tag header is stripped before the client"
    );
    let state = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.text().await.expect("body");
    let line = body
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .to_owned();
    (state, line)
}

/// Requests `/products` until its page is a HIT (the page layer stores a tagged page from its
/// second miss on: the first told it that the route tags its pages).
async fn until_hit(client: &reqwest::Client, serve: &Running) {
    for _ in 0..200 {
        if products(client, serve, "teapot").await.0 == "HIT" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{}/products never became a HIT", serve.base);
}

/// `GET /products` once the other process's write of `price` for `name` is seen: at once
/// without a near tier; with one, within 5 s (Redis reports the change). Either way the first
/// answer with the new price is a MISS: the page was dropped with the table's tag.
async fn after_write(
    client: &reqwest::Client,
    serve: &Running,
    name: &str,
    price: &str,
    near: bool,
) -> (String, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (state, line) = products(client, serve, name).await;
        if line.contains(price) || !near || std::time::Instant::now() > deadline {
            return (state, line);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn set_price(client: &reqwest::Client, serve: &Running, id: u32, price: u32) {
    let response = client
        .post(format!("{}/products/{id}?price={price}", serve.base))
        .send()
        .await
        .expect("POST /products/ID");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_see_each_others_writes_at_once() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_near_tiers_they_see_each_others_writes_as_soon_as_redis_reports_them() {
    scenario(true).await;
}

async fn scenario(near: bool) {
    let redis = RedisServer::start();
    let dir = temp_dir("catalogue");
    let runtime = dir.join("runtime");
    std::fs::create_dir_all(&runtime).expect("runtime dir");
    let db = dir.join("catalogue.db");
    let cache = if near {
        format!("{}?near_ttl=60", redis.url(0))
    } else {
        redis.url(0)
    };
    let a = serve(&cache, &db, &runtime);
    let b = serve(&cache, &db, &runtime);
    let client = reqwest::Client::new();

    // Both pages cached: the sample prices.
    until_hit(&client, &a).await;
    until_hit(&client, &b).await;
    let (state, teapot) = products(&client, &b, "teapot").await;
    assert_eq!(state, "HIT");
    assert!(teapot.contains(" 12 EUR"), "{teapot}");

    // A write through A: B's cached rows and page are gone at once.
    set_price(&client, &a, 1, 15).await;
    let (state, teapot) = after_write(&client, &b, "teapot", " 15 EUR", near).await;
    assert_eq!(state, "MISS", "the page was dropped with the table's tag");
    assert!(teapot.contains(" 15 EUR"), "{teapot}");
    let (state, teapot) = products(&client, &b, "teapot").await;
    assert_eq!(state, "HIT", "cached again after that");
    assert!(teapot.contains(" 15 EUR"), "{teapot}");
    let (_, teapot) = products(&client, &a, "teapot").await;
    assert!(teapot.contains(" 15 EUR"), "{teapot}");

    // And the other way round.
    set_price(&client, &b, 2, 31).await;
    let (state, kettle) = after_write(&client, &a, "kettle", " 31 EUR", near).await;
    assert_eq!(state, "MISS");
    assert!(kettle.contains(" 31 EUR"), "{kettle}");
    assert_eq!(products(&client, &a, "kettle").await.0, "HIT");

    // A bad price is refused before the database and invalidates nothing; a missing product
    // is a 404 (an UPDATE that matched no row still invalidates: the cache cannot tell).
    let bad = client
        .post(format!("{}/products/1?price=cheap", a.base))
        .send()
        .await
        .expect("POST");
    assert_eq!(bad.status(), 400);
    assert_eq!(products(&client, &a, "kettle").await.0, "HIT");
    let missing = client
        .post(format!("{}/products/99?price=1", a.base))
        .send()
        .await
        .expect("POST");
    assert_eq!(missing.status(), 404);
}
