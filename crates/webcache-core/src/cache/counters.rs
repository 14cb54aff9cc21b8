//! The hit, miss and error counters of one cache, and what `stats` reports.
//! (Their Prometheus export lives in [`metrics_export`](super::metrics_export).)

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::BackendStats;
use crate::error::Result;

use super::{metrics_export, Cache};

/// Hit, miss and error counters of one cache alias.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Metrics {
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found nothing (or a corrupt entry).
    pub misses: u64,
    /// Backend calls that failed (including those degraded into misses).
    pub errors: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) errors: AtomicU64,
}

/// What `stats` reports: the alias's counters and what the backend can tell.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// The alias.
    pub alias: String,
    /// The backend's name.
    pub backend: &'static str,
    /// Hits, misses and errors since the cache was built.
    pub metrics: Metrics,
    /// Entry count and sizes.
    pub backend_stats: BackendStats,
}

impl Cache {
    /// Hit, miss and error counters since the cache was built.
    pub fn metrics(&self) -> Metrics {
        let c = &self.inner.counters;
        Metrics {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// The alias's counters and what the backend can tell about its contents.
    pub async fn stats(&self) -> Result<CacheStats> {
        let backend_stats = self
            .guard_strict("stats", self.inner.backend.stats())
            .await?;
        Ok(CacheStats {
            alias: self.alias().to_owned(),
            backend: self.inner.backend.name(),
            metrics: self.metrics(),
            backend_stats,
        })
    }

    pub(super) fn count<T>(&self, value: Option<T>) -> Option<T> {
        let counter = if value.is_some() {
            &self.inner.counters.hits
        } else {
            &self.inner.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics_export::lookup(self, value.is_some());
        value
    }
}
