//! Smaller django-redis parity on the typed API: `set` only if present (`xx`), `expire_at`,
//! `persist` and `delete_pattern`, on every backend. (django-redis's `iter_keys` is
//! [`Cache::keys`], already a stream.)

use std::time::SystemTime;

use futures::StreamExt;
use serde::Serialize;

use super::Cache;
use crate::breaker::FirstFailure;
use crate::error::{Error, Result};
use crate::timeout::Timeout;

/// How many keys [`Cache::delete_pattern`] removes per backend call.
const DELETE_BATCH: usize = 500;

impl Cache {
    /// Stores `value` under `key` only if the key holds a live value (django-redis's
    /// `set(..., xx=True)`, Redis's `SET XX`); returns whether it stored it. An expired entry
    /// counts as absent; an entry that cannot be read (corrupt, foreign) counts as present and
    /// is replaced. With a zero timeout nothing is stored: a present key is removed, and the
    /// result says whether it was there.
    ///
    /// Atomic: one backend call ([`Backend::set_if_present`](crate::backend::Backend::set_if_present))
    /// checks and writes, so a `delete` that lands at the same moment is never undone.
    pub async fn set_if_present<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        timeout: impl Into<Timeout>,
    ) -> Result<bool> {
        let full = self.make_key(key)?;
        let Some(tags) = self.stamp_or_skip(key).await? else {
            return Ok(false);
        };
        let encoded = match self.encode(key, value, &tags) {
            // As `set` with a value too large: the older value does not stay behind.
            Err(e @ Error::ValueTooLarge { .. }) => {
                self.backend_delete(&full).await?;
                return Err(e);
            }
            other => other?,
        };
        match self.expiry(timeout.into()) {
            None => self.backend_delete(&full).await,
            Some(expiry) => {
                let call = self.inner.backend.set_if_present(&full, encoded, expiry);
                self.guard("set_if_present", call, || false)
                    .await
                    .map_err(|e| e.with_user_key(key))
            }
        }
    }

    /// Makes `key` expire at `when` (django-redis's `expire_at`); returns `false` when the key
    /// is missing. A time already past removes the key now.
    pub async fn expire_at(&self, key: &str, when: SystemTime) -> Result<bool> {
        let left = when.duration_since(SystemTime::now()).unwrap_or_default();
        self.touch(key, Timeout::After(left)).await
    }

    /// Makes `key` never expire (django-redis's `persist`); returns `false` when the key is
    /// missing.
    pub async fn persist(&self, key: &str) -> Result<bool> {
        self.touch(key, Timeout::Forever).await
    }

    /// Removes every key of this cache's prefix and version that matches the glob `pattern`
    /// (django-redis's `delete_pattern`); returns how many were removed. Needs a backend that
    /// can list keys and the default key function, as [`keys`](Self::keys); keys of other
    /// versions and other prefixes are never touched. A listing that fails part-way (one
    /// server of several down) does not stop the keys it still yields from being removed: the
    /// first failure is then the answer, so that the caller knows some keys may remain.
    pub async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        let mut keys = self.keys(pattern).chunks(DELETE_BATCH);
        let mut removed = 0;
        let mut failures = FirstFailure::default();
        while let Some(batch) = keys.next().await {
            let found: Vec<String> = batch
                .into_iter()
                .filter_map(|key| failures.keep(key))
                .collect();
            if found.is_empty() {
                continue;
            }
            if let Some(n) = failures.keep(self.delete_many(&found).await) {
                removed += n;
            }
        }
        failures.or(removed)
    }
}
