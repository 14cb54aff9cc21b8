//! The hit, miss and error counters of one cache, per read operation, the sampled hottest
//! keys, and what `stats` reports. (Their Prometheus export lives in
//! [`metrics_export`](super::metrics_export).)

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;

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

/// A read of the Django API, as its hits and misses are counted (the `operation` label of
/// `webcache_cache_hits_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    Get,
    /// `get_bytes`: also every page lookup of the HTTP page cache.
    GetBytes,
    GetMany,
    HasKey,
    /// The read before a computation, for the whole `get_or_set` family.
    GetOrSet,
    /// The read of `get_or_set_with_stale` (a stale value served is a hit).
    GetOrSetStale,
}

impl Read {
    const ALL: [Read; 6] = [
        Read::Get,
        Read::GetBytes,
        Read::GetMany,
        Read::HasKey,
        Read::GetOrSet,
        Read::GetOrSetStale,
    ];

    /// The operation's name, in metrics and in `stats`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Read::Get => "get",
            Read::GetBytes => "get_bytes",
            Read::GetMany => "get_many",
            Read::HasKey => "has_key",
            Read::GetOrSet => "get_or_set",
            Read::GetOrSetStale => "get_or_set_with_stale",
        }
    }
}

/// Hits and misses of one read operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperationReads {
    /// The operation: `get`, `get_bytes` (the page cache's lookups too), `get_many`,
    /// `has_key`, `get_or_set` (the whole family) or `get_or_set_with_stale`.
    pub operation: String,
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
}

/// One of the most read keys, as the sample estimates it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HotKey {
    /// The key as the application names it (before prefix and version).
    pub key: String,
    /// Estimated reads since the cache was built (sampled reads times the sampling rate; an
    /// over-estimate by at most the key's `error`).
    pub reads: u64,
    /// How much of `reads` may belong to keys this one displaced from the table.
    pub error: u64,
}

/// One read in this many is sampled for the hottest keys.
const SAMPLE_ONE_IN: u64 = 16;
/// Keys tracked by the space-saving table: a key read more often than one sampled read in
/// this many is in it.
const HOT_TRACKED: usize = 32;
/// Keys reported by [`Cache::hot_keys`].
const HOT_SHOWN: usize = 10;

/// The hottest keys by the space-saving algorithm (Metwally et al.) over a sample of reads:
/// bounded memory, and a key read more than `1 / HOT_TRACKED` of the sampled reads is never
/// missed.
#[derive(Debug, Default)]
struct HotKeys {
    /// Key, sampled count, over-estimate.
    table: Mutex<Vec<(Box<str>, u64, u64)>>,
}

impl HotKeys {
    fn record(&self, key: &str) {
        // Never wait on the read path: a sample lost to contention changes nothing that matters.
        let Ok(mut table) = self.table.try_lock() else {
            return;
        };
        if let Some(slot) = table.iter_mut().find(|(k, ..)| **k == *key) {
            slot.1 += 1;
        } else if table.len() < HOT_TRACKED {
            table.push((key.into(), 1, 0));
        } else if let Some(least) = table.iter_mut().min_by_key(|(_, count, _)| *count) {
            *least = (key.into(), least.1 + 1, least.1);
        }
    }

    fn top(&self) -> Vec<HotKey> {
        let mut table = match self.table.lock() {
            Ok(table) => table.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        table.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        table
            .into_iter()
            .take(HOT_SHOWN)
            .map(|(key, count, error)| HotKey {
                key: key.into(),
                reads: count * SAMPLE_ONE_IN,
                error: error * SAMPLE_ONE_IN,
            })
            .collect()
    }
}

thread_local! {
    /// This thread's xorshift state: a sampling decision costs no shared write.
    static SAMPLER: Cell<u64> = const { Cell::new(0) };
}

/// Whether this read is one of the sampled ones (about one in [`SAMPLE_ONE_IN`]).
fn sampled() -> bool {
    SAMPLER
        .try_with(|state| {
            let mut x = state.get();
            if x == 0 {
                // Seeded per thread from its stack address: distinct threads, distinct streams.
                x = (std::ptr::from_ref(state) as u64) | 1;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            state.set(x);
            x % SAMPLE_ONE_IN == 0
        })
        .unwrap_or(false)
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) errors: AtomicU64,
    /// Per [`Read`], in [`Read::ALL`] order: hits, misses.
    reads: [[AtomicU64; 2]; Read::ALL.len()],
    hot: HotKeys,
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
    /// Hits and misses per read operation, for the operations used.
    pub reads: Vec<OperationReads>,
    /// The most read keys, by a sample (see [`Cache::hot_keys`]).
    pub hot_keys: Vec<HotKey>,
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

    /// Hits and misses per read operation since the cache was built (operations never used
    /// are left out).
    pub fn reads(&self) -> Vec<OperationReads> {
        Read::ALL
            .iter()
            .zip(&self.inner.counters.reads)
            .map(|(read, [hits, misses])| OperationReads {
                operation: read.name().to_owned(),
                hits: hits.load(Ordering::Relaxed),
                misses: misses.load(Ordering::Relaxed),
            })
            .filter(|r| r.hits + r.misses > 0)
            .collect()
    }

    /// The most read keys since the cache was built, most read first, estimated from a
    /// sample of one read in 16 (hits and misses alike) with a bounded table: keys are never
    /// metric labels, so this is where they are seen. A key needs a few dozen reads to show.
    pub fn hot_keys(&self) -> Vec<HotKey> {
        self.inner.counters.hot.top()
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
            reads: self.reads(),
            hot_keys: self.hot_keys(),
            backend_stats,
        })
    }

    /// `get` on behalf of `read`: the value under `key`, counted as that operation.
    pub(super) async fn read_counted<T: DeserializeOwned>(
        &self,
        read: Read,
        key: &str,
    ) -> Result<Option<T>> {
        let full = self.make_key(key)?;
        let raw = self.backend_get(&full).await?;
        Ok(self.count(read, key, raw.and_then(|raw| self.decode_typed(key, &raw))))
    }

    /// Counts one read of `key` by `read`: a hit if it found a value. A sampled read also
    /// goes to the hottest keys; the others cost two relaxed atomic additions and a
    /// thread-local step.
    pub(super) fn count<T>(&self, read: Read, key: &str, value: Option<T>) -> Option<T> {
        let c = &self.inner.counters;
        let hit = value.is_some();
        let (total, index) = if hit { (&c.hits, 0) } else { (&c.misses, 1) };
        total.fetch_add(1, Ordering::Relaxed);
        c.reads[read as usize][index].fetch_add(1, Ordering::Relaxed);
        if sampled() {
            c.hot.record(key);
        }
        metrics_export::lookup(self, read.name(), hit);
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_all_is_in_discriminant_order() {
        for (i, read) in Read::ALL.iter().enumerate() {
            assert_eq!(*read as usize, i);
        }
    }

    #[test]
    fn space_saving_keeps_the_heavy_keys_of_a_long_tail() {
        let hot = HotKeys::default();
        for i in 0..20_000u32 {
            // Two keys take a third of the reads each; the rest is a tail of distinct keys.
            match i % 3 {
                0 => hot.record("hot-a"),
                1 => hot.record("hot-b"),
                _ => hot.record(&format!("tail-{i}")),
            }
        }
        let top = hot.top();
        assert_eq!(top.len(), HOT_SHOWN);
        let first_two: Vec<&str> = top[..2].iter().map(|h| h.key.as_str()).collect();
        assert!(
            first_two.contains(&"hot-a") && first_two.contains(&"hot-b"),
            "{top:?}"
        );
    }
}
