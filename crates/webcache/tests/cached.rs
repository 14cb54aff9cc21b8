//! `#[webcache::cached]` over locmem and a real Redis: one body run per key (per process, and
//! across processes with `lock`), errors and `None` not stored unless asked, the generated
//! `_cached`/`_invalidate`, the key forms, where the cache comes from, and calls that go on
//! when the cache fails.
#![cfg(feature = "macros")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::cache;
use serde::{Deserialize, Serialize};
use webcache::{cached, Cache, Caches, Ttl};

mod common;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
}

/// The functions' error; `Serialize + Deserialize`, so that `cache_errors` can store it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum AppError {
    NotFound(u64),
    Cache(String),
}

impl From<webcache::Error> for AppError {
    fn from(e: webcache::Error) -> Self {
        AppError::Cache(e.to_string())
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Counts its runs; fails for id 0 (once per `fail` budget), sleeps to let callers pile up.
#[cached(ttl = 60, key = "user:{id}")]
async fn profile(
    #[cache] cache: &Cache,
    id: u64,
    runs: &AtomicUsize,
    fail: &AtomicUsize,
) -> Result<Profile, AppError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    if fail.load(Ordering::SeqCst) > 0 {
        fail.fetch_sub(1, Ordering::SeqCst);
        return Err(AppError::NotFound(id));
    }
    Ok(Profile {
        id,
        name: format!("user {id}"),
    })
}

async fn concurrent_first_calls_run_the_body_once(backend: &str) {
    let cache = cache(backend).await;
    let (runs, fail) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let calls = (0..16).map(|_| profile(&cache, 7, &runs, &fail));
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().id == 7));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one body run for 16 concurrent calls"
    );
    // Later calls, and the generated reader, see the stored value under the template key.
    assert_eq!(
        profile(&cache, 7, &runs, &fail).await.unwrap().name,
        "user 7"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stored: Profile = cache.get("user:7").await.unwrap().unwrap();
    assert_eq!(stored.id, 7);
    assert_eq!(profile_cached(&cache, 7).await.unwrap(), Some(stored));
    assert_eq!(profile_cached(&cache, 8).await.unwrap(), None);
    // Invalidating one call: the next one runs the body again.
    assert!(profile_invalidate(&cache, 7).await.unwrap());
    assert!(!profile_invalidate(&cache, 7).await.unwrap());
    profile(&cache, 7, &runs, &fail).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

async fn errors_are_not_stored(backend: &str) {
    let cache = cache(backend).await;
    let (runs, fail) = (AtomicUsize::new(0), AtomicUsize::new(1));
    assert_eq!(
        profile(&cache, 3, &runs, &fail).await,
        Err(AppError::NotFound(3))
    );
    assert_eq!(profile_cached(&cache, 3).await.unwrap(), None);
    assert_eq!(profile(&cache, 3, &runs, &fail).await.unwrap().id, 3);
    assert_eq!(profile(&cache, 3, &runs, &fail).await.unwrap().id, 3);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the error was recomputed, the value was not"
    );
}

/// The default key: the function's path and every argument but the skipped ones, as JSON.
#[cached(ttl = 60, skip(runs))]
async fn search(
    #[cache] cache: &Cache,
    query: &str,
    page: u32,
    runs: &AtomicUsize,
) -> Option<Vec<String>> {
    runs.fetch_add(1, Ordering::SeqCst);
    (page > 0).then(|| vec![format!("{query} {page}")])
}

