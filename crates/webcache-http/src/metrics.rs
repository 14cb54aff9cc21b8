//! Metrics of the page cache, and a Prometheus endpoint a library user mounts.
//!
//! The page cache records through the [`metrics`] facade (nothing is recorded until a recorder
//! is installed); [`PrometheusMetrics`] installs the Prometheus one and answers scrapes.
//!
//! | metric | type | labels | when |
//! |---|---|---|---|
//! | `webcache_page_responses_total` | counter | `route`, `outcome` (`HIT`, `MISS`, `STALE`, `BYPASS`) | a response left the page cache |
//! | `webcache_page_not_stored_total` | counter | `route`, `reason` (a [`NotStored`] as a word: `sets_cookie`, `status_404`, ...) | a response was not stored for that reason |
//! | `webcache_page_cached_bytes_total` | counter | `route` | body bytes answered from stored pages (`HIT`, `STALE`) |
//! | `webcache_page_stampede_waits_total` | counter | `route` | a request waited for a concurrent miss of the same page |
//! | `webcache_page_stampede_waiters` | gauge | | requests waiting for a concurrent miss now |
//!
//! `route` is the route pattern axum matched (`/users/{id}`, from
//! [`MatchedPath`]), or `unmatched` when there is none (a fallback,
//! the proxy), or `background` for a refresh running after its request was answered. Labels
//! never carry a URL or a key: their number stays that of the routes. The cache's own metrics
//! (hits, misses, errors and latency per alias and operation, backend health) are listed in
//! `webcache_core`'s README.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use axum::extract::MatchedPath;
use axum::response::IntoResponse;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Body;
use metrics::{Counter, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use webcache_core::Cache;

use crate::body::PageBody;
use crate::engine::{Front, Outcome};
use crate::policy::NotStored;

/// The label of a request that no axum route matched.
const UNMATCHED: &str = "unmatched";
/// The label of work that outlives its request (a stale page's refresh).
const BACKGROUND: &str = "background";

/// Histogram buckets of the latency metrics, in seconds: from a locmem hit (microseconds) to a
/// backend timing out (seconds).
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1, 0.5, 2.5,
];

/// The content type of the Prometheus text exposition format.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

tokio::task_local! {
    /// The request the page cache is answering, for what is recorded deep inside it.
    static REQUEST: Observed;
}

/// One request's labels and outcome while the page cache answers it.
pub(crate) struct Observed {
    route: Route,
    outcome: Cell<Option<Outcome>>,
}

/// The route of a request: the pattern axum matched (shared with the request, so that a
/// request costs no copy of it), or none.
#[derive(Clone)]
pub(crate) struct Route(Option<MatchedPath>);

impl Route {
    /// The label value: the route pattern, or [`UNMATCHED`].
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or(UNMATCHED, MatchedPath::as_str)
    }

    /// The label value, owned (made only when a metric handle is registered).
    fn label(&self) -> SharedString {
        match &self.0 {
            Some(path) => SharedString::from_owned(path.as_str().to_owned()),
            None => SharedString::const_str(UNMATCHED),
        }
    }
}

/// The route of a request, from its extensions.
pub(crate) fn route(extensions: &http::Extensions) -> Route {
    Route(extensions.get::<MatchedPath>().cloned())
}

/// Runs the page cache's answer to one request, then counts its outcome and the bytes it
/// served from the cache.
///
/// A named future rather than an `async fn`: the answer's future is held once, not copied into
/// each await point's state (an async wrapper around a large future is several times its size,
/// and every request would move it).
pub(crate) fn observe<F, R, E>(route: Route, answer: F) -> Observe<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    R: Body,
{
    let observed = Observed {
        route,
        outcome: Cell::new(None),
    };
    REQUEST.scope(observed, Finish { answer })
}

