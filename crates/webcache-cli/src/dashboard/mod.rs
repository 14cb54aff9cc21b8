//! The dashboard: one page compiled into the binary (HTML, CSS and a script written by hand, the
//! chart drawn as inline SVG: no build step, nothing fetched from elsewhere, works offline),
//! served on the admin side of `webcache serve` and `webcache proxy`, and by
//! `webcache dashboard` for any cache.
//!
//! | route | what | checks ([`crate::serve::admin`]) |
//! |---|---|---|
//! | `GET /_webcache/dashboard` | the page | direct connection, own `Host` (it holds no data) |
//! | `GET /_webcache/dashboard/data` | per alias: backend, health, entries, bytes, the biggest keys of a sample; the sampled hits and misses of the last minutes | all three |
//! | `GET /_webcache/metrics` | the Prometheus text (per-route outcomes) | all three |
//! | `POST /_webcache/command` | the key browser: `keys`, `get`, `ttl`, `del`, as the CLI | all three |
//!
//! The page reads the admin token from its URL's fragment (`#token=...`, printed at start).
//! Hit ratios over time come from [`History`], sampled here every second, so the chart shows
//! the last minutes as soon as the page opens. The hottest keys are estimated from one read
//! in 16 (see [`webcache::HotKey`]): counting every read per key would cost every hit.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::Listener as _;
use axum::{Json, Router};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use webcache::{Cache, Caches};

use crate::cli::{DashboardArgs, TargetArgs};
use crate::serve::admin::{self, Admin};

/// Where the page is.
pub(crate) const PAGE_PATH: &str = "/_webcache/dashboard";
/// Where the page's figures are.
const DATA_PATH: &str = "/_webcache/dashboard/data";

/// The page, compiled in.
const PAGE: &str = include_str!("page.html");

/// How often the hit and miss counters are sampled, and how many samples are kept (10 min).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const SAMPLES_KEPT: usize = 600;

/// How many keys are sized to find the biggest, and how many of those are shown.
const SIZED_KEYS: usize = 500;
const BIGGEST_SHOWN: usize = 10;

/// The routes of the dashboard, over the admin side's state.
pub(crate) fn routes() -> Router<Admin> {
    Router::new()
        .route(PAGE_PATH, get(page))
        .route(DATA_PATH, get(data))
}

async fn page(State(admin): State<Admin>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(refused) = admin.check_direct(&uri, &headers) {
        return refused;
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            // The page runs its own inline script and talks to its own origin only.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                ),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        PAGE,
    )
        .into_response()
}

/// What the page asks for.
#[derive(Deserialize)]
struct DataQuery {
    /// Also size a sample of keys to list the biggest (one read per key, so not every time).
    #[serde(default)]
    sizes: bool,
}

/// What the page draws.
#[derive(Serialize)]
struct Data {
    caches: Vec<CacheFigures>,
    history: Vec<Sample>,
}

/// One alias now.
#[derive(Serialize)]
struct CacheFigures {
    alias: String,
    backend: &'static str,
    /// Whether the backend answered `stats` just now.
    up: bool,
    /// Why it did not.
    error: Option<String>,
    /// Whether backend failures become misses (`on_error = degrade`).
    degrade: bool,
    entries: Option<u64>,
    bytes: Option<u64>,
    hits: u64,
    misses: u64,
    errors: u64,
    /// The biggest stored entries among the first [`SIZED_KEYS`] keys, when asked for.
    biggest: Option<Vec<Sized>>,
    /// Hits and misses per read operation.
    reads: Vec<webcache::OperationReads>,
    /// The most read keys (sampled by the cache itself: nothing to ask the backend).
    hottest: Vec<webcache::HotKey>,
}

#[derive(Serialize)]
struct Sized {
    key: String,
    bytes: usize,
}

async fn data(
    State(admin): State<Admin>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<DataQuery>,
) -> Response {
    if let Some(refused) = admin.check(&uri, &headers) {
        return refused;
    }
    let mut caches = Vec::new();
    for alias in admin.caches.aliases() {
        let Ok(cache) = admin.caches.get(alias) else {
            continue;
        };
        caches.push(figures(cache, query.sizes).await);
    }
    Json(Data {
        caches,
        history: admin.history.samples(),
    })
    .into_response()
}