async fn default_key_and_none(backend: &str) {
    let cache = cache(backend).await;
    let runs = AtomicUsize::new(0);
    assert_eq!(
        search(&cache, "rust cache", 1, &runs).await,
        Some(vec!["rust cache 1".to_owned()])
    );
    let stored: Vec<String> = cache
        .get(r#"cached::search:["rust cache",1]"#)
        .await
        .unwrap()
        .expect("stored under the function's path and its arguments as JSON");
    assert_eq!(stored, ["rust cache 1"]);
    search(&cache, "rust cache", 1, &runs).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // `None` is returned and not stored: the next call runs again.
    assert_eq!(search(&cache, "rust cache", 0, &runs).await, None);
    assert_eq!(search(&cache, "rust cache", 0, &runs).await, None);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(search_cached(&cache, "rust cache", 0).await.unwrap(), None);
}

#[cached(ttl = 60, key = "maybe:{id}", cache_none)]
async fn maybe(#[cache] cache: &Cache, id: u32, runs: &AtomicUsize) -> Option<u32> {
    runs.fetch_add(1, Ordering::SeqCst);
    id.is_multiple_of(2).then_some(id)
}

#[tokio::test]
async fn cache_none_stores_none() {
    let cache = cache("locmem").await;
    let runs = AtomicUsize::new(0);
    assert_eq!(maybe(&cache, 1, &runs).await, None);
    assert_eq!(maybe(&cache, 1, &runs).await, None);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the None was stored");
    assert_eq!(maybe_cached(&cache, 1).await.unwrap(), Some(None));
    assert_eq!(maybe(&cache, 2, &runs).await, Some(2));
    assert_eq!(maybe_cached(&cache, 2).await.unwrap(), Some(Some(2)));
}

/// A plain value, from a cache found through a static.
static CACHES: OnceLock<Caches> = OnceLock::new();

#[cached(ttl = 60, cache = CACHES.get(), alias = "other", skip(runs))]
async fn square(n: u64, runs: &AtomicUsize) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    n * n
}

#[cached(ttl = 60, cache = CACHES.get(), key = "cube:{n}")]
async fn cube(n: i64) -> Result<i64, AppError> {
    Ok(n * n * n)
}

#[tokio::test]
async fn a_static_cache_and_an_alias() {
    let runs = AtomicUsize::new(0);
    // Not set up yet: a plain function still answers, a fallible one says why.
    assert_eq!(square(3, &runs).await, 9);
    let Err(AppError::Cache(message)) = cube(2).await else {
        panic!("a missing cache is the function's error")
    };
    assert!(message.contains("not set up"), "{message}");
    let caches = Caches::from_urls([
        ("default", "locmem://static-default"),
        ("other", "locmem://static-other"),
    ])
    .await
    .unwrap();
    let _ = CACHES.set(caches);
    assert_eq!(square(4, &runs).await, 16);
    assert_eq!(square(4, &runs).await, 16);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "3 uncached, 4 once");
    let other = CACHES.get().unwrap().get("other").unwrap();
    assert_eq!(
        other.get::<u64>("cached::square:[4]").await.unwrap(),
        Some(16)
    );
    assert_eq!(
        CACHES
            .get()
            .unwrap()
            .default_cache()
            .get::<u64>("cached::square:[4]")
            .await
            .unwrap(),
        None,
        "stored in the alias it names"
    );
    assert!(square_invalidate(4).await.unwrap());
    assert_eq!(cube(2).await, Ok(8));
    assert_eq!(cube_cached(2).await.unwrap(), Some(8));
}

/// A method: the cache is a field, the key names `self` and the method's name.
struct Users {
    cache: Cache,
    tenant: String,
    runs: AtomicUsize,
}

impl Users {
    #[cached(ttl = 60, cache = self.cache, key = "{self.tenant}:user:{id}")]
    async fn name(&self, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("{} #{id}", self.tenant)
    }
}

#[tokio::test]
async fn methods_key_on_self() {
    let users = Users {
        cache: cache("locmem").await,
        tenant: "acme".into(),
        runs: AtomicUsize::new(0),
    };
    assert_eq!(users.name(1).await, "acme #1");
    assert_eq!(users.name(1).await, "acme #1");
    assert_eq!(users.runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        users
            .cache
            .get::<String>("acme:user:1")
            .await
            .unwrap()
            .as_deref(),
        Some("acme #1")
    );
    assert_eq!(
        users.name_cached(1).await.unwrap().as_deref(),
        Some("acme #1")
    );
    assert!(users.name_invalidate(1).await.unwrap());
}