/// [`observe`] for the part of an answer made without waiting ([`PageCacheEngine::front`]):
/// runs it in the request's scope and counts its outcome when it answered. What it leaves for
/// later is observed with [`observe`].
///
/// [`PageCacheEngine::front`]: crate::engine::PageCacheEngine::front
pub(crate) fn observe_now<B, R: PageBody>(
    route: Route,
    front: impl FnOnce() -> Front<B, R>,
) -> Front<B, R> {
    let observed = Observed {
        route,
        outcome: Cell::new(None),
    };
    REQUEST.sync_scope(observed, || {
        let front = front();
        if let Front::Answered(response) = &front {
            let _ = REQUEST.try_with(|observed| finished(observed, response));
        }
        front
    })
}

/// The future of [`observe`].
pub(crate) type Observe<F> = tokio::task::futures::TaskLocalFuture<Observed, Finish<F>>;

pin_project_lite::pin_project! {
    /// The answer, then its outcome counted (polled inside the request's task-local scope).
    pub(crate) struct Finish<F> {
        #[pin]
        answer: F,
    }
}

impl<F, R, E> Future for Finish<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    R: Body,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let reply = ready!(self.project().answer.poll(cx));
        if let Ok(response) = &reply {
            let _ = REQUEST.try_with(|observed| finished(observed, response));
        }
        Poll::Ready(reply)
    }
}

fn finished<R: Body>(observed: &Observed, response: &Response<R>) {
    let Some(outcome) = observed.outcome.get() else {
        return;
    };
    let cached = matches!(outcome, Outcome::Hit | Outcome::Stale)
        .then(|| response.body().size_hint().exact())
        .flatten();
    with_handles(|handles| {
        let route = observed.route.as_str();
        let i = match handles.routes.iter().position(|r| *r.route == *route) {
            Some(i) => i,
            None => {
                let route = observed.route.label();
                let counter = |outcome| {
                    metrics::counter!(
                        "webcache_page_responses_total",
                        "route" => route.clone(),
                        "outcome" => outcome_label(outcome)
                    )
                };
                handles.routes.push(RouteHandles {
                    route: observed.route.as_str().into(),
                    outcomes: [
                        counter(Outcome::Hit),
                        counter(Outcome::Miss),
                        counter(Outcome::Stale),
                        counter(Outcome::Bypass),
                    ],
                    cached_bytes: metrics::counter!(
                        "webcache_page_cached_bytes_total",
                        "route" => route.clone()
                    ),
                });
                handles.routes.len() - 1
            }
        };
        let route = &handles.routes[i];
        let index = match outcome {
            Outcome::Hit => 0,
            Outcome::Miss => 1,
            Outcome::Stale => 2,
            Outcome::Bypass => 3,
        };
        route.outcomes[index].increment(1);
        if let Some(bytes) = cached {
            route.cached_bytes.increment(bytes);
        }
    });
}

/// This thread's handles of the per-route counters, so that a hit costs no registry lookup
/// (a hash of the name and labels and a shared lock, every time, through the macros).
#[derive(Default)]
struct Handles {
    /// The recorder they belong to: a recorder installed later makes them stale.
    recorder: usize,
    routes: Vec<RouteHandles>,
}

struct RouteHandles {
    route: Box<str>,
    /// `HIT`, `MISS`, `STALE`, `BYPASS`.
    outcomes: [Counter; 4],
    cached_bytes: Counter,
}

/// More routes than this start the thread's set afresh.
const MAX_ROUTES: usize = 256;

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

/// Runs `f` on this thread's handles for the current recorder (nothing while the thread ends).
fn with_handles(f: impl FnOnce(&mut Handles)) {
    let recorder = metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>() as usize);
    let _ = HANDLES.try_with(|handles| {
        let Ok(mut handles) = handles.try_borrow_mut() else {
            return;
        };
        if handles.recorder != recorder || handles.routes.len() >= MAX_ROUTES {
            *handles = Handles {
                recorder,
                routes: Vec::new(),
            };
        }
        f(&mut handles);
    });
}

/// The `x-cache` word of an outcome, as a label value.
fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Hit => "HIT",
        Outcome::Miss => "MISS",
        Outcome::Stale => "STALE",
        Outcome::Bypass => "BYPASS",
    }
}

