use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{LocMemBackend, LocMemConfig};
use crate::backend::invalidations::{copies_over, Copies, Stamp};
use crate::backend::{Backend, BackendStats, KeyRules, KeyStream};
use crate::error::Result;
use crate::timeout::{Expiry, Ttl};

/// A process-local copy of a shared backend's hot entries: reads that hit it skip the network
/// round trip (configured with `near_ttl=SECONDS` on any cache URL).
///
/// This process's own writes, deletes, `incr` and `touch` update or drop its local copy at
/// once, so it always reads its own writes. Expiry, TTLs, key listing and stats come from the
/// shared backend. What another process's change costs depends on the backend:
///
/// - **A backend that reports changes** (it implements
///   [`Invalidations`](crate::backend::Invalidations), as Redis does with client-side caching):
///   a copy is dropped as soon as the backend reports its key changed, by any process (goal:
///   within 100 ms; see BENCHMARKS.md for the measured delay). Copies are trusted only while
///   the reports are connected: until they first connect, and from a break until they
///   connect again, every read goes to the shared backend, and reconnecting drops every copy
///   (changes made during the break were not reported). `near_ttl` remains the bound on a
///   copy's life, as a safety net.
/// - **Any other backend**: a value written or deleted by another process may be read here up
///   to `near_ttl` later (the trade-off `near_ttl` is chosen for).
#[derive(Debug)]
pub struct NearCache {
    copies: Arc<Copies>,
    far: Arc<dyn Backend>,
    ttl: Duration,
}

/// Entries kept locally when `near_max_entries` is not given.
pub const DEFAULT_NEAR_MAX_ENTRIES: u64 = 10_000;

impl NearCache {
    /// Local copies of `far`'s entries, each kept at most `ttl`, at most `max_entries` of them.
    /// Subscribes to `far`'s reports of changes when it offers them
    /// ([`offer_invalidations`](crate::backend::offer_invalidations)).
    pub fn new(far: Arc<dyn Backend>, ttl: Duration, max_entries: u64) -> Self {
        let store = LocMemBackend::private(
            LocMemConfig::default()
                .max_entries(max_entries)
                // Copies are cheap to lose: evict one at a time rather than Django's third.
                .cull_frequency(u32::MAX),
        );
        NearCache {
            copies: copies_over(&*far, store),
            far,
            ttl,
        }
    }

    /// This process's copy of `key`, if it has a live one that can be trusted (served while
    /// the shared backend's circuit breaker is open).
    pub(crate) fn local_copy(&self, key: &str) -> Option<Bytes> {
        if !self.copies.trusted() {
            return None;
        }
        self.copies.store.get_now(key)
    }

    /// The shared backend behind the local copies.
    pub fn far(&self) -> &Arc<dyn Backend> {
        &self.far
    }

    /// Whether local copies are served now: always over a backend that does not report
    /// changes; over one that does, only while its reports are connected.
    pub fn serves_copies(&self) -> bool {
        self.copies.trusted()
    }

    /// The local expiry for a value the shared backend keeps for `expiry` from a write sent
    /// at `sent`: at most `near_ttl`, and never past the shared entry's own end (counted from
    /// before the write, so the copy cannot outlive it however slow the write was). `None`
    /// when nothing is left of it.
    fn local(&self, expiry: Expiry, sent: Instant) -> Option<Expiry> {
        let lifetime = match expiry {
            Expiry::After(d) if d < self.ttl => d,
            _ => self.ttl,
        };
        let left = lifetime.checked_sub(sent.elapsed())?;
        (!left.is_zero()).then_some(Expiry::After(left))
    }

    /// Keeps a copy of what was just written (see [`local`](Self::local)).
    async fn keep_written(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
        sent: Instant,
        stamp: Option<Stamp>,
    ) {
        if let Some(local) = self.local(expiry, sent) {
            self.copies.keep(key, value, local, stamp).await;
        }
    }

    async fn forget(&self, key: &str) {
        self.copies.forget(key).await;
    }
}