/// A value too large for the cache: the store fails after the body ran.
#[cached(ttl = 60, key = "big:{n}")]
async fn big(#[cache] cache: &Cache, n: usize, runs: &AtomicUsize) -> String {
    runs.fetch_add(1, Ordering::SeqCst);
    "x".repeat(n)
}

#[tokio::test]
async fn a_store_that_fails_after_the_body_ran_returns_its_value_without_running_it_again() {
    let cache = Caches::from_url("locmem://too-small?max_entry_size=64")
        .await
        .unwrap()
        .default_cache()
        .clone();
    let runs = AtomicUsize::new(0);
    assert_eq!(big(&cache, 1000, &runs).await.len(), 1000);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the kept value, not a second run"
    );
    assert_eq!(big_cached(&cache, 1000).await.unwrap(), None);
    assert_eq!(big(&cache, 10, &runs).await, "x".repeat(10));
    assert_eq!(big(&cache, 10, &runs).await, "x".repeat(10));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A stale window: past the ttl the old value is returned at once while one call refreshes.
#[cached(ttl = 0.5, stale = 600, key = "tick")]
async fn tick(#[cache] cache: &Cache, counter: Arc<AtomicUsize>) -> Result<usize, AppError> {
    Ok(counter.fetch_add(1, Ordering::SeqCst) + 1)
}