/// Notes how the current request was answered (the last call wins).
pub(crate) fn outcome(outcome: Outcome) {
    let _ = REQUEST.try_with(|observed| observed.outcome.set(Some(outcome)));
}

/// The route label of the current request, or [`BACKGROUND`] outside one.
fn current_route() -> SharedString {
    REQUEST
        .try_with(|observed| observed.route.label())
        .unwrap_or(SharedString::const_str(BACKGROUND))
}

/// Counts a response not stored, by reason.
pub(crate) fn not_stored(reason: &NotStored) {
    metrics::counter!(
        "webcache_page_not_stored_total",
        "route" => current_route(),
        "reason" => reason_label(reason)
    )
    .increment(1);
}

/// A [`NotStored`] as a label value: a fixed word per reason (and per status code).
fn reason_label(reason: &NotStored) -> SharedString {
    SharedString::const_str(match reason {
        NotStored::StatusNotCacheable(status) => {
            return SharedString::from_owned(format!("status_{}", status.as_u16()))
        }
        NotStored::StatusNotUnderstood(_) => "status_not_understood",
        NotStored::PartialWithoutRange => "partial_without_range",
        NotStored::VaryStar => "vary_star",
        NotStored::SetsCookie => "sets_cookie",
        NotStored::CacheControlForbids("private") => "cache_control_private",
        NotStored::CacheControlForbids("no-cache") => "cache_control_no_cache",
        NotStored::CacheControlForbids("no-store") => "cache_control_no_store",
        NotStored::CacheControlForbids(_) => "cache_control",
        NotStored::MaxAgeZero => "max_age_zero",
        NotStored::RequestNoStore => "request_no_store",
        NotStored::Authorized => "authorized",
        NotStored::NoFreshness => "no_freshness",
        NotStored::AlreadyStale => "already_stale",
        NotStored::UnparsableHeader(_) => "unparsable_header",
    })
}

/// Waits for a concurrent miss of the same page, counted while it waits.
pub(crate) async fn waiting<T>(wait: impl Future<Output = T>) -> T {
    metrics::counter!("webcache_page_stampede_waits_total", "route" => current_route())
        .increment(1);
    let waiters = metrics::gauge!("webcache_page_stampede_waiters");
    waiters.increment(1.0);
    // Decremented however the wait ends, a dropped request included.
    struct Waiting(metrics::Gauge);
    impl Drop for Waiting {
        fn drop(&mut self) {
            self.0.decrement(1.0);
        }
    }
    let _waiting = Waiting(waiters);
    wait.await
}

/// Why [`PrometheusMetrics::install`] failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "another metrics recorder is already installed in this process; render its metrics with \
     that exporter, or install webcache's (PrometheusMetrics::install) first, at start"
)]
pub struct AnotherRecorder;

/// The Prometheus recorder of this process (installed once), and the caches whose gauges are
/// refreshed before each scrape.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use webcache::http::metrics::PrometheusMetrics;
///
/// // First, before the caches are used: calls before it are not recorded.
/// let metrics = PrometheusMetrics::install()?;
/// let cache = webcache::Cache::locmem();
/// let metrics = metrics.watch(cache.clone());
/// // GET /metrics in the Prometheus text format. Mount it where only your scraper reaches it.
/// let app: axum::Router = axum::Router::new().merge(metrics.router("/metrics"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PrometheusMetrics {
    handle: PrometheusHandle,
    watched: Vec<Cache>,
}

impl std::fmt::Debug for PrometheusMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusMetrics")
            .field("watched", &self.watched.len())
            .finish_non_exhaustive()
    }
}

/// The handle of the recorder this module installed, if it did.
static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