#[async_trait]
impl Backend for NearCache {
    fn name(&self) -> &'static str {
        self.far.name()
    }

    fn inner(&self) -> Option<&dyn Backend> {
        Some(&*self.far)
    }

    fn node_breakers(&self) -> Option<&crate::backend::NodeBreakers> {
        self.far.node_breakers()
    }

    fn key_rules(&self) -> KeyRules {
        self.far.key_rules()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        if let Some(value) = self.local_copy(key) {
            return Ok(Some(value));
        }
        let stamp = self.copies.stamp(key);
        let value = self.far.get(key).await?;
        if let Some(value) = &value {
            self.copies
                .keep(key, value.clone(), Expiry::After(self.ttl), stamp)
                .await;
        }
        Ok(value)
    }

    /// A trusted local copy answers at once, also while the shared backend is down (the
    /// cache's breaker refuses only calls that wait); a miss here is the shared backend's to
    /// answer.
    fn get_ready(&self, key: &str) -> Option<Option<Bytes>> {
        self.local_copy(key).map(Some)
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        // Drop the local copy first: if the shared write fails, no stale copy survives it.
        self.forget(key).await;
        let (stamp, sent) = (self.copies.stamp(key), Instant::now());
        self.far.set(key, value.clone(), expiry).await?;
        self.keep_written(key, value, expiry, sent, stamp).await;
        Ok(())
    }

    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        let (stamp, sent) = (self.copies.stamp(key), Instant::now());
        let added = self.far.add(key, value.clone(), expiry).await?;
        if added {
            self.keep_written(key, value, expiry, sent, stamp).await;
        } else {
            // Someone else's value won: read it from the shared backend next time.
            self.forget(key).await;
        }
        Ok(added)
    }

    async fn set_if_present(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        // No copy is kept of what was written: a `delete` racing with this call may drop the
        // local copy between the shared write and the keeping, and a kept copy would then
        // bring the deleted key back here. Dropping before and after leaves no copy at all.
        self.forget(key).await;
        let stored = self.far.set_if_present(key, value, expiry).await;
        self.forget(key).await;
        stored
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.forget(key).await;
        self.far.delete(key).await
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.forget(key).await;
        self.far.touch(key, expiry).await
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.forget(key).await;
        self.far.incr(key, delta).await
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        self.far.ttl(key).await
    }

    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        self.copies.store.clear(prefix).await?;
        self.far.clear(prefix).await
    }

    fn scan(&self, pattern: &str) -> KeyStream {
        self.far.scan(pattern)
    }

    async fn stats(&self) -> Result<BackendStats> {
        let mut stats = self.far.stats().await?;
        let near = self.copies.store.stats().await?;
        stats.extra.push((
            "near_entries".to_owned(),
            near.entries.unwrap_or_default().to_string(),
        ));
        stats
            .extra
            .push(("near_ttl".to_owned(), format!("{:?}", self.ttl)));
        stats.extra.push((
            "near_invalidations".to_owned(),
            self.copies.state().to_owned(),
        ));
        Ok(stats)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        let mut values: Vec<Option<Bytes>> = match self.copies.trusted() {
            true => keys.iter().map(|k| self.copies.store.get_now(k)).collect(),
            false => vec![None; keys.len()],
        };
        let missing: Vec<String> = keys
            .iter()
            .zip(&values)
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if missing.is_empty() {
            return Ok(values);
        }
        let stamps: Vec<_> = missing.iter().map(|k| self.copies.stamp(k)).collect();
        let mut fetched = self.far.get_many(&missing).await?.into_iter();
        let mut stamps = stamps.into_iter();
        for (slot, key) in values.iter_mut().zip(keys) {
            if slot.is_none() {
                *slot = fetched.next().flatten();
                let stamp = stamps.next().flatten();
                if let Some(value) = slot {
                    self.copies
                        .keep(key, value.clone(), Expiry::After(self.ttl), stamp)
                        .await;
                }
            }
        }
        Ok(values)
    }

    async fn set_many(&self, entries: Vec<(String, Bytes)>, expiry: Expiry) -> Result<()> {
        for (key, _) in &entries {
            self.forget(key).await;
        }
        let stamps: Vec<_> = entries.iter().map(|(k, _)| self.copies.stamp(k)).collect();
        let sent = Instant::now();
        self.far.set_many(entries.clone(), expiry).await?;
        for ((key, value), stamp) in entries.into_iter().zip(stamps) {
            self.keep_written(&key, value, expiry, sent, stamp).await;
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        for key in keys {
            self.forget(key).await;
        }
        self.far.delete_many(keys).await
    }

    async fn has_key(&self, key: &str) -> Result<bool> {
        if self.copies.trusted() && self.copies.store.has_key(key).await? {
            return Ok(true);
        }
        self.far.has_key(key).await
    }

    async fn close(&self) -> Result<()> {
        self.far.close().await
    }
}