#[tokio::test]
async fn stale_values_are_served_while_one_call_refreshes() {
    let cache = cache("locmem").await;
    let counter = Arc::new(AtomicUsize::new(0));
    assert_eq!(tick(&cache, counter.clone()).await, Ok(1));
    assert_eq!(tick(&cache, counter.clone()).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        tick(&cache, counter.clone()).await,
        Ok(1),
        "stale, refreshed behind"
    );
    // The refresh stores 2 in the background; wait for it (bounded, generous).
    let mut refreshed = None;
    for _ in 0..200 {
        refreshed = tick_cached(&cache).await.unwrap();
        if refreshed == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(refreshed, Some(2));
    assert_eq!(tick(&cache, counter.clone()).await, Ok(2));
}

#[cfg(feature = "redis")]
mod down {
    use super::*;

    /// Nothing listens on port 1: every cache call fails.
    async fn down() -> Caches {
        Caches::from_url("redis://127.0.0.1:1/0?connect_timeout=0.2&breaker_failures=0")
            .await
            .unwrap()
    }

    #[cached(ttl = 60, key = "d:{n}")]
    async fn double(#[cache] caches: &Caches, n: u64, runs: &AtomicUsize) -> u64 {
        runs.fetch_add(1, Ordering::SeqCst);
        n * 2
    }

    #[cached(ttl = 60, key = "t:{n}")]
    async fn triple(#[cache] caches: &Caches, n: u64) -> Result<u64, AppError> {
        Ok(n * 3)
    }

    #[tokio::test]
    async fn a_down_cache_fails_a_result_and_not_a_value() {
        let caches = down().await;
        let runs = AtomicUsize::new(0);
        assert_eq!(double(&caches, 4, &runs).await, 8);
        assert_eq!(double(&caches, 4, &runs).await, 8);
        assert_eq!(runs.load(Ordering::SeqCst), 2, "once per call, uncached");
        assert!(matches!(triple(&caches, 4).await, Err(AppError::Cache(_))));
    }
}

/// Tagged values: `invalidate_tags` forgets every call that carried the tag.
#[cached(ttl = 60, tags = ["user:{user}", "orders"], skip(runs))]
async fn orders(#[cache] cache: &Cache, user: u64, page: u32, runs: &AtomicUsize) -> Vec<u32> {
    runs.fetch_add(1, Ordering::SeqCst);
    vec![page; user as usize]
}

async fn tags_invalidate_every_call_that_carries_them(backend: &str) {
    let cache = cache(backend).await;
    let runs = AtomicUsize::new(0);
    for (user, page) in [(1, 1), (1, 2), (2, 1)] {
        orders(&cache, user, page, &runs).await;
        orders(&cache, user, page, &runs).await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    cache.invalidate_tags(["user:1"]).await.unwrap();
    assert_eq!(orders_cached(&cache, 1, 1).await.unwrap(), None);
    assert_eq!(orders_cached(&cache, 1, 2).await.unwrap(), None);
    assert_eq!(orders_cached(&cache, 2, 1).await.unwrap(), Some(vec![1, 1]));
    orders(&cache, 1, 1, &runs).await;
    assert_eq!(runs.load(Ordering::SeqCst), 4, "user 1 recomputed, once");
    cache.invalidate_tags(["orders"]).await.unwrap();
    assert_eq!(orders_cached(&cache, 2, 1).await.unwrap(), None);
}

#[tokio::test]
async fn locmem_tags_invalidate_every_call_that_carries_them() {
    tags_invalidate_every_call_that_carries_them("locmem").await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_tags_invalidate_every_call_that_carries_them() {
    tags_invalidate_every_call_that_carries_them("redis").await;
}

#[tokio::test]
async fn locmem_concurrent_first_calls_run_the_body_once() {
    concurrent_first_calls_run_the_body_once("locmem").await;
}

#[tokio::test]
async fn locmem_errors_are_not_stored() {
    errors_are_not_stored("locmem").await;
}

#[tokio::test]
async fn locmem_default_key_and_none() {
    default_key_and_none("locmem").await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_concurrent_first_calls_run_the_body_once() {
    concurrent_first_calls_run_the_body_once("redis").await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_errors_are_not_stored() {
    errors_are_not_stored("redis").await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_default_key_and_none() {
    default_key_and_none("redis").await;
}

/// Every shape, with and without a stale window, a lock or stored errors, gives a `Send`
/// future (an axum handler's requirement), and generic functions expand.
#[cached(ttl = 60, stale = 600, key = "sv:{n}")]
async fn stale_value(#[cache] cache: &Cache, n: u64) -> u64 {
    n + 1
}

#[cached(ttl = 60, stale = 600, key = "so:{n}")]
async fn stale_option(#[cache] cache: &Cache, n: u64) -> Option<u64> {
    n.checked_sub(1)
}

#[cached(ttl = 60, name = "generic_len")]
async fn generic_len<T: Serialize + Sync>(#[cache] cache: &Cache, items: &[T]) -> usize {
    items.len()
}

fn assert_send<F: std::future::Future + Send>(future: F) -> F {
    future
}

#[tokio::test]
async fn every_shape_is_send_and_generic_functions_expand() {
    let cache = cache("locmem").await;
    let (runs, fail) = (AtomicUsize::new(0), AtomicUsize::new(0));
    assert_send(profile(&cache, 1, &runs, &fail)).await.unwrap();
    assert_send(search(&cache, "q", 1, &runs)).await;
    assert_eq!(assert_send(stale_value(&cache, 1)).await, 2);
    assert_eq!(assert_send(stale_option(&cache, 0)).await, None);
    assert_eq!(assert_send(stale_option(&cache, 2)).await, Some(1));
    assert_eq!(stale_option_cached(&cache, 2).await.unwrap(), Some(1));
    assert_eq!(assert_send(generic_len(&cache, &["a", "b"])).await, 2);
    assert_eq!(
        cache
            .get::<usize>(r#"generic_len:[["a","b"]]"#)
            .await
            .unwrap(),
        Some(2)
    );
    assert!(generic_len_invalidate(&cache, &["a", "b"]).await.unwrap());
    // `cache_errors` (with and without `error_ttl`) and `lock`.
    assert_send(lookup(&cache, 0, &runs)).await.unwrap_err();
    assert_send(lookup_briefly(&cache, 0, &runs))
        .await
        .unwrap_err();
    assert_eq!(assert_send(report(&cache, 1, &runs)).await, Ok(2));
    assert_eq!(assert_send(total(&cache, 1, &runs)).await, 3);
}

/// An argument whose JSON cannot be built (a map with tuple keys): no key, so no cache.
#[cached(ttl = 60, skip(runs))]
async fn by_pair(
    #[cache] cache: &Cache,
    pairs: std::collections::BTreeMap<(u8, u8), u8>,
    runs: &AtomicUsize,
) -> usize {
    runs.fetch_add(1, Ordering::SeqCst);
    pairs.len()
}

#[cached(ttl = 60)]
async fn by_pair_or_error(
    #[cache] cache: &Cache,
    pairs: std::collections::BTreeMap<(u8, u8), u8>,
) -> Result<usize, AppError> {
    Ok(pairs.len())
}

#[tokio::test]
async fn an_argument_without_json_runs_uncached_or_is_the_error() {
    let cache = cache("locmem").await;
    let runs = AtomicUsize::new(0);
    let pairs = std::collections::BTreeMap::from([((1, 2), 3)]);
    assert_eq!(by_pair(&cache, pairs.clone(), &runs).await, 1);
    assert_eq!(by_pair(&cache, pairs.clone(), &runs).await, 1);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "no key: every call runs the body"
    );
    let Err(AppError::Cache(message)) = by_pair_or_error(&cache, pairs).await else {
        panic!("a key that cannot be built is the function's error")
    };
    assert!(message.contains("by_pair_or_error"), "{message}");
}

#[cached(ttl = 60, alias = "sessions", key = "wrong:{n}")]
async fn wrong_alias(#[cache] cache: &Cache, n: u8) -> Result<u8, AppError> {
    Ok(n)
}

#[tokio::test]
async fn an_alias_with_a_single_cache_says_what_to_pass() {
    let cache = cache("locmem").await;
    let Err(AppError::Cache(message)) = wrong_alias(&cache, 1).await else {
        panic!("an alias the given cache is not is an error")
    };
    assert!(message.contains("`Caches`"), "{message}");
}

/// The lookup the functions below memoize: fails for id 0; counts its runs, and takes a
/// moment, so that concurrent callers pile up.
async fn find(id: u64, runs: &AtomicUsize) -> Result<u64, AppError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    match id {
        0 => Err(AppError::NotFound(id)),
        id => Ok(id * 10),
    }
}

#[cached(ttl = 60, key = "lookup:{id}", cache_errors)]
async fn lookup(#[cache] cache: &Cache, id: u64, runs: &AtomicUsize) -> Result<u64, AppError> {
    find(id, runs).await
}

/// Errors kept 2 s, values 600 s.
#[cached(ttl = 600, key = "brief:{id}", cache_errors, error_ttl = 2)]
async fn lookup_briefly(
    #[cache] cache: &Cache,
    id: u64,
    runs: &AtomicUsize,
) -> Result<u64, AppError> {
    find(id, runs).await
}

/// Without `cache_errors`: the default.
#[cached(ttl = 60, key = "plain:{id}")]
async fn lookup_uncached_errors(
    #[cache] cache: &Cache,
    id: u64,
    runs: &AtomicUsize,
) -> Result<u64, AppError> {
    find(id, runs).await
}

async fn errors_are_stored_only_when_asked(backend: &str) {
    let cache = cache(backend).await;
    // Default: the error is returned, not stored; the next call runs the body again.
    let runs = AtomicUsize::new(0);
    for _ in 0..2 {
        assert_eq!(
            lookup_uncached_errors(&cache, 0, &runs).await,
            Err(AppError::NotFound(0))
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        lookup_uncached_errors_cached(&cache, 0).await.unwrap(),
        None
    );

    // `cache_errors`: concurrent first calls run the body once, and the later ones get the
    // stored error without running it.
    let runs = AtomicUsize::new(0);
    let calls = (0..8).map(|_| lookup(&cache, 0, &runs));
    for result in futures::future::join_all(calls).await {
        assert_eq!(result, Err(AppError::NotFound(0)));
    }
    assert_eq!(lookup(&cache, 0, &runs).await, Err(AppError::NotFound(0)));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the error was stored");
    assert_eq!(
        lookup_cached(&cache, 0).await.unwrap(),
        Some(Err(AppError::NotFound(0)))
    );
    let error_ttl = cache.ttl("lookup:0").await.unwrap();
    assert!(
        matches!(error_ttl, Ttl::Remaining(d) if d > Duration::from_secs(30)),
        "{error_ttl:?}"
    );
    // Values are stored as before, and read back as `Ok`.
    assert_eq!(lookup(&cache, 4, &runs).await, Ok(40));
    assert_eq!(lookup(&cache, 4, &runs).await, Ok(40));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(lookup_cached(&cache, 4).await.unwrap(), Some(Ok(40)));
    // Invalidating the error: the body runs again.
    assert!(lookup_invalidate(&cache, 0).await.unwrap());
    assert_eq!(lookup(&cache, 0, &runs).await, Err(AppError::NotFound(0)));
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    // A stored error that no longer reads as the error type (it changed since) is a cache
    // error once, and deleted: the next call runs the body.
    cache
        .set("lookup:9", &Result::<u64, u32>::Err(5), 60)
        .await
        .unwrap();
    assert!(matches!(
        lookup(&cache, 9, &runs).await,
        Err(AppError::Cache(_))
    ));
    assert_eq!(lookup(&cache, 9, &runs).await, Ok(90));
    assert_eq!(runs.load(Ordering::SeqCst), 4);

    // `error_ttl`: the error is kept for it, the value for the function's ttl.
    let runs = AtomicUsize::new(0);
    assert_eq!(
        lookup_briefly(&cache, 0, &runs).await,
        Err(AppError::NotFound(0))
    );
    assert_eq!(
        lookup_briefly(&cache, 0, &runs).await,
        Err(AppError::NotFound(0))
    );
    let error_ttl = cache.ttl("brief:0").await.unwrap();
    assert!(
        matches!(error_ttl, Ttl::Remaining(d) if d <= Duration::from_secs(2)),
        "{error_ttl:?}"
    );
    assert_eq!(lookup_briefly(&cache, 3, &runs).await, Ok(30));
    let value_ttl = cache.ttl("brief:3").await.unwrap();
    assert!(
        matches!(value_ttl, Ttl::Remaining(d) if d > Duration::from_secs(500)),
        "{value_ttl:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one run per id");
}

#[tokio::test]
async fn locmem_errors_are_stored_only_when_asked() {
    errors_are_stored_only_when_asked("locmem").await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_errors_are_stored_only_when_asked() {
    errors_are_stored_only_when_asked("redis").await;
}

/// A costly report: with `lock`, computed once by all the processes sharing the cache.
#[cached(ttl = 60, key = "report:{n}", lock)]
async fn report(#[cache] cache: &Cache, n: u64, runs: &AtomicUsize) -> Result<u64, AppError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(n * 2)
}

/// The same for a function without an error to return.
#[cached(ttl = 60, key = "total:{n}", lock)]
async fn total(#[cache] cache: &Cache, n: u64, runs: &AtomicUsize) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    n * 3
}

/// Two `Caches` built from one Redis URL share the data but not their connections nor their
/// in-process single flight, as two processes would: without `lock` each runs the body.
#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_lock_runs_the_body_once_across_two_caches() {
    let url = common::url("redis", &common::fresh_prefix());
    let first = Caches::from_url(&url)
        .await
        .unwrap()
        .default_cache()
        .clone();
    let second = Caches::from_url(&url)
        .await
        .unwrap()
        .default_cache()
        .clone();
    let (report_runs, total_runs) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let reports = (0..8).map(|i| {
        let cache = if i % 2 == 0 { &first } else { &second };
        report(cache, 21, &report_runs)
    });
    let totals = (0..8).map(|i| {
        let cache = if i % 2 == 0 { &first } else { &second };
        total(cache, 5, &total_runs)
    });
    let (reports, totals) = tokio::join!(
        futures::future::join_all(reports),
        futures::future::join_all(totals)
    );
    assert!(reports.iter().all(|r| r == &Ok(42)), "{reports:?}");
    assert!(totals.iter().all(|t| *t == 15), "{totals:?}");
    assert_eq!(
        report_runs.load(Ordering::SeqCst),
        1,
        "one run for both caches"
    );
    assert_eq!(
        total_runs.load(Ordering::SeqCst),
        1,
        "one run for both caches"
    );
    assert_eq!(report_cached(&second, 21).await.unwrap(), Some(42));
}