impl PrometheusMetrics {
    /// Installs the Prometheus recorder as the process's `metrics` recorder, with latency
    /// histograms in seconds; a second call returns the same recorder. Fails if another
    /// recorder was installed.
    pub fn install() -> Result<Self, AnotherRecorder> {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        let handle = match &*installed {
            Some(handle) => handle.clone(),
            None => {
                let recorder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Suffix("_seconds".to_owned()),
                        &LATENCY_BUCKETS,
                    )
                    .map_err(|_| AnotherRecorder)?
                    .build_recorder();
                let handle = recorder.handle();
                metrics::set_global_recorder(recorder).map_err(|_| AnotherRecorder)?;
                describe();
                upkeep(handle.clone());
                installed.insert(handle).clone()
            }
        };
        Ok(PrometheusMetrics {
            handle,
            watched: Vec::new(),
        })
    }

    /// Also reports `cache`'s gauges (backend up, circuit breaker, degrade mode, entries,
    /// bytes, evictions), refreshed before each scrape.
    #[must_use]
    pub fn watch(mut self, cache: Cache) -> Self {
        self.watched.push(cache);
        self
    }

    /// The metrics in the Prometheus text format, after refreshing the watched caches' gauges
    /// (each asks its backend for its figures, within the cache's own timeouts).
    pub async fn render(&self) -> String {
        futures::future::join_all(self.watched.iter().map(Cache::record_gauges)).await;
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// A response with [`render`](Self::render)'s text, as a scrape expects it.
    pub async fn response(&self) -> axum::response::Response {
        let text = self.render().await;
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(EXPOSITION))],
            text,
        )
            .into_response()
    }

    /// A router answering `GET path` with the metrics. It checks nothing: mount it where only
    /// the scraper reaches it (another listener, or behind your own authentication).
    pub fn router<S>(&self, path: &str) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let metrics = Arc::new(self.clone());
        axum::Router::new().route(
            path,
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.response().await }
            }),
        )
    }
}

/// How often recorded latencies are folded into their histograms: until then each waits in a
/// queue, which would grow for as long as nobody scrapes.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds the recorded latencies into their histograms every [`UPKEEP_EVERY`], on a thread of
/// its own (the recorder may be installed outside any async runtime), for the process's life.
fn upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("webcache-metrics-upkeep".to_owned())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = started {
        tracing::warn!("no metrics upkeep thread ({e}); latencies are folded at each scrape only");
    }
}

/// Help texts of every metric, cache and page layer (one home: the tables above and in core).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "webcache_cache_hits_total",
        "Reads that found a value, per alias and read operation."
    );
    describe_counter!(
        "webcache_cache_misses_total",
        "Reads that found nothing (or an unreadable entry), per alias and read operation."
    );
    describe_counter!(
        "webcache_cache_errors_total",
        "Backend calls that failed (down, timed out, refused by the open breaker)."
    );
    describe_histogram!(
        "webcache_cache_operation_duration_seconds",
        Unit::Seconds,
        "How long backend calls took, per alias and operation."
    );
    describe_gauge!(
        "webcache_cache_backend_up",
        "1 if the backend answered at the last scrape."
    );
    describe_gauge!(
        "webcache_cache_breaker_open",
        "1 while the circuit breaker refuses calls to a down backend."
    );
    describe_gauge!(
        "webcache_cache_degrade_mode",
        "1 if backend failures become misses and dropped writes."
    );
    describe_gauge!(
        "webcache_cache_entries",
        "Entries, where the backend can tell."
    );
    describe_gauge!(
        "webcache_cache_bytes",
        Unit::Bytes,
        "Bytes held, where the backend can tell."
    );
    describe_gauge!(
        "webcache_cache_evictions",
        "Evictions the backend counted (memcached)."
    );
    describe_counter!(
        "webcache_page_responses_total",
        "Responses of the page cache per route pattern and outcome."
    );
    describe_counter!(
        "webcache_page_not_stored_total",
        "Responses not stored, per route pattern and reason."
    );
    describe_counter!(
        "webcache_page_cached_bytes_total",
        Unit::Bytes,
        "Body bytes answered from stored pages."
    );
    describe_counter!(
        "webcache_page_stampede_waits_total",
        "Requests that waited for a concurrent miss of the same page."
    );
    describe_gauge!(
        "webcache_page_stampede_waiters",
        "Requests waiting for a concurrent miss now."
    );
}