async fn figures(cache: &Cache, sizes: bool) -> CacheFigures {
    let stats = cache.stats().await;
    let counters = cache.metrics();
    let (entries, bytes) = match &stats {
        Ok(s) => (s.backend_stats.entries, s.backend_stats.bytes),
        Err(_) => (None, None),
    };
    let biggest = match (sizes, &stats) {
        (true, Ok(_)) => Some(biggest(cache).await),
        _ => None,
    };
    CacheFigures {
        alias: cache.alias().to_owned(),
        backend: cache.backend().name(),
        up: stats.is_ok(),
        error: stats.as_ref().err().map(ToString::to_string),
        degrade: cache.options().on_error == webcache::OnError::Degrade,
        entries,
        bytes,
        hits: counters.hits,
        misses: counters.misses,
        errors: counters.errors,
        biggest,
        reads: cache.reads(),
        hottest: cache.hot_keys(),
    }
}

/// The biggest stored entries (header included, as the backend holds them) among the first
/// keys listed. Keys the cache cannot list (a custom key function) give an empty list.
async fn biggest(cache: &Cache) -> Vec<Sized> {
    let keys: Vec<String> = cache
        .keys("*")
        .take(SIZED_KEYS)
        .filter_map(|k| async move { k.ok() })
        .collect()
        .await;
    let mut sized = Vec::with_capacity(keys.len());
    for key in keys {
        if let Ok(Some(raw)) = cache.get_raw(&key).await {
            sized.push(Sized {
                key,
                bytes: raw.len(),
            });
        }
    }
    sized.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.key.cmp(&b.key)));
    sized.truncate(BIGGEST_SHOWN);
    sized
}

/// One second's counters of every alias.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    /// Milliseconds since the Unix epoch.
    t: u64,
    aliases: Vec<AliasSample>,
}

#[derive(Debug, Clone, Serialize)]
struct AliasSample {
    alias: String,
    hits: u64,
    misses: u64,
    errors: u64,
}

/// The hit, miss and error counters of every alias, sampled every second for the last ten
/// minutes (the counters themselves are the cache's; sampling reads them, nothing more).
#[derive(Clone, Default)]
pub(crate) struct History {
    samples: Arc<Mutex<VecDeque<Sample>>>,
}

impl History {
    /// Starts sampling `caches` until the history is dropped.
    pub(crate) fn start(caches: &Caches) -> History {
        let history = History::default();
        let samples: Weak<Mutex<VecDeque<Sample>>> = Arc::downgrade(&history.samples);
        let caches = caches.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let Some(samples) = samples.upgrade() else {
                    return;
                };
                let sample = Sample {
                    t: now_ms(),
                    aliases: caches
                        .aliases()
                        .filter_map(|alias| {
                            let m = caches.get(alias).ok()?.metrics();
                            Some(AliasSample {
                                alias: alias.to_owned(),
                                hits: m.hits,
                                misses: m.misses,
                                errors: m.errors,
                            })
                        })
                        .collect(),
                };
                let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner());
                if samples.len() == SAMPLES_KEPT {
                    samples.pop_front();
                }
                samples.push_back(sample);
            }
        });
        history
    }

    fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.iter().cloned().collect()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The page's address with the token in its fragment (never sent to the server).
pub(crate) fn url(addr: SocketAddr, token: &str) -> String {
    format!("http://{addr}{PAGE_PATH}#token={token}")
}

/// `webcache dashboard`: the dashboard of any cache, on a local address, until interrupted.
pub(crate) async fn run(target: &TargetArgs, args: &DashboardArgs) -> anyhow::Result<()> {
    if let Some(app) = &target.app {
        anyhow::bail!(
            "a running `webcache serve` or `webcache proxy` serves its own dashboard: open \
             {}{PAGE_PATH}#token=TOKEN (the token it printed) instead of --app",
            app.trim_end_matches('/')
        );
    }
    let caches = crate::target::open_caches(target).await?;
    let listener = crate::serve::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let token = admin::new_token();
    let admin = Admin::new(caches.clone(), token.clone(), addr)?;
    let app = admin::router(admin);
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "webcache dashboard on {}\ncache: `{}` ({} backend)",
            url(addr, &token),
            caches.default_cache().alias(),
            caches.default_cache().backend().name()
        );
        let _ = out.flush();
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    caches.close().await;
    Ok(())
}
