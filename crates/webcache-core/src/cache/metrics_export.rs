//! What a [`Cache`] tells the [`metrics`] facade and `tracing`: the one home of the cache's
//! metric names and labels. Nothing is recorded unless the application installs a recorder
//! (`webcache_http::metrics::PrometheusMetrics`, or any `metrics` exporter). The names, labels
//! and when each is recorded are listed in the crate's README ("Metrics and traces").
//!
//! Labels never carry a key or a value: an alias and an operation name are a handful each.
//! Every backend call also runs in a `tracing` span `cache` with the alias, the backend and the
//! operation (never the key or the value), so a request's trace shows its cache calls.

use std::cell::RefCell;
use std::future::Future;
use std::time::Instant;

use metrics::{Counter, Histogram};
use tracing::Instrument;

use super::{Cache, OnError};
use crate::error::Result;

/// The names recorded on every call (the gauges are named where they are set).
const HITS: &str = "webcache_cache_hits_total";
const MISSES: &str = "webcache_cache_misses_total";
const ERRORS: &str = "webcache_cache_errors_total";
const DURATION: &str = "webcache_cache_operation_duration_seconds";

/// Counts one read by `operation`: a hit if it found a value.
pub(super) fn lookup(cache: &Cache, operation: &'static str, hit: bool) {
    with_handles(|handles| {
        let alias = cache.alias();
        let found = handles
            .reads
            .iter()
            .position(|(a, o, ..)| *o == operation && **a == *alias);
        let reads = match found {
            Some(i) => &handles.reads[i],
            None => {
                handles.reads.push((
                    alias.into(),
                    operation,
                    metrics::counter!(HITS, "alias" => alias.to_owned(), "operation" => operation),
                    metrics::counter!(MISSES, "alias" => alias.to_owned(), "operation" => operation),
                ));
                &handles.reads[handles.reads.len() - 1]
            }
        };
        let counter = if hit { &reads.2 } else { &reads.3 };
        counter.increment(1);
    });
}

/// Runs a backend call in a span and times it.
pub(super) async fn observe<R>(
    cache: &Cache,
    operation: &'static str,
    call: impl Future<Output = Result<R>>,
) -> Result<R> {
    let started = Instant::now();
    let result = call.instrument(span(cache, operation)).await;
    record_duration(cache, operation, started);
    result
}

/// [`observe`] for a backend's answer given without waiting ([`Backend::get_ready`]): counted
/// only when the backend answered (`Some`); otherwise the call that follows is the one timed
/// and traced, so a read shows once in the histogram and once in a trace. An answer given at
/// once gets its `cache` span after the fact (the span says which backend answered; its
/// duration would be the nanoseconds of a map lookup).
///
/// [`Backend::get_ready`]: crate::backend::Backend::get_ready
pub(super) fn observe_ready<R>(
    cache: &Cache,
    operation: &'static str,
    call: impl FnOnce() -> Option<R>,
) -> Option<R> {
    let started = Instant::now();
    let result = call();
    if result.is_some() {
        drop(span(cache, operation).entered());
        record_duration(cache, operation, started);
    }
    result
}

/// The span every backend call runs in: alias, backend and operation, never the key.
fn span(cache: &Cache, operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "cache",
        alias = %cache.alias(),
        backend = cache.inner.backend.name(),
        operation,
    )
}

/// Records how long a backend call that began at `started` took.
fn record_duration(cache: &Cache, operation: &'static str, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    with_handles(|handles| {
        let alias = cache.alias();
        let found = handles
            .durations
            .iter()
            .position(|(a, o, _)| **a == *alias && *o == operation);
        match found {
            Some(i) => handles.durations[i].2.record(seconds),
            None => {
                let histogram = metrics::histogram!(DURATION, "alias" => alias.to_owned(), "operation" => operation);
                histogram.record(seconds);
                handles.durations.push((alias.into(), operation, histogram));
            }
        }
    });
}

/// The handles of this thread's recent metrics, so that a hit costs no registry lookup (a
/// hash of the name and labels and a shared lock, every time, through the macros).
#[derive(Default)]
struct Handles {
    /// The recorder they belong to: a recorder installed later (or a test's local one) makes
    /// them stale.
    recorder: usize,
    /// Per alias and read operation: hits, misses.
    reads: Vec<(Box<str>, &'static str, Counter, Counter)>,
    /// Per alias and operation: latency.
    durations: Vec<(Box<str>, &'static str, Histogram)>,
}

/// More handles than this (aliases times operations) start the thread's set afresh.
const MAX_HANDLES: usize = 512;

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
        if handles.recorder != recorder
            || handles.reads.len() + handles.durations.len() > MAX_HANDLES
        {
            *handles = Handles {
                recorder,
                ..Handles::default()
            };
        }
        f(&mut handles);
    });
}

/// Counts a failed backend call.
pub(super) fn failure(cache: &Cache, operation: &'static str) {
    metrics::counter!(ERRORS, "alias" => cache.alias().to_owned(), "operation" => operation)
        .increment(1);
}

impl Cache {
    /// Sets this cache's gauges from what it and its backend can tell now: whether the backend
    /// answers (one `stats` call, bounded by the cache's own timeouts), the circuit breaker,
    /// the degrade mode, entries, bytes and evictions where known. An exporter calls it before
    /// each scrape (`webcache_http::metrics::PrometheusMetrics` does); the counters and
    /// histograms need no such call. See the table in the crate's README for the names.
    pub async fn record_gauges(&self) {
        let alias = self.alias().to_owned();
        let backend = self.inner.backend.name();
        let stats = self.stats().await;
        metrics::gauge!("webcache_cache_backend_up", "alias" => alias.clone(), "backend" => backend)
            .set(if stats.is_ok() { 1.0 } else { 0.0 });
        let open = self.inner.breaker.as_ref().is_some_and(|b| b.is_open());
        metrics::gauge!("webcache_cache_breaker_open", "alias" => alias.clone()).set(if open {
            1.0
        } else {
            0.0
        });
        let degrade = self.inner.options.on_error == OnError::Degrade;
        metrics::gauge!("webcache_cache_degrade_mode", "alias" => alias.clone()).set(if degrade {
            1.0
        } else {
            0.0
        });
        let Ok(stats) = stats else { return };
        let figures = &stats.backend_stats;
        if let Some(entries) = figures.entries {
            metrics::gauge!("webcache_cache_entries", "alias" => alias.clone()).set(entries as f64);
        }
        if let Some(bytes) = figures.bytes {
            metrics::gauge!("webcache_cache_bytes", "alias" => alias.clone()).set(bytes as f64);
        }
        // memcached reports `evictions` per server (`ADDR evictions`), Redis `evicted_keys`.
        let evictions = figures
            .extra
            .iter()
            .filter(|(name, _)| {
                name == "evicted_keys" || name == "evictions" || name.ends_with(" evictions")
            })
            .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
            .reduce(|a, b| a.saturating_add(b));
        if let Some(evictions) = evictions {
            metrics::gauge!("webcache_cache_evictions", "alias" => alias).set(evictions as f64);
        }
    }
}
